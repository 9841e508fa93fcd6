"""Toyline messages and their mapping to the domain model.

A message is a class letter and ``key -> text`` fields (``frame.encode_body`` / ``decode_body``).
Requests (``Q``) and results (``R``) carry the domain's fields under short keys; numbers are
decimal digits of bounded width, so a hostile 5,000-digit field is refused, never turned into an int.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from posbridge.protocols.common.errors import UnsupportedMessage
from posbridge.protocols.common.model import Operation, Request, Result, Slips, Status, Totals, mask_pan

from .frame import decode_body, encode_body

REQUEST, PROGRESS, RESULT = "Q", "P", "R"
#: Most digits of each number field (amounts 12, like the model; totals 18).
TOTALS_WIDTH = 18


@dataclass(frozen=True)
class Message:
    """One toyline message: its class letter and fields, in the order they travel."""

    cls: str
    fields: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The body bytes (InvalidRequest for what cannot be sent)."""
        return encode_body(self.cls, list(self.fields.items()))

    @classmethod
    def decode(cls, body: bytes) -> Message:
        """The message a body holds; DecodeError (with its offset) for anything else."""
        letter, fields = decode_body(body)
        return cls(letter, dict(fields))

    def get(self, key: str) -> str | None:
        return self.fields.get(key)


def _put(fields: dict[str, str], key: str, value: object) -> None:
    if value is not None:
        fields[key] = value.isoformat() if isinstance(value, datetime) else str(value)


def _number(message: Message, key: str, width: int) -> int | None:
    """A number field: None when absent; UnsupportedMessage when it is not 1..width digits."""
    text = message.get(key)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and 0 < len(text) <= width):
        raise UnsupportedMessage(f"{key} is not a number of at most {width} digits", message.get("op") or "")
    return int(text)


def _operation(message: Message, key: str = "op") -> Operation | None:
    text = message.get(key)
    if text is None:
        return None
    try:
        return Operation(text)
    except ValueError:
        raise UnsupportedMessage(f"unknown operation {text[:20]!r}", text[:12]) from None


def request_to_message(request: Request) -> Message:
    """The ``Q`` a cash register sends for ``request``."""
    fields: dict[str, str] = {}
    for key, value in (("op", request.operation.value), ("amt", request.amount),
                       ("cur", request.currency if request.amount is not None else None),
                       ("id", request.transaction_id), ("rrn", request.rrn), ("auth", request.auth_code),
                       ("tid", request.terminal_id),
                       ("oop", request.original_operation.value if request.original_operation else None),
                       ("oamt", request.original_amount)):
        _put(fields, key, value)
    return Message(REQUEST, fields)


def message_to_request(message: Message) -> Request:
    """The request a ``Q`` asks for; UnsupportedMessage (with its reason) for one that is not valid."""
    operation = _operation(message)
    if operation is None:
        raise UnsupportedMessage("no operation (op)")
    try:
        return Request(operation, _number(message, "amt", 12), _number(message, "cur", 3) or 643,
                       message.get("id"), message.get("rrn"), message.get("auth"), _operation(message, "oop"),
                       _number(message, "oamt", 12), message.get("tid")).validated()
    except UnsupportedMessage:
        raise
    except ValueError as error:  # InvalidRequest: a valid number that is not a valid request
        raise UnsupportedMessage(str(error), operation.value) from None


def result_to_message(result: Result) -> Message:
    """The ``R`` a terminal sends for ``result``."""
    fields: dict[str, str] = {}
    totals = result.totals
    for key, value in (("op", result.operation.value), ("st", result.status.value), ("rc", result.response_code),
                       ("txt", result.response_text), ("hc", result.host_code), ("amt", result.amount),
                       ("cur", result.currency), ("rrn", result.rrn), ("auth", result.auth_code),
                       ("pan", mask_pan(result.masked_pan) if result.masked_pan else None),
                       ("scheme", result.card_scheme), ("exp", result.expiry), ("tid", result.terminal_id),
                       ("mid", result.merchant_id), ("id", result.transaction_id), ("hdt", result.host_datetime),
                       ("s1", result.slips.customer or None), ("s2", result.slips.cashier or None),
                       ("tot", ",".join(str(n) for n in (totals.currency, totals.sale_count, totals.sale_amount,
                                                        totals.refund_count, totals.refund_amount,
                                                        totals.cancel_count, totals.cancel_amount))
                        if totals else None)):
        _put(fields, key, value)
    return Message(RESULT, fields)


def unreadable_result(message: Message) -> list[str]:
    """What makes an ``R`` impossible to take as a result, in words (empty when it is readable)."""
    problems = []
    try:
        if _operation(message) is None:
            problems.append("no operation")
        Status(message.get("st") or "")
    except (UnsupportedMessage, ValueError):
        problems.append("no readable operation and status")
    for key, width in (("amt", 12), ("cur", 3)):
        try:
            _number(message, key, width)
        except UnsupportedMessage:
            problems.append(f"{key} is not a number")
    if message.get("tot") is not None and _totals(message.get("tot")) is None:
        problems.append("unreadable totals")
    return problems


def message_to_result(message: Message, request: Request) -> Result:
    """The result an ``R`` carries, as far as it can be read (see :func:`unreadable_result`)."""
    def number(key: str, width: int) -> int | None:
        try:
            return _number(message, key, width)
        except UnsupportedMessage:
            return None
    try:
        status = Status(message.get("st") or "")
    except ValueError:
        status = Status.UNDEFINED
    try:
        operation = _operation(message) or request.operation
    except UnsupportedMessage:
        operation = request.operation
    hdt = message.get("hdt")
    try:
        host_datetime = datetime.fromisoformat(hdt) if hdt else None
    except ValueError:
        host_datetime = None
    pan = message.get("pan")
    return Result(operation, status, message.get("rc") or "", message.get("txt") or "", number("amt", 12),
                  number("cur", 3), message.get("rrn"), message.get("auth"), mask_pan(pan) if pan else None,
                  message.get("scheme"), message.get("exp"), message.get("tid"), message.get("mid"),
                  message.get("id"), host_datetime, message.get("hc"),
                  Slips(message.get("s1") or "", message.get("s2") or ""), _totals(message.get("tot")))


def _totals(text: str | None) -> Totals | None:
    parts = (text or "").split(",")
    if len(parts) != 7 or not all(p.isascii() and p.isdigit() and len(p) <= TOTALS_WIDTH for p in parts):
        return None
    return Totals(*(int(p) for p in parts))


def progress_message(text: str) -> Message:
    """The ``P`` a terminal sends while it works."""
    return Message(PROGRESS, {"txt": text} if text else {})


__all__ = ["Message", "REQUEST", "PROGRESS", "RESULT", "request_to_message", "message_to_request",
           "result_to_message", "message_to_result", "unreadable_result", "progress_message"]
