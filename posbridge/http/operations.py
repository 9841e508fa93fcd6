"""The service's vocabulary: 1C's acquiring operations, their fields, and the checks on them.

Both front doors (the native ``/v1`` API and KKM Server's ``/Execute``) turn a request into one
:class:`CommandSpec` here, checked field by field *before* anything is stored, journaled or sent:
a bad field is a :class:`FieldError` naming the field as the caller spelt it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from posbridge.model import (
    MAX_AMOUNT,
    RUB,
    InvalidRequest,
    Operation,
    Request,
    Result,
    Slips,
    Status,
    mask_pan,
    validate_currency,
)
from posbridge.protocols.common.model import mask_card_bytes

__all__ = [
    "APPROVED_STATUSES", "CUT", "OPERATIONS", "CommandSpec", "FieldError", "OperationKind", "build_spec",
    "make_universal_id", "parse_amount_minor", "parse_amount_roubles", "parse_command_id",
    "parse_universal_id", "result_fields", "slip_text",
]

CUT = "[cut]"
"""The line 1C's driver standard puts between two documents of one slip text."""

# Control characters 1C forbids in a slip (1-8, 11-12, 14-31), and NUL and DEL besides.
_SLIP_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_COMMAND_ID = re.compile(r"^[^\x00-\x20/\\\x7f?#%]{1,64}$")
_RRN = re.compile(r"^[0-9A-Za-z]{1,12}$")
_AUTH_CODE = re.compile(r"^[0-9A-Za-z ]{1,6}$")
MAX_RECEIPT_NUMBER = 32
# An amount written as text: ASCII digits, at most one decimal point or comma (KKM registers send
# "10,50"). Decimal() also takes "1e3" (1000 roubles), "1_000" and other scripts' digits: never meant.
_AMOUNT_TEXT = re.compile(r"^[0-9]+(?:[.,][0-9]+)?$")
# 13 or more digits in a row (or in groups split by single spaces or dashes): a card number's
# length. Fields stored and echoed in every answer (receipt_number, universal_id) must not carry one.
_CARD_LIKE = re.compile(r"[0-9](?:[ -]?[0-9]){12,}")

APPROVED_STATUSES = (Status.APPROVED, Status.APPROVED_OFFLINE, Status.CONDITIONAL)
"""Terminal statuses that mean the operation was performed (money moved for money operations)."""


class FieldError(InvalidRequest):
    """A request field that cannot be used: ``field`` names it as the caller spelt it; ``http_status``
    is 400 (unreadable), 404 (no such terminal or operation), 409 (a command id reused for
    another request) or 422 (a value the operation cannot take)."""

    def __init__(self, field: str, message: str, http_status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.http_status = http_status


@dataclass(frozen=True)
class OperationKind:
    """One operation of 1C's acquiring-terminal driver standard, as the service runs it.

    ``operation`` is the domain operation sent to the terminal (None: the service answers it from
    its journal or settings, the terminal is not asked); ``money``: it moves money (``command_id``
    required); ``reference``: it acts on an earlier operation named by ``rrn`` / ``universal_id``;
    ``original``: what a cancel undoes.
    """

    name: str
    operation: Operation | None
    money: bool = False
    reference: bool = False
    original: Operation | None = None
    summary: str = ""


OPERATIONS: dict[str, OperationKind] = {kind.name: kind for kind in (
    OperationKind("Pay", Operation.SALE, money=True, summary="sale (оплата)"),
    OperationKind("ReturnPayment", Operation.REFUND, money=True, reference=True,
                  summary="refund of a purchase, all or part (возврат)"),
    OperationKind("CancelPayment", Operation.CANCEL, money=True, reference=True, original=Operation.SALE,
                  summary="void a sale of the open batch (отмена)"),
    OperationKind("Authorisation", Operation.PREAUTH, money=True, summary="pre-authorization: hold an amount"),
    OperationKind("AuthConfirmation", Operation.COMPLETION, money=True, reference=True,
                  summary="complete a hold, fully or partly"),
    OperationKind("CancelAuthorisation", Operation.CANCEL_PREAUTH, money=True, reference=True,
                  original=Operation.PREAUTH, summary="release a hold"),
    OperationKind("EmergencyReversal", Operation.EMERGENCY_REVERSAL, money=True,
                  summary="reverse the terminal's last operation (the fiscal receipt failed to print), "
                          "or the one named by rrn / universal_id"),
    OperationKind("Settlement", Operation.SETTLEMENT, summary="close the day (сверка итогов)"),
    OperationKind("TerminalReport", Operation.SHORT_REPORT,
                  summary="totals without closing; detailed: every operation listed"),
    OperationKind("SlipCopy", Operation.SLIP_COPY, summary="copy of the last slip"),
    OperationKind("TestConnection", Operation.TEST_CONNECTION, summary="test the terminal and its host"),
    OperationKind("GetOperationByCards", None, summary="the open batch's card operations, from the journal"),
    OperationKind("TerminalParameters", None, summary="what the terminal and the service support"),
)}
"""1C's operation names (the native API's path segment) -> how the service runs them."""


@dataclass(frozen=True)
class CommandSpec:
    """One checked command: what to run, on which terminal, under which idempotency key."""

    command_id: str
    terminal: str
    operation: str
    amount: int | None = None
    currency: int = RUB
    rrn: str | None = None
    auth_code: str | None = None
    universal_id: str | None = None
    receipt_number: str | None = None
    original_amount: int | None = None
    detailed: bool = False

    @property
    def kind(self) -> OperationKind:
        """The operation's :class:`OperationKind`."""
        return OPERATIONS[self.operation]

    def params(self) -> dict[str, Any]:
        """The request's fields (without the command id), as stored."""
        data = asdict(self)
        del data["command_id"]
        return data

    def fingerprint(self) -> str:
        """A digest of what the command asks for: the same command id with another fingerprint is 409."""
        text = json.dumps(self.params(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def request(self) -> Request:
        """The domain request the terminal is sent (not for EmergencyReversal, which the client
        builds from the journaled original)."""
        kind = self.kind
        operation = kind.operation
        if operation is None or operation is Operation.EMERGENCY_REVERSAL:
            raise ValueError(f"{self.operation} is not sent as a plain request")
        if operation is Operation.SHORT_REPORT and self.detailed:
            operation = Operation.FULL_REPORT
        return Request(operation, amount=self.amount if kind.money else None,
                       currency=self.currency if kind.money else RUB, rrn=self.rrn, auth_code=self.auth_code,
                       original_operation=kind.original, original_amount=self.original_amount).validated()

    @classmethod
    def from_params(cls, command_id: str, params: dict[str, Any]) -> CommandSpec:
        """The spec of a stored command."""
        return cls(command_id=command_id, **params)


def parse_command_id(value: object, *, required: bool, field: str = "command_id") -> str | None:
    """A command id: 1-64 printable characters without spaces, slashes, ``?``, ``#`` or ``%`` (it is
    also a URL path segment). None when absent and not ``required``."""
    if value is None or value == "":
        if required:
            raise FieldError(field, f"{field} is required for an operation that moves money: it is the "
                                    "idempotency key that keeps a retried request from charging twice")
        return None
    if not isinstance(value, str) or not _COMMAND_ID.match(value) or value in (".", ".."):
        # "." and ".." are refused too: URL libraries normalise GET /v1/commands/.. away.
        raise FieldError(field, f"{field} must be 1-64 printable characters without spaces, '/', '\\', "
                                "'?', '#' or '%' (and not '.' or '..')")
    if mask_card_bytes(value.encode("ascii", "replace")) != value.encode("ascii", "replace"):
        # It would be stored and echoed in clear: a card number must never reach the journal or a log.
        raise FieldError(field, f"{field} contains what could be a card number; use a GUID or a receipt number")
    return value


def _number(value: object, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, float, str)):
        raise FieldError(field, f"{field} must be a number, got {type(value).__name__}")
    if isinstance(value, str) and not _AMOUNT_TEXT.match(value.strip()):
        raise FieldError(field, f"{field} must be a number such as 10.50, got {value.strip()[:20]!r}")
    try:
        number = Decimal(value.strip().replace(",", ".")) if isinstance(value, str) else Decimal(str(value))
    except InvalidOperation:
        raise FieldError(field, f"{field} must be a number, got {str(value)[:20]!r}") from None
    if not number.is_finite():
        raise FieldError(field, f"{field} must be a finite number")
    return number


def _checked_minor(minor: int, field: str) -> int:
    if minor <= 0:
        raise FieldError(field, f"{field} must be positive, got {minor}")
    if minor > MAX_AMOUNT:
        raise FieldError(field, f"{field} has more than 12 digits in minor units: {minor}")
    return minor


def parse_amount_minor(value: object, field: str = "amount") -> int:
    """The native API's amount: an integer count of minor units (kopecks) as a JSON integer.

    A decimal is refused even when whole (``150.00``): it is most likely roubles sent where kopecks
    are expected, a hundredfold mistake.
    """
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, float)):
        raise FieldError(field, f"{field} must be an integer number of minor units (kopecks), "
                                f"got {type(value).__name__}")
    if not isinstance(value, int):
        number = _number(value, field)
        if number != number.to_integral_value():
            raise FieldError(field, f"{field} has fractional kopecks: {number} (minor units are whole)")
        raise FieldError(field, f"{field} must be an integer number of minor units (kopecks), got {number}: "
                                "write it without a decimal point")
    return _checked_minor(value, field)


def parse_amount_roubles(value: object, field: str = "Amount") -> int:
    """KKM Server's amount: roubles (a JSON number or a numeric string), parsed as a decimal —
    never a float — into minor units; fractional kopecks are refused."""
    number = _number(value, field)
    minor = number * 100
    if minor != minor.to_integral_value():
        raise FieldError(field, f"{field} has fractional kopecks: {number} (at most two decimals)")
    return _checked_minor(int(minor), field)


def parse_universal_id(text: object, field: str = "universal_id") -> dict[str, str]:
    """KKM's UniversalID, ``CN:4111******1111;RN:26;RRN:123456789012;AC:123456`` -> its parts by key
    (``CN`` masked card, ``RN`` receipt number, ``RRN``, ``AC`` authorization code). It must carry
    an RRN."""
    if not isinstance(text, str) or not text.strip() or len(text) > 200:
        raise FieldError(field, f"{field} must be a text of at most 200 characters such as "
                                "'CN:411111******1111;RN:26;RRN:123456789012;AC:123456'")
    if _CARD_LIKE.search(text):
        raise FieldError(field, f"{field} carries 13 or more digits in a row, a card number's length: its CN "
                                "part must be the masked card (411111******1111)")
    parts: dict[str, str] = {}
    for piece in text.strip().strip(";").split(";"):
        key, colon, value = piece.partition(":")
        if not colon:
            raise FieldError(field, f"{field} is not KEY:VALUE pairs separated by ';': {piece[:20]!r}")
        parts[key.strip().upper()] = value.strip()
    if not parts.get("RRN"):
        raise FieldError(field, f"{field} carries no RRN (RRN:…)")
    return parts


def make_universal_id(result: Result, receipt_number: str | None) -> str | None:
    """The one reference a cash register stores for later returns and cancels (KKM's format)."""
    if not result.rrn:
        return None
    parts = [("CN", mask_pan(result.masked_pan) if result.masked_pan else ""), ("RN", receipt_number or ""),
             ("RRN", result.rrn), ("AC", result.auth_code or "")]
    return ";".join(f"{key}:{value}" for key, value in parts)


def _reference(kind: OperationKind, rrn: object, auth_code: object, universal_id: object,
               names: dict[str, str]) -> tuple[str | None, str | None, str | None]:
    uid = None
    if universal_id not in (None, ""):
        parts = parse_universal_id(universal_id, names["universal_id"])
        uid = str(universal_id)
        if rrn not in (None, "") and rrn != parts["RRN"]:
            raise FieldError(names["rrn"], f"{names['rrn']} {rrn!r} differs from the RRN in "
                                           f"{names['universal_id']} ({parts['RRN']!r})")
        if auth_code not in (None, "") and parts.get("AC") and auth_code != parts["AC"]:
            raise FieldError(names["auth_code"], f"{names['auth_code']} differs from the AC in "
                                                 f"{names['universal_id']}")
        rrn = parts["RRN"]
        auth_code = auth_code or parts.get("AC") or None
    if rrn in (None, ""):
        rrn = None
    elif not isinstance(rrn, str) or not _RRN.match(rrn):
        raise FieldError(names["rrn"], f"{names['rrn']} must be 1-12 letters or digits")
    if auth_code in (None, ""):
        auth_code = None
    elif not isinstance(auth_code, str) or not _AUTH_CODE.match(auth_code):
        raise FieldError(names["auth_code"], f"{names['auth_code']} must be 1-6 letters, digits or spaces")
    if kind.reference and rrn is None:
        raise FieldError(names["rrn"], f"{kind.name} needs the original operation's {names['rrn']} "
                                       f"(or its {names['universal_id']})")
    if not kind.reference and kind.operation is not Operation.EMERGENCY_REVERSAL and (rrn or auth_code):
        field = names["universal_id"] if uid else names["rrn"] if rrn else names["auth_code"]
        raise FieldError(field, f"{kind.name} takes no reference to an earlier operation")
    return rrn, auth_code, uid


NATIVE_NAMES = {"command_id": "command_id", "amount": "amount", "currency": "currency", "rrn": "rrn",
                "auth_code": "auth_code", "universal_id": "universal_id", "receipt_number": "receipt_number",
                "original_amount": "original_amount", "detailed": "detailed"}


def build_spec(terminal: str, kind: OperationKind, *, command_id: str, amount: int | None, currency: object,
               rrn: object = None, auth_code: object = None, universal_id: object = None,
               receipt_number: object = None, original_amount: int | None = None, detailed: object = None,
               names: dict[str, str] = NATIVE_NAMES) -> CommandSpec:
    """Check the fields ``kind`` needs and takes; ``names`` spell the fields as the caller does (for
    the error). Amounts arrive parsed (each API has its own units)."""
    if kind.money and kind.operation is not Operation.EMERGENCY_REVERSAL and amount is None:
        raise FieldError(names["amount"], f"{kind.name} needs {names['amount']}")
    if not kind.money and amount is not None:
        raise FieldError(names["amount"], f"{kind.name} takes no {names['amount']}")
    if currency is None:
        currency = RUB
    try:
        if isinstance(currency, bool) or not isinstance(currency, int):
            raise InvalidRequest(f"currency must be an ISO 4217 numeric code such as 643, got {currency!r}")
        validate_currency(currency)
    except InvalidRequest as error:
        raise FieldError(names["currency"], f"{names['currency']}: {error}") from None
    rrn_text, auth, uid = _reference(kind, rrn, auth_code, universal_id, names)
    if receipt_number in (None, ""):
        receipt_number = None
    elif not isinstance(receipt_number, (str, int)) or isinstance(receipt_number, bool) \
            or not 0 < len(str(receipt_number)) <= MAX_RECEIPT_NUMBER or ";" in str(receipt_number):
        raise FieldError(names["receipt_number"], f"{names['receipt_number']} must be a text of at most "
                                                  f"{MAX_RECEIPT_NUMBER} characters without ';'")
    elif _CARD_LIKE.search(str(receipt_number)):
        raise FieldError(names["receipt_number"], f"{names['receipt_number']} has 13 or more digits in a row, "
                                                  "a card number's length: it is stored and echoed in every answer")
    if original_amount is not None and kind.name != "CancelPayment":
        raise FieldError(names["original_amount"], f"{kind.name} takes no {names['original_amount']}")
    if original_amount is not None and amount is not None and amount != original_amount:
        # The terminals posbridge speaks to void a sale whole (host-rules.md); a part is a refund.
        raise FieldError(names["amount"], f"partial cancellation is not supported: {names['amount']} must equal "
                                          f"{names['original_amount']}; return a part with ReturnPayment")
    if detailed is not None and (kind.name != "TerminalReport" or not isinstance(detailed, bool)):
        raise FieldError(names["detailed"], f"{names['detailed']} is true or false, for TerminalReport only")
    spec = CommandSpec(command_id=command_id, terminal=terminal, operation=kind.name, amount=amount,
                       currency=int(currency), rrn=rrn_text, auth_code=auth, universal_id=uid,
                       receipt_number=None if receipt_number is None else str(receipt_number),
                       original_amount=original_amount, detailed=bool(detailed))
    if kind.operation is not None and kind.operation is not Operation.EMERGENCY_REVERSAL:
        try:
            spec.request()  # the domain's own checks, as a last line: nothing passes that the client refuses
        except InvalidRequest as error:
            raise FieldError("request", str(error)) from None
    return spec


def slip_text(slips: Slips) -> str:
    """The slip as 1C takes it: the card holder's copy, a ``[cut]`` line, the cashier's copy; line
    ends ``\\n``; no control characters (1C's rule: none of 1-8, 11-12, 14-31)."""
    copies = [text for text in (slips.customer, slips.cashier) if text.strip()]
    joined = f"\n{CUT}\n".join(text.replace("\r\n", "\n").replace("\r", "\n").strip("\n") for text in copies)
    return _SLIP_CONTROL.sub("", joined)


def result_fields(result: Result, receipt_number: str | None) -> dict[str, Any]:
    """A terminal's result as the service stores and shows it (masked card only; slip joined)."""
    totals = None
    if result.totals is not None:
        totals = asdict(result.totals)
        totals["net_amount"] = result.totals.net_amount
    return {
        "terminal_status": result.status.value,
        "response_code": result.response_code,
        "response_text": result.response_text,
        "host_code": result.host_code,
        "amount": result.amount,
        "currency": result.currency,
        "rrn": result.rrn,
        "auth_code": result.auth_code,
        "card": mask_pan(result.masked_pan) if result.masked_pan else None,
        "card_scheme": result.card_scheme,
        "terminal_id": result.terminal_id,
        "transaction_id": result.transaction_id,
        "host_datetime": result.host_datetime.isoformat() if result.host_datetime else None,
        "universal_id": make_universal_id(result, receipt_number),
        "totals": totals,
        "slip": slip_text(result.slips),
    }
