"""Toyline exchange sessions for both sides, sans-IO, on posbridge's typed session bases.

ECR: ``Q`` -> ACK -> (``P`` -> ACK)* -> ``R`` -> ACK. Terminal: the mirror image; it decides nothing
about money: it reports the request and sends what the application tells it to.
"""

from __future__ import annotations

import enum

from posbridge.protocols.common.errors import (
    AnswerMismatch,
    ExchangeAborted,
    ExchangeTimeout,
    LinkError,
    NotSupported,
    UnsupportedMessage,
)
from posbridge.protocols.common.link import (
    MessageDelivered,
    MessageReceived,
    MessageUndelivered,
    PacketTimeout,
)
from posbridge.protocols.common.model import Request, Result
from posbridge.protocols.common.session import (
    Completed,
    EcrEvent,
    EcrSession,
    Failed,
    Progress,
    RequestReceived,
    RequestRejected,
    ResultDelivered,
    ResultUndelivered,
    TerminalEvent,
    TerminalSession,
    new_exchange_id,
)

from .link import LinkEvent, ToyLink
from .mapping import (
    PROGRESS,
    REQUEST,
    RESULT,
    Message,
    message_to_request,
    message_to_result,
    progress_message,
    request_to_message,
    result_to_message,
    unreadable_result,
)
from .options import ToyOptions

_NO_DIALOG = "toyline has no cashier dialog"


class _Ecr(enum.Enum):
    IDLE = "idle"
    REQUESTING = "requesting"  # Q in flight
    WAITING = "waiting"  # Q delivered, the packet timer runs


class ToyEcrSession(EcrSession):
    """The cash register's side."""

    def __init__(self, options: ToyOptions | None = None) -> None:
        self.link = ToyLink(options or ToyOptions())
        self._state = _Ecr.IDLE
        self._request: Request | None = None
        self._sent: Message | None = None

    @property
    def busy(self) -> bool:
        return self._state is not _Ecr.IDLE

    @property
    def settle_time(self) -> float:
        """A terminal resends an unacknowledged result every ``ack_timeout``: let that die out."""
        return self.link.options.ack_timeout * 1.2

    def start(self, request: Request, now: float) -> None:
        if self.busy:
            raise RuntimeError("an exchange is already in progress")
        message = request_to_message(request)
        self.link.send(message, now)
        self._request, self._sent, self._state = request, message, _Ecr.REQUESTING

    def answer_prompt(self, answer: str, ok: bool, now: float) -> None:
        raise NotSupported(_NO_DIALOG)

    def abort(self, now: float) -> None:
        raise NotSupported("toyline has no ECR-side abort")

    def receive(self, data: bytes, now: float) -> list[EcrEvent]:
        return self._handle(self.link.receive(data, now), now)

    def poll(self, now: float) -> list[EcrEvent]:
        return self._handle(self.link.poll(now), now)

    def next_deadline(self) -> float | None:
        return self.link.next_deadline()

    def data_to_send(self) -> bytes:
        return self.link.data_to_send()

    def reset(self) -> None:
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
                continue  # late frames of an earlier exchange (the link ACKed them)
            if isinstance(event, MessageDelivered) and event.message is self._sent:
                self._state = _Ecr.WAITING
                self.link.expect_packet(now)
            elif isinstance(event, MessageUndelivered) and event.message is self._sent:
                events += self._fail(event.error)
            elif isinstance(event, MessageReceived):
                events += self._on_message(event.message, now)
            elif isinstance(event, PacketTimeout) and self._state is _Ecr.WAITING:
                events += self._fail(ExchangeTimeout(
                    f"no message from the terminal within {self.link.options.packet_timeout:g} s"))
        return events

    def _on_message(self, message: Message, now: float) -> list[EcrEvent]:
        request = self._request
        assert request is not None
        if message.cls == PROGRESS or (message.cls == RESULT and self._answers(message, request)):
            if self._state is _Ecr.REQUESTING:  # the terminal answered: it has our Q, its ACK was lost
                self.link.assume_delivered(now)
                self._state = _Ecr.WAITING
            if message.cls == PROGRESS:
                self.link.expect_packet(now)
                return [Progress(message.get("txt") or "")]
            self.link.stop_packet_timer()
            self.link.discard_outgoing()
            self._state = _Ecr.IDLE
            result = message_to_result(message, request)
            problems = unreadable_result(message)
            return [Failed(AnswerMismatch(problems, answer=result))] if problems else [Completed(result)]
        return []  # a result of an earlier exchange, or a Q from a confused peer

    @staticmethod
    def _answers(message: Message, request: Request) -> bool:
        """Same operation and, where both carry one, the same transaction id."""
        theirs = message.get("id")
        return message.get("op") == request.operation.value and \
            (theirs is None or request.transaction_id is None or theirs == request.transaction_id)


class _Terminal(enum.Enum):
    IDLE = "idle"
    PROCESSING = "processing"
    FINISHING = "finishing"  # R in flight


class ToyTerminalSession(TerminalSession):
    """The terminal's side. A resend of the request in hand (same operation and transaction id) is
    ignored; another request means the ECR gave up on the exchange in hand: it is abandoned."""

    def __init__(self, options: ToyOptions | None = None) -> None:
        self.link = ToyLink(options or ToyOptions())
        self._state = _Terminal.IDLE
        self._exchange: int | None = None
        self._key: tuple[str | None, str | None] | None = None
        self._result: Result | None = None
        self._result_message: Message | None = None

    @property
    def busy(self) -> bool:
        return self._state is not _Terminal.IDLE

    @property
    def current_exchange(self) -> int | None:
        return self._exchange

    def send_progress(self, text: str, now: float) -> None:
        if self._state is _Terminal.PROCESSING and not self.link.sending:
            self.link.send(progress_message(text), now)

    def send_prompt(self, prompt: str, timeout: float | None, now: float) -> None:
        raise NotSupported(_NO_DIALOG)

    def send_result(self, result: Result, now: float) -> None:
        """Send the result; if it cannot be framed (InvalidRequest) nothing changes."""
        if self._state is not _Terminal.PROCESSING:
            raise RuntimeError("there is no request to answer")
        message = result_to_message(result)
        self.link.discard_outgoing()  # a progress message still in flight is moot now
        self.link.send(message, now)
        self._result, self._result_message, self._state = result, message, _Terminal.FINISHING

    def receive(self, data: bytes, now: float) -> list[TerminalEvent]:
        return self._handle(self.link.receive(data, now), now)

    def poll(self, now: float) -> list[TerminalEvent]:
        return self._handle(self.link.poll(now), now)

    def next_deadline(self) -> float | None:
        return self.link.next_deadline()

    def data_to_send(self) -> bytes:
        return self.link.data_to_send()

    def reset(self) -> None:
        self.link.reset()
        self._end()

    def _end(self) -> None:
        self._state, self._exchange, self._key = _Terminal.IDLE, None, None
        self._result = self._result_message = None

    def _handle(self, link_events: list[LinkEvent], now: float) -> list[TerminalEvent]:
        events: list[TerminalEvent] = []
        for event in link_events:
            if isinstance(event, MessageReceived) and event.message.cls == REQUEST:
                events += self._on_request(event.message, now)
            elif isinstance(event, (MessageDelivered, MessageUndelivered)) and \
                    event.message is self._result_message and self._result is not None:
                if isinstance(event, MessageDelivered):
                    events.append(ResultDelivered(self._result, exchange=self._exchange))
                else:
                    events.append(ResultUndelivered(self._result, event.error, exchange=self._exchange))
                self._end()
            elif isinstance(event, MessageUndelivered):
                events.append(Failed(event.error, exchange=self._exchange))  # a P the ECR would not take
        return events

    def _on_request(self, message: Message, now: float) -> list[TerminalEvent]:
        key = (message.get("op"), message.get("id"))
        events: list[TerminalEvent] = []
        if self._state is not _Terminal.IDLE:
            if key == self._key:
                return []  # the request in hand, resent
            if self._state is _Terminal.FINISHING and self._result is not None:
                events.append(ResultUndelivered(self._result, ExchangeAborted(
                    "the ECR sent a new request before it had the answer"), exchange=self._exchange))
            self.link.discard_outgoing()
            self._end()
        self._state, self._key = _Terminal.PROCESSING, key
        self._exchange = exchange = new_exchange_id()
        try:
            request = message_to_request(message)
        except UnsupportedMessage as error:
            return events + [RequestRejected(error.reason, error.operation_code, exchange=exchange)]
        return events + [RequestReceived(request, raw=repr(message), exchange=exchange)]
