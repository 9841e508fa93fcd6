"""A terminal that lies: the real protocol's terminal session, answering as a test tells it to.

:class:`HostileTerminal` opens end A of a ``virtual://`` pair, drives the protocol's own
``terminal_session`` with :class:`posbridge.pump.SessionPump`, and answers every request by a
*plan*: a function of the :class:`~posbridge.model.Request` that returns what to do —

* :class:`Answer` — send a result through the session's ``send_result`` (so the session keeps its
  bookkeeping and serves the next request), optionally *tampered with on the wire*: ``tamper`` edits
  the protocol message the session built, in place, before its link encodes it. That is how an
  answer the session could never express is sent: no status (INPAS tag 39), no response code (Arcus),
  another transaction number, a 5,000-digit number field. A message holding a field the codec would
  refuse is switched to a lenient subclass of the protocol's own Message class that encodes any value;
* :class:`Endless` — WAIT / intermediate packets forever, never a result;
* :class:`Silence` — nothing at all;
* :class:`DialogThen` (INPAS) — a raw cashier dialog (operation 52) with any tag 57, sent with the
  session's link, then (after ``delay``) an answer.

Nothing here decides about money; the terminal records every request it saw in ``requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Union

from posbridge import protocols
from posbridge.devices import open_device
from posbridge.model import Operation, Request, Result, Status, Totals
from posbridge.pump import LinkClosed, SessionPump
from posbridge.protocols.arcus2 import fields as arcus_fields
from posbridge.protocols.arcus2.constants import FS
from posbridge.protocols.common.session import RequestReceived
from posbridge.protocols.inpas import fields as inpas_fields
from posbridge.protocols.inpas.frame import encode_records

FAST = {"ack_timeout": 0.2, "packet_timeout": 1.0}
NOW = datetime(2026, 11, 22, 12, 30, 0)
TERMINAL_ID = "00344224"
FULL_PAN = "4111111111111111"  # a hostile terminal may send a full card number: the ECR must mask it
HUGE = "9" * 5000  # more digits than Python's int() accepts from text (4,300)


# --- what a plan returns -------------------------------------------------------------------------------
Tamper = Callable[[Any], None]


@dataclass
class Answer:
    result: Result
    tamper: Tamper | None = None
    delay: float = 0.0


@dataclass
class Endless:
    interval: float = 0.1
    text: str = "ПОДОЖДИТЕ"


@dataclass
class Silence:
    pass


@dataclass
class DialogThen:
    timeout_digits: str
    then: Answer | None
    prompt: str = "ВВЕДИТЕ 4 ПОСЛЕДНИЕ ЦИФРЫ КАРТЫ"
    delay: float = 0.3


Action = Union[Answer, Endless, Silence, DialogThen]
Plan = Callable[[Request], Action]


# --- honest answers ------------------------------------------------------------------------------------
def honest(request: Request, *, status: Status = Status.APPROVED, host_code: str | None = None,
           response_code: str = "00", pan: str = "411111******1111", **changes: Any) -> Result:
    """The answer a truthful terminal gives ``request`` (echoes everything it must echo)."""
    op = request.operation
    money = op.moves_money
    totals = Totals(643, 1, 10_00, 0, 0, 0, 0) if op is Operation.SETTLEMENT else None
    result = Result(
        operation=op, status=status, response_code=response_code,
        response_text="ОДОБРЕНО" if status is Status.APPROVED else "ОТКАЗ",
        amount=request.amount if money else None, currency=request.currency if money else None,
        rrn="612345678901", auth_code="A1B2C3" if status is Status.APPROVED else None,
        masked_pan=pan if money else None, card_scheme="VISA" if money else None,
        terminal_id=request.terminal_id or TERMINAL_ID, merchant_id="123456789012",
        transaction_id=request.transaction_id, host_datetime=NOW, host_code=host_code, totals=totals,
    )
    return result.with_changes(**changes) if changes else result


# --- lenient wire messages (any value, any length) ----------------------------------------------------------
class LenientInpasMessage(inpas_fields.Message):
    """INPAS's own Message, encoding values its field table would refuse (5,000 digits in tag 0)."""

    __slots__ = ()

    def encode_body(self) -> bytes:
        records = []
        for tag in sorted(self.fields):
            value = self.fields[tag]
            raw = value if isinstance(value, bytes) else value.encode("cp1251")
            records.append((tag, raw))
        return encode_records(records)


class LenientArcusMessage(arcus_fields.Message):
    """Arcus's own Message, encoding values its key table would refuse (5,000 digits)."""

    __slots__ = ()

    def encode_body(self) -> bytes:
        text = self.message_class + chr(FS).join(f"{k}={v}" for k, v in self.fields.items())
        return text.encode("cp1251")


def set_fields(protocol: str, **values: str | None) -> Tamper:
    """A tamper that sets (or, with None, removes) wire fields by name, in the protocol's own terms.

    Names are INPAS tag names (``status``, ``stan``, ``amount``…) or Arcus keys; an ``inpas:`` /
    ``arcus2:`` table below maps the test's neutral names to both.
    """

    def tamper(message: Any) -> None:
        for name, value in values.items():
            key = _WIRE_NAMES[protocol][name]
            if value is None:
                message.fields.pop(key, None)
            else:
                message.fields[key] = value
        message.__class__ = LenientInpasMessage if protocol == "inpas" else LenientArcusMessage

    return tamper


# Neutral name -> the protocol's field (INPAS tag number, Arcus key).
_WIRE_NAMES: dict[str, dict[str, Any]] = {
    "inpas": {"status": 39, "response_code": 15, "transaction_id": 26, "amount": 0, "currency": 4,
              "terminal_id": 27, "sale_amount": 29, "sale_count": 30, "host_code": 15},
    "arcus2": {"status": "response_code", "response_code": "response_code", "transaction_id": "transaction_id",
               "amount": "result_amount", "currency": "currency", "terminal_id": "terminal_id",
               "sale_amount": "sale_amount", "sale_count": "sale_count", "host_code": "host_code"},
}


def arm_tampering(session: Any) -> Callable[[Tamper | None], None]:
    """Wrap ``session.link.send`` so that the next result message the session sends is first passed
    to a tamper (edited in place: the session still recognises its own message when the ECR ACKs it).
    Returns the function that arms the tamper for the next result."""
    original_send = session.link.send
    armed: list[Tamper | None] = [None]

    def send(message: Any, now: float) -> None:
        tamper = armed[0]
        if tamper is not None and message is getattr(session, "_result_message", None):
            armed[0] = None
            tamper(message)
        original_send(message, now)

    session.link.send = send

    def arm(tamper: Tamper | None) -> None:
        armed[0] = tamper

    return arm


# --- the terminal --------------------------------------------------------------------------------------
@dataclass
class HostileTerminal:
    """See the module docstring. ``await start()`` before the client opens ``url``; ``await close()``."""

    protocol: str
    name: str
    plan: Plan
    timers: dict[str, float] = field(default_factory=lambda: dict(FAST))
    requests: list[Request] = field(default_factory=list)
    sent_results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.session = protocols.get(self.protocol).terminal_session(timers=self.timers)
        self.pump: SessionPump | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy: asyncio.Task[None] | None = None
        self.device: Any = None

    @property
    def url(self) -> str:
        return f"virtual://{self.name}"

    async def start(self) -> HostileTerminal:
        self.device = await open_device(self.url)
        self.pump = SessionPump(self.device, self.session, clock=time.monotonic, keep_open=True)
        self.pump.start()
        self._arm = arm_tampering(self.session)
        self._task = asyncio.get_running_loop().create_task(self._serve())
        return self

    async def close(self) -> None:
        for task in (self._busy, self._task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.pump is not None:
            await self.pump.stop()
        if self.device is not None:
            await self.device.close()

    async def __aenter__(self) -> HostileTerminal:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self) -> None:
        assert self.pump is not None
        while True:
            event = await self.pump.next_event()
            if isinstance(event, LinkClosed):
                return
            if isinstance(event, RequestReceived):
                self.requests.append(event.request)
                if self._busy is not None and not self._busy.done():
                    self._busy.cancel()
                self._busy = asyncio.get_running_loop().create_task(self._act(self.plan(event.request)))

    async def _act(self, action: Action) -> None:
        pump = self.pump
        assert pump is not None
        if isinstance(action, Silence):
            return
        if isinstance(action, Endless):
            while True:
                pump.act(lambda now: self.session.send_progress(action.text, now))
                await asyncio.sleep(action.interval)
        if isinstance(action, DialogThen):
            from posbridge.protocols.inpas.mapping import OpCode, Tag

            dialog = inpas_fields.Message({Tag.OPERATION: int(OpCode.CASHIER_DIALOG),
                                           Tag.CASHIER_PROMPT: action.prompt, Tag.COMMAND_MODE_1: 0})
            dialog.fields[Tag.TIMEOUT] = action.timeout_digits
            dialog.__class__ = LenientInpasMessage
            pump.act(lambda now: self.session.link.send(dialog, now))
            if action.then is None:
                return
            await asyncio.sleep(action.delay)
            action = action.then
        assert isinstance(action, Answer)
        if action.delay:
            await asyncio.sleep(action.delay)
        self._arm(action.tamper)
        self.sent_results.append(action.result)
        pump.act(lambda now: self.session.send_result(action.result, now))
