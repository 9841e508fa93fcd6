"""The virtual terminal: a bank card terminal in software, speaking any registered protocol.

A ``transitions`` state machine (idle -> request received -> waiting for card -> PIN -> cashier
dialog -> authorizing -> printing -> sending result -> idle) driven by the protocol session's
events. Money decisions belong to its :class:`~posbridge.emulator.host.BankHost`; slips to its
:class:`~posbridge.emulator.slips.SlipPrinter`; the card holder is its :class:`~posbridge.emulator.cards.CardReader`.
Nothing here knows a protocol's bytes: the same machine serves every protocol.

How it stays truthful and alive (issue 9, "a virtual terminal that never lies and never dies"):

- **One dispatcher.** :meth:`VirtualTerminal.serve` reads every event of the link and routes it;
  the operation in hand runs in a task of its own. So the terminal keeps hearing the line while it
  works: the ECR's hang-up, its abort, the next request.
- **One answer per request.** Every request opens an exchange (the session's
  ``current_exchange``). Right before it sends anything for an operation — WAIT, a dialog, the
  result — the terminal checks, synchronously, that the operation's exchange is still the one the
  ECR waits on. A result is never sent to anybody else: if its ECR hung up, gave up, aborted, or
  moved on to another request, the result is kept as undelivered (:attr:`VirtualTerminal.undelivered`,
  the last :data:`MAX_UNDELIVERED`, and ``result_delivered = 0`` in the journal).
- **Busy rule.** A resend of the request in hand (same operation code and STAN / transaction id)
  is ignored (the session does that). Any other request while the terminal works — on a new
  connection after a hang-up, or on the same one (the ECR gave up on its exchange) — abandons the
  operation in hand: while it still waits for the card, PIN or cashier it is aborted (998, nothing
  charged); once at the host it completes and its result is kept as undelivered. The new request
  waits (WAIT / intermediate packets keep its ECR's timer alive) and is served as soon as the
  terminal is free. At most one request waits: a newer one supersedes it (the superseded request
  is journaled as aborted, never served). A waiting request whose ECR leaves is dropped the same way.
  Before it asks the host, the terminal checks that its ECR still waits: nothing is charged for an
  ECR that is already gone.
- **The ACK first.** The link ACKs a request before the application sees it (``SessionPump``);
  the host decision, report and slips of settlements and reports (and everything, when the journal
  is a file that fsyncs) run off the event loop.
- **Idle policy** (``TerminalConfig.idle_timeout``, default 2 s). On a listening device that serves
  one ECR at a time (``tcp-listen://``), a connection with no exchange in progress and no request
  for ``idle_timeout`` seconds is hung up on *when another connection waits* in the backlog. Why 2 s:
  a waiting ECR sent its request at once and waits for the ACK (INPAS WAITACK 5 s, Arcus three ENQ
  tries of T1 2 s): it must be reached well inside that; a register that keeps its line open between
  sales (posbridge's client does) simply reconnects for its next one. Nobody waiting, nobody is
  dropped. Half frames, garbage and silence are not requests: they never keep a line.
- **Nothing kills it.** An exception in an operation, a callback or the dispatcher is logged and
  the terminal answers what it still can (a minimal result) and serves on; a reader that dies is
  restarted (``Failed(ReaderStopped)``).
- **Reports that fit.** A settlement slip carries totals by operation kind and by card scheme, no
  operation list; a full report lists at most ``report_max_lines`` operations (the latest) and says
  how many more there are; a slip never exceeds :data:`SLIP_BUDGET` bytes, and an answer that still
  cannot be encoded is replaced by a smaller one (no slip), never dropped: a closed batch is always
  answered.
- **Logs.** Exactly one INFO line per operation: request, outcome, delivered or not (and why).
  Link events are DEBUG (``-v``); frames are logged by :class:`~posbridge.pump.WireLogger` (``-vv``).
  Card numbers appear masked only.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Coroutine, Sequence, TypeVar

from transitions import Machine

from posbridge import protocols
from posbridge.devices import Device, open_device
from posbridge.devices.faults import FaultPlan, FaultyDevice, Superseded
from posbridge.protocols.common.errors import Disconnected
from posbridge.protocols.common.session import (
    AbortRequested,
    Failed,
    GatewayAnswered,
    PromptAnswered,
    RequestReceived,
    RequestRejected,
    ResultDelivered,
    ResultUndelivered,
    TerminalSession,
)

from posbridge.emulator.cards import Card, CardReader
from posbridge.emulator.config import TerminalConfig
from posbridge.emulator.host import TEXTS, BankHost, Forced, HostConfig, HostDecision
from posbridge.journal import Journal
from posbridge.model import Operation, Request, Result, Slips, Status, format_amount, mask_card_numbers
from posbridge.pump import LinkClosed, ReaderStopped, SessionPump, Trace, summarize_error
from posbridge.emulator.reports import REPORT_OPERATIONS, BatchReport, batch_report
from posbridge.emulator.rules import Rule, RuleBook
from posbridge.emulator.scenario import Scenario
from posbridge.emulator.slips import TITLES, SlipPrinter

if TYPE_CHECKING:
    from transitions.core import TransitionConfigDict  # in transitions' stubs only

log = logging.getLogger("posbridge.terminal")

# ``transitions`` logs every state change at INFO: ~20 lines a sale. Quiet unless asked for.
_transitions_log = logging.getLogger("transitions")
if _transitions_log.level == logging.NOTSET:
    _transitions_log.setLevel(logging.WARNING)

T = TypeVar("T")

STATES = [
    "idle",
    "request_received",
    "waiting_for_card",
    "pin_entry",
    "cashier_dialog",
    "authorizing",
    "printing",
    "sending_result",
]
TRANSITIONS: list[TransitionConfigDict] = [
    {"trigger": "receive_request", "source": "idle", "dest": "request_received"},
    {"trigger": "wait_for_card", "source": "request_received", "dest": "waiting_for_card"},
    {"trigger": "enter_pin", "source": "waiting_for_card", "dest": "pin_entry"},
    {"trigger": "ask_cashier", "source": ["request_received", "pin_entry"], "dest": "cashier_dialog"},
    {"trigger": "authorize", "source": ["request_received", "pin_entry", "cashier_dialog"], "dest": "authorizing"},
    {"trigger": "print_slips", "source": "*", "dest": "printing"},
    {"trigger": "send_result", "source": "printing", "dest": "sending_result"},
    {"trigger": "finish", "source": "*", "dest": "idle"},
]
CARD_OPERATIONS = frozenset({Operation.SALE, Operation.PREAUTH, Operation.REFUND})
# Batch-wide journal queries, run in a worker thread even on an in-memory journal: the totals of a
# 5,000-operation batch take ~50 ms (benchmarks/journal_calls.py), too long to stall the loop.
OFF_LOOP_OPERATIONS = REPORT_OPERATIONS | {Operation.SHORT_REPORT}

# posbridge's own response codes for refusals the terminal makes itself (not the host's).
CODE_BAD_MESSAGE = "913"  # invalid message format (the manual's code)
CODE_CARD_DETAILS = "71015"  # card details entered incorrectly (the manual's code)
CODE_ABORTED = "998"
BOOKS_GRACE = 2.0  # seconds a stopping terminal gives an answered operation to keep its books
MIN_GATEWAY_POLL = 0.2  # seconds between "receive" commands when the ECR answers "nothing yet" at once
TEXT_ABORTED = "ОПЕРАЦИЯ ПРЕРВАНА"
TEXT_BAD_MESSAGE = "НЕВЕРНЫЙ ФОРМАТ СООБЩЕНИЯ"

MAX_UNDELIVERED = 100
"""Undelivered results kept in memory (the journal keeps them all: ``result_delivered = 0``)."""
SLIP_BUDGET = 48_000
"""Bytes all copies of one slip may take together: an Arcus frame holds 65,535 bytes in all, an
INPAS tag-90 value 65,535 (with a CR per line); the rest of the answer needs far less than the
margin left."""


class GatewayFailure(enum.Enum):
    """How asking the host through the ECR (gateway mode) can end without the host's decision."""

    NO_CONNECTION = "no connection"
    """The ECR could not reach the host: the request never left, nothing is charged -- refuse."""
    OUTCOME_UNKNOWN = "outcome unknown"
    """The request may have reached the host and its answer was lost: the host may have charged the
    card. Answer nothing; the ECR's recovery asks the host again."""


class _Job:
    """One request the terminal serves (or keeps waiting): its exchange and what the ECR said."""

    __slots__ = ("exchange", "request", "rejection", "aborted", "gone", "prompt", "delivery",
                 "abortable", "raw", "gateway")

    def __init__(self, exchange: int | None, request: Request | None,
                 rejection: RequestRejected | None = None, raw: str = "") -> None:
        self.exchange = exchange
        self.request = request
        self.rejection = rejection
        self.raw = raw
        self.aborted = asyncio.Event()
        self.gone = ""  # why the ECR no longer waits for this exchange
        self.prompt: asyncio.Future[str | None] | None = None
        self.delivery: asyncio.Future[tuple[bool, str]] | None = None
        self.gateway: asyncio.Future[tuple[bool, bytes]] | None = None  # the ECR's answer to a gateway command
        self.abortable = True  # until the host has been asked

    def abort(self, why: str) -> None:
        """The ECR aborted, left or moved on: stop waiting for the card holder or the cashier."""
        if not self.gone:
            self.gone = why
        self.aborted.set()
        if self.prompt is not None and not self.prompt.done():
            self.prompt.set_result(None)
        if self.gateway is not None and not self.gateway.done():
            self.gateway.set_result((False, b""))

    def delivered(self, ok: bool, why: str = "") -> None:
        if self.delivery is not None and not self.delivery.done():
            self.delivery.set_result((ok, why))


class VirtualTerminal:
    """A virtual card terminal serving one ECR link at a time (see the module docstring).

    Use :meth:`serve` with a device (``await terminal.serve(device)``) or :meth:`run` with a URL.
    ``clock`` gives the host's wall-clock time; ``monotonic`` drives the link timers.
    ``on_operation(request, result)`` is called once per operation, delivered or not.
    """

    # The triggers ``transitions`` adds to each terminal (TRANSITIONS), declared for type checkers:
    # annotations only, so the machine still finds the names free and binds them.
    receive_request: Callable[[], bool]
    wait_for_card: Callable[[], bool]
    enter_pin: Callable[[], bool]
    ask_cashier: Callable[[], bool]
    authorize: Callable[[], bool]
    print_slips: Callable[[], bool]
    send_result: Callable[[], bool]
    finish: Callable[[], bool]

    def __init__(
        self,
        protocol: str | protocols.ProtocolSpec = "inpas",
        *,
        config: TerminalConfig | None = None,
        host_config: HostConfig | None = None,
        journal: Journal | None = None,
        card_reader: CardReader | None = None,
        clock: Callable[[], datetime] = datetime.now,
        monotonic: Callable[[], float] = time.monotonic,
        on_operation: Callable[[Request, Result], None] | None = None,
        trace: Trace | None = None,
    ) -> None:
        # A ProtocolSpec too: e.g. arcus2.spec.spec_for_installation(parse_ops_ini(ops.ini bytes), texts)
        self.protocol = protocol if isinstance(protocol, protocols.ProtocolSpec) else protocols.get(protocol)
        self.config = config or TerminalConfig()
        if self.config.host_via_ecr and not self.protocol.capabilities.gateway:
            raise ValueError(f"{self.protocol.title} has no gateway mode: host_via_ecr needs a protocol that has "
                             "one (inpas)")
        merchant = self.config.merchant
        self.host_config = host_config or HostConfig(
            terminal_id=merchant.terminal_id, merchant_id=merchant.merchant_id)
        self.journal = journal or Journal()
        self.host = BankHost(self.journal, self.host_config, clock=clock)
        self.cards = card_reader or CardReader()
        self.rules = RuleBook()  # outcome rules (posbridge.emulator.rules): scenarios, the control API
        self.line: SwitchableFaults | None = None  # run(switchable_faults=True): its line faults can change
        self.printer = SlipPrinter(merchant, width=self.config.slip_width, copies=self.config.copies)
        self.clock = clock
        self.monotonic = monotonic
        self.on_operation = on_operation
        self.trace = trace
        self.last_result: Result | None = None
        self.undelivered: list[Result] = []  # results the ECR never acknowledged (the latest ones)
        self.state = "idle"
        self.state_history: deque[str] = deque(maxlen=256)  # recent states, for tests and the console
        self.machine = Machine(model=self, states=STATES, transitions=TRANSITIONS, initial="idle",
                               auto_transitions=False, model_override=False,
                               after_state_change=self._record_state)
        self._pump: SessionPump | None = None
        self._job: _Job | None = None
        self._waiting: _Job | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_activity = time.monotonic()  # real time: the idle policy runs on the device's clock
        path = getattr(self.journal, "path", ":memory:")
        self._journal_on_disk = path not in (":memory:", "") and not str(path).startswith("file::memory:")

    def _record_state(self) -> None:
        self.state_history.append(self.state)

    @classmethod
    def from_scenario(
        cls,
        scenario: Scenario | None,
        *,
        protocol: str | protocols.ProtocolSpec = "inpas",
        journal_path: str | None = None,
        seed: int | None = None,
        clock: Callable[[], datetime] = datetime.now,
        monotonic: Callable[[], float] = time.monotonic,
        on_operation: Callable[[Request, Result], None] | None = None,
        trace: Trace | None = None,
    ) -> VirtualTerminal:
        """A terminal set up by a :class:`~posbridge.emulator.scenario.Scenario` (or the defaults):
        its terminal and host settings and cards, a journal file at ``journal_path`` (default: in
        memory), ``seed`` for the host's codes; the other parameters as for the constructor."""
        scenario = scenario or Scenario()
        host = scenario.host if seed is None else replace(scenario.host, seed=seed)
        journal = Journal(journal_path) if journal_path else None
        terminal = cls(protocol, config=scenario.terminal, host_config=host, journal=journal, clock=clock,
                       monotonic=monotonic, on_operation=on_operation, trace=trace)
        terminal.cards.present(*scenario.cards)
        terminal.rules.add(*scenario.rules)
        return terminal

    # --- running ----------------------------------------------------------------------------------
    def new_session(self) -> TerminalSession:
        """A fresh protocol session for the terminal's side, with the configured timers."""
        return self.protocol.terminal_session(timers=self.config.timers, part_size=self.config.part_size)

    async def run(self, url: str, *, ready: Callable[[Device], None] | None = None,
                  faults: str | None = None, switchable_faults: bool = False) -> None:
        """Open ``url`` and serve ECRs on it until cancelled; ``faults`` puts the line in a
        :class:`~posbridge.devices.faults.FaultyDevice` (its spec; ``rx`` is what the terminal receives).
        ``switchable_faults``: the line's faults may change while it runs (:attr:`line`, the control API)."""
        device: Device
        if switchable_faults:
            self.line = device = SwitchableFaults(await open_device(url), faults)
        else:
            device = await open_device(url, faults=faults)
        try:
            if ready:
                ready(device)
            await self.serve(device, keep_open=True)
        finally:
            await device.close()

    async def serve(self, device: Device, *, keep_open: bool = False) -> None:
        """Serve requests arriving on ``device`` until cancelled (or, unless ``keep_open``, until
        the device closes). Nothing an ECR sends ends it."""
        loop = asyncio.get_running_loop()
        pump = SessionPump(device, self.new_session(), clock=self.monotonic, trace=self.trace,
                           keep_open=keep_open)
        self._pump = pump
        pump.start()
        watchdog = None
        if keep_open and device.reconnects and self.config.idle_timeout > 0:
            watchdog = loop.create_task(self._idle_watchdog(pump), name="posbridge-idle-policy")
        try:
            while True:
                event = await pump.next_event()
                try:
                    stop = self._dispatch(pump, event)
                except Exception as error:  # never let one event end the service
                    log.error("handling %s failed: %s", type(event).__name__, summarize_error(error),
                              exc_info=log.isEnabledFor(logging.DEBUG))
                    continue
                if stop:
                    await self._wait_for_work()
                    return
        finally:
            job = self._job
            if job is not None and job.delivery is not None and job.delivery.done():
                # Stopped while an answered operation keeps its books (the delivery flag, its one
                # outcome line): a moment to finish them rather than lose them.
                keeping = [t for t in self._tasks if not t.done()]
                if keeping:
                    await asyncio.wait(keeping, timeout=BOOKS_GRACE)
            for task in (watchdog, self._keepalive, *self._tasks):
                if task is not None and not task.done():
                    task.cancel()
            for task in (watchdog, self._keepalive, *list(self._tasks)):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            self._tasks.clear()
            self._keepalive = None
            self._job = self._waiting = None
            await pump.stop()
            self._pump = None
            if self.state != "idle":
                self.finish()

    def forget_steering(self) -> None:
        """Forget outcome rules, queued cards and the host fault (the journal and its batches stay):
        what the control API's ``POST /reset`` and the test fixture's ``reset()`` undo."""
        self.rules.clear()
        self.cards.clear()
        self.host_config.fault = None

    @property
    def busy(self) -> bool:
        """An operation is in hand or waiting, or its books (delivery, the outcome line) are not kept yet."""
        return (self._job is not None or self._waiting is not None or self.state != "idle"
                or any(not task.done() for task in self._tasks))

    async def _wait_for_work(self) -> None:
        """Let the operation in hand (already abandoned: nothing more is sent) finish its books."""
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.delivery_timeout)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the dispatcher ---------------------------------------------------------------------------
    def _dispatch(self, pump: SessionPump, event: Any) -> bool:
        """Route one link event; True when serving must end (the device closed, not ``keep_open``)."""
        job = self._job
        if isinstance(event, (RequestReceived, RequestRejected)):
            self._last_activity = time.monotonic()
            if isinstance(event, RequestReceived):
                new = _Job(event.exchange, event.request, raw=event.raw)
                log.debug("request (exchange %s): %s", event.exchange, _describe_request(event.request))
            else:
                new = _Job(event.exchange, None, rejection=event)
                log.debug("unreadable request (exchange %s): %s", event.exchange, _clip(event.reason, 160, tame=True))
            if job is None and self._waiting is None:
                self._start(new)
                return False
            finishing = job is not None and job.delivery is not None and job.delivery.done()
            if job is not None and not finishing:
                job.abort("the ECR sent another request")
            if self._waiting is not None:
                self._drop(self._waiting, "superseded by a newer request")
            self._waiting = new
            if not finishing:  # else the operation in hand is only keeping its books: no wait
                log.debug("request (exchange %s) waits until the terminal is free", new.exchange)
                self._ensure_keepalive()
            return False
        if isinstance(event, (PromptAnswered, GatewayAnswered, AbortRequested, ResultDelivered, ResultUndelivered)):
            self._last_activity = time.monotonic()
        exchange = getattr(event, "exchange", None)
        # The operation in hand, if the event belongs to its exchange.
        mine = job if job is not None and exchange is not None and job.exchange == exchange else None
        if isinstance(event, ResultDelivered):
            if mine is not None:
                mine.delivered(True)
        elif isinstance(event, ResultUndelivered):
            if mine is not None:
                mine.delivered(False, f"no acknowledgement: {event.error}")
        elif isinstance(event, PromptAnswered):
            if mine is not None and mine.prompt is not None and not mine.prompt.done():
                mine.prompt.set_result(event.answer if event.ok else None)
        elif isinstance(event, GatewayAnswered):
            if mine is not None and mine.gateway is not None and not mine.gateway.done():
                mine.gateway.set_result((event.ok, event.data))
        elif isinstance(event, AbortRequested):
            log.debug("the ECR aborted (exchange %s)", exchange)
            if mine is not None:
                silent = pump.session.current_exchange != exchange
                mine.abort("the ECR ended the exchange (EOT)" if silent else "the ECR aborted")
            elif self._waiting is not None and self._waiting.exchange == exchange:
                self._drop(self._waiting, "aborted by the ECR before it was served")
                self._waiting = None
        elif isinstance(event, Failed) and not isinstance(event.error, ReaderStopped):
            log.debug("the link failed (exchange %s): %s", exchange, event.error)
            why = "the ECR disconnected" if isinstance(event.error, Disconnected) else \
                f"the link failed: {_clip(str(event.error), 120, tame=True)}"
            if mine is not None:
                mine.delivered(False, why)
                mine.abort(why)
            elif self._waiting is not None and self._waiting.exchange == exchange:
                self._drop(self._waiting, f"{why} before it was served")
                self._waiting = None
        elif isinstance(event, (LinkClosed, Failed)):  # Failed: the pump's reader stopped
            if isinstance(event, Failed):
                log.error("the link's reader stopped (%s); starting it again", event.error)
                pump.restart()
            else:
                log.debug("the ECR disconnected")
            self._last_activity = time.monotonic()
            if job is not None:
                job.delivered(False, "the ECR disconnected")
                job.abort("the ECR disconnected")
            if self._waiting is not None:
                self._drop(self._waiting, "the ECR disconnected before it was served")
                self._waiting = None
            return isinstance(event, LinkClosed) and not pump.keep_open
        return False

    def _start(self, job: _Job) -> None:
        self._job = job
        self._spawn(self._run_job(job), f"posbridge-operation-{job.exchange}")

    def _ensure_keepalive(self) -> None:
        if self._keepalive is None or self._keepalive.done():
            self._keepalive = asyncio.get_running_loop().create_task(self._keep_waiting_alive())

    async def _keep_waiting_alive(self) -> None:
        """WAIT / intermediate packets for a request that waits for the terminal to be free."""
        while (job := self._waiting) is not None:
            self._progress(job, "ПОДОЖДИТЕ")
            await asyncio.sleep(self.config.progress_interval)

    def _drop(self, job: _Job, why: str) -> None:
        """A waiting request that will never be served: journaled as the terminal's own refusal."""
        self._spawn(self._drop_books(job, why), "posbridge-dropped-request")

    async def _drop_books(self, job: _Job, why: str) -> None:
        try:
            if job.request is None:
                request = Request(Operation.TEST_CONNECTION)
                result, decision = await self._refusal(request, Status.DECLINED, CODE_BAD_MESSAGE,
                                                       TEXT_BAD_MESSAGE, None, force_thread=True)
            else:
                request = job.request
                result, decision = await self._refusal(request, Status.ABORTED, CODE_ABORTED, TEXT_ABORTED,
                                                       None, force_thread=True)
            await self._books(job, request, result, decision, False, f"not served: {why}")
        except Exception as error:
            log.error("recording a dropped request failed: %s", summarize_error(error))

    async def _idle_watchdog(self, pump: SessionPump) -> None:
        """The idle policy (module docstring): hang up on a quiet line when another ECR waits."""
        device: Any = pump.device
        limit = self.config.idle_timeout
        tick = max(0.02, min(0.25, limit / 4))
        while True:
            await asyncio.sleep(tick)
            try:
                now = time.monotonic()
                if not getattr(device, "connected", False):
                    continue
                if self._job is not None or self._waiting is not None or pump.session.busy:
                    self._last_activity = now
                    continue
                since = max(self._last_activity, getattr(device, "peer_since", None) or now)
                if now - since >= limit and device.waiting_peers:
                    log.debug("hanging up on a connection idle for %.1f s: another ECR waits", now - since)
                    device.drop_peer(f"no request for {now - since:.1f} s while another ECR waits")
                    self._last_activity = now
            except Exception as error:  # the policy must never stop the terminal
                log.warning("idle policy: %s", summarize_error(error))

    # --- one operation ----------------------------------------------------------------------------
    async def _run_job(self, job: _Job) -> None:
        try:
            if job.rejection is not None:
                await self._refuse(job)
            else:
                await self._serve(job)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug or a broken journal: answer what we can, serve on
            log.error("operation failed inside the terminal: %s", summarize_error(error),
                      exc_info=log.isEnabledFor(logging.DEBUG))
            await self._last_resort(job, error)
        finally:
            if self.state != "idle":
                self.finish()
            if self._job is job:
                self._job = None
            self._next()

    def _next(self) -> None:
        """Serve the waiting request, if its ECR still waits for it."""
        job, self._waiting = self._waiting, None
        if job is None:
            return
        pump = self._pump
        if pump is not None and pump.session.current_exchange == job.exchange:
            self._start(job)
        else:
            self._drop(job, "its ECR no longer waits for it")

    async def _serve(self, job: _Job) -> None:
        request = job.request
        assert request is not None
        self.receive_request()
        card: Card | None = None
        aborted = job.aborted.is_set()
        rule: Rule | None = None
        if request.operation in CARD_OPERATIONS and not aborted:
            self.wait_for_card()
            # The card in the slot is taken from the queue now, so that a rule may match it and set
            # this operation's delays; an operation aborted while the holder is slow still used it.
            card = self.cards.next_card()
            rule = self.rules.choose(request.operation, request.amount, card)
            aborted = await self._busy(job, _or(rule.card_delay if rule else None, self.config.card_delay), "ВСТАВЬТЕ КАРТУ")
            if aborted:
                card = None  # never presented: the refusal names no card
            else:
                self.enter_pin()
                aborted = await self._busy(job, _or(rule.pin_delay if rule else None, self.config.pin_delay), "ВВЕДИТЕ ПИН")
        elif not aborted and request.operation is not Operation.SLIP_COPY:
            rule = self.rules.choose(request.operation, request.amount, None)
        ask = rule.dialog if rule is not None and rule.dialog is not None else self.config.ask_last_digits
        if not aborted and card is not None and ask and self.protocol.capabilities.cashier_dialog:
            self.ask_cashier()
            answer = await self._ask(job, "ВВЕДИТЕ ПОСЛЕДНИЕ 4 ЦИФРЫ КАРТЫ")
            if answer is None:
                aborted = True
            elif answer != card.pan[-4:]:
                result, decision = await self._refusal(request, Status.DECLINED, CODE_CARD_DETAILS,
                                                       "ОТКАЗ: ДАННЫЕ КАРТЫ ВВЕДЕНЫ НЕВЕРНО", card)
                await self._deliver(job, result, decision)
                return
        if not aborted and not self._current(job):
            aborted = True  # its ECR is gone before the host was asked: charge nothing
            job.abort(job.gone or "the ECR no longer waits")
        if aborted:
            result, decision = await self._refusal(request, Status.ABORTED, CODE_ABORTED, TEXT_ABORTED, card)
            await self._deliver(job, result, decision)
            return
        if request.operation is Operation.SLIP_COPY:
            await self._deliver(job, self._slip_copy(request), None)
            return
        self.authorize()
        job.abortable = False  # the host decides now: whatever happens next, the decision stands
        forced = None
        if rule is not None and (rule.fault or rule.outcome):
            forced = Forced(fault=rule.fault, decline_code=rule.code if rule.outcome == "declined" else None,
                            decline_text=rule.text, approve=rule.outcome == "approved")
        # Without a rule the host is called as before (tests stand in for it with (request, card)).
        extra = () if forced is None else (forced,)
        report: BatchReport | None = None  # gateway mode: the host's (the terminal's journal is empty)
        if self.config.host_via_ecr:
            remote = await self._decide_via_ecr(job, request, card, forced)
            if remote is GatewayFailure.NO_CONNECTION:  # the request never left: nothing charged
                result, refusal = await self._refusal(request, Status.NO_CONNECTION, "", TEXTS[""], card)
                await self._deliver(job, result, refusal)
                return
            if remote is GatewayFailure.OUTCOME_UNKNOWN:  # the host may have decided: answer nothing
                return
            decision, report = remote
        else:
            decision = await self._off_loop(request.operation, self.host.process, request, card, *extra)
        await self._busy(job, _or(rule.host_delay if rule else None, self.host_config.latency), "СОЕДИНЕНИЕ С БАНКОМ")
        result = self._result(request, decision)
        result = result.with_changes(slips=await self._render(result, decision, report))
        await self._deliver(job, result, decision)

    def _current(self, job: _Job) -> bool:
        """Is the ECR of ``job`` still waiting for it (its exchange the session's current one)?"""
        pump = self._pump
        return pump is not None and job.exchange is not None and pump.session.current_exchange == job.exchange

    def _progress(self, job: _Job, text: str) -> None:
        pump = self._pump
        if pump is None or not self._current(job):
            return
        try:
            pump.act(lambda now: pump.session.send_progress(text, now))
        except Exception as error:
            log.warning("progress packet not sent: %s", summarize_error(error))

    async def _busy(self, job: _Job, seconds: float, text: str) -> bool:
        """Wait ``seconds`` while telling the ECR what we do (``text``); True if the operation was
        aborted meanwhile (only while ``job.abortable``: at the host, the wait runs to its end)."""
        if seconds <= 0:
            return job.abortable and job.aborted.is_set()
        end = self.monotonic() + seconds
        while (left := end - self.monotonic()) > 0:
            self._progress(job, text)
            step = min(left, self.config.progress_interval)
            if not job.abortable:
                await asyncio.sleep(step)
                continue
            try:
                await asyncio.wait_for(job.aborted.wait(), step)
            except (asyncio.TimeoutError, TimeoutError):
                continue
            return True
        return job.abortable and job.aborted.is_set()

    async def _ask(self, job: _Job, prompt: str) -> str | None:
        pump = self._pump
        if pump is None or job.aborted.is_set() or not self._current(job):
            return None
        timeout = self.config.dialog_timeout
        job.prompt = asyncio.get_running_loop().create_future()
        try:
            pump.act(lambda now: pump.session.send_prompt(prompt, timeout, now))
        except Exception as error:
            log.warning("cashier dialog not sent: %s", summarize_error(error))
            return None
        try:
            # The session times the dialog out itself; this bound only guards against a lost event.
            return await asyncio.wait_for(asyncio.shield(job.prompt), 2 * timeout + 30)
        except (asyncio.TimeoutError, TimeoutError):
            return None

    async def _gateway(self, job: _Job, action: str, data: bytes = b"") -> tuple[bool, bytes]:
        """Ask the ECR to carry out one gateway command for this job; (ok, data)."""
        pump = self._pump
        if pump is None or not self._current(job):
            return False, b""
        job.gateway = asyncio.get_running_loop().create_future()
        try:
            pump.act(lambda now: pump.session.send_gateway(action, data, now))
        except Exception as error:
            log.warning("gateway %s not sent: %s", action, summarize_error(error))
            return False, b""
        try:
            # The session gives up after WAITPACKET itself; this bound only guards against a lost event.
            return await asyncio.wait_for(asyncio.shield(job.gateway), 600.0)
        except (asyncio.TimeoutError, TimeoutError):
            return False, b""

    async def _decide_via_ecr(self, job: _Job, request: Request, card: Card | None,
                              forced: Forced | None) -> tuple[HostDecision, BatchReport | None] | GatewayFailure:
        """The host's decision, every message carried by the ECR (gateway mode) to ``posbridge host``
        at ``config.host_via_ecr``, with the batch's report lines for a settlement or full report
        (None from a host that sends none); or why there is none: the host unreachable
        (:attr:`GatewayFailure.NO_CONNECTION`), or, once the request may have reached the host, its
        answer lost (:attr:`GatewayFailure.OUTCOME_UNKNOWN`; the job is aborted)."""
        from posbridge.emulator.remote_host import (
            HostProtocolError,
            MessageReader,
            decision_from_json,
            process_request,
            report_from_json,
        )

        address = self.config.host_via_ecr or ""
        host, _, port = address.rpartition(":")
        opened, _ = await self._gateway(job, "open", f"{host};{port}".encode("ascii"))
        if not opened:
            log.info("gateway: the ECR could not reach the host at %s: no connection, nothing charged", address)
            return GatewayFailure.NO_CONNECTION
        try:
            listing = self._listing(request.operation)
            sent, _ = await self._gateway(job, "send", process_request(request, card, forced, self.config.host_key,
                                                                       listing=listing))
            reader, message = MessageReader(), None
            give_up = self.monotonic() + self.config.host_timeout
            while sent and message is None and self.monotonic() < give_up:
                received, data = await self._gateway(job, "receive")
                if not received:
                    break
                if data:
                    message = reader.feed(data)
                    continue
                # Nothing yet: a slow host. Keep the ECR waiting (WAIT), then ask again.
                self._progress(job, "СОЕДИНЕНИЕ С БАНКОМ")
                await asyncio.sleep(MIN_GATEWAY_POLL)
            if message is not None and "decision" in message:
                decision = decision_from_json(message["decision"])
                report = report_from_json(message["report"]) if message.get("report") is not None else None
                # Its operation_id names a row of the host's journal, not ours.
                return replace(decision, operation_id=None), report
            log.error("the host's answer through the ECR was lost%s: outcome unknown, no answer to the ECR",
                      f" ({message.get('error')})" if message else "")
        except HostProtocolError as error:
            log.error("the host's answer through the ECR is unreadable (%s): outcome unknown", error)
        finally:
            await self._gateway(job, "close")
        job.abort("the host's answer was lost on the way through the ECR")
        return GatewayFailure.OUTCOME_UNKNOWN

    async def _refuse(self, job: _Job) -> None:
        """Answer a message that is not a valid request: 913, as a real terminal prints a refusal."""
        self.receive_request()
        request = Request(Operation.TEST_CONNECTION)
        result, decision = await self._refusal(request, Status.DECLINED, CODE_BAD_MESSAGE, TEXT_BAD_MESSAGE, None)
        result = result.with_changes(response_code=CODE_BAD_MESSAGE)
        await self._deliver(job, result, decision)

    async def _last_resort(self, job: _Job, error: Exception) -> None:
        """The operation broke inside the terminal: answer its ECR with what is known, if it waits
        and nothing was sent yet (a host decision already taken stays in the journal)."""
        pump = self._pump
        if pump is None or not self._current(job) or job.delivery is not None:
            return
        request = job.request or Request(Operation.TEST_CONNECTION)
        result = Result(request.operation, Status.UNDEFINED, response_code="9001", host_code="9001",
                        response_text="ВНУТРЕННЯЯ ОШИБКА ТЕРМИНАЛА", terminal_id=self.host_config.terminal_id,
                        transaction_id=request.transaction_id, host_datetime=self.clock())
        try:
            sent = self._send_result(result)
            if sent is not None:
                job.delivery = asyncio.get_running_loop().create_future()
                delivered, why = await asyncio.wait_for(job.delivery, self.config.delivery_timeout)
            else:
                delivered, why = False, "the answer could not be encoded"
            self._keep(result, delivered)
            log.info("%s -> %s: %s", _describe_job(job), _describe_result(result),
                     "result delivered" if delivered else f"result NOT delivered ({why})",
                     extra={"outcome": _outcome_fields(job, result, delivered, why)})
        except Exception as again:
            log.error("the terminal could not answer after an internal error: %s", summarize_error(again))

    # --- sending ----------------------------------------------------------------------------------
    async def _deliver(self, job: _Job, result: Result, decision: HostDecision | None) -> None:
        """Send ``result`` to ``job``'s exchange if its ECR still waits, and keep the books."""
        self.print_slips()
        if not result.slips.customer and result.operation is not Operation.SLIP_COPY:
            result = result.with_changes(slips=self._safe_render(result, ()))
        if result.operation is not Operation.SLIP_COPY:
            self.last_result = result
        self.send_result()
        delivered, why = False, ""
        if not self._current(job):  # checked right before sending: never someone else's answer
            why = job.gone or "its ECR no longer waits for it"
        else:
            job.delivery = asyncio.get_running_loop().create_future()
            sent = self._send_result(result)
            if sent is None:
                why = "the answer could not be encoded"
            else:
                result = sent
                try:
                    delivered, why = await asyncio.wait_for(asyncio.shield(job.delivery),
                                                            self.config.delivery_timeout)
                except (asyncio.TimeoutError, TimeoutError):
                    why = f"no delivery outcome within {self.config.delivery_timeout:g} s"
        await self._books(job, job.request or Request(Operation.TEST_CONNECTION), result, decision, delivered, why)

    def _send_result(self, result: Result) -> Result | None:
        """Hand ``result`` to the session; an answer that cannot be encoded (over a field's or a
        frame's limit, a value the codec refuses) is replaced by a smaller one, never dropped."""
        pump = self._pump
        if pump is None:
            return None
        attempts = [result]
        if result.slips.customer or result.slips.cashier:
            attempts.append(result.with_changes(slips=self._safe_render(result, (), minimal=True)))
            attempts.append(result.with_changes(slips=Slips()))
        attempts.append(result.with_changes(slips=Slips(), response_text=_clip(result.response_text, 64)))
        for attempt in attempts:
            try:
                pump.act(lambda now: pump.session.send_result(attempt, now))
                return attempt
            except Exception as error:
                log.warning("the answer could not be encoded (%s); trying a smaller one", summarize_error(error))
        return None

    async def _books(self, job: _Job, request: Request, result: Result, decision: HostDecision | None,
                     delivered: bool, why: str) -> None:
        """Journal whether the result reached its ECR, keep it if not, log the one outcome line."""
        op_id = decision.operation_id if decision is not None else None
        if op_id is not None:
            try:
                await self._off_loop(None, self.journal.ledger.set_result_delivered, op_id, delivered)
            except Exception as error:
                log.error("journaling the delivery of operation %s failed: %s", op_id, summarize_error(error))
        self._keep(result, delivered)
        log.info("%s -> %s: %s", _describe_job(job), _describe_result(result),
                 "result delivered" if delivered else f"result NOT delivered ({why})",
                 extra={"outcome": _outcome_fields(job, result, delivered, why)})
        if self.on_operation:
            try:
                self.on_operation(request, result)
            except Exception as error:
                log.error("the on_operation callback failed: %s", summarize_error(error),
                          exc_info=log.isEnabledFor(logging.DEBUG))

    def _keep(self, result: Result, delivered: bool) -> None:
        if not delivered:
            self.undelivered.append(result)
            del self.undelivered[:-MAX_UNDELIVERED]

    async def _off_loop(self, operation: Operation | None, fn: Callable[..., T], *args: Any,
                        force_thread: bool = False) -> T:
        """Run ``fn`` in a worker thread where it is heavy (reports, settlement, a journal that
        fsyncs on every step), inline otherwise (a sale in memory costs less than the hop)."""
        if force_thread or self._journal_on_disk or operation in OFF_LOOP_OPERATIONS:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    # --- results ----------------------------------------------------------------------------------
    def _result(self, request: Request, decision: HostDecision) -> Result:
        return Result(
            operation=request.operation,
            status=decision.status,
            response_code=decision.code,
            response_text=decision.text,
            amount=decision.amount,
            currency=decision.currency,
            rrn=decision.rrn,
            auth_code=decision.auth_code,
            masked_pan=decision.masked_pan,
            card_scheme=decision.card_scheme,
            terminal_id=self.host_config.terminal_id,
            merchant_id=self.host_config.merchant_id,
            transaction_id=request.transaction_id,
            host_datetime=decision.host_datetime,
            host_code=decision.code,
            totals=decision.totals,
        )

    async def _render(self, result: Result, decision: HostDecision, report: BatchReport | None = None) -> Slips:
        """The slips of ``result``: never an exception (a closed batch must always be answered).
        A report's lines come from ``report`` (gateway mode: the host's) or the terminal's journal."""
        operation = result.operation

        def render() -> Slips:
            lines = report
            if lines is None and operation in REPORT_OPERATIONS and result.approved:
                lines = batch_report(self.journal.ledger.operations(self.host_config.terminal_id, decision.batch_number),
                                     self.host_config.currency, listing=self._listing(operation))
            return self._fitting(result, lines or BatchReport(), decision.auto_reversed)

        try:
            return await self._off_loop(operation, render)
        except Exception as error:
            log.error("the slip of %s could not be laid out (%s); a minimal one is sent", operation.value,
                      summarize_error(error))
            return self._safe_render(result, (), minimal=True)

    def _fitting(self, result: Result, report: BatchReport, auto_reversed: bool) -> Slips:
        """Render ``report``'s totals by scheme and the latest of its listed operations (the rest
        counted on the slip), halving the list until all copies fit :data:`SLIP_BUDGET`."""
        head = self._scheme_lines(report)
        listed = report.listed
        limit = len(listed)
        while True:
            shown = listed[len(listed) - limit:] if limit else ()
            details = list(head)
            if report.listed_total:
                details.append(self.printer._center("ОПЕРАЦИИ"))
                if report.listed_total > limit:
                    details.append(f"... ЕЩЕ {report.listed_total - limit} ОПЕРАЦИЙ РАНЕЕ")
                details += [self.printer.operation_line(op.host_datetime, TITLES[op.operation], op.masked_pan,
                                                        op.amount, op.currency) for op in shown]
            slips = self.printer.render(result, auto_reversed=auto_reversed, details=details)
            if limit == 0 or _slip_bytes(slips) <= SLIP_BUDGET:
                return slips  # still too big without a list: the sender falls back to a smaller answer
            limit //= 2

    def _safe_render(self, result: Result, details: Sequence[str], minimal: bool = False) -> Slips:
        try:
            slips = self.printer.render(result, details=details)
            if minimal or _slip_bytes(slips) > SLIP_BUDGET:
                return Slips(customer="\n".join(slips.customer.splitlines()[:40]))
            return slips
        except Exception as error:
            log.error("the slip could not be laid out: %s", summarize_error(error))
            return Slips()

    def _listing(self, operation: Operation) -> int | None:
        """How many operations a report of ``operation`` lists: a full report at most
        ``report_max_lines`` (the latest), anything else none (None)."""
        return max(0, self.config.report_max_lines) if operation is Operation.FULL_REPORT else None

    def _scheme_lines(self, report: BatchReport) -> list[str]:
        """Totals by card scheme, as real settlement slips print them."""
        if not report.schemes:
            return []
        p = self.printer
        currency = self.host_config.currency
        lines = [p._center("ПО ПЛАТЕЖНЫМ СИСТЕМАМ")]
        for totals in report.schemes:
            lines.append(totals.scheme[: p.width])
            for (count, amount), title in ((totals.sale, "ОПЛАТА"), (totals.refund, "ВОЗВРАТ"),
                                           (totals.cancel, "ОТМЕНА")):
                if count:
                    lines.append(p._pair(f" {title} ({count})", format_amount(amount, currency)))
            lines.append(p._pair(" ИТОГО:", format_amount(totals.net, currency)))
        return lines

    async def _refusal(self, request: Request, status: Status, code: str, text: str, card: Card | None,
                       force_thread: bool = False) -> tuple[Result, HostDecision | None]:
        """A result the terminal gives itself (aborted, 913, card details), journaled as an
        operation that never reached the host."""
        decision: HostDecision | None = None
        try:
            decision = await self._off_loop(None, self.host.record_refusal, request, status, code, text, card,
                                            force_thread=force_thread)
        except Exception as error:
            log.error("journaling the terminal's own refusal failed: %s", summarize_error(error))
        money = isinstance(request.operation, Operation) and request.operation.moves_money
        result = Result(
            operation=request.operation, status=status, response_code=code, host_code=code,
            response_text=text, amount=request.amount if money else None,
            currency=request.currency if money else None,
            masked_pan=card.masked_pan if card else None, card_scheme=card.scheme if card else None,
            terminal_id=self.host_config.terminal_id, merchant_id=self.host_config.merchant_id,
            transaction_id=request.transaction_id,
            host_datetime=decision.host_datetime if decision is not None else self.clock(),
        )
        return result, decision

    def _slip_copy(self, request: Request) -> Result:
        last = self.last_result
        if last is None:
            return Result(Operation.SLIP_COPY, Status.DECLINED, response_code="9001", host_code="9001",
                          response_text="НЕТ ЧЕКА ДЛЯ КОПИИ", terminal_id=self.host_config.terminal_id,
                          host_datetime=self.clock())
        mark = "*** КОПИЯ ***".center(self.printer.width).rstrip()
        slips = Slips(customer=f"{mark}\n{last.slips.customer}",
                      cashier=f"{mark}\n{last.slips.cashier}" if last.slips.cashier else "")
        return last.with_changes(operation=Operation.SLIP_COPY, status=Status.APPROVED, slips=slips,
                                 transaction_id=request.transaction_id, response_code="00", host_code="00")


class SwitchableFaults(Device):
    """A device whose line faults (the devices/faults.py grammar) can be changed while it serves:
    each change starts a fresh :class:`~posbridge.devices.faults.FaultyDevice` around the same
    line, so positions count from the change. Writes see the new faults at once; so do the bytes a
    read already waiting (a serving terminal always has one) takes next: the old faults are retired
    (a silence that swallowed every byte stops with the change, not when it would have run out).
    Bytes the old faults had already let through and still held (the rest of a ``split`` chunk, a
    ``delay`` not over) come first, at once, as they are. Other attributes (a listener's peers) are
    the line's."""

    def __init__(self, inner: Device, faults: str | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self._current: Device = inner
        self._handed_on = bytearray()  # through retired faults, not yet read
        self.spec: str | None = None
        self.set_faults(faults)

    def set_faults(self, spec: str | None) -> None:
        """Apply ``spec`` from the next read and write on (None or "": no faults); FaultSpecError if bad."""
        plan = FaultPlan.parse(spec) if spec else None
        old = self._current
        self._current = FaultyDevice(self.inner, plan) if plan is not None else self.inner
        self.spec = plan.spec() if plan is not None else None
        if isinstance(old, FaultyDevice):
            self._handed_on += old.retire()

    async def read(self, max_bytes: int = 4096) -> bytes:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
        while True:
            if self._handed_on:  # before anything read later; no await: cancellation loses nothing
                data = bytes(self._handed_on[:max_bytes])
                del self._handed_on[:max_bytes]
                return data
            device = self._current
            try:
                data = await device.read(max_bytes)
            except Superseded as handed_on:  # old faults, retired while the read waited
                data = handed_on.data
                if not data:
                    continue
            else:
                if device is not self.inner or device is self._current:
                    return data  # what the faults in force when it was read made of it
            # Bytes read after the faults changed: the faults now in force see them.
            current = self._current
            if not isinstance(current, FaultyDevice):
                return data
            await current.take_in(data)

    async def write(self, data: bytes) -> None:
        await self._current.write(data)

    def discard_input(self) -> int:
        dropped = len(self._handed_on)
        self._handed_on.clear()
        return dropped + self._current.discard_input()

    async def close(self) -> None:
        self._closed = True
        await self.inner.close()

    @property
    def closed(self) -> bool:
        return self.inner.closed

    @property
    def reconnects(self) -> bool:
        return self.inner.reconnects

    def __getattr__(self, name: str) -> Any:  # link_path, waiting_peers, peer_since, connected, drop_peer
        if name.startswith("__") or name in ("inner", "_current"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def _or(value: float | None, default: float) -> float:
    """A rule's delay if it sets one, else the configured one."""
    return default if value is None else value


def _slip_bytes(slips: Slips) -> int:
    """What the copies take on the wire: one byte a character (CP1251) and two per line end."""
    text = slips.customer + slips.cashier
    return len(text) + text.count("\n") + 64


def _clip(text: str, limit: int = 24, tame: bool = False) -> str:
    text = mask_card_numbers(str(text)) if tame else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe_request(request: Request) -> str:
    op = request.operation
    parts = [op.value if isinstance(op, Operation) else _clip(str(op))]
    if request.amount is not None:
        amount = request.amount
        if isinstance(amount, int) and not isinstance(amount, bool) and 0 <= amount < 10**15:
            parts.append(f"amount={format_amount(amount, request.currency if isinstance(request.currency, int) else 643)}")
        else:
            parts.append(f"amount={_clip(str(amount))}")
    for name in ("transaction_id", "rrn", "auth_code"):
        value = getattr(request, name)
        if value:
            parts.append(f"{name}={_clip(str(value))}")
    return " ".join(parts)


def _describe_job(job: _Job) -> str:
    if job.request is not None:
        return _describe_request(job.request)
    reason = job.rejection.reason if job.rejection is not None else ""
    return f"unreadable request ({_clip(reason, 120, tame=True)})"


def _outcome_fields(job: _Job, result: Result, delivered: bool, why: str) -> dict[str, object]:
    """The outcome line's facts as structured fields (``posbridge emulate --log-format json``):
    what was asked, how it ended, whether the ECR got the answer. Card numbers masked, values clipped."""
    request = job.request
    amount = request.amount if request is not None else None
    return {
        "operation": request.operation.value if request is not None and isinstance(request.operation, Operation)
        else "unreadable_request",
        "amount": amount if isinstance(amount, int) and not isinstance(amount, bool) and 0 <= amount < 10**15
        else None,
        "currency": request.currency if request is not None and isinstance(request.currency, int) else None,
        "transaction_id": _clip(str(request.transaction_id)) if request is not None and request.transaction_id
        else None,
        "status": result.status.value,
        "code": result.host_code or result.response_code,
        "rrn": result.rrn, "auth_code": result.auth_code, "masked_pan": result.masked_pan,
        "delivered": delivered,
        "reason": None if delivered else why,
    }


def _describe_result(result: Result) -> str:
    parts = [result.status.value, f"code={result.host_code or result.response_code}"]
    for name in ("rrn", "auth_code", "masked_pan"):
        value = getattr(result, name)
        if value:
            parts.append(f"{name}={value}")
    if result.totals is not None:
        parts.append(f"sales={result.totals.sale_count} refunds={result.totals.refund_count}")
    return " ".join(parts)


@contextlib.asynccontextmanager
async def running_terminal(terminal: VirtualTerminal, url: str) -> AsyncIterator[VirtualTerminal]:
    """Run ``terminal`` on ``url`` in a background task for the duration of the block."""
    device = await open_device(url)
    task = asyncio.get_running_loop().create_task(terminal.serve(device, keep_open=True))
    try:
        yield terminal
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await device.close()
