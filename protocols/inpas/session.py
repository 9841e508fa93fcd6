"""INPAS SA exchange sessions for both sides, sans-IO, speaking the protocol-neutral events of
:mod:`posbridge.protocols.common.session` (inpas-sa.md, "Exchange").

ECR: request -> ACK -> [WAIT | cashier dialog | gateway command]* -> final response -> ACK, EOT.
Terminal: the mirror image; it decides nothing about money: it reports the request and sends what
the application (the virtual terminal) tells it to.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Generic

from ..common.errors import AnswerMismatch, ExchangeAborted, ExchangeTimeout, LinkError, NotSupported
from ..common.model import Request, Result
from ..common.session import (
    AbortRequested,
    CashierPrompt,
    Completed,
    EcrEvent,
    GatewayAnswered,
    GatewayCommand,
    EcrSession,
    EventT,
    Failed,
    Progress,
    PromptAnswered,
    RequestReceived,
    RequestRejected,
    ResultDelivered,
    ResultUndelivered,
    TerminalEvent,
    TerminalSession,
    new_exchange_id,
)

from .constants import EOT, MAX_BODY
from .fields import Message
from .link import (
    InpasLink,
    LinkEvent,
    MessageDelivered,
    MessageReceived,
    MessageUndelivered,
    PacketTimeout,
    PeerEndOfTransmission,
)
from .mapping import (
    DEFAULT_ECR_ID,
    GATEWAY_MODES,
    MAX_GATEWAY_DATA,
    CustomCommand,
    OpCode,
    RequestContext,
    Tag,
    UnsupportedMessage,
    cashier_answer_message,
    cashier_prompt_message,
    dialog_kind,
    dialog_timeout,
    gateway_action,
    gateway_answer_message,
    gateway_command_message,
    gateway_data,
    message_to_request,
    message_to_result,
    operation_code,
    rejection_context,
    request_to_message,
    result_to_message,
    unreadable_result,
    wait_message,
)
from .options import InpasOptions


class _SessionBase(Generic[EventT]):
    """Plumbing both sides share: the link, and the driver-facing calls that go through it."""

    link: InpasLink

    def receive(self, data: bytes, now: float) -> list[EventT]:
        """Feed bytes read from the device; returns the events they complete."""
        return self._handle(self.link.receive(data, now), now)

    def poll(self, now: float) -> list[EventT]:
        """Let timers expire (resends, WAITACK, WAITPACKET)."""
        return self._handle(self.link.poll(now), now)

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must be called next, or None."""
        return self.link.next_deadline()

    def data_to_send(self) -> bytes:
        """Bytes to write to the device now (and forget)."""
        return self.link.data_to_send()

    def _handle(self, link_events: list[LinkEvent], now: float) -> list[EventT]:
        raise NotImplementedError


class _Ecr(enum.Enum):
    IDLE = "idle"
    REQUESTING = "requesting"  # request frames out, waiting for ACK
    WAITING = "waiting"  # waiting for the next packet
    PROMPTED = "prompted"  # the cashier is answering a dialog
    RELAYING = "relaying"  # the caller is carrying out a gateway command (GatewayCommand)
    ANSWERING = "answering"  # our dialog/gateway answer out, waiting for ACK


class InpasEcrSession(_SessionBase[EcrEvent], EcrSession):
    """The cash register's side of SA. See :class:`posbridge.protocols.common.session.EcrSession`.

    ``options``: :class:`InpasOptions` (an un-ACKed frame is not resent unless it says so).
    """

    def __init__(
        self,
        options: InpasOptions | None = None,
        ecr_id: str | None = DEFAULT_ECR_ID,
        part_size: int = MAX_BODY,
    ) -> None:
        self.link = InpasLink("ecr", _with_habit(options, resend=False), part_size=part_size)
        self.ecr_id = ecr_id
        self._state = _Ecr.IDLE
        self._request: Request | None = None
        self._expected_code = 0
        self._gateway: Message | None = None  # the gateway packet being relayed, then the last one answered

    @property
    def busy(self) -> bool:
        """True from :meth:`start` until the final answer arrives or the exchange fails."""
        return self._state is not _Ecr.IDLE

    @property
    def settle_time(self) -> float:
        """How long the line must stay quiet after a failed exchange before the next one starts:
        a terminal resends an un-ACKed answer every WAITACK, and those resends must die out."""
        return self.link.timers.ack_timeout * 1.2

    def start(self, request: Request, now: float) -> None:
        """Send ``request``; RuntimeError if an exchange is already in progress."""
        if self.busy:
            raise RuntimeError("an exchange is already in progress")
        self._request = request
        self._gateway = None
        self._expected_code = int(operation_code(request.operation))
        self.link.reset_receiver()
        self.link.send(request_to_message(request, self.ecr_id), now)
        self._state = _Ecr.REQUESTING

    def answer_prompt(self, answer: str, ok: bool, now: float) -> None:
        """Answer the terminal's cashier dialog (RuntimeError if none is waiting)."""
        if self._state is not _Ecr.PROMPTED:
            raise RuntimeError("no cashier dialog is waiting for an answer")
        self.link.send(cashier_answer_message(answer, ok), now)
        self._state = _Ecr.ANSWERING

    def answer_gateway(self, ok: bool, data: bytes, now: float) -> None:
        """Answer the terminal's gateway packet (:class:`GatewayCommand`): ``ok`` (67 = 0, else 1)
        and, for ``receive``, what the host sent (tag 70). RuntimeError if none is waiting."""
        if self._state is not _Ecr.RELAYING or self._gateway is None:
            raise RuntimeError("no gateway command is waiting for an answer")
        if len(data) > MAX_GATEWAY_DATA:
            raise ValueError(f"gateway data of {len(data)} bytes does not fit tag 70 ({MAX_GATEWAY_DATA} at most)")
        sub_command = self._gateway.get(Tag.COMMAND_MODE_2)
        self.link.send(gateway_answer_message(sub_command if isinstance(sub_command, str) else "", ok, data), now)
        self._state = _Ecr.ANSWERING

    def abort(self, now: float) -> None:
        """SA has no abort message from the ECR: the cashier cancels on the terminal itself."""
        raise NotSupported("INPAS SA has no ECR-side abort; cancel on the terminal's keypad")

    def reset(self) -> None:
        """Forget everything (the connection was lost)."""
        self.link.reset()
        self._state = _Ecr.IDLE

    def _fail(self, error: LinkError) -> list[EcrEvent]:
        self.link.discard_outgoing()
        self.link.stop_packet_timer()
        self._state = _Ecr.IDLE
        return [Failed(error)]

    def _handle(self, link_events: list[LinkEvent], now: float) -> list[EcrEvent]:
        events: list[EcrEvent] = []
        for event in link_events:
            if self._state is _Ecr.IDLE:
                continue  # stray packets after an exchange (already ACKed by the link)
            if isinstance(event, MessageDelivered):
                if self._state in (_Ecr.REQUESTING, _Ecr.ANSWERING):
                    self._state = _Ecr.WAITING
                    self.link.expect_packet(now)
            elif isinstance(event, MessageUndelivered):
                events += self._fail(event.error)
            elif isinstance(event, MessageReceived):
                events += self._on_message(event.message, now)
            elif isinstance(event, PeerEndOfTransmission):
                events += self._fail(ExchangeAborted("the terminal sent EOT"))
            elif isinstance(event, PacketTimeout):
                events += self._fail(ExchangeTimeout(
                    f"no packet from the terminal within {self.link.timers.packet_timeout:g} s"))
        return events

    def _on_message(self, message: Message, now: float) -> list[EcrEvent]:
        code = message.operation_code
        gateway = code == OpCode.CUSTOM_COMMAND and message.get(Tag.COMMAND_MODE_2) in _GATEWAY_COMMANDS
        intermediate = code in (OpCode.WAIT, OpCode.CASHIER_DIALOG) or gateway
        if not intermediate and not self._answers_our_request(message):
            return []  # a resent answer to an earlier exchange: the link ACKed it, nothing more
        if gateway and self._state is _Ecr.RELAYING and self._gateway is not None \
                and message.fields == self._gateway.fields:
            # The terminal resent the packet we are still carrying out (our ACK was lost): doing it
            # twice could send the host the same bytes twice. Once we have answered, the same
            # fields are a new command (the next "receive" looks exactly like the last one; a
            # terminal takes our answer as the ACK of its packet, so it resends nothing after it).
            return []
        events: list[EcrEvent] = []
        if self._state in (_Ecr.REQUESTING, _Ecr.ANSWERING):
            # The terminal answered, so it has our frame: its ACK was lost on the line.
            events += self._handle(self.link.assume_delivered(now), now)
        if code == OpCode.WAIT:
            text = message.get(Tag.DISPLAY)
            return events + [Progress(text if isinstance(text, str) else "")]
        if code == OpCode.CASHIER_DIALOG:
            prompt = message.get(Tag.CASHIER_PROMPT)
            seconds = dialog_timeout(message.get(Tag.TIMEOUT))  # at most MAX_DIALOG_TIMEOUT, or None
            self._state = _Ecr.PROMPTED
            # The cashier may think as long as the terminal allows; then the packet timer runs again.
            self.link.expect_packet(now, (seconds or 0) + self.link.timers.packet_timeout)
            return events + [CashierPrompt(prompt if isinstance(prompt, str) else "", seconds,
                                           dialog_kind(message.get(Tag.COMMAND_MODE_1)))]
        if gateway:
            self._gateway = message
            action = gateway_action(message)
            if action is None:  # a mode tag 64 that is neither 0 nor 1: refuse it, the terminal decides
                self.link.send(gateway_answer_message(str(message.get(Tag.COMMAND_MODE_2)), False), now)
                self._state = _Ecr.ANSWERING
                return events
            # The caller relays (connect and read timeouts of its own); the packet timer restarts
            # once the terminal has our answer.
            self.link.stop_packet_timer()
            self._state = _Ecr.RELAYING
            return events + [GatewayCommand(action, gateway_data(message))]
        result = message_to_result(message, self._request)
        self.link.send_control(EOT)
        self.link.stop_packet_timer()
        self._state = _Ecr.IDLE
        problems = unreadable_result(message)
        if problems:  # ACKed and closed with EOT like any answer: the line is clean, the outcome unknown
            return events + [Failed(AnswerMismatch(problems, answer=result))]
        return events + [Completed(result)]

    def _answers_our_request(self, message: Message) -> bool:
        """Same operation code as our request and, where both carry one, the same STAN."""
        if message.operation_code != self._expected_code:
            return False
        stan = message.get(Tag.STAN)
        ours = self._request.transaction_id if self._request else None
        return stan is None or ours is None or stan == ours


def _with_habit(options: InpasOptions | None, *, resend: bool) -> InpasOptions:
    """``options`` with ``resend_on_ack_timeout`` left open (None) set to the side's habit."""
    options = options or InpasOptions()
    if options.resend_on_ack_timeout is None:
        return dataclasses.replace(options, resend_on_ack_timeout=resend)
    return options


_GATEWAY_COMMANDS = (str(int(CustomCommand.GATEWAY_OPEN_CLOSE)), str(int(CustomCommand.GATEWAY_DATA)))


class _Terminal(enum.Enum):
    IDLE = "idle"
    PROCESSING = "processing"
    PROMPTING = "prompting"  # dialog sent, waiting for the ECR's answer
    RELAYING = "relaying"  # gateway command sent, waiting for the ECR's answer
    FINISHING = "finishing"  # final response sent, waiting for ACK


def _raw_code(message: Message) -> str | None:
    """Tag 25 as received (text), without turning it into a number (it may hold 5,000 digits)."""
    value = message.fields.get(int(Tag.OPERATION))
    return value if isinstance(value, str) else None


def _small_code(message: Message) -> int | None:
    """Tag 25 as an int when it is a plausible operation code (1-3 ASCII digits), else None."""
    raw = _raw_code(message)
    return int(raw) if raw is not None and raw.isascii() and raw.isdigit() and len(raw) <= 3 else None


class InpasTerminalSession(_SessionBase[TerminalEvent], TerminalSession):
    """The terminal's side of SA. See :class:`posbridge.protocols.common.session.TerminalSession`.

    Exchanges (posbridge's rules, ``docs/protocols/inpas-sa.md``):

    - every request it reports opens a new exchange (``current_exchange``, unique in the process);
    - while it works, a resend of the request in hand (same operation code and STAN) is ignored;
      any other request means the ECR gave up on its exchange: that exchange is abandoned (nothing
      more is sent for it) and the new request is reported at once — the application decides when
      to serve it (posbridge's virtual terminal queues it until the work in hand is done);
    - the ECR's EOT while the terminal works (waiting for the card, in a dialog) ends the exchange
      for the ECR, as INPAS's own library behaves: it is reported as :class:`AbortRequested` and
      ``current_exchange`` becomes None, so the abort is silent (no answer after the ECR's EOT);
    - a request it cannot read — unknown operation, a number field that is not a number, any
      error while mapping it — is reported as :class:`RequestRejected`, never raised.
    """

    def __init__(self, options: InpasOptions | None = None, part_size: int = 1024) -> None:
        """``options``: :class:`InpasOptions` (like real terminals it resends an un-ACKed frame, 3
        sends in all, unless they say otherwise); ``part_size``: longer bodies go out in SOH parts."""
        self.link = InpasLink("terminal", _with_habit(options, resend=True), part_size=part_size)
        self._state = _Terminal.IDLE
        self._context: RequestContext | None = None
        self._result_message: Message | None = None
        self._result: Result | None = None
        self._prompt_message: Message | None = None
        self._prompt_timeout: float | None = None
        self._gateway_message: Message | None = None
        self._gateway_action = ""
        self._exchange: int | None = None
        self._request_key: tuple[str | None, object] | None = None  # (tag 25, tag 26) in hand

    @property
    def busy(self) -> bool:
        """True from a request until its answer is delivered, given up or abandoned."""
        return self._state is not _Terminal.IDLE

    @property
    def current_exchange(self) -> int | None:
        """The exchange the ECR waits on now (None when idle, after the ECR's EOT or a reset)."""
        return self._exchange

    def send_progress(self, text: str, now: float) -> None:
        """Send WAIT (SA's WAIT carries no text); coalesced while anything is still queued."""
        if self._state is _Terminal.PROCESSING and not self.link.sending:
            self.link.send(wait_message(), now)  # WAITs are coalesced: one in flight at a time

    def send_prompt(self, prompt: str, timeout: float | None, now: float) -> None:
        """Send a cashier dialog packet (RuntimeError without a request in progress)."""
        if self._state is not _Terminal.PROCESSING:
            raise RuntimeError("a cashier dialog needs a request in progress")
        message = cashier_prompt_message(prompt, timeout)
        self.link.send(message, now)
        self._prompt_message = message
        self._prompt_timeout = timeout
        self._state = _Terminal.PROMPTING

    def send_gateway(self, action: str, data: bytes, now: float) -> None:
        """Ask the ECR to carry the host connection (operation 63, sub-commands 16/17): ``open``
        (``data``: ``ip;port[;ip;port]``), ``close``, ``send`` (``data`` for the host), ``receive``.
        The answer comes as :class:`GatewayAnswered` (ok False if the ECR refuses or stays silent
        for WAITPACKET). RuntimeError without a request in progress."""
        if self._state is not _Terminal.PROCESSING:
            raise RuntimeError("a gateway command needs a request in progress and no other question open")
        if action not in GATEWAY_MODES:
            raise ValueError(f"gateway action must be one of {', '.join(GATEWAY_MODES)}, not {action!r}")
        if len(data) > MAX_GATEWAY_DATA:
            raise ValueError(f"gateway data of {len(data)} bytes does not fit tag 70 ({MAX_GATEWAY_DATA} at most)")
        message = gateway_command_message(action, data)
        self.link.send(message, now)
        self._gateway_message, self._gateway_action = message, action
        self._state = _Terminal.RELAYING

    def send_result(self, result: Result, now: float) -> None:
        """Send the final response; if it cannot be encoded (InvalidRequest: a field too long…)
        nothing is sent, the session is unchanged and the caller may send a smaller result."""
        if self._state not in (_Terminal.PROCESSING, _Terminal.PROMPTING, _Terminal.RELAYING) \
                or self._context is None:
            raise RuntimeError("there is no request to answer")
        message = result_to_message(result, self._context)
        previous = self._result, self._result_message
        self._result, self._result_message = result, message
        try:
            self.link.send(message, now)
        except BaseException:
            self._result, self._result_message = previous
            raise
        self.link.stop_packet_timer()
        self._state = _Terminal.FINISHING

    def reset(self) -> None:
        """Forget everything (the ECR disconnected)."""
        self.link.reset()
        self._end_exchange()

    def _end_exchange(self) -> None:
        self._state = _Terminal.IDLE
        self._context = None
        self._result = None
        self._result_message = None
        self._prompt_message = None
        self._gateway_message = None
        self._exchange = None
        self._request_key = None

    def _handle(self, link_events: list[LinkEvent], now: float) -> list[TerminalEvent]:
        events: list[TerminalEvent] = []
        for event in link_events:
            if isinstance(event, MessageReceived):
                events += self._on_message(event.message, now)
            elif isinstance(event, MessageDelivered):
                if event.message is self._result_message and self._result is not None:
                    events.append(ResultDelivered(self._result, exchange=self._exchange))
                    self._end_exchange()
                elif event.message is self._prompt_message and self._state is _Terminal.PROMPTING:
                    timeout = self._prompt_timeout
                    self.link.expect_packet(now, timeout + 1.0 if timeout else None)
                elif event.message is self._gateway_message and self._state is _Terminal.RELAYING:
                    self.link.expect_packet(now)  # the ECR relays within WAITPACKET or we give up
            elif isinstance(event, MessageUndelivered):
                if event.message is self._result_message and self._result is not None:
                    events.append(ResultUndelivered(self._result, event.error, exchange=self._exchange))
                    self._end_exchange()
                elif event.message is self._gateway_message and self._state is _Terminal.RELAYING:
                    self._state = _Terminal.PROCESSING  # the ECR never took the command: it was not done
                    events.append(GatewayAnswered(self._gateway_action, False, exchange=self._exchange))
                else:
                    events.append(Failed(event.error, exchange=self._exchange))
            elif isinstance(event, PeerEndOfTransmission):
                if self._state in (_Terminal.PROCESSING, _Terminal.PROMPTING, _Terminal.RELAYING):
                    # After its EOT the exchange is over for the ECR: abort, and answer nothing.
                    events.append(AbortRequested(exchange=self._exchange))
                    self._abandon()
            elif isinstance(event, PacketTimeout) and self._state is _Terminal.PROMPTING:
                self._state = _Terminal.PROCESSING
                events.append(PromptAnswered("", ok=False, exchange=self._exchange))
            elif isinstance(event, PacketTimeout) and self._state is _Terminal.RELAYING:
                self._state = _Terminal.PROCESSING
                events.append(GatewayAnswered(self._gateway_action, False, exchange=self._exchange))
        return events

    def _abandon(self) -> None:
        """The ECR is no longer waiting on the exchange in hand: send nothing more for it."""
        self.link.discard_outgoing()
        self.link.stop_packet_timer()
        self._end_exchange()

    def _is_resend(self, message: Message) -> bool:
        """The request in hand again: same operation code and STAN."""
        return self._request_key is not None and \
            (_raw_code(message), message.fields.get(int(Tag.STAN))) == self._request_key

    def _on_message(self, message: Message, now: float) -> list[TerminalEvent]:
        events: list[TerminalEvent] = []
        if self.link.sending and self._state in (_Terminal.FINISHING, _Terminal.PROMPTING, _Terminal.RELAYING) \
                and not self._is_resend(message):
            # The ECR answered or moved on to its next request: it has our frame, its ACK was lost.
            events = self._handle(self.link.assume_delivered(now), now)
        return events + self._on_ecr_message(message, now)

    def _on_ecr_message(self, message: Message, now: float) -> list[TerminalEvent]:
        code = _small_code(message)
        if self._state is _Terminal.PROMPTING and code == OpCode.CASHIER_DIALOG:
            self.link.stop_packet_timer()
            self._state = _Terminal.PROCESSING
            answer = message.get(Tag.CASHIER_ANSWER)
            return [PromptAnswered(answer if isinstance(answer, str) else "",
                                   ok=message.get(Tag.COMMAND_RESULT) in (None, "0"), exchange=self._exchange)]
        if self._state is _Terminal.RELAYING and code == OpCode.CUSTOM_COMMAND \
                and message.get(Tag.COMMAND_MODE_2) in _GATEWAY_COMMANDS:
            self.link.stop_packet_timer()
            self._state = _Terminal.PROCESSING
            return [GatewayAnswered(self._gateway_action, ok=message.get(Tag.COMMAND_RESULT) == "0",
                                    data=gateway_data(message), exchange=self._exchange)]
        events: list[TerminalEvent] = []
        if self._state is not _Terminal.IDLE:
            if self._is_resend(message) or code == OpCode.CASHIER_DIALOG or (
                    code == OpCode.CUSTOM_COMMAND and message.get(Tag.COMMAND_MODE_2) in _GATEWAY_COMMANDS):
                return []  # the request in hand resent, or a late dialog or gateway answer: nothing new
            # Another request: the ECR gave up on the exchange in hand.
            if self._state is _Terminal.FINISHING and self._result is not None:
                events.append(ResultUndelivered(self._result, ExchangeAborted(
                    "the ECR sent a new request before it had the whole answer"), exchange=self._exchange))
            self._abandon()
        return events + self._accept(message)

    def _accept(self, message: Message) -> list[TerminalEvent]:
        self._state = _Terminal.PROCESSING
        self._exchange = exchange = new_exchange_id()
        self._request_key = (_raw_code(message), message.fields.get(int(Tag.STAN)))
        try:
            request, self._context = message_to_request(message)
        except Exception as error:  # UnsupportedMessage, or anything a hostile field provokes
            self._context = _safe_rejection_context(message)
            if isinstance(error, UnsupportedMessage):
                return [RequestRejected(error.reason, error.operation_code, exchange=exchange)]
            code = _raw_code(message) or ""
            return [RequestRejected(f"unreadable request ({type(error).__name__})",
                                    code if len(code) <= 12 else "", exchange=exchange)]
        return [RequestReceived(request, raw=repr(message), exchange=exchange)]


def _safe_rejection_context(message: Message) -> RequestContext:
    """What to echo in a refusal: the request's own codes where they are sane, else nothing."""
    try:
        return rejection_context(message)
    except Exception:
        return RequestContext(_small_code(message) or 0)
