"""Drives a sans-IO protocol session over a device: the only place where bytes meet time.

One :class:`SessionPump` per open link. A reader task feeds the session what the device delivers,
with the current time; a loop timer calls the session's ``poll`` at its next deadline; whatever
the session wants sent is written by a writer task. Session events are queued for the
application (ECR client or virtual terminal).

Per exchange this costs one read wake-up per received chunk and one timer re-arm per change, no
task per iteration: the pump sits on the hot path of every transaction (benchmarks/run.py).

What the session wants sent is handed to the writer *before* the events that caused it are given
to the application: the link's ACK of a request leaves before the application starts its work.

The reader never dies of what it reads: an exception raised by the session (a bug, a field no
one foresaw) is logged, the session is reset and the exchange in hand is reported as
:class:`~posbridge.protocols.common.session.Failed` with a :class:`PumpError`; a device that fails to read
is retried with a back-off until it is closed; a callback that raises (the trace, a wire logger, a
console that cannot print) is logged and costs nothing else. Should the reader task end anyway, the
exchange in hand hears it as ``Failed(ReaderStopped(...))`` -- never a silent hang -- and the pump
starts a new reader (the session afresh) shortly after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar, Union

from posbridge.devices import Device, DeviceClosed, DeviceError
from posbridge.protocols.common.describe import FrameDescription
from posbridge.protocols.common.model import mask_decoded
from posbridge.protocols.common.parts import DescribedStream, Piece, joined
from posbridge.protocols.common.errors import Disconnected, LinkError
from posbridge.protocols.common.model import mask_card_numbers
from posbridge.protocols.common.session import Failed, Session, SessionEvent

Trace = Callable[[str, bytes], None]  # ("rx" | "tx", bytes)
S = TypeVar("S", bound="Session[Any]")
log = logging.getLogger("posbridge.pump")
wire_log = logging.getLogger("posbridge.wire")

_READ_RETRY_FIRST, _READ_RETRY_MAX = 0.05, 1.0  # back-off after a device read error, seconds
_RESTART_STEP, _RESTART_MAX = 0.05, 2.0  # back-off before a reader that died again is restarted, seconds


class PumpError(LinkError):
    """The pump caught an error inside the session or the device; the session was reset."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("internal", detail)


class ReaderStopped(LinkError):
    """The pump's reader task ended although the device is still open; ``error`` is why.

    Reported as ``Failed(ReaderStopped(...), exchange=...)``: the exchange in hand cannot go on (the
    pump starts a new reader with the session reset).
    """

    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        super().__init__("reader_stopped", summarize_error(error) if error is not None else "")


def summarize_error(error: BaseException, limit: int = 200) -> str:
    """``error`` in one line for a log or an event: its type and message, digit runs that could be
    a card number masked (an exception may quote a field from the line), at most ``limit`` characters."""
    text = mask_card_numbers(f"{type(error).__name__}: {error}")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class LinkClosed:
    """Event: the device closed (the peer disconnected); the session was reset."""

    def __repr__(self) -> str:
        return "LinkClosed()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinkClosed)

    __hash__ = object.__hash__


PumpEvent = Union[SessionEvent, LinkClosed]
"""What :meth:`SessionPump.next_event` returns: the session's events, and the device's close."""


class SessionPump(Generic[S]):
    """Moves bytes between ``device`` and ``session``; see the module docstring.

    Generic in its session: ``SessionPump[EcrSession]`` offers ``pump.session.start(...)`` typed.
    ``keep_open`` keeps reading after the device reports a closed peer (listening devices such as
    ``tcp-listen://`` and ptys serve the next peer); otherwise the pump stops reading there.
    """

    def __init__(
        self,
        device: Device,
        session: S,
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
        self.events: asyncio.Queue[PumpEvent] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._outbox: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None
        self._restart: asyncio.TimerHandle | None = None
        self._restart_delay = 0.0  # at once the first time: the next operation must find a reader
        self._stopped = False
        self.last_rx = float("-inf")  # clock() when bytes last arrived

    def start(self) -> None:
        """Start pumping on the running loop."""
        if self._reader is None:
            self._loop = asyncio.get_running_loop()
            self._stopped = False
            self._start_reader()
            self._changed()

    def restart(self) -> None:
        """Start the reader again after a :class:`ReaderStopped` (the session starts afresh).

        The pump does so by itself shortly after reporting it (with a growing pause should the
        reader keep dying); calling it sooner is harmless.
        """
        if self._loop is None or self._stopped or self.reading or self.device.closed:
            return
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        self._reset_session()
        self._start_reader()
        self._changed()

    def _start_reader(self) -> None:
        assert self._loop is not None
        self._reader = self._loop.create_task(self._read_loop(), name="posbridge-pump")
        self._reader.add_done_callback(self._reader_done)

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        if task is not self._reader or task.cancelled() or self.device.closed:
            return
        error = task.exception()
        if error is None:
            return  # a normal end: the device closed, or its only peer left for good
        log.error("the reader of %s stopped: %s; starting it again in %g s", self.device.url, summarize_error(error),
                  self._restart_delay)
        self.events.put_nowait(Failed(ReaderStopped(error), exchange=self._current_exchange()))
        if self._loop is not None and self._restart is None:
            self._restart = self._loop.call_later(self._restart_delay, self._restart_now)
            self._restart_delay = min(max(_RESTART_STEP, self._restart_delay * 2), _RESTART_MAX)

    def _restart_now(self) -> None:
        self._restart = None
        self.restart()

    async def stop(self) -> None:
        """Stop pumping; bytes the session still wanted sent are written first, if possible."""
        self._stopped = True
        with contextlib.suppress(Exception):
            await self.flush()
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
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
        """Run ``action(now)`` on the session (send a message…); the pump writes what follows.

        An exception from ``action`` reaches the caller; what the session queued before it is sent.
        """
        try:
            action(self.clock())
        finally:
            self._changed()

    async def flush(self) -> None:
        """Write everything queued (waits for a write already under way)."""
        self._take_output()
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        if self._outbox:
            await self._write_all()

    async def next_event(self, timeout: float | None = None) -> PumpEvent:
        """The next session event (raises TimeoutError after ``timeout`` seconds)."""
        if timeout is None:
            return await self.events.get()
        return await asyncio.wait_for(self.events.get(), timeout)

    # --- internals ----------------------------------------------------------------------------
    def _dispatch(self, events: list[PumpEvent]) -> None:
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
            self._traced("tx", data)
            self._outbox.append(data)

    def _traced(self, direction: str, data: bytes) -> None:
        """Hand ``data`` to the trace callback; whatever it raises is logged, never passed on: a
        trace (a console that cannot print, a describer bug) must not cost the link anything."""
        if self.trace is None:
            return
        try:
            self.trace(direction, data)
        except Exception as error:
            log.warning("the trace callback failed on %d %s bytes: %s", len(data), direction, summarize_error(error),
                        exc_info=log.isEnabledFor(logging.DEBUG))

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
        try:
            events = self.session.poll(self.clock())
        except Exception as error:  # a session bug must not stop the timers for good
            events = self._session_failed(error)
        self._changed_then_dispatch(events)

    def _changed_then_dispatch(self, events: list[PumpEvent]) -> None:
        """Hand the session's output to the writer, then its events to the application: the
        link's ACK (and any answer) leaves before the application starts its work. A session that
        raises while its output or deadline is taken costs its exchange, not the caller."""
        try:
            self._changed()
        except Exception as error:
            events = [*events, *self._session_failed(error)]
            with contextlib.suppress(Exception):  # the session was reset: its timer is off now
                self._changed()
        self._dispatch(events)

    def _current_exchange(self) -> int | None:
        try:
            return self.session.current_exchange
        except Exception:  # pragma: no cover - a broken session; the exchange is unknown then
            return None

    def _reset_session(self) -> None:
        try:
            self.session.reset()
        except Exception as error:  # pragma: no cover - a reset that fails leaves nothing better
            log.error("resetting the session of %s failed: %s", self.device.url, summarize_error(error))

    def _session_failed(self, error: Exception) -> list[PumpEvent]:
        """The session raised: log it, reset it, and report the exchange in hand as failed."""
        log.error("the %s session of %s raised %s; the exchange in hand is dropped", type(self.session).__name__,
                  self.device.url, summarize_error(error), exc_info=log.isEnabledFor(logging.DEBUG))
        exchange = self._current_exchange()
        self._reset_session()
        return [Failed(PumpError(summarize_error(error)), exchange=exchange)]

    async def _read_loop(self) -> None:
        session = self.session
        just_closed = False
        retry = _READ_RETRY_FIRST
        while True:
            try:
                data = await self.device.read()
            except DeviceClosed as closed:
                if not just_closed:
                    self._changed_then_dispatch(self._closed(str(closed)))
                if not self.keep_open or self.device.closed:
                    return
                if self.device.reconnects:
                    continue  # a listener: read() waits for its next peer (empty peers included)
                # Other devices: one that reports the close again at once (an in-memory pair whose
                # peer left) has no next peer.
                if just_closed:
                    return
                just_closed = True
                await asyncio.sleep(0)
                continue
            except Exception as error:  # a device error: never a dead reader while the device is open
                if self.device.closed:
                    return
                log.warning("reading %s failed: %s (retrying in %g s)", self.device.url, summarize_error(error), retry)
                if retry == _READ_RETRY_FIRST:  # the line is gone for now: once per failure
                    self._changed_then_dispatch(self._closed(summarize_error(error)))
                await asyncio.sleep(retry)
                retry = min(retry * 2, _READ_RETRY_MAX)
                continue
            just_closed = False
            retry = _READ_RETRY_FIRST
            self._restart_delay = 0.0  # this reader lives: a later death is restarted at once again
            self._traced("rx", data)
            now = self.last_rx = self.clock()
            try:
                events = session.receive(data, now)
                events += session.poll(now)
            except Exception as error:
                events = self._session_failed(error)
            self._changed_then_dispatch(events)

    def _closed(self, why: str) -> list[PumpEvent]:
        events: list[PumpEvent] = []
        try:
            busy = self.session.busy
        except Exception:  # pragma: no cover - a broken session: report the exchange as lost
            busy = True
        if busy:
            events.append(Failed(Disconnected(why or "the device closed"), exchange=self._current_exchange()))
        self._reset_session()
        events.append(LinkClosed())
        return events


QUIET_FLUSH = 0.5
"""Seconds of silence in one direction after which a trace shows what its stream holds (a half
frame, digits ending noise) as it is."""


class QuietTimers:
    """One timer per direction: ``on_quiet(direction)`` runs once that direction has been silent
    for ``seconds`` while its stream holds bytes, so a trace (the console's, the monitor's) shows a
    half frame the terminal sent before falling silent instead of holding it for ever."""

    def __init__(self, seconds: float, on_quiet: Callable[[str], None]) -> None:
        self.seconds = seconds
        self.on_quiet = on_quiet
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def restart(self, direction: str, holding: bool) -> None:
        """Bytes came in ``direction``: its clock starts again, if its stream is ``holding`` any."""
        self.cancel(direction)
        if holding:
            with contextlib.suppress(RuntimeError):  # no running loop (fed outside one): nothing to wait for
                self._timers[direction] = asyncio.get_running_loop().call_later(
                    self.seconds, self._fire, direction)

    def cancel(self, direction: str | None = None) -> None:
        """Stop ``direction``'s timer (None: every direction's)."""
        for name in list(self._timers) if direction is None else [direction]:
            timer = self._timers.pop(name, None)
            if timer is not None:
                timer.cancel()

    def _fire(self, direction: str) -> None:
        self._timers.pop(direction, None)
        self.on_quiet(direction)


class WireLogger:
    """A :data:`Trace` that logs every frame on the line, in hex and decoded (``-vv``).

    ``describe`` is the protocol's frame describer (``ProtocolSpec.describe``); it masks the card
    numbers it knows as such, and any other run of digits that could be one is masked here. Bytes
    are gathered per direction until they end on a frame boundary, so a frame split over several
    reads is logged once, whole (a half frame is held at most ``limit`` bytes). The parts of a split
    message (INPAS SOH frames) are held until its final part and logged in one line, the final part
    with the whole message's fields: a card number cut between two parts is masked in both
    (:class:`~posbridge.protocols.common.parts.DescribedStream`); :meth:`flush` logs what is held.
    """

    def __init__(self, describe: Callable[[bytes], list[FrameDescription]],
                 logger: logging.Logger = wire_log, limit: int = 70_000) -> None:
        self.describe = describe
        self.log = logger
        self.limit = limit
        self._streams: dict[str, DescribedStream] = {}

    def __call__(self, direction: str, data: bytes) -> None:
        if not self.log.isEnabledFor(logging.DEBUG):
            return
        stream = self._streams.get(direction)
        if stream is None:
            stream = self._streams[direction] = DescribedStream(self.describe, limit=self.limit)
        self._line(direction, stream.feed(data))

    def flush(self) -> None:
        """Log what is still held: a half frame as it is, the parts of a split message whose final
        part never came."""
        for direction, stream in self._streams.items():
            self._line(direction, stream.flush())

    def _line(self, direction: str, pieces: list[Piece]) -> None:
        if not pieces:
            return
        safe, entries = joined(pieces)
        # Masked before clipping: a cut card number would no longer look like one.
        decoded = [_clip_values(mask_decoded(entry.to_dict())) for entry in entries]
        self.log.debug("%s %s %s", direction, safe.hex(), json.dumps(decoded, ensure_ascii=False, default=str))


def _clip_values(value: Any, limit: int = 256) -> Any:
    """Decoded frames for a log line: a hostile 5,000-character value is shown by its head."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:64]}…({len(value)} characters)"
    if isinstance(value, dict):
        return {key: _clip_values(item, limit) for key, item in value.items()}
    if isinstance(value, list):
        return [_clip_values(item, limit) for item in value]
    return value
