"""Arcus2-style frame and body codec: exact bytes, errors, round trips, fast path vs declaration, scanner."""

from __future__ import annotations

import construct
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.arcus2.constants import (
    ACK,
    CONTROL_BYTES,
    ENQ,
    EOT,
    ETX,
    FS,
    MAX_BODY,
    MAX_FRAME,
    NAK,
    STX,
)
from protocols.arcus2.frame import (
    BODY,
    FRAME,
    BadFrame,
    Control,
    DecodedFrame,
    FrameScanner,
    FrameToken,
    Noise,
    decode_body,
    decode_frame,
    encode_body,
    encode_frame,
    lrc,
)
from protocols.common.errors import (
    ChecksumError,
    DecodeError,
    IncompleteFrame,
    InvalidRequest,
)
from tests.protocols.streams import expected_tokens, feed_all, normalize_tokens

# "A" (abort without fields): LEN 00 01, LRC = 00 ^ 01 ^ 41 ^ 03 = 43 (the worked example in the docs)
ABORT = bytes.fromhex("0200014103" "43")
SALE_BODY = b"Qoperation=1\x1camount=15000\x1ccurrency=643\x1ctransaction_id=7\x1cterminal_id=00344224"
SALE = bytes.fromhex(  # vectors.txt "sale-request"
    "02004c516f7065726174696f6e3d311c616d6f756e743d31353030301c63757272656e63793d3634331c7472616e73"
    "616374696f6e5f69643d371c7465726d696e616c5f69643d30303334343232340339")


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


@st.composite
def frame_like(draw):
    """Byte strings near the frame format: valid frames, then cut, extended, flipped or prefixed."""
    data = bytearray(encode_frame(draw(bodies)))
    action = draw(st.sampled_from(["keep", "cut", "flip", "extend", "prefix", "length", "etx"]))
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
        data[-2] = draw(st.integers(0, 255))
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


# --- LRC -------------------------------------------------------------------------------------------
@given(st.binary(max_size=2000))
def test_lrc_fold_equals_the_plain_xor_loop(data):
    assert lrc(data) == naive_lrc(data)


def test_lrc_examples():
    assert lrc(b"") == 0 and lrc(b"\x5a") == 0x5A and lrc(b"\x00\x01\x41\x03") == 0x43
    assert lrc(SALE[1:-1]) == SALE[-1]


# --- exact bytes -----------------------------------------------------------------------------------
def test_encode_exact_bytes():
    assert encode_frame(b"A") == ABORT
    assert encode_body("Q", [("operation", b"1"), ("amount", b"15000"), ("currency", b"643"),
                             ("transaction_id", b"7"), ("terminal_id", b"00344224")]) == SALE_BODY
    assert encode_frame(SALE_BODY) == SALE
    assert encode_body("A", []) == b"A"
    assert encode_frame(b"") == bytes([STX, 0, 0, ETX, 0 ^ 0 ^ ETX])


def test_length_is_big_endian_and_counts_the_body_only():
    frame = encode_frame(bytes(0x1234))
    assert frame[1:3] == b"\x12\x34" and len(frame) == 0x1234 + 5
    assert frame[-2] == ETX


def test_encode_rejects():
    with pytest.raises(InvalidRequest):
        encode_frame(bytes(MAX_BODY + 1))
    assert len(encode_frame(bytes(MAX_BODY))) == MAX_FRAME
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
    assert decode_frame(SALE) == DecodedFrame(SALE_BODY, 0, len(SALE))
    frame = decode_frame(b"\x00\x06\x15\x03\x1c\xff" + SALE + b"\x04\x02")  # noise before, bytes after
    assert (frame.skipped, frame.size, frame.body) == (6, len(SALE), SALE_BODY)


def test_control_values_inside_a_body_are_data():
    body = bytes([ACK, NAK, EOT, ENQ, STX, ETX, FS])
    assert decode_frame(encode_frame(body)).body == body


@pytest.mark.parametrize(
    ("data", "offset"),
    [(b"", 0), (b"\x00\x06", 2), (b"\x00\x02", 1), (b"\x02\x00", 0), (b"\xff" + SALE[:-1], 1)],
    ids=["empty", "noise-only", "stx-only", "half-header", "lrc-cut"],
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


# --- round trips -----------------------------------------------------------------------------------
@given(classes, field_lists)
def test_body_round_trip(message_class, fields):
    assert decode_body(encode_body(message_class, fields)) == (message_class, fields)


@given(bodies, st.binary(max_size=20).map(lambda b: b.replace(b"\x02", b"")))
def test_frame_round_trip(body, noise):
    frame = encode_frame(body)
    assert decode_frame(noise + frame + noise) == DecodedFrame(body, len(noise), len(frame))


# --- fast path agrees with the construct declarations ---------------------------------------------
def _declared_body(body: bytes):
    try:
        parsed = BODY.parse(body)
    except construct.ConstructError:
        return "error"
    return parsed.message_class.decode(), [(f.key.decode(), f.value) for f in parsed.fields]


def _fast_body(body: bytes):
    try:
        return decode_body(body)
    except DecodeError:
        return "error"


@settings(max_examples=400)
@given(body_like())
def test_decode_body_agrees_with_declaration(body):
    assert _fast_body(body) == _declared_body(body)


@given(classes, field_lists)
def test_encode_body_agrees_with_declaration(message_class, fields):
    declared = BODY.build({"message_class": message_class.encode(),
                           "fields": [{"key": k.encode(), "value": v} for k, v in fields]})
    assert encode_body(message_class, fields) == declared


def _declared_frame(data: bytes):
    at = data.find(b"\x02")  # arcus2.md: bytes before STX are skipped
    if at < 0:
        return "incomplete"
    try:
        parsed = FRAME.parse(data[at:])
    except construct.ChecksumError:
        return "crc"
    except construct.ConstError:
        return "etx"
    except construct.StreamError:
        return "incomplete"
    return DecodedFrame(parsed.covered.value.body, at, len(parsed.covered.data) + 2)


def _fast_frame(data: bytes):
    try:
        return decode_frame(data)
    except DecodeError as error:
        return error.reason


@settings(max_examples=400)
@given(garbage)
def test_decode_frame_agrees_with_declaration(data):
    assert _fast_frame(data) == _declared_frame(data)


@given(bodies)
def test_encode_frame_agrees_with_declaration(body):
    assert encode_frame(body) == FRAME.build({"covered": {"value": {"body": body}}})


# --- garbage never escapes as anything but DecodeError -------------------------------------------
@settings(max_examples=300)
@given(st.one_of(garbage, body_like()))
def test_garbage_only_raises_decode_errors(data):
    for decode in (decode_frame, decode_body):
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
    stream = b"\x00\x03" + bytes([ACK]) + SALE + bytes([NAK, EOT]) + bad + b"zz" + bytes([ENQ])
    tokens = FrameScanner().feed(stream)
    assert tokens[:5] == [Noise(b"\x00\x03"), Control(ACK), FrameToken(SALE_BODY), Control(NAK), Control(EOT)]
    assert isinstance(tokens[5], BadFrame) and tokens[5].error.reason == "crc"
    assert tokens[5].error.offset == 3 + len(SALE) + 2 + len(SALE) - 1  # stream offset of its LRC
    assert tokens[6:] == [Noise(b"zz"), Control(ENQ)]


@pytest.mark.parametrize("chunk", [0, 1, 2, 5], ids=["whole", "bytes", "pairs", "fives"])
def test_scanner_feeding_whole_halves_and_byte_by_byte(chunk):
    stream = b"\xff\x06" + SALE + b"\x15" + ABORT
    expected = [Noise(b"\xff"), Control(ACK), FrameToken(SALE_BODY), Control(NAK), FrameToken(b"A")]
    pieces = [stream] if not chunk else [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    for feed in (pieces, [stream[: len(stream) // 2], stream[len(stream) // 2 :]]):
        scanner = FrameScanner()
        assert [t for piece in feed for t in scanner.feed(piece)] == expected
        assert scanner.pending == 0


def test_scanner_pending_and_reset():
    scanner = FrameScanner()
    assert scanner.feed(SALE[:10]) == [] and scanner.pending == 10
    scanner.reset()
    assert scanner.pending == 0
    tokens = scanner.feed(b"\x30\x31" + bytes([ACK]) + SALE)  # the old frame's tail is noise now
    assert tokens == [Noise(b"01"), Control(ACK), FrameToken(SALE_BODY)]


def test_scanner_memory_is_bounded_by_one_frame():
    scanner = FrameScanner()
    scanner.feed(b"\x02\xff\xff")  # announces a 65535-byte body
    for _ in range(20):
        scanner.feed(bytes(10_000))
        assert scanner.pending <= MAX_FRAME
    assert scanner.pending == 0  # the frame completed (bad ETX) and was released


def test_scanner_accepts_bytearray_and_memoryview():
    assert FrameScanner().feed(bytearray(SALE)) == [FrameToken(SALE_BODY)]
    assert FrameScanner().feed(memoryview(SALE)) == [FrameToken(SALE_BODY)]


noise_bytes = st.binary(min_size=1, max_size=8).map(
    lambda b: bytes(x for x in b if x != STX and x not in CONTROL_BYTES)).filter(bool)


@st.composite
def stream_items(draw):
    kind = draw(st.sampled_from(["frame", "bad", "control", "noise"]))
    if kind == "control":
        byte = draw(st.sampled_from(sorted(CONTROL_BYTES)))
        return bytes([byte]), ("control", byte)
    if kind == "noise":
        data = draw(noise_bytes)
        return data, ("noise", data)
    body = draw(st.binary(max_size=60))
    frame = encode_frame(body)
    if kind == "bad":
        frame = frame[:-1] + bytes([frame[-1] ^ draw(st.integers(1, 255))])
        return frame, ("bad", len(frame) - 1)  # offset of the LRC within the frame
    return frame, ("frame", body)


def _frame_tuple(token):
    return ("frame", token.body)


def _normalize(tokens):
    return normalize_tokens(tokens, _frame_tuple)


def _expected(items):
    return expected_tokens(items)


def _feed(chunks):
    return feed_all(FrameScanner(), chunks, _frame_tuple)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
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


@settings(max_examples=150)
@given(garbage, st.data())
def test_scanner_chunking_invariance_on_any_bytes(stream, data):
    """Whatever the bytes (stray STX included), chunking never changes the tokens."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    bounds = [0, *cuts, len(stream)]
    results = []
    for chunks in ([stream], [stream[a:b] for a, b in zip(bounds, bounds[1:])],
                   [stream[i : i + 1] for i in range(len(stream))]):
        scanner = FrameScanner()
        results.append((_normalize([t for c in chunks for t in scanner.feed(c)]), scanner.pending))
    assert results[0] == results[1] == results[2]
