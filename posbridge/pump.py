"""Drives a sans-IO protocol session over a device: the only place where bytes meet time.

One :class:`SessionPump` per open link. A reader task feeds the session what the device delivers,
with the current time; a loop timer calls the session's ``poll`` at its next deadline; whatever
the session wants sent is written by a writer task. Session events are queued for the
application (ECR client or virtual terminal).

Per exchange this costs one read wake-up per received chunk and one timer re-arm per change, no
task per iteration: the pump sits on the hot path of every transaction (benchmarks/run.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Callable

from devices import Device, DeviceClosed, DeviceError
from protocols.common.errors import Disconnected
from protocols.common.session import Failed, Session

Trace = Callable[[str, bytes], None]  # ("rx" | "tx", bytes)
log = logging.getLogger("posbridge.pump")


class LinkClosed:
    """Event: the device closed (the peer disconnected); the session was reset."""

    def __repr__(self) -> str:
        return "LinkClosed()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinkClosed)

    __hash__ = object.__hash__


class SessionPump:
    """Moves bytes between ``device`` and ``session``; see the module docstring.

    ``keep_open`` keeps reading after the device reports a closed peer (listening devices such as
    ``tcp-listen://`` and ptys serve the next peer); otherwise the pump stops reading there.
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._outbox: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None
        self.last_rx = float("-inf")  # clock() when bytes last arrived

    def start(self) -> None:
        """Start pumping on the running loop."""
        if self._reader is None:
            self._loop = asyncio.get_running_loop()
            self._reader = self._loop.create_task(self._read_loop(), name="posbridge-pump")
            self._changed()

    async def stop(self) -> None:
        """Stop pumping; bytes the session still wanted sent are written first, if possible."""
        with contextlib.suppress(Exception):
            await self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in (self._reader, self._writer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._reader = self._writer = None

    @property
    def reading(self) -> bool:
        """False once the device has closed under the pump (or before :meth:`start`)."""
        return self._reader is not None and not self._reader.done()

    def act(self, action: Callable[[float], None]) -> None:
        """Run ``action(now)`` on the session (send a message…); the pump writes what follows."""
        action(self.clock())
        self._changed()

    async def flush(self) -> None:
        """Write everything queued (waits for a write already under way)."""
        self._take_output()
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        if self._outbox:
            await self._write_all()

    async def next_event(self, timeout: float | None = None) -> Any:
        """The next session event (raises TimeoutError after ``timeout`` seconds)."""
        if timeout is None:
            return await self.events.get()
        return await asyncio.wait_for(self.events.get(), timeout)

    # --- internals ----------------------------------------------------------------------------
    def _dispatch(self, events: list[Any]) -> None:
        for event in events:
            self.events.put_nowait(event)

    def _changed(self) -> None:
        """After the session changed: send its output, re-arm its timer."""
        self._take_output()
        if self._outbox and (self._writer is None or self._writer.done()) and self._loop is not None:
            self._writer = self._loop.create_task(self._write_all())
        deadline = self.session.next_deadline()
        if deadline == self._armed_for:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_later(max(0.0, deadline - self.clock()), self._on_timer)

    def _take_output(self) -> None:
        data = self.session.data_to_send()
        if data:
            if self.trace:
                self.trace("tx", data)
            self._outbox.append(data)

    async def _write_all(self) -> None:
        while self._outbox:
            data = b"".join(self._outbox)
            self._outbox.clear()
            try:
                await self.device.write(data)
            except DeviceClosed:
                self._outbox.clear()  # the reader reports the closed peer
                return
            except DeviceError as error:
                # The link's timers fail the exchange (no ACK); the cause is logged, not lost.
                self._outbox.clear()
                log.warning("write to %s failed: %s", self.device.url, error)
                return

    def _on_timer(self) -> None:
        self._timer = None
        self._armed_for = None
        self._dispatch(self.session.poll(self.clock()))
        self._changed()

    async def _read_loop(self) -> None:
        session = self.session
        just_closed = False
        while True:
            try:
                data = await self.device.read()
            except DeviceClosed as closed:
                if not just_closed:
                    self._dispatch(self._closed(str(closed)))
                    self._changed()
                # Listening devices wait in read() for their next peer; one that reports the
                # close again at once (an in-memory pair whose peer left) has no next peer.
                if not self.keep_open or just_closed or getattr(self.device, "closed", False):
                    return
                just_closed = True
                await asyncio.sleep(0)
                continue
            just_closed = False
            if self.trace:
                self.trace("rx", data)
            now = self.last_rx = self.clock()
            events = session.receive(data, now)
            events += session.poll(now)
            self._dispatch(events)
            self._changed()

    def _closed(self, why: str) -> list[Any]:
        events: list[Any] = []
        if getattr(self.session, "busy", False):
            events.append(Failed(Disconnected(why or "the device closed")))
        reset = getattr(self.session, "reset", None)
        if reset:
            reset()
        events.append(LinkClosed())
        return events
