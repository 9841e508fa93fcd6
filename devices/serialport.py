"""``serial://PATH?baudrate=…`` and every pyserial URL (``socket://``, ``loop://``, ``rfc2217://``…).

Ports with a file descriptor (real ttys, ``socket://``, ``spy://``) are read from the event loop's
selector through pyserial's own non-blocking ``read``/``write``, so handlers such as ``spy://``
still see the traffic. Handlers without one (``loop://``, ``rfc2217://``) get a reader thread that
feeds the same thread-safe buffer, and a single writer thread that keeps writes in order.
"""

from __future__ import annotations

import asyncio
import functools
import select
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_plus

import serial

from ._fd import CHUNK, _EOF, FdDevice, FdPump
from .base import DeviceClosed, DeviceError, _InboxDevice

__all__ = ["SerialDevice", "ThreadedSerialDevice", "open_serial"]


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on", ""):  # a bare "?rtscts" means on
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _stopbits(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() else value


# Query parameters that become keyword arguments of serial.serial_for_url.
PARAMETERS: dict[str, Callable[[str], object]] = {
    "baudrate": int,
    "bytesize": int,
    "parity": lambda s: s.strip().upper()[:1],
    "stopbits": _stopbits,
    "timeout": float,  # kept for pyserial compatibility; see ThreadedSerialDevice
    "xonxoff": _bool,
    "rtscts": _bool,
    "dsrdtr": _bool,
    "exclusive": _bool,
}

_THREAD_POLL = 0.05  # seconds a reader thread blocks in read() before checking for close


def _parse_query(url: str, query: str, strict: bool) -> tuple[dict[str, object], list[str]]:
    """Split ``query`` into our pyserial kwargs and (unless ``strict``) segments left for the handler."""
    kwargs: dict[str, object] = {}
    rest: list[str] = []
    unknown: list[str] = []
    for segment in query.split("&"):
        if not segment:
            continue
        raw_key, _, raw_value = segment.partition("=")
        key = unquote_plus(raw_key)
        if key in PARAMETERS:
            value = unquote_plus(raw_value)
            try:
                kwargs[key] = PARAMETERS[key](value)
            except ValueError:
                raise DeviceError(f"{url}: bad value for {key}: {value!r}") from None
        elif strict:
            unknown.append(key)
        else:
            rest.append(segment)
    if unknown:
        raise DeviceError(
            f"{url}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(supported: {', '.join(PARAMETERS)})"
        )
    return kwargs, rest


def _open_reason(exc: BaseException) -> str:
    # pyserial wraps the OSError in a message that repeats the path; the OS reason is clearer.
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
        return f"[Errno {cause.errno}] {cause.strerror}"
    if not isinstance(exc, (serial.SerialException, ValueError, OSError)) and cause is not None:
        # Some handlers fail while formatting their own error (loop:// raises KeyError while
        # reporting an unknown option): the exception underneath is the readable one.
        return str(cause)
    return str(exc)


def _close_quietly(port: serial.SerialBase) -> None:
    try:
        port.close()
    except Exception:
        pass


async def open_serial(url: str) -> _InboxDevice:
    """Open ``serial://PATH?params`` or a pyserial URL such as ``socket://host:port``."""
    scheme, _, rest = url.partition("://")
    target, _, query = rest.partition("?")
    if scheme.lower() == "serial":
        if not target:
            raise DeviceError(f"{url}: no port given, e.g. serial:///dev/ttyACM0?baudrate=115200")
        kwargs, _ = _parse_query(url, query, strict=True)
    else:
        # The handler keeps its own options (logging=…, ign_set_control…); we take only ours.
        kwargs, others = _parse_query(url, query, strict=False)
        target = f"{scheme}://{target}" + (f"?{'&'.join(others)}" if others else "")

    loop = asyncio.get_running_loop()
    opening = loop.run_in_executor(None, functools.partial(serial.serial_for_url, target, **kwargs))
    try:
        port = await asyncio.shield(opening)
    except asyncio.CancelledError:
        # The open goes on in its thread; close what it produces so the port is not left held.
        opening.add_done_callback(
            lambda f: None if f.cancelled() or f.exception() else
            threading.Thread(target=_close_quietly, args=(f.result(),), daemon=True).start()
        )
        raise
    except Exception as exc:
        raise DeviceError(f"cannot open {target}: {_open_reason(exc)}") from exc

    try:
        fd = port.fileno()
    except Exception:
        fd = None
    if isinstance(fd, int) and fd >= 0:
        return SerialDevice(url, loop, port, fd)
    timeout = kwargs.get("timeout")
    poll = timeout if isinstance(timeout, float) and timeout > 0 else _THREAD_POLL
    return ThreadedSerialDevice(url, port, poll)


class SerialDevice(FdDevice):
    """A pyserial port with a file descriptor, driven by the event loop. ``serial`` is the port."""

    def __init__(
        self, url: str, loop: asyncio.AbstractEventLoop, port: serial.SerialBase, fd: int
    ) -> None:
        super().__init__(url, loop)
        self.serial = port
        port.timeout = 0  # read() returns what is there; the selector does the waiting
        port.write_timeout = 0  # write() returns the count written instead of blocking
        sock = getattr(port, "_socket", None)
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            # pyserial's socket:// leaves Nagle on, which delays small frames.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._poll = select.poll()
        self._poll.register(fd, select.POLLOUT)
        self._pump = FdPump(loop, fd, self._recv, self._send, self._inbox, self._inbox.feed_eof, url)
        self._pump.start()

    def _recv(self, n: int) -> bytes:
        try:
            data = self.serial.read(n)
        except serial.SerialException as exc:
            raise _EOF(str(exc)) from exc
        if not data:
            raise BlockingIOError
        return data

    def _send(self, view: memoryview) -> int:
        # With write_timeout=0 pyserial spins on EAGAIN, so only call it when the fd is writable.
        if not self._poll.poll(0):
            raise BlockingIOError
        try:
            return self.serial.write(view) or 0
        except serial.SerialException as exc:
            raise DeviceClosed(f"{self.url}: {exc}") from exc

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        reason = f"{self.url}: device closed"
        if self._pump is not None:
            self._pump.stop(reason)
        self._inbox.close(reason)
        # In a thread: pyserial's socket:// close sleeps 0.3 s.
        await asyncio.to_thread(_close_quietly, self.serial)


class ThreadedSerialDevice(_InboxDevice):
    """A pyserial port without a file descriptor (``loop://``, ``rfc2217://``…).

    A reader thread blocks in ``read`` (``timeout`` from the URL is its poll interval) and feeds
    the buffer; writes run in one writer thread, in order. Usable from any event loop.
    """

    def __init__(self, url: str, port: serial.SerialBase, poll: float) -> None:
        super().__init__(url)
        self.serial = port
        port.timeout = poll
        self._stopping = threading.Event()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devices-serial-write")
        self._thread = threading.Thread(
            target=self._read_loop, name=f"devices-serial-read {url}", daemon=True
        )
        self._thread.start()

    def _read_loop(self) -> None:
        port = self.serial
        while not self._stopping.is_set():
            try:
                data = port.read(max(1, min(port.in_waiting, CHUNK)))
            except Exception as exc:
                if not self._stopping.is_set():
                    self._inbox.feed_eof(f"{self.url}: {exc}")
                return
            self._inbox.feed(data)

    def _write_all(self, data: bytes) -> None:
        if self._stopping.is_set():
            raise DeviceClosed(f"{self.url}: device closed")
        try:
            self.serial.write(data)
        except serial.SerialException as exc:
            raise DeviceClosed(f"{self.url}: {exc}") from exc

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise DeviceClosed(f"{self.url}: device closed")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._write_all, bytes(data))

    def discard_input(self) -> int:
        dropped = 0
        if not self._closed:
            try:
                dropped = self.serial.in_waiting
                self.serial.reset_input_buffer()
            except Exception:
                dropped = 0
        return dropped + self._inbox.discard()

    def _shutdown(self) -> None:
        cancel = getattr(self.serial, "cancel_read", None)
        if cancel is not None:
            try:
                cancel()
            except Exception:
                pass
        self._thread.join(self.serial.timeout + 1.0)
        _close_quietly(self.serial)
        self._writer.shutdown(wait=False)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._inbox.close(f"{self.url}: device closed")
        await asyncio.to_thread(self._shutdown)
