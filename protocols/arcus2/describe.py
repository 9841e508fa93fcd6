"""Human- and JSON-friendly dump of Arcus2-style bytes (``posbridge decode --protocol arcus2 HEX...``).

:func:`describe` walks the bytes as a receiver would: control bytes and noise between frames, each
frame with its version, length, check verdict, class and fields. Frames of both link versions are
described (the start byte states the version: SOH version 2, STX version 1). It never raises:
problems become entries.
"""

from __future__ import annotations

import re
from typing import Any

from ..common.errors import DecodeError, IncompleteFrame

from .constants import BYTE_NAMES, FRAME_OVERHEAD, HEADER_SIZE, VERSION_OF_START
from .fields import NUMBER_WIDTHS, PAN_KEY, Message, mask_pan, number_problem
from .frame import decode_frame

__all__ = ["describe", "describe_fields", "invalid_numbers"]

_CLASS_NAMES = {"Q": "request", "I": "intermediate", "R": "result", "A": "abort"}
_START_RE = re.compile(rb"[\x01\x02]")
_OUTSIDE_RE = re.compile(rb"([\x04\x05\x06\x15])|[^\x01\x02\x04\x05\x06\x15]+")
#: The check's name in a frame entry, by version: ``"lrc"`` (v1), ``"crc"`` (v2).
_CHECK_NAMES = {1: "lrc", 2: "crc"}


def describe_fields(message: Message) -> dict[str, str]:
    """Fields in wire order, the PAN masked."""
    return {key: mask_pan(value) if key == PAN_KEY else value for key, value in message.fields.items()}


def invalid_numbers(message: Message) -> dict[str, str]:
    """Number keys whose value is not a number of the key's width, with the reason, in wire order."""
    out = {}
    for key, value in message.fields.items():
        if key in NUMBER_WIDTHS:
            problem = number_problem(key, value)
            if problem is not None:
                out[key] = problem
    return out


def describe(data: bytes) -> list[dict[str, Any]]:
    """Describe every frame, control byte and noise run in ``data`` as JSON-able dicts.

    Entries, in order, each with the ``offset`` of its first byte in ``data``:

    * ``{"offset", "control": "ACK"}`` -- a control byte outside a frame;
    * ``{"offset", "noise": hex}`` -- other bytes outside a frame not directly before one;
    * a frame: ``{"offset", "version": 2, "length", "crc": "ok", "skipped": n, "class": "Q",
      "kind": "request", "fields": {...}}`` (a version 1 frame has ``"lrc"`` where version 2 has
      ``"crc"``) where ``skipped`` counts noise bytes directly before it; number keys that are not
      numbers of their width (a 5,000-digit amount) are listed with the reason in ``"invalid"``; a
      body that does not parse has ``"error"``, ``"detail"``, ``"error_offset"`` instead of class
      and fields;
    * ``{"offset", "error": reason, "detail"}`` -- a bad ETX or check (also with ``"version"``,
      ``"length"`` and ``"lrc"``/``"crc"`` ``"bad"`` or ``"unchecked"``; scanning goes on after
      that frame) or an incomplete frame (ends the walk).
    """
    data = bytes(data)
    entries: list[dict[str, Any]] = []
    pos = 0
    while pos < len(data):
        match = _START_RE.search(data, pos)
        stop = match.start() if match else len(data)
        skipped = 0
        for run in _OUTSIDE_RE.finditer(data, pos, stop):
            if run.group(1) is not None:
                entries.append({"offset": run.start(), "control": BYTE_NAMES[data[run.start()]]})
            elif stop < len(data) and run.end() == stop:
                skipped = run.end() - run.start()
            else:
                entries.append({"offset": run.start(), "noise": run.group().hex()})
        if stop == len(data):
            break
        pos = _describe_frame(data, stop, skipped, entries)
    return entries


def _describe_frame(data: bytes, at: int, skipped: int, entries: list[dict[str, Any]]) -> int:
    """Describe the frame whose start byte is ``data[at]``; return where scanning resumes."""
    version = VERSION_OF_START[data[at]]
    check = _CHECK_NAMES[version]
    try:
        frame = decode_frame(data[at:])
    except IncompleteFrame as error:
        entries.append({"offset": at, "error": error.reason, "detail": error.detail, "skipped": skipped})
        return len(data)
    except DecodeError as error:  # bad ETX or check: the frame is complete, so its extent is known
        length = data[at + 1] << 8 | data[at + 2]
        entries.append({"offset": at, "version": version, "length": length, "skipped": skipped,
                        "error": error.reason, "detail": error.detail,
                        check: "bad" if error.reason == "crc" else "unchecked"})
        return at + FRAME_OVERHEAD[version] + length
    entry: dict[str, Any] = {"offset": at, "version": version, "length": len(frame.body), check: "ok",
                             "skipped": skipped}
    entries.append(entry)
    try:
        message = Message.decode_body(frame.body)
    except DecodeError as error:
        entry.update(error=error.reason, detail=error.detail, error_offset=at + HEADER_SIZE + error.offset)
    else:
        entry.update({"class": message.message_class, "kind": _CLASS_NAMES[message.message_class],
                      "fields": describe_fields(message)})
        invalid = invalid_numbers(message)
        if invalid:
            entry["invalid"] = invalid
    return at + frame.size
