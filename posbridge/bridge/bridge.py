"""The protocol bridge: the register speaks one protocol, the terminal another; posbridge translates.

On the register's line posbridge plays the terminal's side of the register's protocol (that
protocol's ``terminal_session()`` in a :class:`~posbridge.pump.SessionPump`); on the terminal's line it
is a cash register: every operation goes through an :class:`~posbridge.ecr.EcrClient`, so it is
journaled write-ahead in the bridge's ECR journal and recovery applies. Requests and results cross
as the domain model (:class:`~posbridge.model.Request`, :class:`~posbridge.model.Result`): each
protocol's own mapping does the wire, nothing here knows a byte.

Money rules, and why:

- **The answer matches its request.** The terminal's result has passed the client's check against
  the request sent (:func:`~posbridge.ecr.answer_problems`); the register gets it under its own
  request's operation and transaction number, and it is checked again against the register's
  request before it is sent. The register's transaction number is passed to the terminal as it is
  (the host's idempotency key, as on a direct line); a request without one gets the client's.
- **No approval that was not seen; no "not performed" that is not known.** When the terminal's
  outcome is unknown (no answer, a lost link) :meth:`EcrClient.recover
  <posbridge.ecr.EcrClient.recover>` runs before the register is answered (it hears progress
  packets meanwhile): the journal entry, ``unknown``, is resolved by emergency reversal (or flagged
  for a person). Once nothing is charged (reversed, the host never saw it) the register is answered
  ``Status.DECLINED`` with :data:`CODE_UNDONE` (not for an emergency reversal the register sent:
  recovery resends that reversal, so "reversed" means it was performed); otherwise ``Status.UNDEFINED`` with
  :data:`CODE_OUTCOME_UNKNOWN` (INPAS: status 0 "undefined"; Arcus has no such status: a decline,
  900) and recovery runs again before every later operation while anything is open, and when the
  bridge starts.
- **A result the register did not take is undone.** When the register does not acknowledge the
  result (``ResultUndelivered``), hung up, gave up on the exchange (INPAS EOT) or moved on to another
  request, it does not know the outcome: a cashier then retries or gives the goods back. For an
  operation that moved money (sale, refund, cancel, pre-authorization, completion — approved,
  approved offline or conditional) the bridge sends the terminal an emergency reversal of it at
  once, journaled as its own entry; the original entry stays ``done`` with a note naming the
  reversal. Were the reversal's outcome lost too, its entry is ``unknown`` and recovery sends it
  again. The same rule as the client's own recovery applies (``RECOVERY_TABLE``): an outcome the
  register never saw is undone, never left charged; a refund is undone too (a cashier who did not
  see it refunds again). Declines, reports and settlements moved no money: they are only noted. An
  emergency reversal the register asked for is never itself reversed.
- **One operation at a time.** Neither protocol has two exchanges on one line: a request while
  another is still unanswered means the register gave up on the first (the session abandons it).
  The new one is answered at once with :data:`CODE_BUSY` (``Status.UNDEFINED``, not performed); the
  first goes on at the terminal (aborted there where the terminal's protocol has an abort, Arcus
  ``A``) and, its result undeliverable, is undone by the rule above. Once a request's answer has
  been delivered (or has failed), the next request is taken at once; what the bridge still does at
  the terminal for the earlier one (a reversal, recovery) goes first: the client's lock orders
  them, and the register hears progress packets meanwhile.
- **The register keeps waiting.** While the terminal works the register gets the protocol's
  progress packets (INPAS WAIT, Arcus ``I``): the terminal's own, relayed, and one every
  ``progress_interval`` seconds from the bridge (a reconnect, recovery or a lock wait is silent on
  the terminal's line).
- **Cashier prompts** from the terminal are put to the register where its protocol has a cashier
  dialog (INPAS); otherwise they are answered with a refusal (the terminal then declines or aborts).
- **Slips** cross with the result (each protocol encodes them its own way).

Refusals the bridge makes itself: :data:`CODE_BAD_REQUEST` (a request it cannot read or the
terminal's protocol cannot carry: declined, nothing sent), :data:`CODE_TERMINAL_UNREACHABLE` (the
terminal could not be reached; the journal says nothing was sent), :data:`CODE_BUSY`,
:data:`CODE_OUTCOME_UNKNOWN`, :data:`CODE_UNDONE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from posbridge import protocols
from posbridge.devices import Device, open_device
from posbridge.ecr import DEFAULT_DEADLINE, EcrClient, answer_problems
from posbridge.ecr.ownership import DEFAULT_LOCK_WAIT
from posbridge.journal import EcrEntry, Journal
from posbridge.model import InvalidRequest, Operation, Request, Result, Slips, Status, format_amount, mask_card_numbers
from posbridge.protocols.common.errors import Disconnected, NotSupported
from posbridge.protocols.common.session import (
    AbortRequested,
    CashierPrompt,
    Failed,
    Progress,
    PromptAnswered,
    RequestReceived,
    RequestRejected,
    ResultDelivered,
    ResultUndelivered,
    TerminalSession,
)
from posbridge.pump import LinkClosed, PumpEvent, ReaderStopped, SessionPump, Trace, summarize_error

__all__ = ["CODE_BAD_REQUEST", "CODE_BUSY", "CODE_OUTCOME_UNKNOWN", "CODE_TERMINAL_UNREACHABLE", "Bridge",
           "BridgeOutcome"]

log = logging.getLogger("posbridge.bridge")

CODE_BAD_REQUEST = "913"
"""Declined by the bridge: a request it cannot read, or the terminal's protocol cannot carry (the
acquirer manual's "invalid message format"). Nothing was sent to the terminal."""
CODE_BUSY = "9002"
"""Not performed: another operation is in hand (posbridge's code)."""
CODE_TERMINAL_UNREACHABLE = "9003"
"""Not performed: the terminal could not be reached; nothing was sent to it (posbridge's code)."""
CODE_OUTCOME_UNKNOWN = "9004"
"""The terminal's outcome is unknown and recovery could not settle it yet: no approval is
reported; recovery goes on (before each operation, at start) until it is reversed or flagged for a
person (posbridge's code)."""
CODE_UNDONE = "9005"
"""Declined: the terminal's outcome was lost, and recovery has since made sure nothing is charged
(an emergency reversal approved, or the host never saw it; posbridge's code)."""

TEXTS = {
    CODE_BAD_REQUEST: "НЕВЕРНЫЙ ФОРМАТ СООБЩЕНИЯ",
    CODE_BUSY: "ТЕРМИНАЛ ЗАНЯТ",
    CODE_TERMINAL_UNREACHABLE: "НЕТ СВЯЗИ С ТЕРМИНАЛОМ",
    CODE_OUTCOME_UNKNOWN: "НЕТ ОТВЕТА ОТ ТЕРМИНАЛА",
    CODE_UNDONE: "ОПЕРАЦИЯ ОТМЕНЕНА",
}
PROGRESS_TEXT = "ПОДОЖДИТЕ"

# Results that say money moved (the client's answers module reads them the same way).
_MONEY_MOVED = (Status.APPROVED, Status.APPROVED_OFFLINE, Status.CONDITIONAL)
_OPEN_STATES = ("pending", "sent", "unknown")
# Recovery outcomes after which an operation that moves money is known not to have charged.
_NOTHING_CHARGED = ("reversed", "not_charged", "not_sent")


@dataclass(frozen=True)
class BridgeOutcome:
    """What the bridge did with one request of the register (one INFO log line says the same).

    ``request``: as the register sent it (None for a message it could not read). ``answer``: the
    result sent to the register. ``delivered``: the register acknowledged it. ``entry_id``: the
    journal entry of the operation at the terminal (None when nothing was sent). ``note``: what else
    happened (why undelivered, the reversal that undid it, recovery).
    """

    request: Request | None
    answer: Result
    delivered: bool
    entry_id: int | None = None
    note: str = ""


class _Job:
    """One request of the register: its exchange, and what the register said while it ran."""

    __slots__ = ("exchange", "request", "rejection", "gone", "prompt", "delivery", "_answered")

    def __init__(self, exchange: int | None, request: Request | None, rejection: str = "") -> None:
        self.exchange = exchange
        self.request = request
        self.rejection = rejection
        self.gone = ""  # why the register no longer waits for this exchange
        self.prompt: asyncio.Future[tuple[str, bool] | None] | None = None
        self.delivery: asyncio.Future[tuple[bool, str]] | None = None
        self._answered = False

    @property
    def answered(self) -> bool:
        """The answer's fate is known (delivered or not): only the books are left. True from the
        very event that settles it: the register's next request may be in the same read."""
        return self._answered or (self.delivery is not None and self.delivery.done())

    @answered.setter
    def answered(self, value: bool) -> None:
        self._answered = value

    def leave(self, why: str) -> None:
        """The register no longer waits (hung up, aborted, moved on): no question stays open."""
        if not self.gone:
            self.gone = why
        if self.prompt is not None and not self.prompt.done():
            self.prompt.set_result(None)

    def delivered(self, ok: bool, why: str = "") -> None:
        if self.delivery is not None and not self.delivery.done():
            self.delivery.set_result((ok, why))


class Bridge:
    """Serves a register speaking ``register_protocol`` on ``register`` with a terminal speaking
    ``terminal_protocol`` on ``terminal`` (device URLs or open devices); see the module docstring.

    ``journal``: the bridge's ECR journal (default in memory). ``terminal_id``: sent to the terminal
    when the register sends none. ``register_options`` / ``terminal_options``: each protocol's
    options (timers). ``deadline`` and ``lock_wait``: as for :class:`~posbridge.ecr.EcrClient`.
    ``progress_interval``: seconds between the bridge's own progress packets to the register.
    ``on_outcome`` is called with each :class:`BridgeOutcome` (also kept in :attr:`outcomes`).
    """

    def __init__(
        self,
        register: str | Device,
        register_protocol: str | protocols.ProtocolSpec,
        terminal: str | Device,
        terminal_protocol: str | protocols.ProtocolSpec,
        *,
        journal: Journal | None = None,
        terminal_id: str | None = None,
        register_options: protocols.OptionsLike = None,
        terminal_options: protocols.OptionsLike = None,
        progress_interval: float = 5.0,
        deadline: float = DEFAULT_DEADLINE,
        lock_wait: float = DEFAULT_LOCK_WAIT,
        delivery_timeout: float = 120.0,
        clock: Callable[[], datetime] = datetime.now,
        monotonic: Callable[[], float] = time.monotonic,
        register_trace: Trace | None = None,
        terminal_trace: Trace | None = None,
        on_outcome: Callable[[BridgeOutcome], None] | None = None,
    ) -> None:
        self.register = register
        self.register_protocol = (register_protocol if isinstance(register_protocol, protocols.ProtocolSpec)
                                  else protocols.get(register_protocol))
        self.terminal_protocol = (terminal_protocol if isinstance(terminal_protocol, protocols.ProtocolSpec)
                                  else protocols.get(terminal_protocol))
        self.register_options = self.register_protocol.options(register_options)  # bad options fail here
        self.terminal_options = terminal_options
        if not progress_interval > 0:
            raise ValueError(f"progress interval must be positive seconds, got {progress_interval!r}")
        self.progress_interval = progress_interval
        self.delivery_timeout = delivery_timeout
        self.monotonic = monotonic
        self.register_trace = register_trace
        self.client = EcrClient(terminal, self.terminal_protocol, journal=journal, terminal_id=terminal_id,
                                timers=terminal_options, on_prompt=self._relay_prompt,
                                on_progress=self._relay_progress, clock=clock, monotonic=monotonic,
                                trace=terminal_trace, deadline=deadline, lock_wait=lock_wait)
        self.journal = self.client.journal
        self.on_outcome = on_outcome
        self.outcomes: list[BridgeOutcome] = []
        self._pump: SessionPump[TerminalSession] | None = None
        self._job: _Job | None = None  # the request whose operation is in hand
        self._waiting_delivery: dict[int, _Job] = {}  # by exchange: answers sent, not yet acknowledged
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- running ----------------------------------------------------------------------------------
    async def run(self, *, ready: Callable[[Device], None] | None = None) -> None:
        """Open the register's line (when given a URL) and serve it until cancelled; the terminal's
        line is opened by the client when the first operation (or recovery) needs it."""
        device = await open_device(self.register) if isinstance(self.register, str) else self.register
        try:
            if ready is not None:
                ready(device)
            await self.serve(device)
        finally:
            if isinstance(self.register, str):
                await device.close()

    async def serve(self, device: Device) -> None:
        """Serve the register on ``device`` until cancelled (a listening device serves the next
        register when one leaves). Operations left open in the journal are recovered first."""
        session = self.register_protocol.terminal_session(self.register_options)
        pump: SessionPump[TerminalSession] = SessionPump(device, session, clock=self.monotonic,
                                                         trace=self.register_trace, keep_open=True)
        self._pump = pump
        pump.start()
        if self.client.unresolved():
            self._spawn(self._recover("left open by an earlier run"), "posbridge-bridge-recovery")
        try:
            while True:
                event = await pump.next_event()
                try:
                    self._dispatch(pump, event)
                except Exception as error:  # one event must never end the service
                    log.error("handling %s failed: %s", type(event).__name__, summarize_error(error),
                              exc_info=log.isEnabledFor(logging.DEBUG))
        finally:
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._tasks.clear()
            self._job = None
            self._waiting_delivery.clear()
            await pump.stop()
            self._pump = None
            await self.client.close()

    @property
    def busy(self) -> bool:
        """An operation, a recovery or a delivery is in hand."""
        return any(not task.done() for task in self._tasks)

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until nothing is in hand (the books of the last operation are kept)."""
        deadline = time.monotonic() + timeout
        while self.busy:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bridge is still busy after {timeout:g} s")
            await asyncio.sleep(0.01)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the register's events --------------------------------------------------------------------
    def _dispatch(self, pump: SessionPump[TerminalSession], event: PumpEvent) -> None:
        if isinstance(event, (RequestReceived, RequestRejected)):
            if isinstance(event, RequestReceived):
                new = _Job(event.exchange, event.request)
            else:
                new = _Job(event.exchange, None, rejection=event.reason)
            if self._job is not None and not self._job.answered:
                self._abandoned(self._job, "the register sent another request")
                self._spawn(self._refuse(new, Status.UNDEFINED, CODE_BUSY, "another operation is in hand"),
                            "posbridge-bridge-busy")
                return
            self._job = new
            self._spawn(self._serve_job(new), f"posbridge-bridge-{new.exchange}")
            return
        exchange = getattr(event, "exchange", None)
        job = self._job if self._job is not None and exchange is not None and self._job.exchange == exchange \
            else None
        if isinstance(event, (ResultDelivered, ResultUndelivered)):
            waiting = self._waiting_delivery.get(exchange) if exchange is not None else None
            if waiting is not None:
                waiting.delivered(isinstance(event, ResultDelivered),
                                  "" if isinstance(event, ResultDelivered) else f"no acknowledgement: {event.error}")
        elif isinstance(event, PromptAnswered):
            if job is not None and job.prompt is not None and not job.prompt.done():
                job.prompt.set_result((event.answer, event.ok))
        elif isinstance(event, AbortRequested):
            if job is not None:
                silent = pump.session.current_exchange != exchange
                if silent:  # INPAS: after the register's EOT the exchange is over for it
                    self._abandoned(job, "the register ended the exchange (EOT)")
                else:  # Arcus A: the exchange goes on; the terminal says whether it could abort
                    self._abort_at_terminal()
        elif isinstance(event, Failed) and not isinstance(event.error, ReaderStopped):
            why = "the register disconnected" if isinstance(event.error, Disconnected) else \
                f"the register's link failed: {mask_card_numbers(str(event.error))}"
            waiting = self._waiting_delivery.get(exchange) if exchange is not None else None
            if waiting is not None:
                waiting.delivered(False, why)
            if job is not None:
                self._abandoned(job, why)
        elif isinstance(event, (LinkClosed, Failed)):  # Failed: the pump's reader stopped
            if isinstance(event, Failed):
                log.error("the register line's reader stopped (%s); starting it again", event.error)
                pump.restart()
            for waiting in list(self._waiting_delivery.values()):
                waiting.delivered(False, "the register disconnected")
            if self._job is not None:
                self._abandoned(self._job, "the register disconnected")

    def _abandoned(self, job: _Job | None, why: str) -> None:
        """The register no longer waits for ``job``: stop asking it anything; abort at the terminal
        where its protocol can (while the card or PIN is awaited; later the terminal finishes)."""
        if job is None or job.gone:
            return
        job.leave(why)
        job.delivered(False, why)
        self._abort_at_terminal()

    def _abort_at_terminal(self) -> None:
        if not self.terminal_protocol.capabilities.abort:
            return
        try:
            self.client.abort()
        except NotSupported:
            pass
        except Exception as error:
            log.warning("the abort could not be sent to the terminal: %s", summarize_error(error))

    # --- one operation ----------------------------------------------------------------------------
    def _current(self, job: _Job) -> bool:
        pump = self._pump
        return pump is not None and not job.gone and job.exchange is not None and \
            pump.session.current_exchange == job.exchange

    async def _serve_job(self, job: _Job) -> None:
        keepalive = self._spawn(self._keep_alive(job), "posbridge-bridge-progress")
        try:
            await self._operation(job)
        except Exception as error:  # a bug: say so, answer what is safe
            log.error("the bridge failed on a request: %s", summarize_error(error),
                      exc_info=log.isEnabledFor(logging.DEBUG))
            if job.delivery is None:
                request = job.request or Request(Operation.TEST_CONNECTION)
                await self._finish(job, self._refusal(request, Status.UNDEFINED, CODE_OUTCOME_UNKNOWN), None,
                                   f"internal error: {summarize_error(error)}")
        finally:
            keepalive.cancel()
            if self._job is job:
                self._job = None

    async def _operation(self, job: _Job) -> None:
        if job.request is None:
            await self._refuse(job, Status.DECLINED, CODE_BAD_REQUEST, f"unreadable request: {job.rejection}")
            return
        request = job.request
        try:
            request.validated()
            self._check_carried(request)
        except InvalidRequest as error:
            await self._refuse(job, Status.DECLINED, CODE_BAD_REQUEST, str(error))
            return
        if self.client.unresolved():
            await self._recover("before the next operation")
        key = self.client.journal_key
        last = self.journal.ecr.last(key)
        before = last.id if last is not None else 0
        try:
            result = await self.client.execute(request)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._failed(job, request, self._entry_after(before), error)
            return
        entry = self._entry_after(before)
        answer = result.with_changes(operation=request.operation, transaction_id=request.transaction_id)
        problems = answer_problems(request, answer)
        if problems:  # the client checked the same: never expected, never sent to the register
            log.error("the terminal's answer does not fit the register's request: %s", "; ".join(problems))
            await self._undo(job, entry, result, "the answer does not fit the register's request: "
                             + "; ".join(problems))
            await self._finish(job, self._refusal(request, Status.UNDEFINED, CODE_OUTCOME_UNKNOWN), entry,
                               "answered as unknown")
            return
        delivered, why = await self._deliver(job, answer)
        note = ""
        if not delivered:
            note = await self._undo(job, entry, result, why)
        self._record(job, answer, delivered, entry, note or why)

    def _check_carried(self, request: Request) -> None:
        """InvalidRequest if the terminal's protocol cannot carry ``request`` (an operation its ops
        table lacks, a field it cannot encode): found on a scratch session, before any journaling."""
        scratch = self.terminal_protocol.ecr_session(self.terminal_options)
        try:
            scratch.start(request, 0.0)
        except InvalidRequest:
            raise
        except (KeyError, ValueError) as error:
            raise InvalidRequest(f"{self.terminal_protocol.title} cannot carry {request.operation.value}: "
                                 f"{summarize_error(error)}") from error

    def _entry_after(self, before: int) -> EcrEntry | None:
        """The journal entry the client made for the operation just run (None: it never began)."""
        last = self.journal.ecr.last(self.client.journal_key)
        return last if last is not None and last.id > before else None

    async def _failed(self, job: _Job, request: Request, entry: EcrEntry | None, error: Exception) -> None:
        """The client raised: the journal says whether anything reached the terminal."""
        text = summarize_error(error)
        if entry is None or entry.state not in _OPEN_STATES:
            # Never journaled (a busy terminal lock, a journal fault) or resolved "not sent".
            log.warning("the terminal could not be reached: %s", text)
            await self._finish(job, self._refusal(request, Status.UNDEFINED, CODE_TERMINAL_UNREACHABLE), entry,
                               f"not sent: {text}")
            return
        log.warning("the terminal's outcome of %s is unknown: %s", request.operation.value, text)
        # Recovery before the answer (the register hears progress packets meanwhile): what the
        # register is told is then what is known — "not performed" only once the terminal undid
        # it or never charged it, "unknown" otherwise.
        reports = await self._recover(f"after {text}")
        mine = [r for r in reports if r.entry.id == entry.id]
        # Not for the register's own emergency reversal: recovery sends that same reversal again,
        # so "reversed" means the register's request was performed (the money is back), and a
        # register told "declined" would believe the sale stands and refund it another way.
        if mine and isinstance(request.operation, Operation) and request.operation.moves_money \
                and request.operation is not Operation.EMERGENCY_REVERSAL \
                and mine[0].outcome in _NOTHING_CHARGED:
            answer = self._refusal(request, Status.DECLINED, CODE_UNDONE)
        else:
            answer = self._refusal(request, Status.UNDEFINED, CODE_OUTCOME_UNKNOWN)
        delivered, why = await self._deliver(job, answer)
        note = f"outcome unknown ({text}); recovery: " + (mine[0].describe() if mine else "not resolved yet")
        self._record(job, answer, delivered, entry, note if delivered else f"{note}; {why}")

    async def _undo(self, job: _Job, entry: EcrEntry | None, result: Result, why: str) -> str:
        """The register did not take ``result``: an operation that moved money is reversed (module
        docstring); returns what was done, noted on the entry too."""
        original = entry.request if entry is not None else None
        operation = result.operation
        if original is None or not operation.moves_money or operation is Operation.EMERGENCY_REVERSAL \
                or result.status not in _MONEY_MOVED:
            note = f"bridge: result not delivered to the register ({why}); no money to undo"
            if entry is not None:
                self.journal.ecr.note(entry.id, note)
            return note
        assert entry is not None
        try:
            reversal = await self.client.emergency_reversal(original)
            code = reversal.host_code or reversal.response_code or "-"
            if reversal.approved:
                done = f"reversed (host code {code})"
            else:  # e.g. its batch was settled meanwhile: a person must refund it
                done = f"the reversal was NOT approved ({reversal.status.value}, host code {code}): it stays charged"
                log.error("an operation the register never saw stays charged: %s; the reversal was %s (host code %s)",
                          _describe_request(original), reversal.status.value, code)
        except Exception as error:
            done = f"reversal outcome unknown ({summarize_error(error)}): recovery sends it again"
        reversal_entry = self.journal.ecr.last(self.client.journal_key)
        where = f" by entry #{reversal_entry.id}" \
            if reversal_entry is not None and reversal_entry.id != entry.id else ""
        note = f"bridge: result not delivered to the register ({why}); {done}{where}"
        self.journal.ecr.note(entry.id, note)
        log.warning("%s -> %s", _describe_request(original), note)
        if self.client.unresolved():
            await self._recover("a reversal's outcome was lost")
        return note

    async def _recover(self, why: str) -> list[Any]:
        """Run the client's recovery; every line of its report is logged. Never raises."""
        try:
            reports = await self.client.recover()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("recovery (%s) could not run: %s; it runs again before the next operation", why,
                        summarize_error(error))
            return []
        for report in reports:
            log.warning("recovery (%s): %s", why, report.describe())
        return reports

    # --- answering the register -------------------------------------------------------------------
    def _refusal(self, request: Request, status: Status, code: str) -> Result:
        money = isinstance(request.operation, Operation) and request.operation.moves_money
        amount = request.amount if money and isinstance(request.amount, int) else None
        return Result(operation=request.operation, status=status, response_code=code, host_code=code,
                      response_text=TEXTS[code], amount=amount, currency=request.currency if money else None,
                      transaction_id=request.transaction_id, terminal_id=request.terminal_id,
                      host_datetime=self.client.clock().replace(microsecond=0))

    async def _refuse(self, job: _Job, status: Status, code: str, why: str) -> None:
        request = job.request if job.request is not None else Request(Operation.TEST_CONNECTION)
        log.info("refusing %s: %s", _describe_request(request) if job.request else "a request",
                 mask_card_numbers(why))
        await self._finish(job, self._refusal(request, status, code), None, why)

    async def _finish(self, job: _Job, answer: Result, entry: EcrEntry | None, note: str) -> None:
        delivered, why = await self._deliver(job, answer)
        self._record(job, answer, delivered, entry, note if delivered else f"{note}; not delivered: {why}")

    async def _deliver(self, job: _Job, answer: Result) -> tuple[bool, str]:
        """Send ``answer`` to ``job``'s exchange if the register still waits for it (checked right
        before sending: never someone else's answer); (acknowledged, why not)."""
        try:
            return await self._send_answer(job, answer)
        finally:
            job.answered = True

    async def _send_answer(self, job: _Job, answer: Result) -> tuple[bool, str]:
        pump = self._pump
        if pump is None or not self._current(job):
            return False, job.gone or "the register no longer waits for it"
        assert job.exchange is not None
        job.delivery = asyncio.get_running_loop().create_future()
        self._waiting_delivery[job.exchange] = job
        try:
            for attempt in (answer, answer.with_changes(slips=Slips())):  # a slip too big to encode: none
                try:
                    pump.act(lambda now: pump.session.send_result(attempt, now))
                    break
                except Exception as error:
                    log.warning("the answer could not be encoded for the register (%s)", summarize_error(error))
            else:
                return False, "the answer could not be encoded"
            try:
                return await asyncio.wait_for(asyncio.shield(job.delivery), self.delivery_timeout)
            except (asyncio.TimeoutError, TimeoutError):
                return False, f"no delivery outcome within {self.delivery_timeout:g} s"
        finally:
            self._waiting_delivery.pop(job.exchange, None)

    def _record(self, job: _Job, answer: Result, delivered: bool, entry: EcrEntry | None, note: str) -> None:
        outcome = BridgeOutcome(job.request, answer, delivered, entry.id if entry is not None else None,
                                mask_card_numbers(note))
        self.outcomes.append(outcome)
        what = _describe_request(job.request) if job.request is not None else "unreadable request"
        log.info("%s -> %s code=%s%s: %s%s", what, answer.status.value, answer.host_code or answer.response_code,
                 f" rrn={answer.rrn}" if answer.rrn else "",
                 "delivered" if delivered else "NOT delivered", f" ({outcome.note})" if outcome.note else "")
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception as error:
                log.error("the on_outcome callback failed: %s", summarize_error(error))

    async def _keep_alive(self, job: _Job) -> None:
        """The bridge's own progress packets while the operation is in hand."""
        while True:
            await asyncio.sleep(self.progress_interval)
            self._progress(job, PROGRESS_TEXT)

    def _progress(self, job: _Job, text: str) -> None:
        pump = self._pump
        if pump is None or not self._current(job) or job.delivery is not None:
            return
        try:
            pump.act(lambda now: pump.session.send_progress(text, now))
        except Exception as error:
            log.warning("progress packet not sent: %s", summarize_error(error))

    # --- the terminal's callbacks (called by the client during an operation) ----------------------
    def _relay_progress(self, progress: Progress) -> None:
        if self._job is not None:
            self._progress(self._job, progress.text or PROGRESS_TEXT)

    async def _relay_prompt(self, prompt: CashierPrompt) -> tuple[str, bool]:
        """Put the terminal's cashier prompt to the register where its protocol has a dialog."""
        job, pump = self._job, self._pump
        if job is None or pump is None or not self._current(job) \
                or not self.register_protocol.capabilities.cashier_dialog:
            log.info("cashier prompt refused (the register %s): %s",
                     "cannot be asked" if job is not None and self._current(job) else "no longer waits",
                     mask_card_numbers(prompt.prompt))
            return "", False
        job.prompt = asyncio.get_running_loop().create_future()
        try:
            pump.act(lambda now: pump.session.send_prompt(prompt.prompt, prompt.timeout, now))
        except Exception as error:
            log.warning("the cashier prompt could not be put to the register: %s", summarize_error(error))
            return "", False
        try:
            # The register's session times the dialog out itself; this only guards a lost event.
            answer = await asyncio.wait_for(asyncio.shield(job.prompt), 2 * (prompt.timeout or 60.0) + 30.0)
        except (asyncio.TimeoutError, TimeoutError):
            answer = None
        finally:
            job.prompt = None
        return answer if answer is not None else ("", False)


def _describe_request(request: Request) -> str:
    op = request.operation
    parts = [op.value if isinstance(op, Operation) else str(op)[:24]]
    if isinstance(request.amount, int) and not isinstance(request.amount, bool) and 0 <= request.amount < 10**15:
        currency = request.currency if isinstance(request.currency, int) else 643
        parts.append(f"amount={format_amount(request.amount, currency)}")
    for name in ("transaction_id", "rrn"):
        value = getattr(request, name)
        if value:
            parts.append(f"{name}={str(value)[:24]}")
    return mask_card_numbers(" ".join(parts))

