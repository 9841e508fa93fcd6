"""Arcus2-style bytes described in the common schema (``posbridge decode --protocol arcus2 HEX...``).

:func:`describe` walks the bytes as a receiver would: control bytes and noise between frames, each
frame with its version, length, check verdict, class and fields. Frames of both link versions are
described (the start byte states the version: SOH version 2, STX version 1). It never raises:
problems become data.
"""

from __future__ import annotations

from dataclasses import replace

from ..common.describe import EntryKind, FieldDescription, FrameDescription, Problem, describe_stream
from ..common.errors import DecodeError, IncompleteFrame

from .constants import ACK, BYTE_NAMES, ENQ, EOT, FRAME_OVERHEAD, HEADER_SIZE, NAK, VERSION_OF_START
from .fields import NUMBER_WIDTHS, PAN_KEY, Message, mask_pan, number_problem
from .frame import decode_frame

__all__ = ["describe", "describe_fields"]

_CLASS_NAMES = {"Q": "request", "I": "intermediate", "R": "result", "A": "abort"}
_CONTROL_NAMES = {byte: BYTE_NAMES[byte] for byte in (EOT, ENQ, ACK, NAK)}
#: The check's name by version: ``"lrc"`` (v1), ``"crc"`` (v2).
_CHECK_NAMES = {1: "lrc", 2: "crc"}


def describe_fields(message: Message) -> tuple[FieldDescription, ...]:
    """Fields in wire order (``key`` and ``name`` both the key), the PAN masked; a number key whose
    value is not a number of the key's width (a 5,000-digit amount) has its ``problem``."""
    return tuple(
        FieldDescription(key, key, mask_pan(value) if key == PAN_KEY else value,
                         problem=number_problem(key, value) if key in NUMBER_WIDTHS else None)
        for key, value in message.fields.items()
    )


def describe(data: bytes) -> list[FrameDescription]:
    """Describe every frame, control byte and noise run in ``data`` (see the module docstring).

    Frames: ``name`` SOH or STX, ``version``, ``length`` of the body, ``check`` ``"crc"`` (v2) or
    ``"lrc"`` (v1), ``message`` the class (``"Q"``) and ``message_kind`` what it is
    (``"request"``), ``fields``. A bad ETX or check is a frame with a problem (``check_ok`` False,
    or None when a bad ETX left it unchecked; the walk goes on after it); an incomplete frame ends
    the walk.
    """
    return describe_stream(data, start_bytes=bytes(VERSION_OF_START), control_names=_CONTROL_NAMES,
                           describe_frame=_describe_frame)


def _describe_frame(data: bytes, at: int, skipped: int) -> tuple[FrameDescription, int]:
    """The entry for the frame whose start byte is ``data[at]``, and where scanning resumes."""
    name = BYTE_NAMES[data[at]]
    version = VERSION_OF_START[data[at]]
    check = _CHECK_NAMES[version]
    try:
        frame = decode_frame(data[at:])
    except IncompleteFrame as error:
        return FrameDescription(EntryKind.INCOMPLETE, at, len(data) - at, name=name, skipped=skipped,
                                version=version, problems=(Problem(error.reason, error.detail, at),)), len(data)
    except DecodeError as error:  # bad ETX or check: the frame is complete, so its extent is known
        length = data[at + 1] << 8 | data[at + 2]
        size = FRAME_OVERHEAD[version] + length
        return FrameDescription(
            EntryKind.FRAME, at, size, name=name, skipped=skipped, version=version, length=length,
            check=check, check_ok=False if error.reason == "crc" else None,
            problems=(Problem(error.reason, error.detail, at + error.offset),)), at + size
    entry = FrameDescription(EntryKind.FRAME, at, frame.size, name=name, skipped=skipped, version=version,
                             length=len(frame.body), check=check, check_ok=True)
    end = at + frame.size
    try:
        message = Message.decode_body(frame.body)
    except DecodeError as error:
        return replace(entry, problems=(Problem(error.reason, error.detail, at + HEADER_SIZE + error.offset),)), end
    return replace(entry, message=message.message_class, message_kind=_CLASS_NAMES[message.message_class],
                   fields=describe_fields(message)), end
