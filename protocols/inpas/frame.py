"""INPAS SA frames and records: the declarative format, a fast codec, and a streaming scanner.

The ``construct`` declarations below (``RECORD``, ``RECORDS``, ``FRAME``) are the normative
definition of the wire format; each line cites inpas-sa.md. They cost ~100 us per frame in
construct 2.10 (DESIGN.md), so the functions that run per frame use a hand-written ``struct`` /
slice codec instead; ``tests/protocols/inpas/test_frame.py`` proves with hypothesis that the two
agree on every input (same result, or both reject it).

Everything here is sans-IO: bytes in, values or typed errors out. Decoding raises only
:class:`~posbridge.protocols.common.errors.DecodeError` and its subclasses; encoding rejects values that
cannot be sent with :class:`~posbridge.protocols.common.errors.InvalidRequest` (a ``ValueError``).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Iterable, Union

from construct import (
    Bytes,
    Check,
    Checksum,
    FocusedSeq,
    GreedyBytes,
    GreedyRange,
    Int8ul,
    Int16ub,
    Int16ul,
    OneOf,
    Prefixed,
    RawCopy,
    Rebuild,
    Struct,
    Terminated,
    len_,
    this,
)

from ..common.errors import (
    ChecksumError,
    DecodeError,
    IncompleteFrame,
    InvalidRequest,
)
from ..common.link import BadFrame, Control, Noise
from ..common.scanner import LengthPrefixedScanner

from .constants import (
    CONTROL_BYTES,
    CRC_SIZE,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    MAX_BODY,
    SOH,
    STX,
)
from .crc import crc16_buypass

__all__ = [
    "RECORD",
    "RECORDS",
    "FRAME",
    "DecodedFrame",
    "encode_frame",
    "decode_frame",
    "encode_records",
    "decode_records",
    "Control",
    "Noise",
    "FrameToken",
    "BadFrame",
    "Token",
    "FrameScanner",
]

# --- the format, declared (normative) ------------------------------------------------------------

#: One record of a message body. inpas-sa.md "Message layer": ``TAG(1) LEN(2, little-endian) VALUE(LEN)``.
RECORD = Struct(
    "tag" / Int8ul,
    "value" / Prefixed(Int16ul, GreedyBytes),
)

#: A message body. inpas-sa.md "Message layer": a sequence of records filling BODY exactly;
#: "a tag appears at most once".
RECORDS = FocusedSeq(
    "records",
    "records" / GreedyRange(RECORD),
    Terminated,  # a truncated last record is an error, not silently dropped by GreedyRange
    Check(lambda ctx: len({r["tag"] for r in ctx.records}) == len(ctx.records)),
)

#: One frame. inpas-sa.md "Link layer": ``START(1) LEN(2, little-endian) BODY(LEN) CRC(2, big-endian)``.
FRAME = Struct(
    "covered"
    / RawCopy(
        Struct(
            "start" / OneOf(Int8ul, (STX, SOH)),  # STX a whole message, SOH one part of a multi-part one
            "length" / Rebuild(Int16ul, len_(this.body)),  # LEN counts BODY only
            "body" / Bytes(this.length),
        )
    ),
    # CRC-16/BUYPASS over START + LEN + BODY, high byte first
    "crc" / Checksum(Int16ub, crc16_buypass, this.covered.data),
)

# --- fast codec (what runs per frame) ------------------------------------------------------------

_HEADER = struct.Struct("<BH")  # START, LEN
_CRC = struct.Struct(">H")
_RECORD_HEADER = struct.Struct("<BH")  # TAG, LEN
_START_RE = re.compile(rb"[\x01\x02]")  # SOH or STX


@dataclass(frozen=True)
class DecodedFrame:
    """A frame found by :func:`decode_frame`.

    ``skipped`` bytes preceded the start byte; ``size`` is the frame's own length from the start
    byte to the last CRC byte, so the input consumed is ``skipped + size``.
    """

    start: int
    body: bytes
    skipped: int
    size: int


def encode_frame(body: bytes, start: int = STX) -> bytes:
    """Return the wire bytes of one frame carrying ``body``.

    Raises :class:`InvalidRequest` if ``start`` is not STX/SOH or ``body`` exceeds 65535 bytes.
    """
    if start != STX and start != SOH:
        raise InvalidRequest(f"frame start must be STX or SOH, not {start!r}")
    if len(body) > MAX_BODY:
        raise InvalidRequest(f"frame body of {len(body)} bytes exceeds {MAX_BODY}")
    covered = _HEADER.pack(start, len(body)) + bytes(body)
    return covered + _CRC.pack(crc16_buypass(covered))


def decode_frame(data: bytes) -> DecodedFrame:
    """Decode the first frame in ``data``, skipping any bytes before its start byte.

    Every byte before the first STX/SOH is skipped, control bytes included (inpas-sa.md: "a
    receiver skips bytes before the first STX/SOH"). Bytes after the frame are ignored. Errors,
    with offsets relative to ``data``:

    * :class:`IncompleteFrame` -- ``data`` ends inside the frame; ``offset`` is the frame's start
      byte (``len(data)`` when there is no start byte at all);
    * :class:`ChecksumError` -- the CRC does not match; ``offset`` is the CRC's first byte and the
      bad frame spans ``offset + 2`` bytes of ``data``.
    """
    data = bytes(data)
    if data[:1] == b"\x02" or data[:1] == b"\x01":  # the usual case: no noise to skip
        at = 0
    else:
        match = _START_RE.search(data)
        if match is None:
            raise IncompleteFrame(len(data), "no start byte (STX/SOH)")
        at = match.start()
    have = len(data) - at
    if have < HEADER_SIZE:
        raise IncompleteFrame(at, f"frame header needs {HEADER_SIZE} bytes, have {have}")
    start, length = _HEADER.unpack_from(data, at)
    size = length + FRAME_OVERHEAD
    if have < size:
        raise IncompleteFrame(at, f"frame of {size} bytes, have {have}")
    crc_at = at + HEADER_SIZE + length
    _check_crc(data, at, crc_at, crc_at)
    return DecodedFrame(start, data[at + HEADER_SIZE : crc_at], at, size)


def _check_crc(buf: bytes | bytearray, begin: int, crc_at: int, report_at: int) -> None:
    """Raise :class:`ChecksumError` (reported at ``report_at``) unless the CRC stored at ``crc_at``
    matches ``buf[begin:crc_at]``."""
    computed = crc16_buypass(buf[begin:crc_at])
    (received,) = _CRC.unpack_from(buf, crc_at)
    if computed != received:
        raise ChecksumError(report_at, f"received CRC 0x{received:04X}, computed 0x{computed:04X}")


def encode_records(records: Iterable[tuple[int, bytes]]) -> bytes:
    """Return a body made of ``records`` (tag, value) in the order given.

    Raises :class:`InvalidRequest` for a tag outside 0..255, a repeated tag, or a value over
    65535 bytes -- anything :func:`decode_records` would not read back.
    """
    out = bytearray()
    seen = set()
    for tag, value in records:
        if not isinstance(tag, int) or not 0 <= tag <= 255:
            raise InvalidRequest(f"record tag must be 0..255, not {tag!r}")
        if tag in seen:
            raise InvalidRequest(f"record tag {tag} appears twice")
        seen.add(tag)
        if len(value) > MAX_BODY:
            raise InvalidRequest(f"tag {tag}: value of {len(value)} bytes exceeds {MAX_BODY}")
        out += _RECORD_HEADER.pack(tag, len(value))
        out += value
    return bytes(out)


def decode_records(body: bytes) -> list[tuple[int, bytes]]:
    """Split a message body into (tag, value) records, in wire order.

    Raises ``DecodeError("record", offset, ...)`` when a record is truncated and
    ``DecodeError("duplicate_tag", offset, ...)`` when a tag repeats; ``offset`` is the record's
    first byte in ``body``.
    """
    body = bytes(body)
    end = len(body)
    records: list[tuple[int, bytes]] = []
    seen = bytearray(256)  # faster than a set for 256 possible tags
    unpack = _RECORD_HEADER.unpack_from
    pos = 0
    while pos < end:
        if end - pos < 3:
            raise DecodeError("record", pos, f"record header needs 3 bytes, {end - pos} left")
        tag, length = unpack(body, pos)
        value_end = pos + 3 + length
        if value_end > end:
            raise DecodeError(
                "record", pos, f"tag {tag}: value of {length} bytes, {end - pos - 3} left"
            )
        if seen[tag]:
            raise DecodeError("duplicate_tag", pos, f"tag {tag} appears twice")
        seen[tag] = 1
        records.append((tag, body[pos + 3 : value_end]))
        pos = value_end
    return records


# --- streaming scanner (for the link layer) ------------------------------------------------------


@dataclass(frozen=True)
class FrameToken:
    """A complete frame with a good CRC."""

    start: int
    body: bytes


Token = Union[Control, Noise, FrameToken, BadFrame]



class FrameScanner(LengthPrefixedScanner):
    """Cut a byte stream, fed in arbitrary chunks, into frames, control bytes and noise.

    Inside a frame every byte is frame data, control values included: a frame's extent comes from
    its LEN. After a bad CRC scanning resumes after that frame's bytes. At most one frame
    (``MAX_BODY + 5`` bytes) is held; :meth:`reset` drops it (the link calls it on timeouts, since
    a stray start byte in noise announces a frame that will never be completed).
    """

    def __init__(self) -> None:
        super().__init__(bytes([SOH, STX]), bytes(sorted(CONTROL_BYTES)), "little", CRC_SIZE)

    def _token(self, frame: bytearray, frame_at: int) -> Token:
        crc_at = len(frame) - CRC_SIZE
        try:
            _check_crc(frame, 0, crc_at, frame_at + crc_at)
        except ChecksumError as error:
            return BadFrame(error)
        return FrameToken(frame[0], bytes(frame[HEADER_SIZE:crc_at]))
