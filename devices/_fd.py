"""Moving bytes between a non-blocking file descriptor and an inbox with the event loop's selector."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable

from .base import DeviceClosed, DeviceError, _Inbox, _InboxDevice, _set_done

CHUNK = 65536
# Stop reading from the OS while this much is unread, so a flooding peer meets backpressure.
HIGH_WATER = 4 * 1024 * 1024

# Errors that mean "the other side is gone" rather than "something is wrong here".
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.EIO, errno.ENXIO, errno.ENODEV)


class _EOF(Exception):
    """Raised by a ``recv`` function: the stream ended, with the reason as message."""


class FdPump:
    """Reads ``fd`` into ``inbox`` whenever it is readable; writes with backpressure.

    ``recv(n)`` returns non-empty bytes, ``b""`` at EOF, raises BlockingIOError when nothing is
    pending, ``_EOF``/OSError when the stream broke. ``send(view)`` returns the count written or
    raises BlockingIOError. Everything runs on ``loop``, the loop that opened the device.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        recv: Callable[[int], bytes],
        send: Callable[[memoryview], int],
        inbox: _Inbox,
        on_eof: Callable[[str], None],
        name: str,
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._recv = recv
        self._send = send
        self._inbox = inbox
        self._on_eof = on_eof
        self._name = name
        self._reading = False
        self._ended = False
        self._stopped = False
        self._write_lock = asyncio.Lock()
        self._write_waiter: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._resume()

    def _resume(self) -> None:
        if not self._reading and not self._ended and not self._stopped:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def maybe_resume(self) -> None:
        if not self._reading and len(self._inbox) < HIGH_WATER // 2:
            self._resume()

    def _on_readable(self) -> None:
        self._pull(until_empty=False)

    def drain(self) -> None:
        """Pull everything the OS holds right now (used before discarding input)."""
        if not self._ended and not self._stopped:
            self._pull(until_empty=True)

    def _pull(self, until_empty: bool) -> None:
        while True:
            try:
                data = self._recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except _EOF as exc:
                self._end(f"{self._name}: {exc}")
                return
            except OSError as exc:
                self._end(f"{self._name}: {exc}")
                return
            if not data:
                self._end(f"{self._name}: closed by the peer")
                return
            self._inbox.feed(data)
            if len(self._inbox) >= HIGH_WATER:
                self._pause()
                return
            if not until_empty:
                return

    def _end(self, reason: str) -> None:
        self._pause()
        self._ended = True
        self._on_eof(reason)

    async def write(self, data: bytes) -> None:
        view = memoryview(data).cast("B")
        async with self._write_lock:
            while view:
                if self._stopped:
                    raise DeviceClosed(f"{self._name}: device closed")
                try:
                    n = self._send(view)
                except (BlockingIOError, InterruptedError):
                    await self._writable()
                    continue
                except DeviceError:
                    raise
                except OSError as exc:
                    if isinstance(exc, ConnectionError) or exc.errno in _GONE:
                        raise DeviceClosed(f"{self._name}: {exc}") from exc
                    raise DeviceError(f"{self._name}: write failed: {exc}") from exc
                view = view[n:]

    async def _writable(self) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()
        self._write_waiter = fut
        self._loop.add_writer(self._fd, _set_done, fut)
        try:
            await fut
        finally:
            # After stop() the fd may be closed and its number reused: stop() already removed it.
            if not self._stopped:
                self._loop.remove_writer(self._fd)
            self._write_waiter = None

    def stop(self, reason: str) -> None:
        """Unregister from the loop (call before closing the fd); a blocked write gets DeviceClosed."""
        if self._stopped:
            return
        self._pause()
        self._stopped = True
        if self._write_waiter is not None:
            self._loop.remove_writer(self._fd)
            if not self._write_waiter.done():
                self._write_waiter.set_exception(DeviceClosed(reason))


class FdDevice(_InboxDevice):
    """A device whose bytes flow through one FdPump bound to the loop that opened it."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(url)
        self._loop = loop
        self._pump: FdPump | None = None

    def _check_usable(self) -> None:
        # add_reader/add_writer registrations live in the opening loop's selector.
        if not self._closed and asyncio.get_running_loop() is not self._loop:
            raise DeviceError(
                f"{self.url}: used from an event loop other than the one that opened it; "
                "open the device in the loop (thread) that uses it"
            )

    def _after_read(self) -> None:
        if self._pump is not None:
            self._pump.maybe_resume()

    def _pull_pending(self) -> None:
        if self._pump is not None:
            self._pump.drain()

    async def close(self) -> None:
        if self._closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop and self._loop.is_running():
            # Selector registrations may only be touched from the owning loop's thread.
            done = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
            await asyncio.wrap_future(done)
        else:
            # Same loop, or the owning loop is gone (its registrations went with it).
            await self._close()

    async def _close(self) -> None:
        """Release the transport; runs on the owning loop (or after it closed)."""
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        self._check_usable()
        if self._closed:
            raise DeviceClosed(f"{self.url}: device closed")
        if self._pump is None:
            raise DeviceClosed(f"{self.url}: not connected")
        await self._pump.write(data)
