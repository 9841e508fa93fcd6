"""Multi-part INPAS SA messages (inpas-sa.md, "Multi-part messages").

A body longer than the sender's part size travels as SOH frames. Each part's body is
``HLEN(2, LE, not counting itself)`` + record(1, "1") (version) + record(2, part number: "1", "2",
... and "0" on the final part) + the next slice of the message's record stream (a slice may cut a
record). The receiver concatenates the slices and parses them as one body.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..common.errors import DecodeError, InvalidRequest

from .constants import SOH, STX
from .frame import decode_records, encode_frame, encode_records

__all__ = ["VERSION", "encode_part", "split_message", "Part", "decode_part", "Reassembler"]

#: Tag 1 of a part header; the only version known.
VERSION = b"1"
_VERSION_TAG = 1
_NUMBER_TAG = 2
_HLEN = struct.Struct("<H")
#: Most digits of a part number: a message of at most 1 MB in parts of at least one byte needs 7.
_NUMBER_WIDTH = 9


def encode_part(number: int, chunk: bytes) -> bytes:
    """Return the SOH frame carrying part ``number`` (0 = final) with ``chunk`` as its slice."""
    if number < 0:
        raise InvalidRequest(f"part number must be 0 or more, not {number}")
    header = encode_records([(_VERSION_TAG, VERSION), (_NUMBER_TAG, str(number).encode("ascii"))])
    return encode_frame(_HLEN.pack(len(header)) + header + bytes(chunk), SOH)


def split_message(body: bytes, part_size: int) -> list[bytes]:
    """Return the encoded frames that carry ``body``.

    One STX frame if ``len(body) <= part_size``; else SOH frames whose slices hold ``part_size``
    bytes each (the last one the rest), numbered 1, 2, ... and 0 on the final part. Raises
    :class:`InvalidRequest` if ``part_size < 1`` or a frame would exceed 65535 body bytes.
    """
    if part_size < 1:
        raise InvalidRequest(f"part size must be at least 1, not {part_size}")
    body = bytes(body)
    if len(body) <= part_size:
        return [encode_frame(body, STX)]
    frames = []
    count = -(-len(body) // part_size)
    for index in range(count):
        number = 0 if index == count - 1 else index + 1
        frames.append(encode_part(number, body[index * part_size : (index + 1) * part_size]))
    return frames


@dataclass(frozen=True)
class Part:
    """One part of a multi-part message: its number (0 on the final part) and its slice."""

    number: int
    chunk: bytes
    final: bool


def decode_part(body: bytes) -> Part:
    """Parse the body of an SOH frame.

    Raises ``DecodeError("part", offset, ...)`` for a missing or truncated header, a version other
    than "1" or a part number that is not ASCII digits (and the errors of :func:`decode_records`
    for a malformed header). Offsets are relative to ``body``; extra header records are ignored.
    """
    body = bytes(body)
    if len(body) < _HLEN.size:
        raise DecodeError("part", 0, f"part header length needs 2 bytes, have {len(body)}")
    (hlen,) = _HLEN.unpack_from(body)
    header_end = _HLEN.size + hlen
    if header_end > len(body):
        raise DecodeError("part", 0, f"part header of {hlen} bytes, {len(body) - 2} left")
    try:
        records = dict(decode_records(body[_HLEN.size : header_end]))
    except DecodeError as error:  # shift the offset from the header to the body
        raise DecodeError(error.reason, error.offset + _HLEN.size, error.detail) from None
    version = records.get(_VERSION_TAG)
    if version != VERSION:
        raise DecodeError("part", _HLEN.size, f"part version {version!r}, expected {VERSION!r}")
    number = records.get(_NUMBER_TAG)
    if number is None or not (number.isascii() and number.isdigit()):
        shown = number if number is None or len(number) <= 20 else number[:20] + b"..."
        raise DecodeError("part", _HLEN.size, f"part number {shown!r} is not ASCII digits")
    if len(number) > _NUMBER_WIDTH:
        raise DecodeError("part", _HLEN.size, f"part number of {len(number)} digits, at most {_NUMBER_WIDTH}")
    value = int(number)
    return Part(value, body[header_end:], value == 0)


class Reassembler:
    """Join the parts of a multi-part message, receiver side.

    Parts must arrive numbered 1, 2, 3, ... with 0 closing the message (a lone part 0 is a
    message by itself). An exact repeat of the part just taken (the sender resending after a
    lost ACK), the final one included, is ignored. After any error the partial
    message is dropped, so the next part 1 starts afresh.
    """

    def __init__(self, max_message: int = 1 << 20) -> None:
        """``max_message`` bounds the bytes held for one message (memory stays bounded)."""
        self.max_message = max_message
        self._chunks: list[bytes] = []
        self._size = 0
        self._last: Part | None = None

    @property
    def pending(self) -> int:
        """Bytes held of an unfinished multi-part message."""
        return self._size

    def reset(self) -> None:
        """Drop any partial message."""
        self._chunks = []
        self._size = 0
        self._last = None

    def add(self, start: int, body: bytes) -> bytes | None:
        """Take one frame's body; return a complete message body, or None while parts are missing.

        STX returns ``body`` at once (dropping any partial multi-part message). SOH returns None
        until the final part, then the concatenated slices. Raises :class:`DecodeError`: reason
        ``part`` for a bad header, ``part_order`` for an unexpected number, ``too_large`` past
        ``max_message``, ``start`` for a start byte that is neither STX nor SOH.
        """
        if start == STX:
            self.reset()
            return bytes(body)
        if start != SOH:
            self.reset()
            raise DecodeError("start", 0, f"frame start 0x{start:02X} is neither STX nor SOH")
        try:
            part = decode_part(body)
        except DecodeError:
            self.reset()
            raise
        if part == self._last:
            return None
        expected = len(self._chunks) + 1
        if not part.final and part.number != expected:
            self.reset()
            raise DecodeError("part_order", 2, f"part {part.number}, expected {expected} or 0")
        if self._size + len(part.chunk) > self.max_message:
            self.reset()
            raise DecodeError("too_large", 0, f"multi-part message exceeds {self.max_message} bytes")
        self._chunks.append(part.chunk)
        self._size += len(part.chunk)
        self._last = part
        if not part.final:
            return None
        message = b"".join(self._chunks)
        self._chunks = []
        self._size = 0  # keep _last: a resent final part must not read as a new message
        return message
