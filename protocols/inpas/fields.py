"""The INPAS SA field table and :class:`Message`, one message as its records.

inpas-sa.md "Message layer": a body is records ``TAG(1) LEN(2 LE) VALUE``; text is CP1251, numbers
are ASCII decimal, tags 55 59 69 70 86 91 96 are binary; order is free, a tag appears at most once,
empty values are omitted.
"""

from __future__ import annotations

import codecs
import struct
from dataclasses import dataclass
from typing import Iterator, Mapping, TypeVar, Union

from ..common.errors import InvalidRequest
from ..common.model import mask_pan

from .constants import MAX_BODY, TEXT_ENCODING
from .frame import decode_records

__all__ = [
    "FieldSpec",
    "FIELDS",
    "BINARY_TAGS",
    "tag_for",
    "name_for",
    "mask_pan",
    "Message",
    "FieldValue",
    "NUMBER_WIDTHS",
    "read_number",
    "number_problem",
    "brief",
]

FieldValue = Union[str, bytes]
_Key = TypeVar("_Key", bound=Union[int, str])  # a tag (an int, a Tag member) or a field name


@dataclass(frozen=True)
class FieldSpec:
    """What a tag means: ``kind`` is ``'text'`` (CP1251), ``'digits'`` (ASCII 0-9) or ``'binary'``.

    ``max_length`` (in bytes) is enforced when encoding; decoding accepts what the peer sent, except
    that a ``digits`` field is only read as a number when it has at most ``max_length`` digits
    (:func:`read_number`): every ``digits`` tag has a ``max_length``.
    """

    tag: int
    name: str
    kind: str
    max_length: int | None = None


def _table(*specs: FieldSpec) -> dict[int, FieldSpec]:
    return {spec.tag: spec for spec in specs}


#: Every tag of inpas-sa.md "Fields posbridge must know", plus the binary tags it lists. The spec
#: names only 70 among the binary ones; the others are called ``binary_NN``.
FIELDS: dict[int, FieldSpec] = _table(
    FieldSpec(0, "amount", "digits", 12),  # minor units, at most 12 digits
    FieldSpec(1, "additional_amount", "digits", 12),
    FieldSpec(4, "currency", "digits", 3),  # ISO 4217 numeric
    FieldSpec(6, "host_datetime", "digits", 14),  # YYYYMMDDhhmmss
    FieldSpec(8, "card_entry_mode", "digits", 2),
    FieldSpec(10, "pan", "text"),  # masked; never a full card number
    FieldSpec(11, "expiry", "digits", 4),  # YYMM
    FieldSpec(13, "auth_code", "text", 6),
    FieldSpec(14, "rrn", "text", 12),  # "12 digits" in the spec; hosts and the model allow letters
    FieldSpec(15, "host_response_code", "text"),
    FieldSpec(19, "response_text", "text"),
    FieldSpec(21, "ecr_datetime", "digits", 14),  # YYYYMMDDhhmmss
    FieldSpec(23, "transaction_id", "text"),
    FieldSpec(25, "operation_code", "digits", 3),
    FieldSpec(26, "stan", "digits", 12),  # the ECR's transaction number (Request.transaction_id: 1-12 digits)
    FieldSpec(27, "terminal_id", "text", 8),
    FieldSpec(28, "merchant_id", "text"),
    FieldSpec(29, "debit_amount", "digits", 18),  # settlement totals
    FieldSpec(30, "debit_count", "digits", 18),
    FieldSpec(31, "credit_amount", "digits", 18),
    FieldSpec(32, "credit_count", "digits", 18),
    FieldSpec(34, "original_operation_code", "digits", 3),
    FieldSpec(39, "status", "digits", 3),
    FieldSpec(49, "void_amount", "digits", 18),
    FieldSpec(50, "void_count", "digits", 18),
    FieldSpec(55, "binary_55", "binary"),
    FieldSpec(57, "timeout", "digits", 5),  # seconds
    FieldSpec(59, "binary_59", "binary"),
    FieldSpec(64, "command_mode_1", "digits", 3),
    FieldSpec(65, "command_mode_2", "digits", 3),
    FieldSpec(66, "command_mode_3", "digits", 3),
    FieldSpec(67, "command_result", "digits", 3),  # 0 ok, 1 error
    FieldSpec(69, "binary_69", "binary"),
    FieldSpec(70, "gateway_data", "binary"),  # operation 63: "ip;port[;ip;port]" or host data
    FieldSpec(71, "display_message", "text"),
    FieldSpec(76, "cashier_prompt", "text"),
    FieldSpec(77, "cashier_answer", "text"),
    FieldSpec(86, "binary_86", "binary"),
    FieldSpec(89, "ecr_id", "text"),
    FieldSpec(90, "receipt_data", "text"),  # items KIND^NAME^TEXT~
    FieldSpec(91, "binary_91", "binary"),
    FieldSpec(96, "binary_96", "binary"),
)

BINARY_TAGS = frozenset(tag for tag, spec in FIELDS.items() if spec.kind == "binary")
_DIGIT_TAGS = frozenset(tag for tag, spec in FIELDS.items() if spec.kind == "digits")
_MAX_LENGTHS = {tag: spec.max_length for tag, spec in FIELDS.items() if spec.max_length is not None}
_TAGS_BY_NAME = {spec.name: tag for tag, spec in FIELDS.items()}
#: Most digits each number field holds: amounts 12, currency 3, STAN 12, totals 18, codes and
#: statuses 3, the dialog timeout 5. A longer value is not a number (Python's ``int()`` would even
#: raise on one of over 4,300 digits).
NUMBER_WIDTHS: dict[int, int] = {tag: FIELDS[tag].max_length or 0 for tag in _DIGIT_TAGS}
assert all(NUMBER_WIDTHS.values()), "every digits tag needs its max_length"
_RECORD_HEADER = struct.Struct("<BH")  # TAG, LEN (frame.RECORD)

# CP1251 through the codec object: str.encode("cp1251") pays a registry lookup per call. Most
# values are ASCII, for which the C ascii codec is several times faster still (and identical).
_CP1251 = codecs.lookup(TEXT_ENCODING)


def _encode_text(text: str) -> bytes:
    """CP1251 bytes of ``text``; UnicodeEncodeError if CP1251 cannot hold it."""
    return text.encode("ascii") if text.isascii() else _CP1251.encode(text)[0]


def _decode_text(raw: bytes) -> str:
    """``raw`` decoded as CP1251; UnicodeDecodeError on the 5 bytes CP1251 leaves undefined."""
    return raw.decode("ascii") if raw.isascii() else _CP1251.decode(raw)[0]


PAN_TAG = 10
OPERATION_CODE_TAG = 25


def tag_for(name: str) -> int:
    """Return the tag of a field name (``"rrn"`` -> 14); ``"tag_NN"`` names any tag. KeyError if unknown."""
    tag = _TAGS_BY_NAME.get(name)
    if tag is not None:
        return tag
    if name.startswith("tag_") and name[4:].isascii() and name[4:].isdigit() and len(name) <= 7:
        number = int(name[4:])
        if number <= 255:
            return number
    raise KeyError(f"unknown INPAS field name {name!r}")


def number_problem(tag: int, value: FieldValue) -> str | None:
    """Why ``value`` of the number field ``tag`` is not a number (in words), or None when it is one:
    1 to ``NUMBER_WIDTHS[tag]`` ASCII digits, nothing else (no sign, no spaces)."""
    what = f"tag {tag} ({name_for(tag)})"
    if not isinstance(value, str):
        return f"{what} is not text"
    if not (value.isascii() and value.isdigit()):
        return f"{what} must be ASCII digits, got {brief(value)}"
    width = NUMBER_WIDTHS[tag]
    if len(value) > width:
        return f"{what} has {len(value)} digits, at most {width} allowed"
    return None


def read_number(tag: int, value: FieldValue | None) -> int | None:
    """``value`` of the number field ``tag`` as an int; None when absent or not a number
    (:func:`number_problem`). Never raises for any value."""
    if value is None or number_problem(tag, value) is not None:
        return None
    return int(value)


def brief(value: FieldValue, limit: int = 24) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length said (for error texts)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def name_for(tag: int) -> str:
    """Return the field name of a tag, ``"tag_NN"`` for tags not in :data:`FIELDS`."""
    spec = FIELDS.get(tag)
    return spec.name if spec else f"tag_{tag}"


def _normalize(tag: int, value: object) -> FieldValue:
    """Bring a constructor value to its stored type: bytes for binary tags, else str where possible."""
    if isinstance(value, bool):  # bool is an int; True -> "1" would hide a caller's bug
        raise InvalidRequest(f"tag {tag}: a bool is not a field value")
    if isinstance(value, int):
        value = str(int(value))  # int(): an IntEnum's str() is its name on Python 3.10
    binary = tag in BINARY_TAGS
    if isinstance(value, str):
        if not binary:
            return value
        try:
            return _encode_text(value)
        except UnicodeEncodeError as error:
            raise InvalidRequest(f"tag {tag} ({name_for(tag)}): not CP1251: {error}") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value) if binary else _text_or_bytes(bytes(value))
    raise InvalidRequest(f"tag {tag}: unsupported value type {type(value).__name__}")


def _text_or_bytes(raw: bytes) -> FieldValue:
    """CP1251 text if ``raw`` decodes, else ``raw`` itself.

    A value with a byte CP1251 leaves undefined stays bytes instead of failing the whole message:
    one odd byte in a slip must not make the ECR reject an approval.
    """
    try:
        return _decode_text(raw)
    except UnicodeDecodeError:
        return raw


class Message:
    """One SA message: its fields by tag.

    ``fields`` maps tag -> ``str`` (text and digit tags, decoded CP1251) or ``bytes`` (binary tags,
    and text that is not valid CP1251). Empty values are dropped, as the spec omits them.
    """

    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[_Key, FieldValue | int] | None = None) -> None:
        """Build a message; keys are tags (or field names), ints become ASCII decimal.

        Raises :class:`InvalidRequest` for a tag outside 0..255, an unknown name or a value of
        an unsupported type.
        """
        self.fields: dict[int, FieldValue] = {}
        for key, value in (fields or {}).items():
            if isinstance(key, str):
                try:
                    tag = tag_for(key)
                except KeyError as error:
                    raise InvalidRequest(str(error)) from None
            elif isinstance(key, int) and not isinstance(key, bool) and 0 <= key <= 255:
                tag = int(key)  # plain int keys, even from an IntEnum
            else:
                raise InvalidRequest(f"field tag must be 0..255, not {key!r}")
            normalized = _normalize(tag, value)
            if normalized:
                self.fields[tag] = normalized

    def get(self, tag: int | str, default: FieldValue | None = None) -> FieldValue | None:
        """Return the value of ``tag`` (or field name), ``default`` if absent."""
        if isinstance(tag, str):
            tag = tag_for(tag)
        return self.fields.get(tag, default)

    def __getitem__(self, tag: int | str) -> FieldValue:
        return self.fields[tag_for(tag) if isinstance(tag, str) else tag]

    def __contains__(self, tag: object) -> bool:
        if isinstance(tag, str):
            try:
                tag = tag_for(tag)
            except KeyError:
                return False
        return tag in self.fields

    def __len__(self) -> int:
        return len(self.fields)

    def __iter__(self) -> Iterator[int]:
        """Tags in ascending order."""
        return iter(sorted(self.fields))

    @property
    def operation_code(self) -> int | None:
        """Tag 25 as an int; None if absent, not ASCII digits or over 3 digits (no SA code is)."""
        value = self.fields.get(OPERATION_CODE_TAG)
        if isinstance(value, str) and 0 < len(value) <= 3 and value.isascii() and value.isdigit():
            return int(value)
        return None

    def records(self) -> list[tuple[int, bytes]]:
        """The wire records, ascending by tag, empty values omitted.

        Raises :class:`InvalidRequest` for text that CP1251 cannot encode, a ``digits`` field with
        anything but ASCII digits, a value over its ``max_length`` or over 65535 bytes.
        """
        out = []
        for tag in _wire_order(self.fields):
            raw = _to_wire(tag, self.fields[tag])
            if raw:
                out.append((tag, raw))
        return out

    def encode_body(self) -> bytes:
        """The message body: records ascending by tag (as DualConnector sends them).

        The body itself may exceed 65535 bytes (multipart splits it); each value may not.
        Raises :class:`InvalidRequest` as :meth:`records` does.
        """
        out = bytearray()
        fields = self.fields
        for tag in _wire_order(fields):  # what encode_records does, minus its re-checks
            raw = _to_wire(tag, fields[tag])
            if not raw:
                continue
            out += _RECORD_HEADER.pack(tag, len(raw))
            out += raw
        return bytes(out)

    @classmethod
    def decode_body(cls, body: bytes) -> "Message":
        """Parse a message body. Raises only :class:`DecodeError` (bad or repeated records)."""
        message = cls.__new__(cls)
        fields: dict[int, FieldValue] = {}
        for tag, value in decode_records(body):
            if not value:
                continue
            if tag in BINARY_TAGS:
                fields[tag] = value
                continue
            try:  # inlined _text_or_bytes: this loop runs for every field of every frame
                fields[tag] = value.decode("ascii") if value.isascii() else _CP1251.decode(value)[0]
            except UnicodeDecodeError:
                fields[tag] = value
        message.fields = fields
        return message

    def named(self) -> dict[str, FieldValue]:
        """Fields by name, ascending by tag (unknown tags as ``tag_NN``); the PAN stays as received."""
        return {name_for(tag): self.fields[tag] for tag in sorted(self.fields)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.fields == other.fields

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        parts = []
        for tag in sorted(self.fields):
            value = self.fields[tag]
            if tag == PAN_TAG:  # never print a full card number
                text = value if isinstance(value, str) else value.decode("latin-1")
                value = mask_pan(text)
            parts.append(f"{name_for(tag)}={value!r}")
        return f"Message({', '.join(parts)})"


def _wire_order(fields: Mapping[int, object]) -> list[int]:
    """Tags ascending, after checking each is an int in 0..255 (``fields`` is public and mutable)."""
    for tag in fields:
        if not isinstance(tag, int) or isinstance(tag, bool) or not 0 <= tag <= 255:
            raise InvalidRequest(f"field tag must be 0..255, not {tag!r}")
    return sorted(fields)


def _to_wire(tag: int, value: FieldValue | int) -> bytes:
    """Encode one stored value for the wire, checking it against the field table."""
    if isinstance(value, str):
        if tag in _DIGIT_TAGS and not (value.isascii() and value.isdigit()):
            raise InvalidRequest(f"tag {tag} ({name_for(tag)}): {value!r} is not ASCII digits")
        try:
            raw = _encode_text(value)
        except UnicodeEncodeError as error:
            raise InvalidRequest(f"tag {tag} ({name_for(tag)}): not CP1251: {error}") from None
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        return _to_wire(tag, str(int(value)))
    else:
        raise InvalidRequest(f"tag {tag}: unsupported value type {type(value).__name__}")
    limit = _MAX_LENGTHS.get(tag, MAX_BODY)
    if len(raw) > limit:
        raise InvalidRequest(f"tag {tag} ({name_for(tag)}): {len(raw)} bytes, at most {limit} allowed")
    return raw
