"""The device interface: an async byte stream, plus the thread-safe input buffer every device uses."""

from __future__ import annotations

import abc
import asyncio
import threading
from types import TracebackType
from typing import TypeVar

__all__ = ["Device", "DeviceClosed", "DeviceError"]

_D = TypeVar("_D", bound="Device")


class DeviceError(Exception):
    """A device could not be opened or used (bad URL, missing port, refused connection...)."""


class DeviceClosed(DeviceError):
    """The stream ended: the peer closed it, the port went away, or the device itself was closed."""


class Device(abc.ABC):
    """An async, bidirectional byte stream opened from a URL (see :func:`posbridge.devices.open_device`).

    ``read`` is cancellation-safe: ``await asyncio.wait_for(device.read(), timeout)`` never loses
    bytes, because a read only waits for data to be *available* and then takes it synchronously
    from an internal buffer.
    """

    url: str
    _closed: bool = False

    @abc.abstractmethod
    async def read(self, max_bytes: int = 4096) -> bytes:
        """Return between 1 and ``max_bytes`` bytes, waiting until at least one is available.

        Raises :class:`DeviceClosed` once the stream has ended and buffered bytes are consumed.
        """

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Send all of ``data``; raises :class:`DeviceClosed` if the stream is gone.

        A cancelled write may have sent a prefix of ``data``.
        """

    @abc.abstractmethod
    def discard_input(self) -> int:
        """Drop every byte already received but not yet read; return how many were dropped."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the device. Idempotent; pending and later reads raise :class:`DeviceClosed`."""

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    @property
    def reconnects(self) -> bool:
        """True for devices that serve one peer after another (``tcp-listen://``): after DeviceClosed
        has reported a peer's departure, ``read`` waits for the next peer instead of failing again."""
        return False

    @property
    def own_stream(self) -> bool:
        """True when this opening is a byte stream of its own (a TCP connection): nothing the peer
        sent on an earlier opening can arrive on it. False for a line that outlives its openings
        (a serial port, a pty: the peer's late bytes arrive after a reopen)."""
        return False

    async def __aenter__(self: _D) -> _D:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {getattr(self, 'url', '?')} {state}>"


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Inbox:
    """Received bytes waiting to be read; may be fed from any thread and read from any loop.

    Readers park on a future of their own loop; feeders wake them directly when on that loop's
    thread, otherwise through ``call_soon_threadsafe`` (the virtual pair spans threads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._eof: str | None = None  # reason the stream ended (bytes already buffered stay readable)
        self._closed: str | None = None  # reason the owner closed it (buffer dropped)
        self._waiters: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self._closed is not None:
                return
            self._buf += data
            waiters, self._waiters = self._waiters, []
        _wake(waiters)

    def feed_eof(self, reason: str) -> None:
        """Mark the end of the stream; readers get the buffered bytes first, then DeviceClosed."""
        with self._lock:
            if self._eof is None:
                self._eof = reason
            waiters, self._waiters = self._waiters, []
        _wake(waiters)

    def reset_eof(self) -> None:
        """Start a new stream after an end was reported (a listener's next peer)."""
        with self._lock:
            self._eof = None

    def close(self, reason: str) -> None:
        """Drop buffered bytes; every pending and later read raises DeviceClosed(reason)."""
        with self._lock:
            if self._closed is None:
                self._closed = reason
            self._buf.clear()
            waiters, self._waiters = self._waiters, []
        _wake(waiters)

    def discard(self) -> int:
        with self._lock:
            n = len(self._buf)
            self._buf.clear()
        return n

    async def read(self, max_bytes: int) -> bytes:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._closed is not None:
                    raise DeviceClosed(self._closed)
                if self._buf:
                    # Taken synchronously after the wait: a cancellation can only hit the await,
                    # when nothing has been taken yet.
                    data = bytes(self._buf[:max_bytes])
                    del self._buf[:max_bytes]
                    return data
                if self._eof is not None:
                    raise DeviceClosed(self._eof)
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.append(fut)
            try:
                await fut
            finally:
                with self._lock:
                    try:
                        self._waiters.remove(fut)
                    except ValueError:
                        pass


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    if not waiters:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for fut in waiters:
        loop = fut.get_loop()
        if loop is running:
            _set_done(fut)
        else:
            try:
                loop.call_soon_threadsafe(_set_done, fut)
            except RuntimeError:
                pass  # that loop is closed: nobody is waiting there any more


class _InboxDevice(Device):
    """Shared plumbing: reads come from an :class:`_Inbox` the transport feeds."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._inbox = _Inbox()

    def _check_usable(self) -> None:
        """Hook: raise DeviceError if the device cannot be used from the current context."""

    def _after_read(self) -> None:
        """Hook: called after bytes were taken (resume a paused transport)."""

    def _pull_pending(self) -> None:
        """Hook: move bytes the OS already holds into the inbox (before discarding input)."""

    async def read(self, max_bytes: int = 4096) -> bytes:
        self._check_usable()
        data = await self._inbox.read(max_bytes)
        self._after_read()
        return data

    def discard_input(self) -> int:
        if not self._closed:
            self._pull_pending()
        return self._inbox.discard()
