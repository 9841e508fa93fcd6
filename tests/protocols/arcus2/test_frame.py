"""Arcus2-style frame and body codec, link versions 1 and 2: exact bytes, LRC and CRC-32, errors and
their offsets, the declaration of each version, a version 2 scanner refusing version 1.

Round trips, the fast path against the construct declarations, garbage and the scanner's chunking are
in the protocol kit (tests/protocols/kit), run for every protocol and both link versions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posbridge.protocols.arcus2.constants import (
    ACK,
    CHECK_SIZE,
    ENQ,
    EOT,
    ETX,
    FS,
    MAX_BODY,
    MAX_FRAME,
    NAK,
    SOH,
    STX,
)
from posbridge.protocols.arcus2.frame import (
    FRAME,
    FRAME_V1,
    FRAME_V2,
    FRAMES,
    BadFrame,
    Control,
    DecodedFrame,
    FrameScanner,
    FrameToken,
    Noise,
    decode_body,
    decode_frame,
    encode_body,
    crc32,
    encode_frame,
    lrc,
)
from posbridge.protocols.common.errors import (
    ChecksumError,
    DecodeError,
    IncompleteFrame,
    InvalidRequest,
)

# "A" (abort without fields): LEN 00 01, LRC = 00 ^ 01 ^ 41 ^ 03 = 43 (the worked example in the docs)
ABORT = bytes.fromhex("0200014103" "43")  # version 1
# The same in version 2: CRC-32 of 00 01 41 03 = 50ED9AD5 (the docs' worked example)
ABORT_V2 = bytes.fromhex("0100014103" "50ed9ad5")
SALE_BODY = b"Qoperation=1\x1camount=15000\x1ccurrency=643\x1ctransaction_id=7\x1cterminal_id=00344224"
SALE = bytes.fromhex(  # tests/vectors/arcus2.txt "v1-sale-request"
    "02004c516f7065726174696f6e3d311c616d6f756e743d31353030301c63757272656e63793d3634331c7472616e73"
    "616374696f6e5f69643d371c7465726d696e616c5f69643d30303334343232340339")
SALE_V2 = bytes.fromhex(  # tests/vectors/arcus2.txt "v2-sale-request"
    "01004c516f7065726174696f6e3d311c616d6f756e743d31353030301c63757272656e63793d3634331c7472616e73"
    "616374696f6e5f69643d371c7465726d696e616c5f69643d3030333434323234032e53e5e5")
VERSIONS = [1, 2]


def naive_lrc(data: bytes) -> int:
    result = 0
    for byte in data:
        result ^= byte
    return result


# --- strategies -----------------------------------------------------------------------------------
keys = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
values = st.binary(max_size=30).map(lambda b: b.replace(bytes([FS]), b""))
field_lists = st.lists(st.tuples(keys, values), max_size=8, unique_by=lambda f: f[0])
classes = st.sampled_from(["Q", "I", "R", "A"])
bodies = st.binary(max_size=300)
versions = st.sampled_from(VERSIONS)


@st.composite
def frame_like(draw):
    """Byte strings near the frame format: valid frames of either version, then cut, extended,
    flipped or prefixed, their ETX or start byte replaced."""
    version = draw(versions)
    data = bytearray(encode_frame(draw(bodies), version))
    action = draw(st.sampled_from(["keep", "cut", "flip", "extend", "prefix", "length", "etx", "start"]))
    if action == "cut":
        del data[draw(st.integers(0, len(data))) :]
    elif action == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= draw(st.integers(1, 255))
    elif action == "extend":
        data += draw(st.binary(max_size=10))
    elif action == "prefix":
        data[:0] = draw(st.binary(max_size=10))
    elif action == "length":
        data[1:3] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    elif action == "etx":
        data[-1 - CHECK_SIZE[version]] = draw(st.integers(0, 255))
    elif action == "start":
        data[0] = STX if data[0] == SOH else SOH  # the other version's start byte: the check fails
    return bytes(data)


@st.composite
def body_like(draw):
    """Bodies near the format: valid ones, then damaged; repeated keys and stray FS/= likely."""
    kind = draw(st.sampled_from(["valid", "raw", "pieces"]))
    if kind == "valid":
        return encode_body(draw(classes), draw(field_lists))
    if kind == "raw":
        return draw(st.binary(max_size=40))
    pieces = draw(st.lists(st.sampled_from([b"a", b"b", b"=", b"\x1c", b"1", b"A", b"_", b"\xc0"]), max_size=14))
    return draw(st.sampled_from([b"Q", b"R", b"X", b""])) + b"".join(pieces)


garbage = st.one_of(st.binary(max_size=400), frame_like())


def long_digit_runs(draw_digits=st.integers(4000, 6000)):
    """Bodies whose number keys hold thousands of digits (more than ``int()`` takes from text)."""
    return st.builds(
        lambda key, n, message_class: (message_class + key + "=" + "9" * n).encode("ascii"),
        st.sampled_from(["amount", "currency", "transaction_id", "operation", "result_amount", "sale_count"]),
        draw_digits, classes)


# --- LRC -------------------------------------------------------------------------------------------
@given(st.binary(max_size=2000))
def test_lrc_fold_equals_the_plain_xor_loop(data):
    assert lrc(data) == naive_lrc(data)


def test_lrc_examples():
    assert lrc(b"") == 0 and lrc(b"\x5a") == 0x5A and lrc(b"\x00\x01\x41\x03") == 0x43
    assert lrc(SALE[1:-1]) == SALE[-1]


def test_crc32_examples():
    assert crc32(b"123456789") == 0xCBF43926  # CRC-32/ISO-HDLC check value
    assert crc32(b"\x00\x01\x41\x03") == 0x50ED9AD5
    assert crc32(SALE_V2[1:-4]) == int.from_bytes(SALE_V2[-4:], "big")


# --- exact bytes -----------------------------------------------------------------------------------
def test_encode_exact_bytes():
    assert encode_frame(b"A", 1) == ABORT
    assert encode_frame(b"A") == encode_frame(b"A", 2) == ABORT_V2  # version 2 is the default
    assert encode_body("Q", [("operation", b"1"), ("amount", b"15000"), ("currency", b"643"),
                             ("transaction_id", b"7"), ("terminal_id", b"00344224")]) == SALE_BODY
    assert encode_frame(SALE_BODY, 1) == SALE
    assert encode_frame(SALE_BODY) == SALE_V2
    assert encode_body("A", []) == b"A"
    assert encode_frame(b"", 1) == bytes([STX, 0, 0, ETX, 0 ^ 0 ^ ETX])
    assert encode_frame(b"") == bytes([SOH, 0, 0, ETX]) + bytes.fromhex("664888a8")  # CRC-32 of 00 00 03
    with pytest.raises(ValueError):
        encode_frame(b"A", 3)


@pytest.mark.parametrize(("version", "overhead"), [(1, 5), (2, 8)])
def test_length_is_big_endian_and_counts_the_body_only(version, overhead):
    frame = encode_frame(bytes(0x1234), version)
    assert frame[1:3] == b"\x12\x34" and len(frame) == 0x1234 + overhead
    assert frame[-1 - CHECK_SIZE[version]] == ETX


def test_encode_rejects():
    with pytest.raises(InvalidRequest):
        encode_frame(bytes(MAX_BODY + 1))
    assert len(encode_frame(bytes(MAX_BODY))) == MAX_FRAME
    assert len(encode_frame(bytes(MAX_BODY), 1)) == MAX_FRAME - 3
    for message_class, fields in [("X", []), ("q", []), ("Q", [("Amount", b"1")]), ("Q", [("", b"1")]),
                                  ("Q", [("a", b"1"), ("a", b"2")]), ("Q", [("a", b"x\x1cy")]),
                                  ("Q", [("1a", b"")]), ("Q", [("ключ", b"1")])]:
        with pytest.raises(InvalidRequest):
            encode_body(message_class, fields)


# --- decoding --------------------------------------------------------------------------------------
def test_decode_body():
    assert decode_body(SALE_BODY) == ("Q", [("operation", b"1"), ("amount", b"15000"), ("currency", b"643"),
                                            ("transaction_id", b"7"), ("terminal_id", b"00344224")])
    assert decode_body(b"A") == ("A", [])
    assert decode_body(b"Ra=") == ("R", [("a", b"")])  # an empty value is a value
    assert decode_body(b"Ra=b=c") == ("R", [("a", b"b=c")])  # the first = splits


@pytest.mark.parametrize(
    ("body", "reason", "offset"),
    [
        (b"", "class", 0),
        (b"q", "class", 0),
        (b"\x02", "class", 0),
        (b"Qa", "field", 1),
        (b"Q=1", "field", 1),
        (b"QAmount=1", "field", 1),
        (b"Q\x1ca=1", "field", 1),
        (b"Qa=1\x1c", "field", 5),
        (b"Qa=1\x1c\x1cb=2", "field", 5),
        (b"Qa=1\x1cb=2\x1ca=3", "duplicate_key", 9),
    ],
    ids=["empty", "lowercase-class", "control-class", "no-equals", "empty-key", "upper-key", "leading-fs",
         "trailing-fs", "double-fs", "duplicate"],
)
def test_decode_body_errors(body, reason, offset):
    with pytest.raises(DecodeError) as caught:
        decode_body(body)
    assert (caught.value.reason, caught.value.offset) == (reason, offset)


def test_decode_frame():
    assert decode_frame(SALE) == DecodedFrame(SALE_BODY, 0, len(SALE), 1)
    assert decode_frame(SALE_V2) == DecodedFrame(SALE_BODY, 0, len(SALE_V2), 2)
    for sale, version in ((SALE, 1), (SALE_V2, 2)):
        frame = decode_frame(b"\x00\x06\x15\x03\x1c\xff" + sale + b"\x04\x02\x01")  # noise before, bytes after
        assert (frame.skipped, frame.size, frame.body, frame.version) == (6, len(sale), SALE_BODY, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_control_values_inside_a_body_are_data(version):
    body = bytes([ACK, NAK, EOT, ENQ, STX, ETX, FS, SOH])
    assert decode_frame(encode_frame(body, version)).body == body


@pytest.mark.parametrize(
    ("data", "offset"),
    [(b"", 0), (b"\x00\x06", 2), (b"\x00\x02", 1), (b"\x02\x00", 0), (b"\xff" + SALE[:-1], 1),
     (b"\x00\x01", 1), (b"\x01\x00", 0), (b"\xff" + SALE_V2[:-1], 1), (b"\xff" + SALE_V2[:-4], 1)],
    ids=["empty", "noise-only", "stx-only", "half-header", "lrc-cut", "soh-only", "v2-half-header", "crc-cut",
         "crc-missing"],
)
def test_decode_frame_incomplete(data, offset):
    with pytest.raises(IncompleteFrame) as caught:
        decode_frame(data)
    assert (caught.value.reason, caught.value.offset) == ("incomplete", offset)


def test_decode_frame_bad_lrc_and_bad_etx():
    bad_lrc = SALE[:-1] + bytes([SALE[-1] ^ 1])
    with pytest.raises(ChecksumError) as caught:
        decode_frame(b"\x06" + bad_lrc)
    assert (caught.value.reason, caught.value.offset) == ("crc", len(SALE))  # the LRC byte
    bad_etx = SALE[:-2] + b"\x1c" + SALE[-1:]
    with pytest.raises(DecodeError) as caught:
        decode_frame(bad_etx)
    assert (caught.value.reason, caught.value.offset) == ("etx", len(SALE) - 2)
    corrupt_body = bytearray(SALE)
    corrupt_body[5] ^= 0x40
    with pytest.raises(ChecksumError):
        decode_frame(bytes(corrupt_body))


def test_decode_frame_bad_crc_and_bad_etx_in_version_2():
    bad_crc = SALE_V2[:-1] + bytes([SALE_V2[-1] ^ 1])
    with pytest.raises(ChecksumError) as caught:
        decode_frame(b"\x06" + bad_crc)
    assert (caught.value.reason, caught.value.offset) == ("crc", len(SALE_V2) - 3)  # the CRC's first byte
    bad_etx = SALE_V2[:-5] + b"\x1c" + SALE_V2[-4:]
    with pytest.raises(DecodeError) as caught:
        decode_frame(bad_etx)
    assert (caught.value.reason, caught.value.offset) == ("etx", len(SALE_V2) - 5)
    # A version 2 frame with its start byte made STX is checked as version 1: the LRC byte (the
    # CRC's last byte) and ETX are then in the wrong places.
    with pytest.raises(DecodeError):
        decode_frame(b"\x02" + SALE_V2[1:])


def test_the_same_bit_flipped_in_two_bytes_is_caught_by_version_2_only():
    """The double errors the version 1 LRC cannot see: any two bytes of the frame after its start
    byte, the same bit flipped in both. Version 1 takes every one of them as good; version 2 none."""
    for sale, version in ((SALE, 1), (SALE_V2, 2)):
        missed = caught = 0
        for first in range(1, len(sale)):
            for second in range(first + 1, len(sale)):
                for bit in range(8):
                    damaged = bytearray(sale)
                    damaged[first] ^= 1 << bit
                    damaged[second] ^= 1 << bit
                    try:
                        decode_frame(bytes(damaged))
                    except DecodeError:
                        caught += 1
                    else:
                        missed += 1
        if version == 2:
            assert missed == 0
        else:  # only those that hit LEN, ETX or the LRC itself are seen (length, ETX, LRC mismatch)
            assert missed > caught


# --- the declarations -------------------------------------------------------------------------------
def test_the_declarations_by_version():
    assert FRAMES == {1: FRAME_V1, 2: FRAME_V2} and FRAME is FRAME_V2
    assert FRAME_V1.build({"covered": {"value": {"body": b"A"}}}) == ABORT
    assert FRAME_V2.build({"covered": {"value": {"body": b"A"}}}) == ABORT_V2
    assert FRAME_V2.parse(SALE_V2).covered.value.body == SALE_BODY


# --- garbage never escapes as anything but DecodeError (the kit checks the rest) ---------------------
@settings(max_examples=300)
@given(st.one_of(garbage, body_like(), long_digit_runs()))
def test_a_version_2_scanner_and_long_digit_runs_raise_nothing_untyped(data):
    for decode in (decode_frame, decode_body):
        try:
            decode(data)
        except DecodeError:
            pass
    scanner = FrameScanner([2])
    for token in scanner.feed(data):
        assert isinstance(token, (Control, Noise, FrameToken, BadFrame))
    assert scanner.pending <= MAX_FRAME


# --- FrameScanner ----------------------------------------------------------------------------------
def test_a_version_2_scanner_refuses_good_version_1_frames_and_reports_damaged_ones_as_damaged():
    bad = SALE[:-1] + bytes([SALE[-1] ^ 1])
    tokens = FrameScanner([2]).feed(b"\xff" + SALE + SALE_V2 + bad)
    assert isinstance(tokens[1], BadFrame) and (tokens[1].error.reason, tokens[1].error.offset) == ("version", 1)
    assert tokens[2] == FrameToken(SALE_BODY, 2)
    assert isinstance(tokens[3], BadFrame) and tokens[3].error.reason == "crc"
    assert FrameScanner([1, 2]).feed(SALE + SALE_V2) == [FrameToken(SALE_BODY, 1), FrameToken(SALE_BODY, 2)]
    with pytest.raises(ValueError):
        FrameScanner([3])


