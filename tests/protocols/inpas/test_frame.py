"""INPAS SA frame and record codec: exact bytes, CRC, errors and their offsets.

Round trips, the fast path against the construct declarations, garbage and the scanner's chunking are
in the protocol kit (tests/protocols/kit), run for every protocol.
"""

from __future__ import annotations

import pytest

from posbridge.protocols.common.errors import (
    ChecksumError,
    DecodeError,
    IncompleteFrame,
    InvalidRequest,
)
from posbridge.protocols.inpas.constants import (
    ACK,
    ENQ,
    EOT,
    MAX_BODY,
    MAX_FRAME,
    NAK,
    SOH,
    STX,
)
from posbridge.protocols.inpas.crc import CHECK_VALUE, crc16_buypass
from posbridge.protocols.inpas.frame import (
    DecodedFrame,
    decode_frame,
    decode_records,
    encode_frame,
    encode_records,
)

SALE = bytes.fromhex("021b00000300313530040300363433190100311b0800303033343432323432dd")
SALE_BODY = SALE[3:-2]

# --- CRC -------------------------------------------------------------------------------------------
def test_crc_check_value():
    assert CHECK_VALUE == 0xFEE8
    assert crc16_buypass(b"123456789") == 0xFEE8


def test_crc_covers_start_length_and_body():
    assert crc16_buypass(SALE[:-2]) == int.from_bytes(SALE[-2:], "big")
    assert crc16_buypass(b"") == 0


# --- exact bytes -----------------------------------------------------------------------------------
def test_encode_frame_exact_bytes():
    assert encode_frame(SALE_BODY) == SALE
    assert encode_frame(bytes.fromhex("1902003231")) == bytes.fromhex("0205001902003231a5c2")
    empty = bytes([STX, 0, 0])
    assert encode_frame(b"") == empty + crc16_buypass(empty).to_bytes(2, "big")
    soh = encode_frame(b"\x06\x15", SOH)
    assert soh[:5] == bytes([SOH, 2, 0, ACK, NAK])
    assert soh[5:] == crc16_buypass(soh[:5]).to_bytes(2, "big")


def test_encode_frame_length_is_little_endian():
    frame = encode_frame(bytes(0x1234))
    assert frame[1:3] == b"\x34\x12"
    assert len(frame) == 0x1234 + 5


def test_encode_frame_rejects():
    with pytest.raises(InvalidRequest):
        encode_frame(b"x", start=ACK)
    with pytest.raises(InvalidRequest):
        encode_frame(bytes(MAX_BODY + 1))
    assert len(encode_frame(bytes(MAX_BODY))) == MAX_FRAME


def test_encode_records_exact_bytes():
    records = [(0, b"150"), (4, b"643"), (25, b"1"), (27, b"00344224")]
    assert encode_records(records) == SALE_BODY
    assert encode_records([(25, b"21")]) == bytes.fromhex("1902003231")
    assert encode_records([(0xFF, bytes(0x102))]) == b"\xff\x02\x01" + bytes(0x102)
    assert encode_records([(7, b"")]) == b"\x07\x00\x00"
    assert encode_records([]) == b""


def test_encode_records_rejects():
    for bad in ([(256, b"")], [(-1, b"")], [(1, b"a"), (1, b"b")], [(1, bytes(MAX_BODY + 1))]):
        with pytest.raises(InvalidRequest):
            encode_records(bad)


# --- decoding --------------------------------------------------------------------------------------
def test_decode_records():
    assert decode_records(SALE_BODY) == [(0, b"150"), (4, b"643"), (25, b"1"), (27, b"00344224")]
    assert decode_records(b"") == []
    assert decode_records(b"\x07\x00\x00") == [(7, b"")]


@pytest.mark.parametrize(
    ("body", "reason", "offset"),
    [
        (b"\x19", "record", 0),
        (b"\x19\x01", "record", 0),
        (b"\x19\x03\x0021", "record", 0),  # value one byte short
        (SALE_BODY[:-1], "record", 16),  # last record (tag 27) cut
        (SALE_BODY + b"\x00", "record", 27),
        (b"\x19\x01\x001\x19\x01\x002", "duplicate_tag", 4),
    ],
    ids=["tag-only", "half-length", "short-value", "cut-last", "trailing-byte", "duplicate"],
)
def test_decode_records_errors(body, reason, offset):
    with pytest.raises(DecodeError) as caught:
        decode_records(body)
    assert (caught.value.reason, caught.value.offset) == (reason, offset)


def test_decode_frame():
    assert decode_frame(SALE) == DecodedFrame(STX, SALE_BODY, 0, len(SALE))
    # noise before (control bytes included) is skipped, bytes after are left alone
    frame = decode_frame(b"\x00\x06\x15\xff" + SALE + b"\x04\x02")
    assert (frame.skipped, frame.size, frame.body) == (4, len(SALE), SALE_BODY)


def test_decode_frame_control_values_inside_body_are_data():
    body = bytes([ACK, NAK, EOT, ENQ, STX, SOH])
    assert decode_frame(encode_frame(body)).body == body


@pytest.mark.parametrize(
    ("data", "offset"),
    [(b"", 0), (b"\x00\x06", 2), (b"\x00\x02", 1), (b"\x02\x1b", 0), (b"\xff" + SALE[:-1], 1)],
    ids=["empty", "noise-only", "start-only", "half-header", "crc-cut"],
)
def test_decode_frame_incomplete(data, offset):
    with pytest.raises(IncompleteFrame) as caught:
        decode_frame(data)
    assert caught.value.reason == "incomplete"
    assert caught.value.offset == offset


def test_decode_frame_bad_crc():
    bad = SALE[:-1] + bytes([SALE[-1] ^ 1])
    with pytest.raises(ChecksumError) as caught:
        decode_frame(b"\x06" + bad)
    assert caught.value.reason == "crc"
    assert caught.value.offset == 1 + len(SALE) - 2  # the CRC's first byte
    corrupt_body = bytearray(SALE)
    corrupt_body[5] ^= 0x40
    with pytest.raises(ChecksumError):
        decode_frame(bytes(corrupt_body))


# --- fast path agrees with the construct declarations ---------------------------------------------
# --- garbage never escapes as anything but DecodeError -------------------------------------------
# A stream is a list of items; each knows its bytes and the tokens it must produce.
