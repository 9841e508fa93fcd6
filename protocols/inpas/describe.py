"""INPAS SA bytes described in the common schema (``posbridge decode --protocol inpas HEX...``).

:func:`describe` walks the bytes as a receiver would: control bytes and noise between frames, each
frame with its header, CRC verdict and fields (or its part header for SOH frames, and the fields of
the whole message once the final part arrives). It never raises: problems become data.
"""

from __future__ import annotations

from dataclasses import replace

from ..common.describe import (
    EntryKind,
    FieldDescription,
    FrameDescription,
    PartDescription,
    Problem,
    describe_stream,
)
from ..common.errors import DecodeError, IncompleteFrame

from .constants import ACK, BYTE_NAMES, ENQ, EOT, FRAME_OVERHEAD, HEADER_SIZE, NAK, SOH, STX
from .fields import NUMBER_WIDTHS, PAN_TAG, Message, mask_pan, name_for, number_problem
from .frame import decode_frame
from .multipart import Reassembler, decode_part

__all__ = ["describe", "describe_fields"]

_CONTROL_NAMES = {byte: BYTE_NAMES[byte] for byte in (EOT, ENQ, ACK, NAK)}


def describe_fields(message: Message) -> tuple[FieldDescription, ...]:
    """Fields ascending by tag (``key`` the tag number, ``name`` its meaning).

    Bytes values are shown in hex (``binary``); the PAN is masked; a number field that is not a
    number of its width (a 5,000-digit amount) has its ``problem``.
    """
    out = []
    for tag in sorted(message.fields):
        value = message.fields[tag]
        binary = False
        if tag == PAN_TAG:  # never show a full card number
            shown = mask_pan(value if isinstance(value, str) else value.decode("latin-1"))
        elif isinstance(value, bytes):
            shown, binary = value.hex(), True
        else:
            shown = str(value)
        problem = number_problem(tag, value) if tag in NUMBER_WIDTHS else None
        out.append(FieldDescription(str(tag), name_for(tag), shown, binary=binary, problem=problem))
    return tuple(out)


def _problem(error: DecodeError, base: int | None, what: str = "") -> Problem:
    """A body error as a Problem; ``base`` turns its offset into one within the described bytes."""
    detail = f"{what}: {error.detail}" if what else error.detail
    return Problem(error.reason, detail, None if base is None else base + error.offset)


def describe(data: bytes) -> list[FrameDescription]:
    """Describe every frame, control byte and noise run in ``data`` (see the module docstring).

    Frames: ``name`` STX or SOH, ``length`` of the body, ``check`` ``"crc"``; STX frames carry
    ``fields``; SOH frames carry ``part`` and, on the final part, the reassembled message's
    ``fields``. A bad CRC is a frame with ``check_ok`` False and a ``crc`` problem (the walk goes on
    after it); an incomplete frame ends the walk.
    """
    reassembler = Reassembler()

    def frame(data: bytes, at: int, skipped: int) -> tuple[FrameDescription, int]:
        return _describe_frame(data, at, skipped, reassembler)

    return describe_stream(data, start_bytes=bytes([SOH, STX]), control_names=_CONTROL_NAMES,
                           describe_frame=frame)


def _describe_frame(data: bytes, at: int, skipped: int, reassembler: Reassembler) -> tuple[FrameDescription, int]:
    """The entry for the frame whose start byte is ``data[at]``, and where scanning resumes."""
    name = BYTE_NAMES[data[at]]
    try:
        frame = decode_frame(data[at:])
    except IncompleteFrame as error:
        return FrameDescription(EntryKind.INCOMPLETE, at, len(data) - at, name=name, skipped=skipped,
                                problems=(Problem(error.reason, error.detail, at),)), len(data)
    except DecodeError as error:  # bad CRC: the frame is complete, so its extent is known
        length = data[at + 1] | data[at + 2] << 8
        size = FRAME_OVERHEAD + length
        return FrameDescription(EntryKind.FRAME, at, size, name=name, skipped=skipped, length=length,
                                check="crc", check_ok=False, problems=(_problem(error, at),)), at + size
    body_at = at + HEADER_SIZE
    entry = FrameDescription(EntryKind.FRAME, at, frame.size, name=name, skipped=skipped,
                             length=len(frame.body), check="crc", check_ok=True)
    end = at + frame.size
    if frame.start == STX:
        reassembler.reset()
        try:
            return replace(entry, fields=describe_fields(Message.decode_body(frame.body))), end
        except DecodeError as error:
            return replace(entry, problems=(_problem(error, body_at),)), end
    try:
        part = decode_part(frame.body)
    except DecodeError as error:
        reassembler.reset()
        return replace(entry, problems=(_problem(error, body_at),)), end
    entry = replace(entry, part=PartDescription(part.number, part.final, part.chunk.hex()))
    try:
        whole = reassembler.add(frame.start, frame.body)
    except DecodeError as error:
        return replace(entry, problems=(_problem(error, body_at),)), end
    if whole is None:
        return entry, end
    try:
        return replace(entry, fields=describe_fields(Message.decode_body(whole))), end
    except DecodeError as error:  # the offset is within the reassembled body, not within ``data``
        return replace(entry, problems=(_problem(error, None, f"reassembled message at offset {error.offset}"),)), end
