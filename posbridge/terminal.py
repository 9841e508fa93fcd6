"""The virtual terminal: a bank card terminal in software, speaking any registered protocol.

A ``transitions`` state machine (idle -> request received -> waiting for card -> PIN -> cashier
dialog -> authorizing -> printing -> sending result -> idle) driven by the protocol session's
events. Money decisions belong to its :class:`~posbridge.host.BankHost`; slips to its
:class:`~posbridge.slips.SlipPrinter`; the card holder is its :class:`~posbridge.cards.CardReader`.
Nothing here knows a protocol's bytes: the same machine serves every protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from transitions import Machine

import protocols
from devices import Device, open_device
from protocols.common.session import (
    AbortRequested,
    Failed,
    PromptAnswered,
    RequestReceived,
    RequestRejected,
    ResultDelivered,
    ResultUndelivered,
)

from .cards import Card, CardReader
from .host import BankHost, HostConfig, HostDecision
from .journal import Journal
from .model import Operation, Request, Result, Slips, Status
from .pump import LinkClosed, SessionPump, Trace
from .slips import TITLES, Merchant, SlipPrinter

log = logging.getLogger("posbridge.terminal")

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
TRANSITIONS = [
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
REPORT_OPERATIONS = frozenset({Operation.FULL_REPORT, Operation.SETTLEMENT})

# posbridge's own response codes for refusals the terminal makes itself (not the host's).
CODE_BAD_MESSAGE = "913"  # invalid message format (the manual's code)
CODE_CARD_DETAILS = "71015"  # card details entered incorrectly (the manual's code)
CODE_ABORTED = "998"


@dataclass
class TerminalConfig:
    """How the virtual terminal behaves (a scenario file fills this in)."""

    merchant: Merchant = field(default_factory=Merchant)
    copies: int = 2  # slips printed: the card holder's, then the cashier's
    slip_width: int = 32
    part_size: int = 1024  # bodies larger than this go out as multi-part SOH frames
    progress_interval: float = 5.0  # seconds between WAIT packets while busy
    card_delay: float = 0.0  # the card holder takes this long to present the card
    pin_delay: float = 0.0
    ask_last_digits: bool = False  # cashier dialog: "enter the last 4 digits of the card"
    dialog_timeout: float = 60.0
    timers: dict[str, float] = field(default_factory=dict)  # protocol timer overrides, seconds


class VirtualTerminal:
    """A virtual card terminal serving one ECR link at a time.

    Use :meth:`serve` with a device (``await terminal.serve(device)``) or :meth:`run` with a URL.
    ``clock`` gives the host's wall-clock time; ``monotonic`` drives the link timers.
    """

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
        # A ProtocolSpec too: e.g. protocols.arcus2.spec.spec_for_installation(ops.ini, rc_res.ini)
        self.protocol = protocol if isinstance(protocol, protocols.ProtocolSpec) else protocols.get(protocol)
        self.config = config or TerminalConfig()
        merchant = self.config.merchant
        self.host_config = host_config or HostConfig(
            terminal_id=merchant.terminal_id, merchant_id=merchant.merchant_id, merchant_name=merchant.name)
        self.journal = journal or Journal()
        self.host = BankHost(self.journal, self.host_config, clock=clock)
        self.cards = card_reader or CardReader()
        self.printer = SlipPrinter(merchant, width=self.config.slip_width, copies=self.config.copies)
        self.clock = clock
        self.monotonic = monotonic
        self.on_operation = on_operation
        self.trace = trace
        self.last_result: Result | None = None
        self.undelivered: list[Result] = []  # results the ECR never acknowledged
        self.state = "idle"
        self.state_history: deque[str] = deque(maxlen=256)  # recent states, for tests and the console
        self.machine = Machine(model=self, states=STATES, transitions=TRANSITIONS, initial="idle",
                               auto_transitions=False, model_override=False,
                               after_state_change=self._record_state)
        self._pump: SessionPump | None = None

    def _record_state(self) -> None:
        self.state_history.append(self.state)

    @classmethod
    def from_scenario(
        cls,
        scenario: Any | None,
        *,
        protocol: str = "inpas",
        journal_path: str | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> VirtualTerminal:
        """A terminal set up by a :class:`~posbridge.scenario.Scenario` (or the defaults)."""
        from dataclasses import replace

        from .scenario import Scenario

        scenario = scenario or Scenario()
        host = scenario.host if seed is None else replace(scenario.host, seed=seed)
        journal = Journal(journal_path) if journal_path else None
        terminal = cls(protocol, config=scenario.terminal, host_config=host, journal=journal, **kwargs)
        terminal.cards.present(*scenario.cards)
        return terminal

    # --- running ----------------------------------------------------------------------------------
    def new_session(self) -> Any:
        """A fresh protocol session for the terminal's side, with the configured timers."""
        return self.protocol.terminal_session(timers=self.config.timers, part_size=self.config.part_size)

    async def run(self, url: str, *, ready: Callable[[Device], None] | None = None,
                  faults: str | None = None) -> None:
        """Open ``url`` and serve ECRs on it until cancelled; ``faults`` puts the line in a
        :class:`~devices.faults.FaultyDevice` (its spec; ``rx`` is what the terminal receives)."""
        device = await open_device(url, faults=faults)
        try:
            if ready:
                ready(device)
            await self.serve(device, keep_open=True)
        finally:
            await device.close()

    async def serve(self, device: Device, *, keep_open: bool = False) -> None:
        """Serve requests arriving on ``device`` until cancelled (or the device closes)."""
        session = self.new_session()
        pump = SessionPump(device, session, clock=self.monotonic, trace=self.trace, keep_open=keep_open)
        self._pump = pump
        pump.start()
        try:
            while True:
                event = await pump.next_event()
                if isinstance(event, RequestReceived):
                    await self._serve(pump, event.request)
                elif isinstance(event, RequestRejected):
                    await self._refuse(pump, event)
                elif isinstance(event, LinkClosed) and not keep_open:
                    return
        finally:
            await pump.stop()
            self._pump = None
            if self.state != "idle":
                self.finish()

    # --- one operation ----------------------------------------------------------------------------
    async def _serve(self, pump: SessionPump, request: Request) -> None:
        self.receive_request()
        log.info("request: %s", _describe_request(request))
        card: Card | None = None
        decision: HostDecision | None = None
        aborted = False
        try:
            if request.operation in CARD_OPERATIONS:
                self.wait_for_card()
                aborted = await self._busy(pump, self.config.card_delay, "ВСТАВЬТЕ КАРТУ")
                if not aborted:
                    card = self.cards.next_card()
                    self.enter_pin()
                    aborted = await self._busy(pump, self.config.pin_delay, "ВВЕДИТЕ ПИН")
            if not aborted and card is not None and self.config.ask_last_digits and self.protocol.cashier_dialog:
                self.ask_cashier()
                answer = await self._ask(pump, "ВВЕДИТЕ ПОСЛЕДНИЕ 4 ЦИФРЫ КАРТЫ")
                if answer is None:
                    aborted = True
                elif answer != card.pan[-4:]:
                    result = self._refusal(request, Status.DECLINED, CODE_CARD_DETAILS,
                                           "ОТКАЗ: ДАННЫЕ КАРТЫ ВВЕДЕНЫ НЕВЕРНО", card)
                    await self._send(pump, request, result)
                    return
            if aborted:
                result = self._refusal(request, Status.ABORTED, CODE_ABORTED, "ОПЕРАЦИЯ ПРЕРВАНА", card)
                await self._send(pump, request, result)
                return
            if request.operation is Operation.SLIP_COPY:
                await self._send(pump, request, self._slip_copy(request))
                return
            self.authorize()
            decision = self.host.process(request, card)
            await self._busy(pump, self.host_config.latency, "СОЕДИНЕНИЕ С БАНКОМ", abortable=False)
            result = self._result(request, decision)
            details = self._report_lines(decision) if request.operation in REPORT_OPERATIONS else ()
            result = result.with_changes(slips=self.printer.render(
                result, auto_reversed=decision.auto_reversed, details=details))
            await self._send(pump, request, result)
        finally:
            if self.state != "idle":
                self.finish()

    async def _busy(self, pump: SessionPump, seconds: float, text: str, abortable: bool = True) -> bool:
        """Wait ``seconds`` while telling the ECR what we do (``text``); True if the ECR aborted."""
        if seconds <= 0:
            return False
        end = self.monotonic() + seconds
        while (left := end - self.monotonic()) > 0:
            pump.act(lambda now: pump.session.send_progress(text, now))
            try:
                event = await pump.next_event(min(left, self.config.progress_interval))
            except (TimeoutError, asyncio.TimeoutError):
                continue
            if abortable and isinstance(event, (AbortRequested, Failed, LinkClosed)):
                return True
        return False

    async def _ask(self, pump: SessionPump, prompt: str) -> str | None:
        timeout = self.config.dialog_timeout
        pump.act(lambda now: pump.session.send_prompt(prompt, timeout, now))
        while True:
            event = await pump.next_event()
            if isinstance(event, PromptAnswered):
                return event.answer if event.ok else None
            if isinstance(event, (AbortRequested, Failed, LinkClosed)):
                return None

    async def _send(self, pump: SessionPump, request: Request, result: Result) -> None:
        self.print_slips()
        if not result.slips.customer and result.operation is not Operation.SLIP_COPY:
            result = result.with_changes(slips=self.printer.render(result))
        if result.operation is not Operation.SLIP_COPY:
            self.last_result = result
        self.send_result()
        if not pump.session.busy:  # the ECR went away meanwhile: the session was reset
            log.warning("result NOT delivered (the ECR disconnected): %s", _describe_result(result))
            self.undelivered.append(result)
            if self.on_operation:
                self.on_operation(request, result)
            return
        pump.act(lambda now: pump.session.send_result(result, now))
        while True:
            event = await pump.next_event()
            if isinstance(event, ResultDelivered):
                log.info("result delivered: %s", _describe_result(result))
                break
            if isinstance(event, ResultUndelivered):
                log.warning("result NOT delivered (%s): %s", event.error, _describe_result(result))
                self.undelivered.append(result)
                break
            if isinstance(event, LinkClosed):
                self.undelivered.append(result)
                break
        if self.on_operation:
            self.on_operation(request, result)

    async def _refuse(self, pump: SessionPump, event: RequestRejected) -> None:
        self.receive_request()
        try:
            log.warning("request refused: %s", event.reason)
            request = Request(Operation.TEST_CONNECTION)
            result = Result(Operation.TEST_CONNECTION, Status.DECLINED, response_code=CODE_BAD_MESSAGE,
                            host_code=CODE_BAD_MESSAGE, response_text="НЕВЕРНЫЙ ФОРМАТ СООБЩЕНИЯ",
                            terminal_id=self.host_config.terminal_id, host_datetime=self.clock())
            self.print_slips()
            self.send_result()
            if pump.session.busy:  # else the ECR went away meanwhile
                pump.act(lambda now: pump.session.send_result(result, now))
                while not isinstance(await pump.next_event(), (ResultDelivered, ResultUndelivered, LinkClosed)):
                    pass
            if self.on_operation:
                self.on_operation(request, result)
        finally:
            self.finish()

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

    def _report_lines(self, decision: HostDecision) -> list[str]:
        """The operation list of a full report or a settlement: every approved money operation."""
        lines = []
        for op in self.journal.operations(self.host_config.terminal_id, decision.batch_number):
            if op.status is Status.APPROVED and op.operation.moves_money and op.amount:
                lines.append(self.printer.operation_line(op.host_datetime, TITLES[op.operation],
                                                         op.masked_pan, op.amount, op.currency))
        return lines

    def _refusal(self, request: Request, status: Status, code: str, text: str, card: Card | None) -> Result:
        return Result(
            operation=request.operation, status=status, response_code=code, host_code=code,
            response_text=text, amount=request.amount, currency=request.currency,
            masked_pan=card.masked_pan if card else None, card_scheme=card.scheme if card else None,
            terminal_id=self.host_config.terminal_id, merchant_id=self.host_config.merchant_id,
            transaction_id=request.transaction_id, host_datetime=self.clock(),
        )

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


def _describe_request(request: Request) -> str:
    parts = [request.operation.value]
    if request.amount is not None:
        parts.append(f"amount={request.amount} currency={request.currency}")
    for name in ("transaction_id", "rrn", "auth_code"):
        value = getattr(request, name)
        if value:
            parts.append(f"{name}={value}")
    return " ".join(parts)


def _describe_result(result: Result) -> str:
    parts = [result.operation.value, result.status.value, f"code={result.host_code or result.response_code}"]
    for name in ("amount", "rrn", "auth_code", "masked_pan"):
        value = getattr(result, name)
        if value:
            parts.append(f"{name}={value}")
    return " ".join(parts)


@contextlib.asynccontextmanager
async def running_terminal(terminal: VirtualTerminal, url: str):
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
