"""INPAS SA frame and record codec: exact bytes, errors, round trips, fast path vs declaration, scanner."""

from __future__ import annotations

import construct
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posbridge.protocols.common.errors import (
    ChecksumError,
    DecodeError,
    IncompleteFrame,
    InvalidRequest,
)
from posbridge.protocols.inpas.constants import (
    ACK,
    CONTROL_BYTES,
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
    FRAME,
    RECORDS,
    BadFrame,
    Control,
    DecodedFrame,
    FrameScanner,
    FrameToken,
    Noise,
    decode_frame,
    decode_records,
    encode_frame,
    encode_records,
)
from tests.protocols.streams import expected_tokens, feed_all, normalize_tokens

SALE = bytes.fromhex("021b00000300313530040300363433190100311b0800303033343432323432dd")
SALE_BODY = SALE[3:-2]

# --- strategies -----------------------------------------------------------------------------------
tags = st.integers(0, 255)
values = st.binary(max_size=40)
record_lists = st.lists(st.tuples(tags, values), max_size=12, unique_by=lambda r: r[0])
starts = st.sampled_from([STX, SOH])
bodies = st.binary(max_size=300)


@st.composite
def frame_like(draw):
    """Byte strings near the frame format: valid frames, then cut, extended, flipped or prefixed."""
    data = bytearray(encode_frame(draw(bodies), draw(starts)))
    action = draw(st.sampled_from(["keep", "cut", "flip", "extend", "prefix", "length"]))
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
        data[1:3] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "little")
    return bytes(data)


garbage = st.one_of(st.binary(max_size=400), frame_like())


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


# --- round trips -----------------------------------------------------------------------------------
@given(record_lists)
def test_records_round_trip(records):
    assert decode_records(encode_records(records)) == records


@given(bodies, starts, st.binary(max_size=20).filter(lambda b: SOH not in b and STX not in b))
def test_frame_round_trip(body, start, noise):
    frame = encode_frame(body, start)
    assert decode_frame(noise + frame + noise) == DecodedFrame(start, body, len(noise), len(frame))


# --- fast path agrees with the construct declarations ---------------------------------------------
def _declared_records(body: bytes):
    try:
        return [(r.tag, r.value) for r in RECORDS.parse(body)]
    except construct.ConstructError:
        return "error"


def _fast_records(body: bytes):
    try:
        return decode_records(body)
    except DecodeError:
        return "error"


record_bodies = st.one_of(
    st.binary(max_size=60),
    record_lists.map(lambda rs: encode_records(rs)),
    st.tuples(record_lists.map(lambda rs: encode_records(rs)), st.binary(max_size=4)).map(
        lambda t: t[0] + t[1]
    ),
    st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=3)), max_size=6).map(
        lambda rs: b"".join(bytes([t, len(v), 0]) + v for t, v in rs)  # repeated tags likely
    ),
)


@settings(max_examples=400)
@given(record_bodies)
def test_decode_records_agrees_with_declaration(body):
    assert _fast_records(body) == _declared_records(body)


@given(record_lists)
def test_encode_records_agrees_with_declaration(records):
    declared = RECORDS.build([{"tag": t, "value": v} for t, v in records])
    assert encode_records(records) == declared


def _declared_frame(data: bytes):
    at = next((i for i, b in enumerate(data) if b in (STX, SOH)), None)  # spec: skip to STX/SOH
    if at is None:
        return "incomplete"
    try:
        parsed = FRAME.parse(data[at:])
    except construct.ChecksumError:
        return "crc"
    except construct.StreamError:
        return "incomplete"
    value = parsed.covered.value
    return DecodedFrame(value.start, value.body, at, len(parsed.covered.data) + 2)


def _fast_frame(data: bytes):
    try:
        return decode_frame(data)
    except DecodeError as error:
        return error.reason


@settings(max_examples=400)
@given(garbage)
def test_decode_frame_agrees_with_declaration(data):
    assert _fast_frame(data) == _declared_frame(data)


@given(bodies, starts)
def test_encode_frame_agrees_with_declaration(body, start):
    declared = FRAME.build({"covered": {"value": {"start": start, "body": body}}})
    assert encode_frame(body, start) == declared


# --- garbage never escapes as anything but DecodeError -------------------------------------------
@settings(max_examples=300)
@given(garbage)
def test_garbage_only_raises_decode_errors(data):
    for decode in (decode_frame, decode_records):
        try:
            decode(data)
        except DecodeError:
            pass
    scanner = FrameScanner()
    for token in scanner.feed(data):
        assert isinstance(token, (Control, Noise, FrameToken, BadFrame))
    assert scanner.pending <= MAX_FRAME


# --- FrameScanner ----------------------------------------------------------------------------------
def test_scanner_tokens():
    bad = SALE[:-1] + bytes([SALE[-1] ^ 1])
    stream = b"\x00\xff" + bytes([ACK]) + SALE + bytes([NAK, EOT]) + bad + b"zz" + bytes([ENQ])
    tokens = FrameScanner().feed(stream)
    assert tokens[:5] == [
        Noise(b"\x00\xff"),
        Control(ACK),
        FrameToken(STX, SALE_BODY),
        Control(NAK),
        Control(EOT),
    ]
    assert isinstance(tokens[5], BadFrame)
    assert tokens[5].error.reason == "crc"
    assert tokens[5].error.offset == 3 + len(SALE) + 2 + len(SALE) - 2  # stream offset of its CRC
    assert tokens[6:] == [Noise(b"zz"), Control(ENQ)]


def test_scanner_control_bytes_inside_frame_are_data():
    body = bytes([ACK, NAK, EOT, ENQ, STX, SOH]) * 3
    frame = encode_frame(body, SOH)
    scanner = FrameScanner()
    assert [t for b in frame for t in scanner.feed(bytes([b]))] == [FrameToken(SOH, body)]


def test_scanner_pending_and_reset():
    scanner = FrameScanner()
    assert scanner.feed(SALE[:10]) == []
    assert scanner.pending == 10
    scanner.reset()
    assert scanner.pending == 0
    # after a reset the tail of the old frame is just noise, then a new frame decodes
    tokens = scanner.feed(b"\x30\x31" + bytes([ACK]) + SALE)
    assert tokens == [Noise(b"01"), Control(ACK), FrameToken(STX, SALE_BODY)]
    assert scanner.pending == 0


def test_scanner_memory_is_bounded_by_one_frame():
    scanner = FrameScanner()
    scanner.feed(b"\x02\xff\xff")  # announces a 65535-byte body
    for _ in range(20):
        scanner.feed(bytes(10_000))
        assert scanner.pending <= MAX_FRAME
    assert scanner.pending == 0  # the frame completed (bad CRC) and was released


def test_scanner_accepts_bytearray_and_memoryview():
    assert FrameScanner().feed(bytearray(SALE)) == [FrameToken(STX, SALE_BODY)]
    assert FrameScanner().feed(memoryview(SALE)) == [FrameToken(STX, SALE_BODY)]


# A stream is a list of items; each knows its bytes and the tokens it must produce.
noise_bytes = st.binary(min_size=1, max_size=8).map(
    lambda b: bytes(x for x in b if x not in (STX, SOH) and x not in CONTROL_BYTES)
).filter(bool)


@st.composite
def stream_items(draw):
    kind = draw(st.sampled_from(["frame", "bad", "control", "noise"]))
    if kind == "control":
        byte = draw(st.sampled_from(sorted(CONTROL_BYTES)))
        return bytes([byte]), ("control", byte)
    if kind == "noise":
        data = draw(noise_bytes)
        return data, ("noise", data)
    body, start = draw(st.binary(max_size=60)), draw(starts)
    frame = encode_frame(body, start)
    if kind == "bad":
        frame = frame[:-1] + bytes([frame[-1] ^ draw(st.integers(1, 255))])
        return frame, ("bad", len(frame) - 2)  # offset of the CRC within the frame
    return frame, ("frame", start, body)


def _frame_tuple(token):
    return ("frame", token.start, token.body)


def _normalize(tokens):
    return normalize_tokens(tokens, _frame_tuple)


def _expected(items):
    return expected_tokens(items)


def _feed(chunks):
    return feed_all(FrameScanner(), chunks, _frame_tuple)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(stream_items(), max_size=12), st.data())
def test_scanner_is_independent_of_chunking(items, data):
    stream = b"".join(d for d, _ in items)
    expected = _expected(items)
    half = len(stream) // 2
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    bounds = [0, *cuts, len(stream)]
    assert _feed([stream]) == expected
    assert _feed([stream[:half], stream[half:]]) == expected
    assert _feed([stream[i : i + 1] for i in range(len(stream))]) == expected
    assert _feed([stream[a:b] for a, b in zip(bounds, bounds[1:])]) == expected


@settings(max_examples=200)
@given(garbage, st.data())
def test_scanner_chunking_invariance_on_any_bytes(stream, data):
    """Whatever the bytes (stray start bytes included), chunking never changes the tokens."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    bounds = [0, *cuts, len(stream)]
    results = []
    whole, random_cuts = [stream], [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    for chunks in (whole, random_cuts, [stream[i : i + 1] for i in range(len(stream))]):
        scanner = FrameScanner()
        results.append((_normalize([t for c in chunks for t in scanner.feed(c)]), scanner.pending))
    assert results[0] == results[1] == results[2]
