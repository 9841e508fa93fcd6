"""Byte values and limits of posbridge's Arcus2-style link, version 1 (arcus2.md, "Arcus2-style link")."""

from __future__ import annotations

STX, ETX, EOT, ENQ, ACK, NAK, FS = 0x02, 0x03, 0x04, 0x05, 0x06, 0x15, 0x1C

#: Single-byte link signals; outside a frame they are events, inside a frame just data.
CONTROL_BYTES = frozenset({EOT, ENQ, ACK, NAK})

#: LEN is two bytes, so a frame body holds at most this many bytes.
MAX_BODY = 65535

#: STX(1) + LEN(2) before the body, ETX(1) + LRC(1) after it.
HEADER_SIZE = 3
TRAILER_SIZE = 2
FRAME_OVERHEAD = HEADER_SIZE + TRAILER_SIZE

#: Largest frame on the wire; also the most a FrameScanner ever buffers.
MAX_FRAME = MAX_BODY + FRAME_OVERHEAD

#: Message classes (the body's first byte): request, intermediate, result, abort.
REQUEST, INTERMEDIATE, RESULT, ABORT = "Q", "I", "R", "A"
MESSAGE_CLASSES = (REQUEST, INTERMEDIATE, RESULT, ABORT)

#: Printable names, for traces and ``describe``.
BYTE_NAMES = {STX: "STX", ETX: "ETX", EOT: "EOT", ENQ: "ENQ", ACK: "ACK", NAK: "NAK", FS: "FS"}

#: Values are CP1251 text (arcus2.md, "BODY").
TEXT_ENCODING = "cp1251"
