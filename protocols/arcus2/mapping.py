"""Mapping between Arcus2-style messages and the domain model, both directions, both sides.

The ECR encodes a :class:`Request` as ``Q`` and decodes the ``R`` into a :class:`Result`; the
terminal decodes the ``Q`` and encodes the ``R``. Operation codes come from an
:class:`~posbridge.protocols.arcus2.ops.OpsTable`; response codes follow :mod:`posbridge.protocols.arcus2.codes`.
Fields are written in the order of the key table (:data:`~posbridge.protocols.arcus2.fields.FIELDS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from ..common.errors import UnsupportedMessage
from ..common.model import Operation, Request, Result, Slips, Status, Totals

from .codes import DEFAULT_TEXTS, response_code_for, status_for
from .constants import ABORT, FS, INTERMEDIATE, REQUEST, RESULT, TEXT_ENCODING
from .fields import FIELDS, Message, brief, mask_pan, number_problem, read_number
from .ops import OpsTable

__all__ = [
    "SLIP_SEPARATOR",
    "DEFAULT_PROGRESS_TEXT",
    "ORIGINAL_DATETIME_FORMAT",
    "parse_original_date_time",
    "UnsupportedMessage",
    "RequestContext",
    "request_to_message",
    "message_to_request",
    "result_to_message",
    "message_to_result",
    "unreadable_result",
    "rejection_context",
    "intermediate_message",
    "abort_message",
    "format_slip",
    "parse_slip",
]

#: The line between the customer copy and the cashier copy in the ``slip`` key.
SLIP_SEPARATOR = "-" * 32
DEFAULT_PROGRESS_TEXT = "ПОДОЖДИТЕ..."
ORIGINAL_DATETIME_FORMAT = "%y%m%d%H%M%S"
_DATE_FORMAT, _TIME_FORMAT = "%y%m%d", "%H%M%S"
_TOTALS_KEYS = ("sale_count", "sale_amount", "refund_count", "refund_amount", "cancel_count", "cancel_amount")
# Operations whose Q names the operation they undo in original_operation.
_NAMES_ORIGINAL = frozenset({Operation.CANCEL, Operation.CANCEL_PREAUTH, Operation.EMERGENCY_REVERSAL})
_ORDER = {key: index for index, key in enumerate(FIELDS)}

@dataclass(frozen=True)
class RequestContext:
    """What the terminal echoes in its ``R``: the request's own codes and transaction id."""

    operation_code: str
    transaction_id: str | None = None
    original_operation: str | None = None


def _ordered(message_class: str, values: Mapping[str, str | int | None]) -> Message:
    """A message of the given fields (None and "" dropped), in key-table order."""
    kept = [(key, value) for key, value in values.items() if value is not None and value != ""]
    kept.sort(key=lambda item: _ORDER.get(item[0], len(_ORDER)))
    return Message(message_class, dict(kept))


# --- ECR side --------------------------------------------------------------------------------------
def request_to_message(request: Request, ops: OpsTable) -> Message:
    """Encode a (validated) request as the ``Q`` an ECR sends.

    Raises InvalidRequest if the ops table has no code for the operation.
    """
    op = request.operation
    original = request.original_operation
    if op is Operation.CANCEL_PREAUTH:
        original = Operation.PREAUTH
    original_datetime = request.original_datetime
    return _ordered(REQUEST, {
        "operation": ops.code_for(op),
        "amount": request.amount if op.moves_money else None,
        "currency": f"{request.currency:03d}" if op.moves_money else None,
        "transaction_id": request.transaction_id,
        "rrn": request.rrn,
        "auth_code": request.auth_code,
        "original_amount": request.original_amount,
        "original_date_time": original_datetime.strftime(ORIGINAL_DATETIME_FORMAT) if original_datetime else None,
        "original_operation": ops.code_for(original) if original is not None and op in _NAMES_ORIGINAL else None,
        "terminal_id": request.terminal_id,
    })


def message_to_result(message: Message, request: Request, texts: Mapping[str, str] = DEFAULT_TEXTS) -> Result:
    """Decode the terminal's ``R`` to ``request``; ``texts`` fill in a missing ``text_message``.

    Never raises. A number key that is not a number of its width (``NUMBER_WIDTHS``) is None in the
    result (a settlement's totals as a whole when one of them is bad), never guessed: the caller
    compares the answer with its request. An ``R`` whose ``response_code`` cannot be classified
    (:func:`unreadable_result`) gives status UNDEFINED here; the ECR session reports it as an
    :class:`~posbridge.protocols.common.errors.AnswerMismatch` carrying this result.
    """
    code = message.get("response_code") or ""
    pan = message.get("pan")
    raw_currency = message.get("currency")
    currency = read_number("currency", raw_currency)
    if raw_currency is None and request.operation.moves_money:
        currency = request.currency  # not echoed: the request's (a bad one stays None)
    transaction_id = message.get("transaction_id")  # the echo, or None: never filled in from the request
    if read_number("transaction_id", transaction_id) is None:
        transaction_id = None
    return Result(
        operation=request.operation,
        status=Status.UNDEFINED if _code_problem(code) else status_for(code, request.operation),
        response_code=code,
        response_text=message.get("text_message") or texts.get(code, ""),
        amount=read_number("result_amount", message.get("result_amount")),
        currency=currency,
        rrn=message.get("rrn"),
        auth_code=message.get("auth_code"),
        masked_pan=mask_pan(pan) if pan else None,  # defence in depth: mask whatever arrives
        card_scheme=message.get("card_type"),
        expiry=message.get("expiry"),
        terminal_id=message.get("terminal_id"),
        transaction_id=transaction_id,
        host_datetime=_datetime(message.get("date"), message.get("time")),
        host_code=message.get("host_code"),
        slips=parse_slip(message.get("slip") or ""),
        totals=_totals(message),
    )


#: Number keys of an ``R`` whose value the result carries: present but unreadable, they make the
#: answer unreadable (the result has None there, and None would read as "not sent").
_RESULT_NUMBERS = ("result_amount", "currency", "transaction_id", *_TOTALS_KEYS)


def unreadable_result(message: Message) -> list[str]:
    """Why an ``R`` cannot be read (in words), or an empty list when it can.

    The outcome is read from ``response_code`` alone, three ASCII digits (section 7). One that is
    missing, empty or of another shape says neither approved nor declined: taking it for a decline
    once journaled a charged sale as declined. A number key the result carries (amount, currency,
    transaction_id, totals) that is present but not a number of its width (a 5,000-digit amount)
    makes the answer unreadable too: :func:`message_to_result` leaves it None, which alone would
    look like a key the terminal did not send.
    """
    problems = []
    code_problem = _code_problem(message.get("response_code") or "")
    if code_problem:
        problems.append(code_problem)
    for key in _RESULT_NUMBERS:
        value = message.get(key)
        if value is not None:
            problem = number_problem(key, value)
            if problem:
                problems.append(problem)
    return problems


def _code_problem(code: str) -> str | None:
    if not code:
        return "the result carries no response_code"
    if len(code) != 3 or not _is_digits(code):
        return f"response_code {brief(code)} is not three digits"
    return None


# --- terminal side ---------------------------------------------------------------------------------
def message_to_request(message: Message, ops: OpsTable) -> tuple[Request, RequestContext]:
    """Decode an ECR's ``Q``. Amounts are passed on as sent (0 included: the host answers 110).

    Raises :class:`UnsupportedMessage` (and nothing else) for an operation code not in ``ops`` or a
    number key that is not 1 to its width of ASCII digits (amount 12, currency 3, transaction_id 12,
    codes 6: ``NUMBER_WIDTHS``).
    """
    raw_code = message.get("operation") or ""
    code = read_number("operation", raw_code)
    echo = raw_code if code is not None else ""  # a code that is no number is not echoed
    entry = ops.entry_for_code(code) if code is not None else None
    if entry is None:
        if not raw_code:
            raise UnsupportedMessage("the request has no operation code")
        raise UnsupportedMessage(f"operation code {brief(raw_code)} is not in {ops.source}", echo)
    operation = entry.operation
    raw_original = message.get("original_operation")
    original: Operation | None = None
    if raw_original is not None:
        original_code = read_number("original_operation", raw_original)
        original = ops.operation_for(original_code) if original_code is not None else None
        if original is None:
            raise UnsupportedMessage(f"original operation {brief(raw_original)} is not in {ops.source}", echo)
    if operation is Operation.CANCEL and original is Operation.PREAUTH:
        operation = Operation.CANCEL_PREAUTH
    transaction_id = message.get("transaction_id")
    if transaction_id is not None and read_number("transaction_id", transaction_id) is None:
        raise UnsupportedMessage(number_problem("transaction_id", transaction_id) or "transaction_id is empty", echo)
    original_datetime = _original_datetime(message)
    values: dict[str, object] = {
        "operation": operation,
        "amount": _digits(message, "amount"),
        "currency": _digits(message, "currency") or 643,
        "transaction_id": transaction_id,
        "rrn": message.get("rrn"),
        "auth_code": message.get("auth_code"),
        "original_operation": original,
        "original_amount": _digits(message, "original_amount"),
        "terminal_id": message.get("terminal_id"),
        "original_datetime": original_datetime,
    }
    context = RequestContext(raw_code, transaction_id, raw_original)
    return Request(**values), context  # type: ignore[arg-type]  # values typed per key above; Request checks them


def result_to_message(result: Result, context: RequestContext) -> Message:
    """Encode the terminal's ``R`` answering the request described by ``context``.

    ``response_code`` is never "000" unless the status is approved: an operation the terminal
    reversed on its own (host 151019) goes out as 956 with ``host_code=151019``.
    """
    when = result.host_datetime
    totals = result.totals
    values: dict[str, str | int | None] = {
        "operation": context.operation_code,
        "response_code": response_code_for(result.status, result.host_code or result.response_code),
        "host_code": result.host_code or result.response_code,
        "text_message": _text(result.response_text),
        "result_amount": result.amount,
        "currency": f"{result.currency:03d}" if result.currency else None,
        "transaction_id": context.transaction_id,
        "rrn": result.rrn,
        "auth_code": result.auth_code,
        "original_operation": context.original_operation,
        "terminal_id": result.terminal_id,
        "pan": mask_pan(result.masked_pan) if result.masked_pan else None,
        "expiry": result.expiry,
        "card_type": result.card_scheme,
        "date": when.strftime(_DATE_FORMAT) if when else None,
        "time": when.strftime(_TIME_FORMAT) if when else None,
        "slip": _text(format_slip(result.slips)),
    }
    if totals is not None:
        values.update({key: int(getattr(totals, key)) for key in _TOTALS_KEYS})  # Totals' counts and sums
        values["currency"] = f"{totals.currency:03d}"
    return _ordered(RESULT, values)


def rejection_context(message: Message) -> RequestContext:
    """The context to answer a ``Q`` that could not be understood: its codes, if they are numbers
    of their width (an answer never echoes what it could not send)."""
    code = message.get("operation") or ""
    transaction_id = message.get("transaction_id")
    return RequestContext(code if read_number("operation", code) is not None else "",
                          transaction_id if read_number("transaction_id", transaction_id) is not None else None)


# --- intermediate and abort ------------------------------------------------------------------------
def intermediate_message(text: str) -> Message:
    """``I``: what the terminal shows while it works (present card, enter PIN, connecting...)."""
    return Message(INTERMEDIATE, {"text_message": _text(text) or DEFAULT_PROGRESS_TEXT})


def abort_message(transaction_id: str | None) -> Message:
    """``A``: abort the operation in progress (the one with ``transaction_id``, when given)."""
    return _ordered(ABORT, {"transaction_id": transaction_id})


# --- slip --------------------------------------------------------------------------------------------
def format_slip(slips: Slips) -> str:
    """The ``slip`` key: the customer copy, then :data:`SLIP_SEPARATOR` on a line, then the cashier copy."""
    if not slips.cashier:
        return slips.customer
    return f"{slips.customer}\n{SLIP_SEPARATOR}\n{slips.cashier}"


def parse_slip(text: str) -> Slips:
    """Split a ``slip`` value at its first separator line into the customer and cashier copies."""
    lines = text.replace("\r\n", "\n").split("\n")
    if SLIP_SEPARATOR not in lines:
        return Slips(customer="\n".join(lines) if text else "")
    cut = lines.index(SLIP_SEPARATOR)
    return Slips("\n".join(lines[:cut]), "\n".join(lines[cut + 1 :]))


# --- helpers -------------------------------------------------------------------------------------------
def _text(value: str | None) -> str | None:
    """``value`` as it can travel: FS becomes a space, characters CP1251 lacks become '?'."""
    if not value:
        return value
    value = value.replace(chr(FS), " ")
    if value.isascii():
        return value
    return value.encode(TEXT_ENCODING, "replace").decode(TEXT_ENCODING)


def _is_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def _digits(message: Message, key: str) -> int | None:
    value = message.get(key)
    if value is None:
        return None
    problem = number_problem(key, value)
    if problem is not None:
        code = message.get("operation") or ""
        raise UnsupportedMessage(problem, code if read_number("operation", code) is not None else "")
    return int(value)


def _datetime(date: str | None, time: str | None) -> datetime | None:
    if not date or not time or len(date + time) != 12 or not _is_digits(date + time):
        return None  # strptime alone would take "2611221230" as well
    try:
        return datetime.strptime(date + time, _DATE_FORMAT + _TIME_FORMAT)
    except ValueError:
        return None


def parse_original_date_time(text: str) -> datetime:
    """``original_date_time`` (``yyMMddhhmmss``, exactly 12 digits) as a datetime; ValueError if not."""
    if len(text) != 12 or not _is_digits(text):
        raise ValueError(f"expected yyMMddhhmmss, got {text!r}")  # strptime alone takes "2611221230" too
    return datetime.strptime(text, ORIGINAL_DATETIME_FORMAT)


def _original_datetime(message: Message) -> datetime | None:
    value = message.get("original_date_time")
    if value is None:
        return None
    try:
        return parse_original_date_time(value)
    except ValueError:
        raise UnsupportedMessage(f"original_date_time must be yyMMddhhmmss, got {value!r}",
                                 message.get("operation") or "") from None


def _totals(message: Message) -> Totals | None:
    """The totals keys as Totals; None when there are none, or when one of them is not a number
    (a report that cannot be read whole is not read at all: missing ones count 0, as ever)."""
    raw = [message.get(key) for key in _TOTALS_KEYS]
    if all(value is None for value in raw):
        return None
    values = [read_number(key, value) for key, value in zip(_TOTALS_KEYS, raw)]
    if any(number is None and value is not None for number, value in zip(values, raw)):
        return None
    sale_count, sale_amount, refund_count, refund_amount, cancel_count, cancel_amount = (v or 0 for v in values)
    raw_currency = message.get("currency")
    currency = read_number("currency", raw_currency) if raw_currency is not None else 643
    if currency is None:
        return None
    return Totals(currency=currency, sale_count=sale_count, sale_amount=sale_amount,
                  refund_count=refund_count, refund_amount=refund_amount, cancel_count=cancel_count,
                  cancel_amount=cancel_amount)
