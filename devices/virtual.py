"""``virtual://NAME``: an in-memory null modem; the first opener of NAME gets end A, the second end B.

Like python-can's ``virtual`` bus, the name is the rendezvous: two parts of one process (even in
different threads, each with its own event loop) open the same URL and are connected. Bytes written
by one end before the other opens are kept for it. Once neither end is open the name is free again.
"""

from __future__ import annotations

import threading

from .base import DeviceClosed, DeviceError, _Inbox, _InboxDevice

__all__ = ["VirtualDevice"]

_FREE, _OPEN, _CLOSED = "free", "open", "closed"

_registry_lock = threading.Lock()
_channels: dict[str, _Channel] = {}


class _Channel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.inboxes = (_Inbox(), _Inbox())  # inboxes[i] is what end i reads
        self.state = [_FREE, _FREE]


class VirtualDevice(_InboxDevice):
    """One end of a ``virtual://`` pair; ``side`` is ``"A"`` (first opener) or ``"B"``."""

    def __init__(self, channel: _Channel, index: int) -> None:
        super().__init__(f"virtual://{channel.name}")
        self.name = channel.name
        self.side = "AB"[index]
        self._channel = channel
        self._index = index
        self._inbox = channel.inboxes[index]

    async def write(self, data: bytes) -> None:
        data = bytes(data)
        ch = self._channel
        with _registry_lock:
            # Checked and fed under the lock so a concurrent close cannot slip in between.
            if self._closed:
                raise DeviceClosed(f"{self.url}: device closed")
            if ch.state[1 - self._index] == _CLOSED:
                raise DeviceClosed(f"{self.url}: the other end is closed")
            ch.inboxes[1 - self._index].feed(data)

    async def close(self) -> None:
        ch = self._channel
        with _registry_lock:
            if self._closed:
                return
            self._closed = True
            ch.state[self._index] = _CLOSED
            if _OPEN not in ch.state and _channels.get(ch.name) is ch:
                del _channels[ch.name]
        self._inbox.close(f"{self.url}: device closed")
        ch.inboxes[1 - self._index].feed_eof(f"{self.url}: the other end closed")


def _claim(name: str) -> VirtualDevice:
    """Open the next free end of ``name`` (caller holds the registry lock)."""
    ch = _channels.get(name)
    if ch is None:
        ch = _channels[name] = _Channel(name)
    for index in (0, 1):
        if ch.state[index] == _FREE:
            ch.state[index] = _OPEN
            return VirtualDevice(ch, index)
    raise DeviceError(
        f"virtual://{name} already has two ends open (a virtual pair connects exactly two "
        "openers); close one, or pick another name"
    )


def open_virtual(name: str) -> VirtualDevice:
    """Open one end of the in-memory pair called ``name``."""
    if not name:
        raise DeviceError("virtual:// needs a name, e.g. virtual://terminal1")
    with _registry_lock:
        return _claim(name)


def open_virtual_pair(name: str) -> tuple[VirtualDevice, VirtualDevice]:
    """Open both ends of ``name`` at once; refuses a name somebody already uses."""
    if not name:
        raise DeviceError("virtual:// needs a name, e.g. virtual://terminal1")
    with _registry_lock:
        if name in _channels:
            raise DeviceError(f"virtual://{name} is already in use")
        return _claim(name), _claim(name)


async def open_virtual_url(url: str) -> VirtualDevice:
    """``virtual://NAME``: one end of the in-memory pair ``NAME`` (the ``virtual`` URL scheme)."""
    name, sep, query = url.partition("://")[2].partition("?")
    if sep:
        raise DeviceError(f"{url}: virtual:// takes no parameters (got {query!r})")
    return open_virtual(name)
