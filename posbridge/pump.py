"""Drives a sans-IO protocol session over a device: the only place where bytes meet time.

One :class:`SessionPump` per open link. It reads the device, feeds the session with the current
time, expires the session's timers at their deadlines, writes what the session wants sent and
queues the session's events for the application (ECR client or virtual terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Callable

from devices import Device, DeviceClosed
from protocols.common.errors import Disconnected
from protocols.common.session import Failed, Session

Trace = Callable[[str, bytes], None]  # ("rx" | "tx", bytes)


class LinkClosed:
    """Event: the device closed (the peer disconnected); the session was reset."""

    def __repr__(self) -> str:
        return "LinkClosed()"


class SessionPump:
    """Moves bytes between ``device`` and ``session``; see the module docstring.

    ``keep_open`` keeps pumping after the device reports a closed peer (listening devices such as
    ``tcp-listen://`` and ptys serve the next peer); otherwise the pump stops there.
    """

    def __init__(
        self,
        device: Device,
        session: Session,
        *,
        clock: Callable[[], float] = time.monotonic,
        trace: Trace | None = None,
        keep_open: bool = False,
    ) -> None:
        self.device = device
        self.session = session
        self.clock = clock
        self.trace = trace
        self.keep_open = keep_open
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._read: asyncio.Task[bytes] | None = None

    def start(self) -> None:
        """Start pumping in a background task of the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="posbridge-pump")

    async def stop(self) -> None:
        """Stop pumping (pending bytes the session wanted sent are written first)."""
        with contextlib.suppress(Exception):
            await self.flush()
        for task in (self._task, self._read):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._read = None

    def act(self, action: Callable[[float], None]) -> None:
        """Run ``action(now)`` on the session (send a message...) and let the pump write it."""
        action(self.clock())
        self._wakeup.set()

    async def flush(self) -> None:
        """Write whatever the session wants sent."""
        data = self.session.data_to_send()
        if data:
            if self.trace:
                self.trace("tx", data)
            await self.device.write(data)

    async def next_event(self, timeout: float | None = None) -> Any:
        """The next session event (raises TimeoutError after ``timeout`` seconds)."""
        if timeout is None:
            return await self.events.get()
        return await asyncio.wait_for(self.events.get(), timeout)

    async def _run(self) -> None:
        session = self.session
        while True:
            try:
                await self.flush()
            except DeviceClosed:
                pass  # the read below reports the closed peer
            deadline = session.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            if self._read is None:
                self._read = asyncio.ensure_future(self.device.read())
            wake = asyncio.ensure_future(self._wakeup.wait())
            done, _ = await asyncio.wait({self._read, wake}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not wake.done():
                wake.cancel()
            self._wakeup.clear()
            events: list[Any] = []
            if self._read in done:
                read, self._read = self._read, None
                try:
                    data = read.result()
                except DeviceClosed as closed:
                    events = self._closed(str(closed))
                    for event in events:
                        self.events.put_nowait(event)
                    if not self.keep_open:
                        return
                    continue
                if self.trace:
                    self.trace("rx", data)
                events = session.receive(data, self.clock())
            events += session.poll(self.clock())
            for event in events:
                self.events.put_nowait(event)

    def _closed(self, why: str) -> list[Any]:
        events: list[Any] = []
        if session_busy(self.session):
            events.append(Failed(Disconnected(why or "the device closed")))
        reset = getattr(self.session, "reset", None)
        if reset:
            reset()
        events.append(LinkClosed())
        return events


def session_busy(session: Session) -> bool:
    """True while the session is in the middle of an exchange."""
    return bool(getattr(session, "busy", False))
