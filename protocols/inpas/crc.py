"""CRC-16/BUYPASS, the INPAS SA frame check (inpas-sa.md, "Link layer").

Polynomial 0x8005, init 0x0000, no reflection, xorout 0x0000; check value of b"123456789" is 0xFEE8.
crcmod-plus computes it in C (~1 us per frame against ~33 us for a pure-Python table, DESIGN.md).
"""

from __future__ import annotations

import crcmod.predefined

_crc16_buypass = crcmod.predefined.mkPredefinedCrcFun("crc-16-buypass")

#: CRC of b"123456789", from the CRC catalogue; tests pin the implementation to it.
CHECK_VALUE = 0xFEE8


def crc16_buypass(data: bytes | bytearray | memoryview) -> int:
    """Return the CRC-16/BUYPASS of ``data`` (any bytes-like object) as an int in 0..0xFFFF."""
    crc: int = _crc16_buypass(data)  # crcmod has no type information
    return crc
