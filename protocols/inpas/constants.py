"""Byte values and limits of the INPAS SmartSale SA link layer (inpas-sa.md, "Link layer")."""

from __future__ import annotations

SOH, STX, EOT, ENQ, ACK, NAK = 0x01, 0x02, 0x04, 0x05, 0x06, 0x15

#: Bytes that start a frame: STX a whole message, SOH one part of a multi-part message.

#: Single-byte link signals; outside a frame they are events, inside a frame just data.
CONTROL_BYTES = frozenset({EOT, ENQ, ACK, NAK})

#: LEN is two bytes, so a frame body holds at most this many bytes.
MAX_BODY = 65535

#: START(1) + LEN(2) before the body, CRC(2) after it.
HEADER_SIZE = 3
CRC_SIZE = 2
FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE

#: Largest frame on the wire; also the most a FrameScanner ever buffers.
MAX_FRAME = MAX_BODY + FRAME_OVERHEAD

#: Printable names, for traces and ``describe``.
BYTE_NAMES = {SOH: "SOH", STX: "STX", EOT: "EOT", ENQ: "ENQ", ACK: "ACK", NAK: "NAK"}

#: Text fields are CP1251 (inpas-sa.md, "Message layer").
TEXT_ENCODING = "cp1251"
