"""Arcus2-style exchange sessions for both sides, sans-IO, speaking the protocol-neutral events of
:mod:`posbridge.protocols.common.session` (arcus2.md, "Exchange").

ECR turn with ``Q`` -> zero or more terminal turns with ``I`` -> terminal turn with ``R``. While the
operation waits for the card or PIN the ECR may send ``A``; the terminal then ends it with an ``R``
whose response code is 998. Arcus has no cashier dialog.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ..common.errors import AnswerMismatch, ExchangeTimeout, LinkError, NotSupported
from ..common.model import Request, Result
from ..common.session import (
    AbortRequested,
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

from .codes import DEFAULT_TEXTS
from .constants import ABORT, INTERMEDIATE, REQUEST, RESULT
from .fields import Message
from .link import (
    Arcus2Link,
    LinkEvent,
    MessageDelivered,
    MessageReceived,
    MessageUndelivered,
    PacketTimeout,
)
from .mapping import (
    RequestContext,
    UnsupportedMessage,
    abort_message,
    intermediate_message,
    message_to_request,
    message_to_result,
    rejection_context,
    request_to_message,
    result_to_message,
    unreadable_result,
)
from .ops import OpsTable, default_ops_table
from .options import Arcus2Options

_NO_DIALOG = "Arcus has no cashier dialog"


class _Ecr(enum.Enum):
    IDLE = "idle"
    REQUESTING = "requesting"  # Q queued or in flight
    WAITING = "waiting"  # Q delivered; the result timer runs


class Arcus2EcrSession(EcrSession):
    """The cash register's side. See :class:`posbridge.protocols.common.session.EcrSession`.

    ``texts`` (rc_res) give ``Result.response_text`` when the terminal sent no ``text_message``.
    """

    def __init__(
        self,
        options: Arcus2Options | None = None,
        ops_table: OpsTable | None = None,
        texts: Mapping[str, str] | None = None,
    ) -> None:
        self.link = Arcus2Link("ecr", options)
        self.ops = ops_table or default_ops_table()
        self.texts = texts if texts is not None else DEFAULT_TEXTS
        self._state = _Ecr.IDLE
        self._request: Request | None = None
        self._request_message: Message | None = None

    @property
    def busy(self) -> bool:
        """True from :meth:`start` until the result arrives or the exchange fails."""
        return self._state is not _Ecr.IDLE

    @property
    def settle_time(self) -> float:
        """How long the line must stay quiet after a failed exchange before the next one starts:
        a terminal resends an un-ACKed R every T1, and those resends must die out (a late R is
        also recognised by its echo, and an ENQ collision is the terminal's anyway)."""
        return self.link.timers.ack_timeout * 1.2

    def start(self, request: Request, now: float) -> None:
        """Send ``request`` as ``Q``; InvalidRequest if the ops table has no code for it."""
        if self.busy:
            raise RuntimeError("an exchange is already in progress")
        message = request_to_message(request, self.ops)
        self.link.reset_receiver()  # a half frame left by line damage belongs to no exchange
        # The previous exchange ended with the terminal's R, its last word: its EOT (which a client
        # may have discarded as stale input) is not worth waiting for.
        self.link.end_peer_turn(now)
        self._request, self._request_message = request, message
        self.link.send(message, now)
        self._state = _Ecr.REQUESTING

    def answer_prompt(self, answer: str, ok: bool, now: float) -> None:
        """Never called: an Arcus terminal asks the cashier nothing through the ECR."""
        raise NotSupported(_NO_DIALOG)

    def abort(self, now: float) -> None:
        """Send ``A`` for the operation in progress (the terminal answers 998 while it waits for
        the card or PIN, later it finishes the operation); nothing happens when idle."""
        if self._state is not _Ecr.IDLE and self._request is not None:
            self.link.send(abort_message(self._request.transaction_id), now)

    def receive(self, data: bytes, now: float) -> list[EcrEvent]:
        """Feed bytes read from the device; returns the events they complete."""
        return self._handle(self.link.receive(data, now), now)

    def poll(self, now: float) -> list[EcrEvent]:
        """Let timers expire (ENQ tries, resends, the result timer)."""
        return self._handle(self.link.poll(now), now)

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must be called next, or None."""
        return self.link.next_deadline()

    def data_to_send(self) -> bytes:
        """Bytes to write to the device now (and forget)."""
        return self.link.data_to_send()

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
                continue  # late packets of an earlier exchange (already ACKed by the link)
            if isinstance(event, MessageDelivered):
                if event.message is self._request_message and self._state is _Ecr.REQUESTING:
                    self._state = _Ecr.WAITING
                    self.link.expect_packet(now)
            elif isinstance(event, MessageUndelivered):
                if event.message is self._request_message and self._state is _Ecr.REQUESTING:
                    events += self._fail(event.error)
                # an undelivered A changes nothing: the result timer still guards the exchange
            elif isinstance(event, MessageReceived):
                events += self._on_message(event.message, now)
            elif isinstance(event, PacketTimeout) and self._state is _Ecr.WAITING:
                events += self._fail(ExchangeTimeout(
                    f"no packet from the terminal within {self.link.timers.packet_timeout:g} s"))
        return events

    def _on_message(self, message: Message, now: float) -> list[EcrEvent]:
        if message.message_class == INTERMEDIATE:
            # An I means the terminal has our Q, even if its ACK was lost on the line.
            self._state = _Ecr.WAITING
            self.link.expect_packet(now)
            return [Progress(message.get("text_message") or "")]
        if message.message_class != RESULT:
            return []
        request, sent = self._request, self._request_message
        assert request is not None and sent is not None
        if message.get("transaction_id") not in (None, sent.get("transaction_id")) or \
                message.get("operation") not in (None, sent.get("operation")):
            return []  # the late R of an earlier exchange: keep waiting for ours
        result = message_to_result(message, request, self.texts)
        self.link.stop_packet_timer()
        self.link.discard_outgoing()  # an A still queued has nothing left to abort
        self._state = _Ecr.IDLE
        problems = unreadable_result(message)
        if problems:  # the R was ACKed like any other: the line stays clean, the outcome unknown
            return [Failed(AnswerMismatch(problems, answer=result))]
        return [Completed(result)]


class _Terminal(enum.Enum):
    IDLE = "idle"
    PROCESSING = "processing"
    FINISHING = "finishing"  # R queued or in flight


class Arcus2TerminalSession(TerminalSession):
    """The terminal's side. See :class:`posbridge.protocols.common.session.TerminalSession`.

    It decides nothing about money: it reports the request and sends what the application (the
    virtual terminal) tells it to. Exchanges (posbridge's rules, ``docs/protocols/arcus2.md``):

    - every ``Q`` it reports opens a new exchange (``current_exchange``, unique in the process);
    - while it works, a resend of the ``Q`` in hand (same ``operation`` and ``transaction_id``) is
      ignored; any other ``Q`` means the ECR gave up on its exchange: that exchange is abandoned
      (nothing more is sent for it) and the new ``Q`` is reported at once — the application decides
      when to serve it. While an ``R`` is in flight a new ``Q`` waits until that ``R`` is delivered
      or given up, then it is reported;
    - ``A`` for the operation in hand is reported as :class:`AbortRequested`; the exchange goes on
      (the terminal answers 998 while it waits for the card or PIN);
    - a ``Q`` it cannot read is reported as :class:`RequestRejected`, never raised.
    """

    def __init__(self, options: Arcus2Options | None = None, ops_table: OpsTable | None = None) -> None:
        self.link = Arcus2Link("terminal", options)
        self.ops = ops_table or default_ops_table()
        self._state = _Terminal.IDLE
        self._context: RequestContext | None = None
        self._result: Result | None = None
        self._result_message: Message | None = None
        self._deferred: Message | None = None  # a new request that came while our R was in flight
        self._exchange: int | None = None
        self._request_key: tuple[str | None, str | None] | None = None  # (operation, transaction_id)

    @property
    def busy(self) -> bool:
        """True from a request until its result is delivered or given up."""
        return self._state is not _Terminal.IDLE

    @property
    def current_exchange(self) -> int | None:
        """The exchange the ECR waits on now (None when idle or after a reset)."""
        return self._exchange

    def send_progress(self, text: str, now: float) -> None:
        """Send ``I`` with ``text`` (a default when empty); coalesced while anything is still queued."""
        if self._state is _Terminal.PROCESSING and not self.link.sending:
            self.link.send(intermediate_message(text), now)

    def send_prompt(self, prompt: str, timeout: float | None, now: float) -> None:
        """Not available: Arcus has no cashier dialog (``SPEC.capabilities.cashier_dialog`` is False)."""
        raise NotSupported(_NO_DIALOG)

    def send_result(self, result: Result, now: float) -> None:
        """Send ``R`` for the request in progress. If it cannot be encoded (InvalidRequest: over
        65535 bytes…) nothing is sent, the session is unchanged and a smaller result may follow."""
        if self._state is not _Terminal.PROCESSING or self._context is None:
            raise RuntimeError("there is no request to answer")
        message = result_to_message(result, self._context)
        previous = self._result, self._result_message
        self._result, self._result_message = result, message
        try:
            self.link.send(message, now)
        except BaseException:
            self._result, self._result_message = previous
            raise
        self._state = _Terminal.FINISHING

    def receive(self, data: bytes, now: float) -> list[TerminalEvent]:
        """Feed bytes read from the device; returns the events they complete."""
        return self._handle(self.link.receive(data, now))

    def poll(self, now: float) -> list[TerminalEvent]:
        """Let timers expire (ENQ tries, resends)."""
        return self._handle(self.link.poll(now))

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must be called next, or None."""
        return self.link.next_deadline()

    def data_to_send(self) -> bytes:
        """Bytes to write to the device now (and forget)."""
        return self.link.data_to_send()

    def reset(self) -> None:
        """Forget everything (the ECR disconnected)."""
        self.link.reset()
        self._finish()
        self._deferred = None

    def _finish(self) -> None:
        self._state = _Terminal.IDLE
        self._context = None
        self._result = None
        self._result_message = None
        self._exchange = None
        self._request_key = None

    def _handle(self, link_events: list[LinkEvent]) -> list[TerminalEvent]:
        events: list[TerminalEvent] = []
        for event in link_events:
            if isinstance(event, MessageReceived):
                events += self._on_message(event.message)
            elif isinstance(event, MessageDelivered):
                if event.message is self._result_message and self._result is not None:
                    events.append(ResultDelivered(self._result, exchange=self._exchange))
                    events += self._finish_and_take_deferred()
            elif isinstance(event, MessageUndelivered):
                if event.message is self._result_message and self._result is not None:
                    events.append(ResultUndelivered(self._result, event.error, exchange=self._exchange))
                    events += self._finish_and_take_deferred()
                else:
                    events.append(Failed(event.error, exchange=self._exchange))  # an I the ECR would not take
        return events

    def _finish_and_take_deferred(self) -> list[TerminalEvent]:
        """End the exchange; a request that arrived meanwhile (e.g. a reversal) is served now."""
        self._finish()
        deferred, self._deferred = self._deferred, None
        return self._on_message(deferred) if deferred is not None else []

    def _key(self, message: Message) -> tuple[str | None, str | None]:
        return message.get("operation"), message.get("transaction_id")

    def _on_message(self, message: Message) -> list[TerminalEvent]:
        if message.message_class == ABORT:
            wanted = message.get("transaction_id")
            if self._state is _Terminal.PROCESSING and self._context is not None and \
                    wanted in (None, self._context.transaction_id):
                return [AbortRequested(exchange=self._exchange)]
            return []
        if message.message_class != REQUEST:
            return []
        if self._state is not _Terminal.IDLE:
            if self._key(message) == self._request_key:
                return []  # the Q in hand resent
            if self._state is _Terminal.FINISHING:
                self._deferred = message  # served once our R is delivered or given up (newest wins)
                return []
            # Another Q while we work: the ECR gave up on the exchange in hand; nothing more for it.
            self.link.discard_outgoing()
            self._finish()
        return self._accept(message)

    def _accept(self, message: Message) -> list[TerminalEvent]:
        self._state = _Terminal.PROCESSING
        self._exchange = exchange = new_exchange_id()
        self._request_key = self._key(message)
        try:
            request, self._context = message_to_request(message, self.ops)
        except Exception as error:  # UnsupportedMessage, or anything a hostile field provokes
            try:
                self._context = rejection_context(message)
            except Exception:
                self._context = RequestContext("")
            if isinstance(error, UnsupportedMessage):
                return [RequestRejected(error.reason, error.operation_code, exchange=exchange)]
            code = message.get("operation") or ""
            return [RequestRejected(f"unreadable request ({type(error).__name__})",
                                    code if len(code) <= 12 else "", exchange=exchange)]
        return [RequestReceived(request, raw=repr(message), exchange=exchange)]
