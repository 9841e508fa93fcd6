"""The domain vocabulary every protocol maps to and every posbridge component speaks.

It lives at the bottom layer (``posbridge.protocols.common``) because DESIGN.md lets imports point down only:
each protocol package maps its wire messages to these types, so they cannot live above it.
``posbridge.model`` re-exports everything here; application code should import from there.

Money is always an integer count of minor units (kopecks) plus an ISO 4217 numeric currency code.
A full card number never appears in these types: only :func:`mask_pan` output does.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import Any
from dataclasses import dataclass, field, replace
from datetime import datetime

from .errors import InvalidRequest

MAX_AMOUNT = 999_999_999_999  # 12 decimal digits: the widest amount field of either protocol
RUB = 643


class Operation(str, enum.Enum):
    """Operations in the vocabulary of the 1C payment-terminal driver standard."""

    SALE = "sale"  # оплата
    REFUND = "refund"  # возврат оплаты
    CANCEL = "cancel"  # отмена оплаты (void within the open batch)
    PREAUTH = "preauth"  # авторизация (hold)
    COMPLETION = "completion"  # завершение авторизации (full or partial)
    CANCEL_PREAUTH = "cancel_preauth"  # отмена авторизации
    EMERGENCY_REVERSAL = "emergency_reversal"  # аварийная отмена: outcome of the last request lost
    SETTLEMENT = "settlement"  # сверка итогов
    SHORT_REPORT = "short_report"
    FULL_REPORT = "full_report"
    SLIP_COPY = "slip_copy"  # копия последнего чека
    TEST_CONNECTION = "test_connection"

    @property
    def moves_money(self) -> bool:
        """True for operations that carry an amount and change what the card holder pays."""
        return self in _MONEY_OPERATIONS

    @property
    def needs_rrn(self) -> bool:
        """True for operations that act on an earlier operation identified by its RRN."""
        return self in (Operation.CANCEL, Operation.COMPLETION, Operation.CANCEL_PREAUTH)


_MONEY_OPERATIONS = frozenset(
    {
        Operation.SALE,
        Operation.REFUND,
        Operation.CANCEL,
        Operation.PREAUTH,
        Operation.COMPLETION,
        Operation.CANCEL_PREAUTH,
        Operation.EMERGENCY_REVERSAL,
    }
)


class Status(str, enum.Enum):
    """Outcome of an operation, protocol-neutral. Only APPROVED means the operation succeeded."""

    UNDEFINED = "undefined"  # not performed
    APPROVED = "approved"
    CONDITIONAL = "conditional"  # performed conditionally
    REVERSED = "reversed"
    DECLINED = "declined"
    APPROVED_OFFLINE = "approved_offline"
    NO_CONNECTION = "no_connection"  # terminal could not reach its host
    ABORTED = "aborted"  # cashier or card holder cancelled, or the terminal timed out


# ISO 4217 numeric codes of current currencies (2024 list). A code outside it is a bad currency.
ISO_4217_NUMERIC = frozenset(
    int(code)
    for code in (
        "008 012 032 036 044 048 050 051 052 060 064 068 072 084 090 096 104 108 116 124 132 136 144"
        " 152 156 170 174 188 191 192 203 208 214 222 230 232 238 242 262 270 292 320 324 328 332"
        " 340 344 348 352 356 360 364 368 376 388 392 398 400 404 408 410 414 417 418 422 426 430"
        " 434 446 454 458 462 480 484 496 498 504 512 516 524 532 533 548 554 558 566 578 586 590"
        " 598 600 604 608 634 643 646 654 682 690 702 704 706 710 728 748 756 760 764 776 780 784"
        " 788 800 807 818 826 834 840 858 860 882 886 901 924 925 927 928 929 930 933 934 936 938"
        " 940 941 943 944 946 947 948 949 950 951 952 953 960 961 967 968 969 970 971 972 973 975"
        " 976 977 978 979 980 981 984 985 986 990 994 997 999"
    ).split()
)

_RRN = re.compile(r"^[0-9A-Za-z]{1,12}$")
_AUTH_CODE = re.compile(r"^[0-9A-Za-z ]{1,6}$")


def validate_amount(amount: int | None, *, what: str = "amount") -> int:
    """Return ``amount`` if it is a positive integer of at most 12 digits, else raise InvalidRequest."""
    if amount is None:
        raise InvalidRequest(f"{what} is required")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidRequest(f"{what} must be an integer count of minor units, got {amount!r}")
    if amount <= 0:
        raise InvalidRequest(f"{what} must be positive, got {amount}")
    if amount > MAX_AMOUNT:
        raise InvalidRequest(f"{what} has more than 12 digits: {amount}")
    return amount


def validate_currency(currency: int) -> int:
    """Return ``currency`` if it is an ISO 4217 numeric code, else raise InvalidRequest."""
    if isinstance(currency, bool) or not isinstance(currency, int) or currency not in ISO_4217_NUMERIC:
        raise InvalidRequest(f"currency must be an ISO 4217 numeric code such as 643, got {currency!r}")
    return currency


def parse_amount(text: str) -> int:
    """Parse a major-unit decimal such as ``"150.00"`` or ``"1,5"`` into minor units, exactly.

    Raises InvalidRequest for anything that is not a positive amount with at most two decimals.
    """
    cleaned = text.strip().replace(",", ".")
    match = re.fullmatch(r"(\d+)(?:\.(\d{1,2}))?", cleaned)
    if not match:
        raise InvalidRequest(f"not an amount: {text!r} (expected e.g. 150.00)")
    whole, frac = match.group(1), (match.group(2) or "").ljust(2, "0")
    return validate_amount(int(whole) * 100 + int(frac))


def format_amount(minor: int, currency: int = RUB) -> str:
    """Format minor units for people: ``15000 -> '150.00 RUB'`` (three-letter code when known)."""
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    return f"{sign}{minor // 100}.{minor % 100:02d} {CURRENCY_LETTERS.get(currency, str(currency))}"


CURRENCY_LETTERS = {643: "RUB", 840: "USD", 978: "EUR", 933: "BYN", 398: "KZT", 156: "CNY", 51: "AMD"}


def mask_pan(pan: str) -> str:
    """Mask a card number to at most its first 6 and last 4 digits: ``411111******1111``.

    The one masking rule of posbridge (DESIGN.md: a full card number never leaves the card reader),
    for whatever a caller holds: a full number (spaces and dashes between groups are dropped), a
    number already masked (kept as it is: masking is idempotent), or junk from the line. A value
    with more than 10 digits is reduced to its digits, masked but for the first 6 and last 4; a
    shorter one keeps its characters, masked but for the first 6 and last 4 when it has more than
    10 of them, but for the last 4 when it has 5 to 10, entirely when it has 4 or fewer.
    """
    text = pan.replace(" ", "").replace("-", "")
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) > 10:
        text = digits
    n = len(text)
    if n > 10:
        return text[:6] + "*" * (n - 10) + text[-4:]
    if n > 4:
        return "*" * (n - 4) + text[-4:]
    return "*" * n


_CARD_DIGIT_RUN = re.compile(rb"(?<!\d)\d{13,19}(?!\d)")  # a longer run is no card number


def could_be_card_number(digits: bytes) -> bool:
    """A run of 13-19 ASCII digits that could be a card number: Luhn-valid and starting as an
    issuer's number does (Mir 2200-2204, Mastercard 2221-2720, 3, 4, 5, 6). A date-time
    (``20261203092430``), a zero-padded merchant id or an amount is not one."""
    if not 13 <= len(digits) <= 19 or not digits.isdigit():
        return False
    head = int(digits[:4])
    if not (digits[:1] in (b"3", b"4", b"5", b"6") or 2200 <= head <= 2204 or 2221 <= head <= 2720):
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = char - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def mask_card_bytes(data: bytes) -> bytes:
    """``data`` (raw bytes from the line) with every run of digits that could be a card number
    replaced by its masked form of the same length, so hex dumps and captures never hold one."""
    return _CARD_DIGIT_RUN.sub(
        lambda m: mask_pan(m.group(0).decode()).encode() if could_be_card_number(m.group(0)) else m.group(0),
        data)


# 12 or more digits, written together or in groups split by single spaces or dashes (4111 1111 …).
_DIGIT_RUN = re.compile(r"[0-9](?:[ -]?[0-9]){11,}")
_LONGEST_PAN = 19


def mask_card_numbers(text: str) -> str:
    """Free text (an error, a field from the line) fit for a log: every run of 12 or more digits,
    together or in groups split by single spaces or dashes, which could be a card number, is masked
    by :func:`mask_pan`; a run longer than any card number (a hostile 5,000-digit field) is shown
    by its first 4 digits and its length."""
    def one(match: re.Match[str]) -> str:
        digits = match.group(0).replace(" ", "").replace("-", "")
        return mask_pan(digits) if len(digits) <= _LONGEST_PAN else f"{digits[:4]}…({len(digits)} digits)"

    return _DIGIT_RUN.sub(one, text)


@dataclass(frozen=True)
class Request:
    """An operation the cash register asks the terminal to perform.

    ``transaction_id`` is the ECR's unique number for the operation (STAN in INPAS SA,
    ``transaction_id`` in Arcus): the host's idempotency key, so a resent request is never charged
    twice. ``original_operation`` names what a cancel or an emergency reversal undoes;
    ``original_datetime`` is when the original operation took place (Arcus ``original_date_time``).
    """

    operation: Operation
    amount: int | None = None
    currency: int = RUB
    transaction_id: str | None = None
    rrn: str | None = None
    auth_code: str | None = None
    original_operation: Operation | None = None
    original_amount: int | None = None
    terminal_id: str | None = None
    ecr_datetime: datetime | None = None
    original_datetime: datetime | None = None

    def validated(self) -> Request:
        """Return self after checking every field the operation needs; raise InvalidRequest if not."""
        op = self.operation
        if not isinstance(op, Operation):
            raise InvalidRequest(f"unknown operation: {op!r}")
        if op.moves_money:
            validate_amount(self.amount)
            validate_currency(self.currency)
        elif self.amount is not None:
            raise InvalidRequest(f"{op.value} takes no amount")
        if op in (Operation.CANCEL, Operation.COMPLETION, Operation.CANCEL_PREAUTH) and not self.rrn:
            raise InvalidRequest(f"{op.value} needs the RRN of the original operation")
        if self.rrn is not None and not _RRN.match(self.rrn):
            raise InvalidRequest(f"RRN must be 1-12 letters or digits, got {self.rrn!r}")
        if self.auth_code is not None and not _AUTH_CODE.match(self.auth_code):
            raise InvalidRequest(f"authorization code must be 1-6 characters, got {self.auth_code!r}")
        if self.transaction_id is not None and not re.fullmatch(r"[0-9]{1,12}", self.transaction_id):
            raise InvalidRequest(f"transaction id must be 1-12 digits, got {self.transaction_id!r}")
        if self.original_amount is not None:
            validate_amount(self.original_amount, what="original amount")
        return self

    def with_changes(self, **changes: object) -> Request:
        """A copy with some fields replaced."""
        return replace(self, **changes)  # type: ignore[arg-type]  # names and types checked by replace() at run time


@dataclass(frozen=True)
class Totals:
    """Counts and sums (minor units) of a batch by operation kind, as settlement reports them."""

    currency: int = RUB
    sale_count: int = 0
    sale_amount: int = 0
    refund_count: int = 0
    refund_amount: int = 0
    cancel_count: int = 0
    cancel_amount: int = 0

    @property
    def net_amount(self) -> int:
        """Money the merchant keeps: sales less refunds (cancelled sales are not in sale totals)."""
        return self.sale_amount - self.refund_amount


@dataclass(frozen=True)
class Slips:
    """The printed slips of one operation: the card holder's and the cashier's copy (plain text)."""

    customer: str = ""
    cashier: str = ""


@dataclass(frozen=True)
class Result:
    """The terminal's answer to a :class:`Request`.

    ``response_code`` is the host's code as the protocol carries it; ``host_code`` keeps the
    acquirer manual's code where the protocol's field is narrower (Arcus's three characters).
    """

    operation: Operation
    status: Status
    response_code: str = ""
    response_text: str = ""
    amount: int | None = None
    currency: int | None = None
    rrn: str | None = None
    auth_code: str | None = None
    masked_pan: str | None = None
    card_scheme: str | None = None
    expiry: str | None = None
    terminal_id: str | None = None
    merchant_id: str | None = None
    transaction_id: str | None = None
    host_datetime: datetime | None = None
    host_code: str | None = None
    slips: Slips = field(default_factory=Slips)
    totals: Totals | None = None

    @property
    def approved(self) -> bool:
        """True only for status APPROVED, the one success value."""
        return self.status is Status.APPROVED

    def with_changes(self, **changes: object) -> Result:
        """A copy with some fields replaced."""
        return replace(self, **changes)  # type: ignore[arg-type]  # names and types checked by replace() at run time


def mask_bytes(data: bytes, masked_values: Iterable[str] = ()) -> bytes:
    """``data`` with every card number replaced by its masked form, same length: the numbers the
    describer masked (found by their first 6 and last 4 digits) and any other run of 13-19 digits
    that could be one (:func:`could_be_card_number`)."""
    out = data
    for value in set(masked_values):
        head, tail = value[:6], value[-4:]
        pattern = re.compile(re.escape(head.encode()) + rb"\d{%d}" % (len(value) - 10) + re.escape(tail.encode()))
        out = pattern.sub(value.encode(), out)
    return mask_card_bytes(out)


_HEX_RUN = re.compile(r"[0-9a-fA-F]{26,}")  # bytes in hex, long enough to hold a card number
_TEXT_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9]{13,19}(?![0-9])")  # _CARD_DIGIT_RUN, for text
# Digits in groups split by single spaces or dashes (4111 1111 1111 1111), as mask_card_numbers reads them.
_GROUPED_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9]+(?:[ -][0-9]+)+(?![0-9])")


def mask_decoded(value: Any) -> Any:
    """A description (``to_dict()``) fit for a capture, a log or a screen: the describers mask the card numbers they
    know as such, but a noise entry's ``data`` (and its one-line summary) holds the raw bytes in hex
    and a text field may carry a number the describer took for something else: runs of hex digits
    are masked as bytes, and the text as text (runs of 13-19 digits that could be card numbers).

    Both are found in the text as it came: a card number written in digits inside hex-looking text
    (EMV track 2, ``4111111111111111D2512…``) is masked as any other, and the hex of a number masked
    as bytes (``…3131312a2a2a…``) is not read again as digits (its ``…3131312`` was no run of the
    text, and starring it would break the hex and hide the digits a masked number shows)."""
    if isinstance(value, dict):
        return {key: mask_decoded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_decoded(item) for item in value]
    if isinstance(value, str):
        masked = _HEX_RUN.sub(_mask_hex_run, value)  # same length: positions in ``value`` hold
        for run in _TEXT_DIGIT_RUN.finditer(value):
            if could_be_card_number(run.group(0).encode("ascii")):
                masked = masked[:run.start()] + mask_pan(run.group(0)) + masked[run.end():]
        for run in _GROUPED_DIGIT_RUN.finditer(value):
            grouped = _mask_grouped(run.group(0))
            if grouped != run.group(0):  # else the run as it came would undo what the passes above masked
                masked = masked[:run.start()] + grouped + masked[run.end():]
        return masked
    return value


def _mask_grouped(text: str) -> str:
    """``4111 1111 1111 1111`` -> ``4111 11** **** 1111`` when its digits could be a card number
    (the separators stay where they were); anything else as it is."""
    digits = text.replace(" ", "").replace("-", "")
    if not could_be_card_number(digits.encode("ascii")):
        return text
    masked = iter(mask_pan(digits))
    return "".join(char if char in " -" else next(masked) for char in text)


def _mask_hex_run(match: re.Match[str]) -> str:
    text = match.group(0)
    if len(text) % 2:  # not whole bytes: leave the last digit out
        return _mask_hex_run_even(text[:-1]) + text[-1]
    return _mask_hex_run_even(text)


def _mask_hex_run_even(text: str) -> str:
    raw = bytes.fromhex(text)
    masked = mask_bytes(raw)
    if masked == raw:
        return text
    # the original's letter case: a character kept keeps it; one masked is upper in an upper-case dump
    upper = any(char.isupper() for char in text) and not any(char.islower() for char in text)
    return "".join(new.upper() if upper or old.isupper() else new for new, old in zip(masked.hex(), text))
