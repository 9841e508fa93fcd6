"""The ECR client: what cash-register software calls to run operations on a terminal.

:class:`EcrClient` is the asyncio core; :class:`BlockingEcrClient` wraps it for plain, blocking
cash-register code. Both own a write-ahead :class:`~posbridge.journal.Journal`.

The order of every operation, and why (``docs/recovery.md`` has the whole story):

1. the request is checked (bad input never reaches the journal or the line);
2. the terminal's cross-process lock is taken (:mod:`posbridge.ecr.ownership`: one owner per terminal,
   a bounded wait, then :class:`~posbridge.ecr.ownership.TerminalBusy`);
3. the request gets a transaction number unique for the terminal (under that lock);
4. it is journaled ``pending``, then ``sent`` — durably, *before* its first byte is written: when
   journaling fails nothing is sent at all, not even when the client closes;
5. the exchange runs under an overall deadline; the answer must match the request
   (:func:`~posbridge.ecr.answers.answer_problems`), else it is an
   :class:`~posbridge.protocols.common.errors.AnswerMismatch`;
6. the outcome is journaled ``done``; a link failure, a timeout, a mismatch or an interruption
   leaves the entry ``unknown`` for :meth:`EcrClient.recover`, which resolves it by emergency
   reversal and believes only answers that prove something (:data:`RECOVERY_TABLE`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

from posbridge import protocols
from posbridge.devices import Device, open_device
from posbridge.protocols.common.errors import AnswerMismatch, Disconnected, ExchangeTimeout, LinkError, NotSupported
from posbridge.ecr.gateway import GatewayRelay, GatewaySettings
from posbridge.protocols.common.session import CashierPrompt, Completed, EcrSession, Failed, GatewayCommand, Progress

from posbridge.ecr.answers import answer_problems
from posbridge.journal import EcrEntry, Journal
from posbridge.model import RUB, Operation, PosbridgeError, Request, Result, format_amount
from posbridge.ecr.ownership import DEFAULT_LOCK_WAIT, TerminalLock, canonical_port, owner_alive, this_process
from posbridge.pump import LinkClosed, SessionPump, Trace
from posbridge.capture import CaptureWriter

PromptHandler = Callable[[CashierPrompt], "tuple[str, bool] | Awaitable[tuple[str, bool]]"]
ProgressHandler = Callable[[Progress], None]
log = logging.getLogger("posbridge.ecr")
T = TypeVar("T")

DEFAULT_DEADLINE = 300.0
"""Seconds one operation may take in all, WAIT packets and dialogs included (``deadline=``).

The longest legitimate operation is a card payment where the card holder is slow: the terminal's
own card wait and PIN entry (about a minute each on SmartSale and Arcus defaults) plus the host
(up to a minute with its retries), or a settlement of a big batch over a 9,600-baud line (a
64 KB report takes ~70 s). Five minutes covers both with room; a terminal that keeps a register
waiting longer (endless WAIT packets) is broken, and the operation's outcome is then unknown."""

HOST_REVERSED = "400"
"""The host's code for "reversal processed" (host-rules.md)."""
HOST_NOTHING_TO_REVERSE = "9020"
"""posbridge's host code for a reversal of an operation the host never saw: nothing was charged."""
HOST_NOT_IN_OPEN_BATCH = "9010"
"""posbridge's host code: the operation is in a settled batch; only a refund can undo it."""

RECOVERY_TABLE = (
    ("journaled, never sent (pending)", "resolved: not sent"),
    ("operation that moves no money", "resolved: no money moved"),
    ("reversal approved, host code 400", "resolved: reversed"),
    (f"reversal approved, host code {HOST_NOTHING_TO_REVERSE}", "resolved: never reached the host"),
    ("reversal approved, no host code (a terminal that does not say), no settlement since",
     "resolved: reversed (the terminal's word)"),
    ("reversal approved, no host code, a settlement since", "refund_needed: check the report"),
    (f"reversal declined {HOST_NOT_IN_OPEN_BATCH} (batch settled)", "refund_needed: refund if charged"),
    ("reversal declined otherwise, no connection, aborted", "stays unknown; said so"),
    ("reversal answer does not match, or the link fails", "stays unknown; said so"),
    ("entry owned by a process that still runs", "skipped; said so"),
)
"""How :meth:`EcrClient.recover` treats what it finds and hears (docs/recovery.md)."""


@dataclass(frozen=True)
class Recovery:
    """What recovery did with one journal entry.

    ``outcome``: ``reversed``, ``not_charged``, ``not_sent``, ``no_money_moved``, ``refund_needed``
    (flagged for a person), ``open`` (still unknown: ``note`` says why) or ``skipped`` (its owner
    still runs). ``result`` is the reversal's answer, when one came.
    """

    entry: EcrEntry
    outcome: str
    note: str = ""
    result: Result | None = None

    @property
    def resolved(self) -> bool:
        """True when the entry no longer needs recovery (flagged entries need a person instead)."""
        return self.outcome in ("reversed", "not_charged", "not_sent", "no_money_moved", "refund_needed")

    def describe(self) -> str:
        """One line for people."""
        request = self.entry.request
        what = request.operation.value if isinstance(request.operation, Operation) else str(request.operation)
        amount = f" {format_amount(request.amount, request.currency or RUB)}" if request.amount is not None else ""
        text = f"#{self.entry.id} {what}{amount} transaction {request.transaction_id or '-'}: {self.outcome}"
        return text + (f" ({self.note})" if self.note else "")


class EcrClient:
    """Runs operations on one terminal over one device (see the module docstring).

    ``port`` is a device URL (``serial:///dev/ttyACM0``, ``tcp://…``, ``virtual://NAME``…) or an
    open :class:`~posbridge.devices.Device`. ``on_prompt`` answers the terminal's cashier dialog: it gets the
    :class:`CashierPrompt` and returns ``(answer, ok)``; without it a dialog is declined.
    ``deadline`` bounds each operation (:data:`DEFAULT_DEADLINE`); ``lock_wait`` bounds the wait
    for a terminal another process is using (:data:`~posbridge.ecr.ownership.DEFAULT_LOCK_WAIT`).
    ``record`` names a capture file (:mod:`posbridge.capture`, card numbers masked) that every byte
    on the line is written to while the client is open; ``posbridge replay`` plays it back.
    ``gateway``: how the client carries the terminal's bank-host connection when the terminal asks
    (INPAS gateway mode, :mod:`posbridge.ecr.gateway`; on by default, ``GatewaySettings(enabled=False)``
    refuses).
    """

    def __init__(
        self,
        port: str | Device,
        protocol: str | protocols.ProtocolSpec = "inpas",
        *,
        journal: Journal | None = None,
        terminal_id: str | None = None,
        timers: protocols.OptionsLike = None,
        on_prompt: PromptHandler | None = None,
        on_progress: ProgressHandler | None = None,
        clock: Callable[[], datetime] = datetime.now,
        monotonic: Callable[[], float] = time.monotonic,
        trace: Trace | None = None,
        deadline: float = DEFAULT_DEADLINE,
        lock_wait: float = DEFAULT_LOCK_WAIT,
        record: str | Path | None = None,
        gateway: GatewaySettings | None = None,
    ) -> None:
        self.port = port
        # A ProtocolSpec too: e.g. arcus2.spec.spec_for_installation(parse_ops_ini(ops.ini bytes), texts)
        self.protocol = protocol if isinstance(protocol, protocols.ProtocolSpec) else protocols.get(protocol)
        self.journal = journal if journal is not None else Journal()
        self.terminal_id = terminal_id
        self.timers = timers  # the protocol's options, or a mapping of them (ProtocolSpec.options)
        self.protocol.options(timers)  # a bad key or value fails here, in one line, before any line is opened
        self.on_prompt = on_prompt
        self.on_progress = on_progress
        self.clock = clock
        self.monotonic = monotonic
        self.trace = trace
        if not deadline > 0:
            raise ValueError(f"deadline must be positive seconds, got {deadline!r}")
        self.deadline = deadline
        self.port_key = canonical_port(port if isinstance(port, str) else port.url)
        self.owner = TerminalLock(self.port_key, wait=lock_wait, clock=lambda: self.clock().timestamp())
        self._me = str(this_process())
        self._device: Device | None = None
        self._owns_device = False
        self._pump: SessionPump[EcrSession] | None = None
        self._lock = asyncio.Lock()
        self._line_suspect = False  # the last exchange failed: the terminal may still be resending
        self._failed_at = float("-inf")
        self._in_flight: Request | None = None  # the request of the exchange on the line
        self.record = record  # a capture file (posbridge.capture) written from open() to close()
        self._recorder: CaptureWriter | None = None
        self.gateway = gateway or GatewaySettings()

    @property
    def journal_key(self) -> str:
        """How the journal names this terminal: its id, else its port in one canonical spelling."""
        return self.terminal_id or self.port_key

    async def open(self) -> None:
        """Take the terminal (its cross-process lock), open the device and start the link.

        The lock comes first and is held until :meth:`close`: a second program must not even read
        the line, or it would take this one's answers. TerminalBusy after ``lock_wait`` seconds.
        """
        if self._pump is not None:
            return
        if self.record is not None and self._recorder is None:  # a capture that cannot be written fails first
            self._recorder = CaptureWriter(self.record, self.protocol, side="ecr",
                                           link={"port": self.port_key, "options": asdict(self.protocol.options(self.timers))})
        try:
            await self.owner.acquire("connected")
        except BaseException:
            self._close_recorder()
            raise
        try:
            if isinstance(self.port, str):
                self._device, self._owns_device = await open_device(self.port), True
            else:
                self._device = self.port
        except BaseException:
            await self.owner.release()
            self._close_recorder()
            raise
        session = self.protocol.ecr_session(timers=self.timers)
        self._pump = SessionPump(self._device, session, clock=self.monotonic, trace=self._trace)
        self._pump.start()

    def _close_recorder(self) -> None:
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def _trace(self, direction: str, data: bytes) -> None:
        if self._recorder is not None:
            self._recorder(direction, data)
        if self.trace is not None:  # looked up per call: a console may switch tracing on later
            self.trace(direction, data)

    async def close(self) -> None:
        """Stop the link, close the device if the client opened it, and give the terminal up."""
        opened = self._pump is not None
        if self._pump is not None:
            await self._pump.stop()
            self._pump = None
        if self._device is not None and self._owns_device:
            await self._device.close()
        self._device = None
        self._close_recorder()
        if opened:
            await self.owner.release()

    async def __aenter__(self) -> EcrClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the core -------------------------------------------------------------------------------
    async def execute(self, request: Request) -> Result:
        """Run one operation and return the terminal's result (declines are results, not errors).

        Raises InvalidRequest before anything is journaled or sent; TerminalBusy when another
        process keeps the terminal longer than ``lock_wait``; JournalError when the journal cannot
        record the operation (then nothing was sent); a LinkError subclass when the exchange fails,
        times out or is answered with a mismatch — the journal then holds the operation as
        "unknown" for :meth:`recover`.
        """
        request.validated()  # before anything is journaled or numbered
        async with self._lock:
            async with self.owner.held(request.operation.value):
                return await self._execute_owned(request)

    async def _execute_owned(self, request: Request) -> Result:
        filled: dict[str, object] = {}
        if request.transaction_id is None and request.operation is not Operation.EMERGENCY_REVERSAL:
            filled["transaction_id"] = self.owner.next_transaction_id(
                self.journal.ecr.last_transaction_id(self.journal_key))
        if request.ecr_datetime is None:
            filled["ecr_datetime"] = self.clock().replace(microsecond=0)
        if request.terminal_id is None and self.terminal_id:
            filled["terminal_id"] = self.terminal_id
        if filled:
            request = request.with_changes(**filled)
        # Journaled before the device is even opened: a journal that cannot record the operation
        # stops it before posbridge touches the line.
        entry = self.journal.ecr.begin(request, self.journal_key, port=self.port_key, owner=self._me)
        self.journal.ecr.sent(entry)  # durable before the first byte: a failure here sends nothing
        try:
            reconnected = self._pump is not None and not self._pump.reading and self._owns_device
            if reconnected:
                await self.close()  # the terminal hung up (TCP): connect again, as ECRs do
            await self.open()  # the lock is held from here until close()
            if reconnected and self._device is not None and self._device.own_stream:
                # The terminal's resends of an answer it could not deliver went to the dead
                # connection: a new one has nothing stale to let die out (6 s for INPAS).
                self._line_suspect = False
        except BaseException:
            self.journal.ecr.resolve(entry, None, how="not_sent")  # nothing reached the line
            raise
        try:
            result = await asyncio.wait_for(self._exchange(request), self.deadline)
            problems = answer_problems(request, result)
            if problems:
                raise AnswerMismatch(problems, result)
        except AnswerMismatch as error:
            self._exchange_failed()
            answer = error.answer if isinstance(error.answer, Result) else None
            self.journal.ecr.unknown(entry, str(error), answer=answer)
            raise
        except LinkError as error:
            self._exchange_failed()
            self.journal.ecr.unknown(entry, str(error))
            raise
        except asyncio.TimeoutError:
            self._exchange_failed()
            overdue = ExchangeTimeout(f"no outcome within the operation's deadline of {self.deadline:g} s")
            self.journal.ecr.unknown(entry, str(overdue))
            raise overdue from None
        except BaseException as error:  # cancelled mid-exchange: the outcome is unknown too
            self._exchange_failed()
            why = "interrupted before its answer came" if isinstance(error, asyncio.CancelledError) else \
                f"interrupted ({type(error).__name__}) before its answer came"
            self.journal.ecr.unknown(entry, why)
            raise
        self.journal.ecr.finish(entry, result)
        return result

    def _exchange_failed(self) -> None:
        self._line_suspect, self._failed_at = True, self.monotonic()
        pump = self._pump
        if pump is not None and pump.session.busy:
            pump.session.reset()  # a deadline or an interruption left the session mid-exchange

    async def _exchange(self, request: Request) -> Result:
        pump = self._pump
        assert pump is not None and self._device is not None
        if self._line_suspect:
            await self._wait_for_quiet_line(pump)
            self._line_suspect = False
        self._device.discard_input()  # stale bytes of an earlier exchange must not answer this one
        while not pump.events.empty():
            pump.events.get_nowait()
        pump.act(lambda now: pump.session.start(request, now))
        self._in_flight = request
        # the terminal's host connection, if it asks us to carry it
        relay = GatewayRelay(self.gateway, max_data=self.protocol.capabilities.gateway_data)
        try:
            return await self._events(pump, relay)
        finally:
            self._in_flight = None
            await relay.close()

    async def _events(self, pump: SessionPump[EcrSession], relay: GatewayRelay) -> Result:
        while True:
            event = await pump.next_event()
            if isinstance(event, Completed):
                return event.result
            if isinstance(event, Failed):
                raise event.error
            if isinstance(event, LinkClosed):
                raise Disconnected("the device closed during the exchange")
            if isinstance(event, Progress) and self.on_progress:
                try:
                    self.on_progress(event)
                except Exception as error:  # a display callback must not cost the operation
                    log.warning("the progress callback failed: %s: %.200s", type(error).__name__, error)
            if isinstance(event, CashierPrompt):
                answer, ok = await self._answer(event)
                pump.act(lambda now: pump.session.answer_prompt(answer, ok, now))
            if isinstance(event, GatewayCommand):
                done, data = await relay.handle(event)
                try:
                    pump.act(lambda now: pump.session.answer_gateway(done, data, now))
                except (ValueError, PosbridgeError) as error:  # an answer the protocol cannot carry
                    log.warning("gateway %s: the answer cannot be sent (%s); refused instead", event.action, error)
                    pump.act(lambda now: pump.session.answer_gateway(False, b"", now))

    def abort(self) -> None:
        """Ask the terminal to abort the operation in progress (Arcus ``A``: it answers 998 while it
        waits for the card or PIN). :class:`NotSupported` (a NotImplementedError) for protocols
        without one (INPAS SA), whether or not an operation runs: ``capabilities.abort`` says so.
        An emergency reversal on the line is never aborted: nothing is sent then."""
        if not self.protocol.capabilities.abort:
            raise NotSupported(f"{self.protocol.title} has no ECR-side abort")
        in_flight = self._in_flight
        if in_flight is not None and in_flight.operation is Operation.EMERGENCY_REVERSAL:
            # Never aborted: it is how a lost outcome is undone (recovery, a bridge's undo); an
            # abort meant for the operation before it must not reach it.
            log.info("abort not sent: the exchange on the line is an emergency reversal")
            return
        pump = self._pump
        if pump is not None:
            pump.act(pump.session.abort)

    async def _wait_for_quiet_line(self, pump: SessionPump) -> None:
        """After a failed exchange, wait until the terminal's resends of its old answer have died
        out and its own timers have dropped any half frame (bounded: a line that never goes quiet
        delays us at most four settle times)."""
        quiet = pump.session.settle_time
        give_up = self.monotonic() + 4 * quiet
        while (now := self.monotonic()) < give_up:
            silent_for = now - max(pump.last_rx, self._failed_at)
            if silent_for >= quiet:
                return
            await asyncio.sleep(quiet - silent_for)

    async def _answer(self, prompt: CashierPrompt) -> tuple[str, bool]:
        if self.on_prompt is None:
            return "", False
        reply = self.on_prompt(prompt)
        text, ok = (await reply) if inspect.isawaitable(reply) else reply
        return str(text), bool(ok)

    # --- recovery -------------------------------------------------------------------------------
    def unresolved(self) -> list[EcrEntry]:
        """This terminal's entries whose outcome is still open, under any spelling of its port."""
        return self.journal.ecr.unresolved_for(self.journal_key, port=self.port_key,
                                               terminal_id=self.terminal_id, canonical=canonical_port)

    async def recover(self) -> list[Recovery]:
        """Resolve this terminal's operations whose outcome was lost, oldest first (RECOVERY_TABLE).

        Holds the terminal's lock throughout, touches only entries whose owner process is gone (or
        is this one), and resolves an entry only by an answer that proves what happened: a declined
        or failed reversal leaves it unknown and says so; a lost operation whose batch has been
        settled is flagged ``refund_needed`` for a person, never marked reversed.
        """
        async with self._lock:
            await self.open()
            async with self.owner.held("recovery"):
                return await self._recover_owned()

    async def _recover_owned(self) -> list[Recovery]:
        report: list[Recovery] = []
        entries = self.unresolved()
        open_originals = {e.request.transaction_id for e in entries
                          if e.request.operation is not Operation.EMERGENCY_REVERSAL}
        for entry in entries:
            if entry.owner and entry.owner != self._me and owner_alive(entry.owner) is not False:
                report.append(Recovery(entry, "skipped", f"owned by {entry.owner}, which still runs"))
                continue
            request = entry.request
            operation = request.operation
            if entry.state == "pending":
                self.journal.ecr.resolve(entry.id, None, how="not_sent")
                report.append(Recovery(entry, "not_sent", "journaled but never written to the line"))
                continue
            if not isinstance(operation, Operation) or not operation.moves_money:
                self.journal.ecr.resolve(entry.id, None, how="no_money_moved")
                report.append(Recovery(entry, "no_money_moved"))
                continue
            if operation is Operation.EMERGENCY_REVERSAL and request.transaction_id in open_originals:
                continue  # an earlier recovery's reversal: the original's own recovery sends it again
            report.append(await self._recover_one(entry))
        return report

    async def _recover_one(self, entry: EcrEntry) -> Recovery:
        original = entry.request
        if original.operation is Operation.EMERGENCY_REVERSAL:
            reversal = original.with_changes(ecr_datetime=None)  # a lost reversal: send it again
        else:
            reversal = original.with_changes(operation=Operation.EMERGENCY_REVERSAL, ecr_datetime=None,
                                             original_operation=original.operation)
        try:
            result = await self._execute_owned(reversal)
        except LinkError as error:
            self.journal.ecr.note(entry.id, f"recovery: reversal failed: {error}")
            return Recovery(entry, "open", f"the reversal got no usable answer: {error}")
        code = result.host_code or ""
        settled_since = self.journal.ecr.settled_after(entry.id, self.journal_key)
        if result.approved and code == HOST_REVERSED:
            outcome, how, note = "reversed", "reversed", "host 400: reversal processed"
        elif result.approved and code == HOST_NOTHING_TO_REVERSE:
            outcome, how, note = "not_charged", "not_charged", "the host never saw it: nothing charged"
        elif result.approved and settled_since:
            outcome, how, note = ("refund_needed", "refund_needed",
                                  "reversal approved without a host code after a settlement: check the "
                                  "settlement report, refund if it was charged")
        elif result.approved:
            outcome, how, note = "reversed", "reversal_approved", "the terminal approved the reversal"
        elif code == HOST_NOT_IN_OPEN_BATCH:
            outcome, how, note = ("refund_needed", "refund_needed",
                                  "its batch was settled: refund it if it was charged")
        else:
            text = f"reversal {result.status.value} (code {code or result.response_code or '-'})"
            self.journal.ecr.note(entry.id, f"recovery: {text}")
            return Recovery(entry, "open", text + ": the outcome stays unknown", result)
        if how == "refund_needed":
            self.journal.ecr.flag(entry.id, result, how=how, note=note)
        else:
            self.journal.ecr.resolve(entry.id, result, how=how)
            self.journal.ecr.resolve_superseded(entry.request.transaction_id, self.journal_key, entry.id)
        return Recovery(entry, outcome, note, result)

    # --- one method per operation ----------------------------------------------------------------
    async def sale(self, amount: int, currency: int = RUB) -> Result:
        """Оплата: charge ``amount`` minor units."""
        return await self.execute(Request(Operation.SALE, amount, currency))

    async def refund(self, amount: int, rrn: str, currency: int = RUB, auth_code: str | None = None) -> Result:
        """Возврат: return ``amount`` (all or part) of the purchase with RRN ``rrn``."""
        return await self.execute(Request(Operation.REFUND, amount, currency, rrn=rrn, auth_code=auth_code))

    async def cancel(self, amount: int, rrn: str, auth_code: str | None = None, currency: int = RUB,
                     original: Operation = Operation.SALE) -> Result:
        """Отмена: void an operation of the open batch (whole amount)."""
        return await self.execute(Request(Operation.CANCEL, amount, currency, rrn=rrn, auth_code=auth_code,
                                          original_operation=original))

    async def preauth(self, amount: int, currency: int = RUB) -> Result:
        """Предавторизация: hold ``amount``."""
        return await self.execute(Request(Operation.PREAUTH, amount, currency))

    async def completion(self, amount: int, rrn: str, auth_code: str | None = None, currency: int = RUB) -> Result:
        """Завершение расчёта: charge ``amount`` (at most the held sum) of the hold with RRN ``rrn``."""
        return await self.execute(Request(Operation.COMPLETION, amount, currency, rrn=rrn, auth_code=auth_code))

    async def cancel_preauth(self, amount: int, rrn: str, auth_code: str | None = None,
                             currency: int = RUB) -> Result:
        """Отмена предавторизации: release the hold with RRN ``rrn``."""
        return await self.execute(Request(Operation.CANCEL_PREAUTH, amount, currency, rrn=rrn,
                                          auth_code=auth_code, original_operation=Operation.PREAUTH))

    async def emergency_reversal(self, original: Request) -> Result:
        """Аварийная отмена: resend ``original`` (with its transaction id) as a reversal."""
        if not original.transaction_id:
            raise ValueError("an emergency reversal needs the original request's transaction id")
        return await self.execute(original.with_changes(operation=Operation.EMERGENCY_REVERSAL,
                                                        original_operation=original.operation,
                                                        ecr_datetime=None))

    async def reverse_last(self) -> Result:
        """Аварийная отмена of this terminal's last money operation in the journal (1C's
        EmergencyReversal: called when the fiscal receipt failed to print). ValueError if none."""
        last = self.journal.ecr.last_money_operation(self.journal_key)
        if last is None or not last.request.transaction_id:
            raise ValueError("the journal holds no money operation of this terminal to reverse")
        what = f"the last {last.request.operation.value} (transaction {last.request.transaction_id})"
        if last.state == "done" and last.result is not None and not last.result.approved:
            raise ValueError(f"{what} was {last.result.status.value}: nothing was charged, nothing to reverse")
        done = self.journal.ecr.reversal_of(self.journal_key, last.request.transaction_id, last.id)
        if done is not None:
            raise ValueError(f"{what} was already reversed (journal entry #{done.id}, "
                             f"{done.updated_at:%Y-%m-%d %H:%M:%S}); nothing to do")
        return await self.emergency_reversal(last.request)

    async def settlement(self) -> Result:
        """Сверка итогов: close the batch; the report is in the result's slips and totals."""
        return await self.execute(Request(Operation.SETTLEMENT))

    async def short_report(self) -> Result:
        """Краткий отчёт of the open batch."""
        return await self.execute(Request(Operation.SHORT_REPORT))

    async def full_report(self) -> Result:
        """Полный отчёт of the open batch."""
        return await self.execute(Request(Operation.FULL_REPORT))

    async def slip_copy(self) -> Result:
        """Копия последнего чека."""
        return await self.execute(Request(Operation.SLIP_COPY))

    async def test_connection(self) -> Result:
        """Проверка связи."""
        return await self.execute(Request(Operation.TEST_CONNECTION))


class BlockingEcrClient:
    """The same operations as :class:`EcrClient`, as plain blocking calls.

    Runs its own event loop in a background thread; safe to call from any one thread at a time.
    Every keyword of :class:`EcrClient` is accepted; ``on_prompt`` may be a plain function. Every
    call is bounded: an operation by the client's ``deadline`` (plus the terminal lock's wait and a
    margin for journaling); a call that still does not return raises ExchangeTimeout, and the
    operation, cancelled, is journaled as unknown for :meth:`recover`.
    """

    MARGIN = 30.0  # seconds beyond the deadline: journal writes, a quiet-line wait, closing

    def __init__(
        self,
        port: str | Device,
        protocol: str | protocols.ProtocolSpec = "inpas",
        *,
        journal: Journal | None = None,
        terminal_id: str | None = None,
        timers: protocols.OptionsLike = None,
        on_prompt: PromptHandler | None = None,
        on_progress: ProgressHandler | None = None,
        clock: Callable[[], datetime] = datetime.now,
        monotonic: Callable[[], float] = time.monotonic,
        trace: Trace | None = None,
        deadline: float = DEFAULT_DEADLINE,
        lock_wait: float = DEFAULT_LOCK_WAIT,
        record: str | Path | None = None,
        gateway: GatewaySettings | None = None,
    ) -> None:
        """See :class:`EcrClient` (the same parameters; callbacks run in the client's loop thread)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="posbridge-ecr", daemon=True)
        self._thread.start()

        async def make() -> EcrClient:  # in the loop: the client's asyncio.Lock belongs to it
            return EcrClient(port, protocol, journal=journal, terminal_id=terminal_id, timers=timers,
                             on_prompt=on_prompt, on_progress=on_progress, clock=clock, monotonic=monotonic,
                             trace=trace, deadline=deadline, lock_wait=lock_wait, record=record,
                             gateway=gateway)

        self._client: EcrClient = self._call(make(), 10.0)

    @property
    def client(self) -> EcrClient:
        """The asyncio client underneath (its settings: deadline, timers, journal…)."""
        return self._client

    @property
    def journal(self) -> Journal:
        """The client's write-ahead journal."""
        return self._client.journal

    def _bound(self) -> float:
        client = self._client
        return client.deadline + client.owner.wait + self.MARGIN

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        limit = self._bound() if timeout is None else timeout
        try:
            return future.result(limit)
        except concurrent.futures.TimeoutError:
            future.cancel()  # the client journals the interrupted operation as unknown
            raise ExchangeTimeout(f"no answer within {limit:g} s (the operation is journaled for recovery)") \
                from None

    def open(self) -> None:
        """See :meth:`EcrClient.open` (operations open the line themselves when it is not open)."""
        self._call(self._client.open(), self._client.owner.wait + self.MARGIN)

    def close(self) -> None:
        """Close the link and stop the background loop and its worker threads."""
        if self._loop.is_closed():
            return
        try:
            self._call(self._client.close(), 10.0)
        finally:
            try:  # the terminal lock waits in the loop's worker threads: end them with the loop
                self._call(self._loop.shutdown_default_executor(), 10.0)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5)
                self._loop.close()

    def __enter__(self) -> BlockingEcrClient:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, request: Request) -> Result:
        """See :meth:`EcrClient.execute`."""
        return self._call(self._client.execute(request))

    def unresolved(self) -> list[EcrEntry]:
        """See :meth:`EcrClient.unresolved` (the journal is safe to read from any thread)."""
        return self._client.unresolved()

    def recover(self) -> list[Recovery]:
        """See :meth:`EcrClient.recover` (bounded per operation it may send)."""
        count = max(1, len(self.unresolved()))
        return self._call(self._client.recover(), self._bound() * count)

    def abort(self) -> None:
        """See :meth:`EcrClient.abort` (safe to call from another thread while an operation runs)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                self._client.abort()
                done.set_result(None)
            except BaseException as error:  # NotImplementedError for INPAS SA, handed to the caller
                done.set_exception(error)

        self._loop.call_soon_threadsafe(run)
        done.result(10.0)

    def sale(self, amount: int, currency: int = RUB) -> Result:
        """Оплата: charge ``amount`` minor units."""
        return self._call(self._client.sale(amount, currency))

    def refund(self, amount: int, rrn: str, currency: int = RUB, auth_code: str | None = None) -> Result:
        """Возврат: return ``amount`` (all or part) of the purchase with RRN ``rrn``."""
        return self._call(self._client.refund(amount, rrn, currency, auth_code))

    def cancel(self, amount: int, rrn: str, auth_code: str | None = None, currency: int = RUB,
               original: Operation = Operation.SALE) -> Result:
        """Отмена: void an operation of the open batch (whole amount)."""
        return self._call(self._client.cancel(amount, rrn, auth_code, currency, original))

    def preauth(self, amount: int, currency: int = RUB) -> Result:
        """Предавторизация: hold ``amount``."""
        return self._call(self._client.preauth(amount, currency))

    def completion(self, amount: int, rrn: str, auth_code: str | None = None, currency: int = RUB) -> Result:
        """Завершение расчёта: charge ``amount`` (at most the held sum) of the hold with RRN ``rrn``."""
        return self._call(self._client.completion(amount, rrn, auth_code, currency))

    def cancel_preauth(self, amount: int, rrn: str, auth_code: str | None = None, currency: int = RUB) -> Result:
        """Отмена предавторизации: release the hold with RRN ``rrn``."""
        return self._call(self._client.cancel_preauth(amount, rrn, auth_code, currency))

    def emergency_reversal(self, original: Request) -> Result:
        """Аварийная отмена: resend ``original`` (with its transaction id) as a reversal."""
        return self._call(self._client.emergency_reversal(original))

    def reverse_last(self) -> Result:
        """Аварийная отмена of the terminal's last money operation in the journal."""
        return self._call(self._client.reverse_last())

    def settlement(self) -> Result:
        """Сверка итогов: close the batch."""
        return self._call(self._client.settlement())

    def short_report(self) -> Result:
        """Краткий отчёт of the open batch."""
        return self._call(self._client.short_report())

    def full_report(self) -> Result:
        """Полный отчёт of the open batch."""
        return self._call(self._client.full_report())

    def slip_copy(self) -> Result:
        """Копия последнего чека."""
        return self._call(self._client.slip_copy())

    def test_connection(self) -> Result:
        """Проверка связи."""
        return self._call(self._client.test_connection())
