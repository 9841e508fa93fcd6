"""Toyline frames and bodies: the declarative format, a fast codec, and a streaming scanner.

A frame is one line of text: ``>`` BODY ``*`` CC ``\\n``, where CC is the 1-byte checksum (the sum
of BODY's bytes, modulo 256) as two upper-case hex digits. BODY is printable ASCII without ``>``
and ``*``. Outside frames, ACK (0x06) and NAK (0x15) are the link's control bytes; anything else is
noise. A body is a class letter (``Q`` request, ``P`` progress, ``R`` result) followed by fields
``|key=value``; a value is text with ``%XX`` escapes (UTF-8) for everything but plain characters.

The ``construct`` declarations (``FRAME``, ``BODY``) are the normative format; the functions that
run per frame are hand-written and checked against them by the protocol kit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

from construct import (
    Adapter,
    Bytes,
    Checksum,
    Const,
    Construct,
    ExprValidator,
    GreedyBytes,
    GreedyRange,
    NullTerminated,
    OneOf,
    Struct,
    Terminated,
    ValidationError,
    stream_seek,
    stream_write,
    this,
)

from posbridge.protocols.common.errors import ChecksumError, DecodeError, IncompleteFrame, InvalidRequest
from posbridge.protocols.common.link import BadFrame, Control, Noise

START, END, STAR, BAR = b">", b"\n", b"*", b"|"
ACK, NAK = 0x06, 0x15
CONTROL_BYTES = bytes([ACK, NAK])
MAX_BODY = 4000
#: ``>`` + body + ``*`` + two hex digits + ``\n``: the most a scanner holds.
MAX_FRAME = MAX_BODY + 5
CLASSES = ("Q", "P", "R")
BODY_ALPHABET = re.compile(rb"[\x20-\x29\x2b-\x3d\x3f-\x7e]*")  # printable ASCII but '*' and '>'
KEY = re.compile(rb"[a-z][a-z0-9]*")
_PLAIN = re.compile(r"[A-Za-z0-9 .,:;_/+-]")


def checksum(body: bytes) -> int:
    """The frame's check: the sum of the body's bytes, modulo 256."""
    return sum(body) & 0xFF


class _HexByte(Adapter):  # type: ignore[misc]
    """One byte written as two upper-case hex digits."""

    def _decode(self, obj: bytes, context: Any, path: str) -> int:
        if re.fullmatch(rb"[0-9A-F]{2}", obj) is None:
            raise ValidationError(f"not two upper-case hex digits: {obj!r}", path=path)
        return int(obj, 16)

    def _encode(self, obj: int, context: Any, path: str) -> bytes:
        return b"%02X" % obj


class _UntilBar(Construct):  # type: ignore[misc]
    """Bytes up to the next ``|`` or the end of the body (the ``|`` is left for the next field)."""

    def _parse(self, stream: Any, context: Any, path: str) -> bytes:
        data = bytearray()
        while (byte := stream.read(1)) and byte != BAR:
            data += byte
        if byte == BAR:
            stream_seek(stream, -1, 1, path)
        return bytes(data)

    def _build(self, obj: bytes, stream: Any, context: Any, path: str) -> bytes:
        if BAR in obj:
            raise ValidationError("a value cannot hold '|'", path=path)
        stream_write(stream, obj, len(obj), path)
        return obj


# --- the format, declared (normative) ------------------------------------------------------------

#: One frame: ``>`` BODY ``*`` CC ``\n``; BODY is printable ASCII without ``>`` and ``*``.
FRAME = Struct(
    "start" / Const(START),
    "line" / NullTerminated(Struct(
        "body" / ExprValidator(NullTerminated(GreedyBytes, term=STAR),
                               lambda body, ctx: len(body) <= MAX_BODY and BODY_ALPHABET.fullmatch(body) is not None),
        "check" / Checksum(_HexByte(Bytes(2)), checksum, this.body),
        Terminated,
    ), term=END),
)

#: One field of a body: ``|key=value``, the key lower-case ASCII, the value escaped text.
FIELD = Struct(
    Const(BAR),
    "key" / ExprValidator(NullTerminated(GreedyBytes, term=b"="), lambda key, ctx: KEY.fullmatch(key) is not None),
    "value" / _UntilBar(),
)

#: A body: a class letter, then its fields; a key appears at most once.
BODY = Struct(
    "cls" / OneOf(Bytes(1), [c.encode() for c in CLASSES]),
    "fields" / GreedyRange(FIELD),
    Terminated,
    "unique" / ExprValidator(Const(b""), lambda _, ctx: len({f["key"] for f in ctx.fields}) == len(ctx.fields)),
)

# --- fast codec ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedFrame:
    """A frame found by :func:`decode_frame`: its body, the bytes skipped before it, its own size."""

    body: bytes
    skipped: int
    size: int


def encode_frame(body: bytes) -> bytes:
    """The wire bytes of one frame; InvalidRequest for a body a frame cannot carry."""
    body = bytes(body)
    if len(body) > MAX_BODY or BODY_ALPHABET.fullmatch(body) is None:
        raise InvalidRequest(f"a frame body is at most {MAX_BODY} printable ASCII bytes without '>' and '*'")
    return START + body + STAR + b"%02X" % checksum(body) + END


def check_line(line: bytes, at: int) -> bytes:
    """The body of ``line`` (a whole frame, ``>`` to ``\\n``, found at stream offset ``at``), or the
    DecodeError a receiver answers NAK to: ``format`` (offset: the frame) or ``crc`` (offset: CC)."""
    star = line.find(STAR)
    body = line[1:star]
    if star < 0 or len(line) != star + 4 or len(body) > MAX_BODY or BODY_ALPHABET.fullmatch(body) is None \
            or re.fullmatch(rb"[0-9A-F]{2}", line[star + 1: star + 3]) is None:
        raise DecodeError("format", at, "expected '>' BODY '*' two hex digits '\\n'")
    if int(line[star + 1: star + 3], 16) != checksum(body):
        raise ChecksumError(at + star + 1, f"received {line[star + 1: star + 3].decode()}, computed {checksum(body):02X}")
    return body


def decode_frame(data: bytes) -> DecodedFrame:
    """The first frame in ``data``, skipping what comes before its ``>``; IncompleteFrame when the
    line does not end in ``data``, else the errors of :func:`check_line` (offsets in ``data``)."""
    data = bytes(data)
    at = data.find(START)
    if at < 0:
        raise IncompleteFrame(len(data), "no start byte '>'")
    end = data.find(END, at)
    if end < 0:
        raise IncompleteFrame(at, "the line does not end")
    return DecodedFrame(check_line(data[at: end + 1], at), at, end + 1 - at)


def escape(text: str) -> bytes:
    """``text`` as a field value: plain characters as they are, anything else as ``%XX`` (UTF-8)."""
    return "".join(ch if _PLAIN.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode()) for ch in text).encode()


def unescape(value: bytes, at: int = 0) -> str:
    """The text of an escaped value; DecodeError("escape") for a bad escape or bad UTF-8."""
    try:
        raw = re.sub(rb"%([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), value)
        if b"%" in re.sub(rb"%[0-9A-F]{2}", b"", value):
            raise ValueError("a '%' without two upper-case hex digits")
        return raw.decode("utf-8")
    except ValueError as error:  # UnicodeDecodeError is one
        raise DecodeError("escape", at, str(error)) from None


def encode_body(cls: str, fields: list[tuple[str, str]]) -> bytes:
    """A body: the class letter, then ``|key=escaped value`` per field; InvalidRequest for an
    unknown class, a bad or repeated key."""
    if cls not in CLASSES:
        raise InvalidRequest(f"message class must be one of {', '.join(CLASSES)}, not {cls!r}")
    keys = [key.encode("ascii", "replace") for key, _ in fields]
    if any(KEY.fullmatch(key) is None for key in keys) or len(set(keys)) != len(keys):
        raise InvalidRequest(f"field keys must be distinct lower-case ASCII names: {[k for k, _ in fields]!r}")
    return cls.encode() + b"".join(BAR + key + b"=" + escape(value) for key, (_, value) in zip(keys, fields))


def decode_body(body: bytes) -> tuple[str, list[tuple[str, str]]]:
    """A body's class letter and ``(key, text)`` fields in wire order; DecodeError with the offset:
    ``class``, ``field`` (no ``=`` or a bad key), ``duplicate_key``, ``escape``."""
    body = bytes(body)
    if body[:1] not in (b"Q", b"P", b"R"):
        raise DecodeError("class", 0, "expected a class letter Q, P or R")
    fields: list[tuple[str, str]] = []
    if len(body) > 1 and body[1:2] != BAR:
        raise DecodeError("field", 1, "expected '|' after the class letter")
    pos = 2
    for part in body[2:].split(BAR) if len(body) > 1 else []:
        key, eq, value = part.partition(b"=")
        if not eq or KEY.fullmatch(key) is None:
            raise DecodeError("field", pos, f"expected key=value, got {part[:20]!r}")
        if any(key.decode() == k for k, _ in fields):
            raise DecodeError("duplicate_key", pos, f"key {key.decode()!r} appears twice")
        fields.append((key.decode(), unescape(value, pos + len(key) + 1)))
        pos += len(part) + 1
    return chr(body[0]), fields


# --- streaming scanner ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameToken:
    """A complete frame with a good check."""

    body: bytes


Token = Union[Control, Noise, FrameToken, BadFrame]


_OUTSIDE = re.compile(b"[>\x06\x15]")  # what ends a run of noise: a start or a control byte
_INSIDE = re.compile(b"[>\n]")  # what ends a line: its end, or the start of another frame


class FrameScanner:
    """Cut a byte stream, fed in any pieces, into frames, control bytes and noise.

    A frame runs from ``>`` to ``\\n``. A ``>`` inside a frame means the frame's end was lost: the
    partial line is a bad frame (``format``) and a new frame starts. A line longer than
    :data:`MAX_FRAME` is a bad frame (``length``) and is dropped, so at most one frame is held.
    """

    def __init__(self) -> None:
        self._line = bytearray()
        self._line_at = 0
        self._pos = 0

    @property
    def pending(self) -> int:
        """Bytes held of an incomplete frame."""
        return len(self._line)

    def reset(self) -> None:
        """Forget a partial frame."""
        self._line.clear()

    def feed(self, data: bytes) -> list[Token]:
        """Consume ``data`` and return the tokens it completes, in stream order."""
        tokens: list[Token] = []
        data = bytes(data)
        pos, end = 0, len(data)
        while pos < end:
            if not self._line:  # outside a frame: noise runs, control bytes, or a start
                match = _OUTSIDE.search(data, pos)
                stop = match.start() if match else end
                if stop > pos:
                    tokens.append(Noise(data[pos:stop]))
                if match is None:
                    break
                if data[stop] == START[0]:
                    self._start(self._pos + stop)
                else:
                    tokens.append(Control(data[stop]))
                pos = stop + 1
                continue
            match = _INSIDE.search(data, pos, min(end, pos + MAX_FRAME - len(self._line)))
            if match is None:  # the line goes on past this piece, or past the longest frame
                take = min(end, pos + MAX_FRAME - len(self._line))
                self._line += data[pos:take]
                pos = take
                if len(self._line) >= MAX_FRAME:
                    tokens.append(BadFrame(DecodeError("length", self._line_at, f"no line end in {MAX_FRAME} bytes")))
                    self._line.clear()
                continue
            stop = match.start()
            if data[stop] == START[0]:  # a new frame before this line ended
                tokens.append(BadFrame(DecodeError("format", self._line_at, "a new frame before the line ended")))
                self._start(self._pos + stop)
            else:
                self._line += data[pos: stop + 1]
                tokens.append(self._token())
            pos = stop + 1
        self._pos += end
        return tokens

    def _start(self, at: int) -> None:
        self._line[:] = START
        self._line_at = at

    def _token(self) -> Token:
        line = bytes(self._line)
        self._line.clear()
        try:
            return FrameToken(check_line(line, self._line_at))
        except DecodeError as error:
            return BadFrame(error)
