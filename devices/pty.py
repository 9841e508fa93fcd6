"""``pty:///path/link``: a pseudo-terminal whose slave an outside program opens through a stable link.

The device is the *master* side. The emulator opens ``pty:///tmp/ttyPOS``; the cash-register
software opens ``/tmp/ttyPOS`` as if it were a serial port. The slave is put in raw mode (no echo,
no CR/LF translation, no signal or flow-control characters) so every byte value passes unchanged.

One owner per link: the device holds an exclusive lock on ``/tmp/ttyPOS.lock`` (``flock``, released
by the kernel however the process ends) for as long as it is open. A second device asked for the
same link while the first is alive is refused with a one-line :class:`DeviceError`; a link left by
a process that died is taken over. A device only ever removes the link (and lock file) it made.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import stat
import termios

from ._fd import FdDevice, FdPump
from .base import DeviceError

__all__ = ["PtyDevice", "open_pty"]


def _make_raw(fd: int) -> None:
    # cfmakeraw(3): a superset of tty.setraw, which leaves INLCR/IGNCR/IXOFF/PARMRK/ECHONL alone.
    attrs = termios.tcgetattr(fd)
    iflag, oflag, cflag, lflag = attrs[0], attrs[1], attrs[2], attrs[3]
    iflag &= ~(
        termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
        | termios.IGNCR | termios.ICRNL | termios.IXON | termios.IXOFF | termios.IXANY
        | termios.INPCK
    )
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag = (cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    attrs[0:4] = [iflag, oflag, cflag, lflag]
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSAFLUSH, attrs)


def _place_link(link: str, target: str) -> None:
    try:
        st = os.lstat(link)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISLNK(st.st_mode):
        raise DeviceError(f"refusing to replace {link}: it exists and is not a symlink")
    # Create aside, then rename over: an outside program never sees the link missing.
    tmp = f"{link}.{secrets.token_hex(4)}.tmp"
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise DeviceError(f"cannot create link {link}: [Errno {exc.errno}] {exc.strerror}") from exc


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _lock_link(link: str) -> int:
    """Take the lock file of ``link``; returns its descriptor. DeviceError if a live process has it."""
    path = f"{link}.lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DeviceError(f"cannot create link {link}: [Errno {exc.errno}] {exc.strerror} "
                              f"(its lock file {path})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            by = f"another running emulator (pid {pid})" if pid else "another running emulator"
            raise DeviceError(f"{link} is in use by {by}: stop it, or choose another path") from None
        except OSError as exc:
            os.close(fd)
            raise DeviceError(f"cannot lock {link}: [Errno {exc.errno}] {exc.strerror}") from exc
        # A closing owner unlinks the file while it holds the lock: ours must still be the one there.
        try:
            here, there = os.fstat(fd), os.stat(path)
            same = (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)


def _unlock_link(link: str, fd: int) -> None:
    try:
        os.unlink(f"{link}.lock")  # while still holding the lock (see _lock_link)
    except OSError:
        pass
    try:
        os.close(fd)
    except OSError:
        pass


class PtyDevice(FdDevice):
    """The master side of a pseudo-terminal.

    ``slave_name`` is the ``/dev/pts/N`` path; ``link_path`` the symlink to it (None if the URL
    named no link). The slave stays open here too, so an outside program may close and reopen it
    without the master seeing EIO. Bytes written while nobody has it open wait in the terminal's
    queue (pyserial flushes them when it opens the port; a plain ``open`` sees them); once that
    queue is full (about 20 KiB on Linux) ``write`` waits for a reader.
    """

    def __init__(
        self,
        url: str,
        loop: asyncio.AbstractEventLoop,
        master: int,
        slave: int,
        slave_name: str,
        link_path: str | None,
        lock_fd: int | None = None,
    ) -> None:
        super().__init__(url, loop)
        self.slave_name = slave_name
        self.link_path = link_path
        self._lock_fd = lock_fd
        self._master = master
        self._slave = slave
        self._pump = FdPump(
            loop, master, self._recv, self._send, self._inbox, self._inbox.feed_eof, url
        )
        self._pump.start()

    def _recv(self, n: int) -> bytes:
        return os.read(self._master, n)

    def _send(self, view: memoryview) -> int:
        return os.write(self._master, view)

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        reason = f"{self.url}: device closed"
        assert self._pump is not None
        self._pump.stop(reason)
        self._inbox.close(reason)
        if self.link_path is not None:
            try:
                # Only our own link: a newer device may have taken the path over.
                if os.readlink(self.link_path) == self.slave_name:
                    os.unlink(self.link_path)
            except OSError:
                pass
        if self.link_path is not None and self._lock_fd is not None:
            _unlock_link(self.link_path, self._lock_fd)
            self._lock_fd = None
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


async def open_pty(url: str) -> PtyDevice:
    """Create a raw pseudo-terminal; ``pty:///path/link`` also links ``/path/link`` to its slave."""
    rest = url.partition("://")[2]
    if "?" in rest:
        raise DeviceError(f"{url}: pty:// takes no parameters")
    link = os.path.abspath(rest) if rest else None
    lock_fd = _lock_link(link) if link is not None else None  # before anything is touched
    try:
        master, slave = os.openpty()
    except OSError as exc:
        if link is not None and lock_fd is not None:
            _unlock_link(link, lock_fd)
        raise DeviceError(f"cannot create a pseudo-terminal for {url}: {exc}") from exc
    try:
        _make_raw(slave)
        os.set_blocking(master, False)
        slave_name = os.ttyname(slave)
        if link is not None:
            _place_link(link, slave_name)
    except BaseException as exc:
        os.close(master)
        os.close(slave)
        if link is not None and lock_fd is not None:
            _unlock_link(link, lock_fd)
        if isinstance(exc, OSError):
            raise DeviceError(f"cannot create a pseudo-terminal for {url}: {exc}") from exc
        raise
    return PtyDevice(url, asyncio.get_running_loop(), master, slave, slave_name, link, lock_fd)
