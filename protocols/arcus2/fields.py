"""The Arcus2-style key table and :class:`Message`, one message as its class and fields.

arcus2.md "BODY": a class letter, then ``key=value`` fields separated by FS; keys are the Arcus
library's lowercase names plus ``operation``; values are CP1251 text; a key appears at most once.
posbridge adds a few keys of its own (``source="posbridge"`` below), each documented in
``docs/protocols/arcus2.md``.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ..common.errors import DecodeError, InvalidRequest
from ..common.model import mask_pan

from .constants import MESSAGE_CLASSES, TEXT_ENCODING
from .frame import KEY_PATTERN, decode_body, encode_body

__all__ = ["FieldSpec", "FIELDS", "NUMBER_WIDTHS", "PAN_KEY", "Message", "mask_pan", "read_number",
           "number_problem", "brief"]


@dataclass(frozen=True)
class FieldSpec:
    """What a key means.

    ``kind`` is ``"text"`` (CP1251) or ``"digits"`` (ASCII 0-9, checked when encoding);
    ``direction`` is ``"in"`` (ECR -> terminal), ``"out"`` (terminal -> ECR) or ``"both"``;
    ``source`` is ``"arcus"`` for the public library's keys, ``"posbridge"`` for posbridge's own.
    ``max_length`` (characters) is enforced when encoding; decoding accepts what the peer sent,
    except that a ``digits`` key is only read as a number when it holds 1 to ``max_length`` ASCII
    digits (:func:`read_number`): every ``digits`` key has a ``max_length``.
    """

    key: str
    kind: str
    direction: str
    meaning: str
    max_length: int | None = None
    source: str = "arcus"


def _table(*specs: FieldSpec) -> dict[str, FieldSpec]:
    return {spec.key: spec for spec in specs}


#: Every key posbridge knows, in the order it writes them.
FIELDS: dict[str, FieldSpec] = _table(
    FieldSpec("operation", "digits", "both", "operation code from ops.ini (Q); echoed in R", 6),
    FieldSpec("response_code", "text", "out", "three-character response code; 000 = approved", 3),
    FieldSpec("host_code", "text", "out", "the acquirer's own response code, any width", source="posbridge"),
    FieldSpec("text_message", "text", "out", "what the terminal shows (I) or answers (R), in Russian"),
    FieldSpec("amount", "digits", "in", "amount in minor units", 12),
    FieldSpec("result_amount", "digits", "out", "amount actually processed, minor units", 12),
    FieldSpec("currency", "digits", "both", "ISO 4217 numeric currency, e.g. 643", 3),
    FieldSpec("transaction_id", "digits", "both",
              "the ECR's unique number: the idempotency key; echoed in R and carried in A", 12),
    FieldSpec("rrn", "text", "both", "RRN of the original operation (Q) or of this one (R)", 12),
    FieldSpec("auth_code", "text", "both", "authorization code", 6),
    FieldSpec("original_amount", "digits", "in", "amount of the original operation", 12),
    FieldSpec("original_date_time", "digits", "in", "date-time of the original operation, yyMMddhhmmss", 12),
    FieldSpec("original_operation", "digits", "both",
              "ops.ini code of the operation a cancel or reversal undoes (PREAUTH: release a hold)", 6,
              source="posbridge"),
    FieldSpec("terminal_id", "text", "both", "terminal id", 8),
    FieldSpec("pan", "text", "out", "masked card number: at most the first 6 and last 4 digits"),
    FieldSpec("expiry", "digits", "out", "card expiry, YYMM", 4),
    FieldSpec("card_type", "text", "out", "card scheme: VISA, MASTERCARD, MIR ..."),
    FieldSpec("application_label", "text", "out", "EMV application label"),
    FieldSpec("aid", "text", "out", "EMV application identifier"),
    FieldSpec("tvr", "text", "out", "EMV terminal verification results"),
    FieldSpec("date", "digits", "out", "host date, yyMMdd", 6),
    FieldSpec("time", "digits", "out", "host time, hhmmss", 6),
    FieldSpec("cardholder_name", "text", "out", "card holder's name"),
    FieldSpec("sale_count", "digits", "out", "totals: sales in the batch", 18, source="posbridge"),
    FieldSpec("sale_amount", "digits", "out", "totals: sum of sales, minor units", 18, source="posbridge"),
    FieldSpec("refund_count", "digits", "out", "totals: refunds in the batch", 18, source="posbridge"),
    FieldSpec("refund_amount", "digits", "out", "totals: sum of refunds, minor units", 18, source="posbridge"),
    FieldSpec("cancel_count", "digits", "out", "totals: cancels in the batch", 18, source="posbridge"),
    FieldSpec("cancel_amount", "digits", "out", "totals: sum of cancels, minor units", 18, source="posbridge"),
    FieldSpec("slip", "text", "out", "customer copy, a separator line, then the cashier copy"),
)

PAN_KEY = "pan"
_DIGIT_KEYS = frozenset(key for key, spec in FIELDS.items() if spec.kind == "digits")
#: Most digits each number key holds: a longer value is not a number (Python's ``int()`` would
#: even raise on one of over 4,300 digits). Amounts 12, currency 3, transaction_id 12, ops.ini
#: codes 6 (ops.ini's CODE), totals 18.
NUMBER_WIDTHS: dict[str, int] = {key: FIELDS[key].max_length or 0 for key in _DIGIT_KEYS}
assert all(NUMBER_WIDTHS.values()), "every digits key needs its max_length"
_MAX_LENGTHS = {key: spec.max_length for key, spec in FIELDS.items() if spec.max_length is not None}
_LIMITED_KEYS = frozenset(_MAX_LENGTHS)

# CP1251 through the codec object: str.encode("cp1251") pays a registry lookup per call; the C
# ascii codec is faster still for the many values that are plain ASCII (and gives the same bytes).
_CP1251 = codecs.lookup(TEXT_ENCODING)


def number_problem(key: str, value: str) -> str | None:
    """Why ``value`` of the number key ``key`` is not a number (in words), or None when it is one:
    1 to ``NUMBER_WIDTHS[key]`` ASCII digits."""
    width = NUMBER_WIDTHS[key]
    if not (value.isascii() and value.isdigit()):
        return f"{key} must be ASCII digits, got {brief(value)}"
    if len(value) > width:
        return f"{key} has {len(value)} digits, at most {width} allowed"
    return None


def read_number(key: str, value: str | None) -> int | None:
    """``value`` of the number key ``key`` as an int; None when absent or not a number
    (:func:`number_problem`). Never raises for any text."""
    if value is None or not 0 < len(value) <= NUMBER_WIDTHS[key] or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def brief(value: str, limit: int = 24) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length said (for error texts)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


class Message:
    """One Arcus2-style message: its class letter and its fields (key -> text), in wire order.

    ``message_class`` is ``Q`` (request), ``I`` (intermediate), ``R`` (result) or ``A`` (abort).
    ``repr`` masks the ``pan`` key, so a message in a log never shows a full card number.
    """

    __slots__ = ("fields", "message_class")

    def __init__(self, message_class: str, fields: Mapping[str, str | int] | None = None) -> None:
        """Build a message; ints become ASCII decimal; ``None`` values are dropped.

        Raises :class:`InvalidRequest` for an unknown class or a key that is not lowercase ASCII.
        """
        if message_class not in MESSAGE_CLASSES:
            raise InvalidRequest(f"message class must be one of {', '.join(MESSAGE_CLASSES)}, not {message_class!r}")
        self.message_class = message_class
        self.fields: dict[str, str] = {}
        for key, value in (fields or {}).items():
            if not isinstance(key, str) or KEY_PATTERN.fullmatch(key.encode("ascii", "replace")) is None:
                raise InvalidRequest(f"field key must be lowercase ASCII ([a-z][a-z0-9_]*), not {key!r}")
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise InvalidRequest(f"field {key}: unsupported value {value!r}")
            self.fields[key] = value if isinstance(value, str) else str(int(value))

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of ``key``, ``default`` if absent."""
        return self.fields.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def __contains__(self, key: object) -> bool:
        return key in self.fields

    def __iter__(self) -> Iterator[str]:
        """Keys in wire order."""
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def encode_body(self) -> bytes:
        """The wire body: class letter, then the fields in insertion order.

        The body's grammar is :func:`~posbridge.protocols.arcus2.frame.encode_body`'s; this adds
        what the key table says of values. Raises :class:`InvalidRequest` for a key that is not
        lowercase ASCII, a value that is not text, text CP1251 cannot hold, a value holding FS, a
        ``digits`` key with anything but ASCII digits, or a value over its ``max_length``.
        """
        fields = self.fields
        for key, value in fields.items():  # the constructor makes text; the dict is public
            if not isinstance(value, str):
                raise InvalidRequest(f"field {key!r}: field values must be text, not {type(value).__name__}")
        for key in _DIGIT_KEYS.intersection(fields):
            if not (fields[key].isascii() and fields[key].isdigit()):
                raise InvalidRequest(f"field {key}: {fields[key]!r} is not ASCII digits")
        for key in _LIMITED_KEYS.intersection(fields):
            if len(fields[key]) > _MAX_LENGTHS[key]:
                raise InvalidRequest(f"field {key}: {len(fields[key])} characters, at most {_MAX_LENGTHS[key]} allowed")
        raw: list[tuple[str, bytes]] = []
        for key, value in fields.items():
            try:
                raw.append((key, value.encode("ascii") if value.isascii() else _CP1251.encode(value)[0]))
            except UnicodeEncodeError as error:
                raise InvalidRequest(f"field {key}: not CP1251: {error.reason} {value[error.start]!r}") from None
        return encode_body(self.message_class, raw)

    @classmethod
    def decode_body(cls, body: bytes) -> Message:
        """Parse a body. Raises only :class:`DecodeError`: the reasons of
        :func:`~posbridge.protocols.arcus2.frame.decode_body` (the body's grammar), plus
        ``"encoding"`` for a value with a byte CP1251 leaves undefined (0x98), at that byte's
        offset in ``body``."""
        message_class, raw = decode_body(body)
        message = cls.__new__(cls)
        message.message_class = message_class
        message.fields = {}
        at = 1  # where the field starts in the body
        for key, value in raw:
            try:
                message.fields[key] = value.decode("ascii") if value.isascii() else _CP1251.decode(value)[0]
            except UnicodeDecodeError as error:
                offset = at + len(key) + 1 + error.start
                raise DecodeError("encoding", offset, f"byte 0x{value[error.start]:02X} is not CP1251") from None
            at += len(key) + len(value) + 2  # "=" and the FS before the next field
        return message

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.message_class == other.message_class and self.fields == other.fields

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        parts = [f"{key}={mask_pan(value) if key == PAN_KEY else value!r}" for key, value in self.fields.items()]
        return f"Message({self.message_class!r}, {', '.join(parts)})"
