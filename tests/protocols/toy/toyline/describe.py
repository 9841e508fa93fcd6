"""Toyline bytes described for people and tools, in posbridge's one description schema."""

from __future__ import annotations

from posbridge.protocols.common.describe import (
    EntryKind,
    FieldDescription,
    FrameDescription,
    Problem,
    describe_stream,
)
from posbridge.protocols.common.errors import DecodeError
from posbridge.protocols.common.model import mask_card_numbers

from .frame import ACK, END, MAX_FRAME, NAK, START, check_line, decode_body

KINDS = {"Q": "request", "P": "progress", "R": "result"}


def _frame(data: bytes, at: int, skipped: int) -> tuple[FrameDescription, int]:
    end = data.find(END, at, at + MAX_FRAME)
    restart = data.find(START, at + 1, end if end >= 0 else at + MAX_FRAME)
    if restart >= 0:  # a new frame began before this one ended
        return FrameDescription(EntryKind.FRAME, at, restart - at, name="LINE", skipped=skipped,
                                problems=(Problem("format", "a new frame before the line ended", at),)), restart
    if end < 0:
        size = min(len(data), at + MAX_FRAME) - at
        kind = EntryKind.INCOMPLETE if size < MAX_FRAME else EntryKind.FRAME
        return FrameDescription(kind, at, size, name="LINE", skipped=skipped,
                                problems=(Problem("incomplete" if size < MAX_FRAME else "length", "", at),)), at + size
    line = data[at: end + 1]
    try:
        body = check_line(line, at)
    except DecodeError as error:
        return FrameDescription(EntryKind.FRAME, at, len(line), name="LINE", skipped=skipped, check="sum8",
                                check_ok=False if error.reason == "crc" else None,
                                problems=(Problem(error.reason, error.detail, error.offset),)), end + 1
    try:
        cls, fields = decode_body(body)
    except DecodeError as error:
        return FrameDescription(EntryKind.FRAME, at, len(line), name="LINE", skipped=skipped, length=len(body),
                                check="sum8", check_ok=True,
                                problems=(Problem(error.reason, error.detail, at + 1 + error.offset),)), end + 1
    return FrameDescription(EntryKind.FRAME, at, len(line), name="LINE", skipped=skipped, length=len(body),
                            check="sum8", check_ok=True, message=cls, message_kind=KINDS[cls],
                            fields=tuple(FieldDescription(key, key, mask_card_numbers(value))
                                         for key, value in fields)), end + 1


def describe(data: bytes) -> list[FrameDescription]:
    """Every frame, control byte and run of noise in ``data``, card numbers masked; never raises."""
    return describe_stream(bytes(data), start_bytes=START, control_names={ACK: "ACK", NAK: "NAK"},
                           describe_frame=_frame)
