"""Byte values and limits of posbridge's Arcus2-style link, versions 1 and 2 (docs/protocols/arcus2.md)."""

from __future__ import annotations

SOH, STX, ETX, EOT, ENQ, ACK, NAK, FS = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x15, 0x1C

#: Single-byte link signals; outside a frame they are events, inside a frame just data.
CONTROL_BYTES = frozenset({EOT, ENQ, ACK, NAK})

#: Link versions. A frame's start byte states its version: STX for version 1 (legacy: ETX + an
#: 8-bit XOR LRC), SOH for version 2 (ETX + CRC-32). Version 2 is the default on both sides.
LINK_VERSIONS = (1, 2)
DEFAULT_LINK_VERSION = 2
START_BYTE = {1: STX, 2: SOH}
VERSION_OF_START = {STX: 1, SOH: 2}

#: LEN is two bytes, so a frame body holds at most this many bytes.
MAX_BODY = 65535

#: START(1) + LEN(2) before the body, in both versions.
HEADER_SIZE = 3
#: Bytes of the check after ETX: the LRC (v1) or the CRC-32 (v2).
CHECK_SIZE = {1: 1, 2: 4}
#: ETX(1) + the check, by version.
TRAILER_SIZE = {version: 1 + size for version, size in CHECK_SIZE.items()}
#: Everything but the body, by version: 5 bytes in version 1, 8 in version 2.
FRAME_OVERHEAD = {version: HEADER_SIZE + size for version, size in TRAILER_SIZE.items()}

#: Largest frame on the wire (a version 2 frame); also the most a FrameScanner ever buffers.
MAX_FRAME = MAX_BODY + max(FRAME_OVERHEAD.values())

#: Message classes (the body's first byte): request, intermediate, result, abort.
REQUEST, INTERMEDIATE, RESULT, ABORT = "Q", "I", "R", "A"
MESSAGE_CLASSES = (REQUEST, INTERMEDIATE, RESULT, ABORT)

#: Printable names, for traces and ``describe``.
BYTE_NAMES = {SOH: "SOH", STX: "STX", ETX: "ETX", EOT: "EOT", ENQ: "ENQ", ACK: "ACK", NAK: "NAK", FS: "FS"}

#: Values are CP1251 text (arcus2.md, "BODY").
TEXT_ENCODING = "cp1251"
