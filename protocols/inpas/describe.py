"""Human- and JSON-friendly dump of INPAS SA bytes (``posbridge decode --protocol inpas HEX...``).

:func:`describe` walks the bytes as a receiver would: control bytes and noise between frames, each
frame with its header, CRC verdict and fields (or its part header for SOH frames, and the
reassembled fields once the final part arrives). It never raises: problems become entries.
"""

from __future__ import annotations

import re
from typing import Any

from ..common.errors import DecodeError, IncompleteFrame

from .constants import BYTE_NAMES, FRAME_OVERHEAD, SOH, STX
from .fields import NUMBER_WIDTHS, PAN_TAG, Message, mask_pan, name_for, number_problem
from .frame import decode_frame
from .multipart import Reassembler, decode_part

__all__ = ["describe", "describe_fields"]

_START_RE = re.compile(rb"[\x01\x02]")
_OUTSIDE_RE = re.compile(rb"([\x04\x05\x06\x15])|[^\x01\x02\x04\x05\x06\x15]+")


def describe_fields(message: Message) -> dict[str, dict[str, Any]]:
    """Fields as ``{"25": {"name": "operation_code", "value": "1"}, ...}``, ascending by tag.

    Bytes values are hex strings flagged ``"binary": True``; the PAN is masked; a number field that
    is not a number of its width (a 5,000-digit amount) is flagged ``"invalid": reason``.
    """
    out: dict[str, dict[str, Any]] = {}
    for tag in sorted(message.fields):
        value = message.fields[tag]
        entry: dict[str, Any] = {"name": name_for(tag)}
        if tag == PAN_TAG:  # never print a full card number
            entry["value"] = mask_pan(value if isinstance(value, str) else value.decode("latin-1"))
        elif isinstance(value, bytes):
            entry["value"] = value.hex()
            entry["binary"] = True
        else:
            entry["value"] = value
        if tag in NUMBER_WIDTHS:
            problem = number_problem(tag, value)
            if problem is not None:
                entry["invalid"] = problem
        out[str(tag)] = entry
    return out


def _error(entry: dict[str, Any], error: DecodeError, base: int) -> None:
    """Record a body error in a frame entry; ``base`` turns its offset into one within ``data``."""
    entry["error"] = error.reason
    entry["detail"] = error.detail
    entry["error_offset"] = base + error.offset


def describe(data: bytes) -> list[dict[str, Any]]:
    """Describe every frame, control byte and noise run in ``data`` as JSON-able dicts.

    Entries, in order, each with the ``offset`` of its first byte in ``data``:

    * ``{"offset", "control": "ACK"}`` -- a control byte outside a frame;
    * ``{"offset", "noise": hex}`` -- other bytes outside a frame not directly before one;
    * a frame: ``{"offset", "start": "STX"|"SOH", "length", "crc": "ok", "skipped": n, ...}`` where
      ``skipped`` counts noise bytes directly before it; STX frames add ``"fields"``; SOH frames
      add ``"part"``, ``"final"``, ``"chunk"`` (hex) and, on the final part, ``"reassembled_fields"``;
      a body that does not parse adds ``"error"``, ``"detail"``, ``"error_offset"``;
    * ``{"offset", "error": reason, "detail"}`` -- a bad CRC (also with ``"start"``, ``"length"``,
      ``"crc": "bad"``; scanning goes on after that frame) or an incomplete frame (ends the walk).
    """
    data = bytes(data)
    entries: list[dict[str, Any]] = []
    reassembler = Reassembler()
    pos = 0
    while pos < len(data):
        match = _START_RE.search(data, pos)
        stop = match.start() if match else len(data)
        skipped = 0
        for run in _OUTSIDE_RE.finditer(data, pos, stop):
            if run.group(1) is not None:
                entries.append({"offset": run.start(), "control": BYTE_NAMES[data[run.start()]]})
            elif match is not None and run.end() == stop:
                skipped = run.end() - run.start()
            else:
                entries.append({"offset": run.start(), "noise": run.group().hex()})
        if match is None:
            break
        pos = _describe_frame(data, stop, skipped, reassembler, entries)
    return entries


def _describe_frame(
    data: bytes, at: int, skipped: int, reassembler: Reassembler, entries: list[dict[str, Any]]
) -> int:
    """Describe the frame whose start byte is ``data[at]``; return where scanning resumes."""
    try:
        frame = decode_frame(data[at:])
    except IncompleteFrame as error:
        entries.append({"offset": at, "error": error.reason, "detail": error.detail, "skipped": skipped})
        return len(data)
    except DecodeError as error:  # bad CRC: the frame is complete, so its extent is known
        length = data[at + 1] | data[at + 2] << 8
        entries.append(
            {
                "offset": at,
                "start": BYTE_NAMES[data[at]],
                "length": length,
                "crc": "bad",
                "skipped": skipped,
                "error": error.reason,
                "detail": error.detail,
            }
        )
        return at + FRAME_OVERHEAD + length
    body_at = at + 3
    entry: dict[str, Any] = {
        "offset": at,
        "start": BYTE_NAMES[frame.start],
        "length": len(frame.body),
        "crc": "ok",
        "skipped": skipped,
    }
    entries.append(entry)
    if frame.start == STX:
        reassembler.reset()
        try:
            entry["fields"] = describe_fields(Message.decode_body(frame.body))
        except DecodeError as error:
            _error(entry, error, body_at)
    elif frame.start == SOH:
        try:
            part = decode_part(frame.body)
        except DecodeError as error:
            reassembler.reset()
            _error(entry, error, body_at)
            return at + frame.size
        entry.update(part=part.number, final=part.final, chunk=part.chunk.hex())
        try:
            whole = reassembler.add(frame.start, frame.body)
        except DecodeError as error:
            _error(entry, error, body_at)
            return at + frame.size
        if whole is not None:
            try:
                entry["reassembled_fields"] = describe_fields(Message.decode_body(whole))
            except DecodeError as error:
                entry["reassembled_error"] = error.reason
                entry["reassembled_detail"] = f"at offset {error.offset}: {error.detail}"
    return at + frame.size
