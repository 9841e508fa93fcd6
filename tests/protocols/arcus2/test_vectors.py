"""The golden Arcus2-style vectors (tests/vectors/arcus2.txt, built by hand): every line checked as its JSON says.

Each vector names its link version. Version 1 frames are checked with an XOR loop and version 2
frames with a bit-by-bit CRC-32, both written out here, so the test does not trust the codec's own
check. Every frame is also fed to a link of each version: a version 1 side takes both versions, a
version 2 side (the default) answers a version 1 frame with NAK.
"""

from __future__ import annotations

import pytest

from posbridge.protocols.arcus2.constants import ACK, NAK, TEXT_ENCODING
from posbridge.protocols.arcus2.fields import Message
from posbridge.protocols.arcus2.frame import (
    BadFrame,
    FrameScanner,
    FrameToken,
    decode_frame,
    encode_frame,
)
from posbridge.protocols.arcus2.link import Arcus2Link, FrameRejected, LinkTimers, MessageReceived
from posbridge.protocols.common.errors import ChecksumError, DecodeError, IncompleteFrame
from tests.vectors import load_vectors, vector_file

VECTORS_FILE = vector_file("arcus2.txt")
# Every expectation key this file knows; an unknown key fails the test instead of being ignored.
KNOWN_KEYS = {"version", "class", "fields", "encoding", "skip", "error", "body_error", "body_offset", "link", "note"}
CHECK_SIZE = {1: 1, 2: 4}


VECTORS = load_vectors(VECTORS_FILE)
VALID = [v for v in VECTORS if "error" not in v[2] and "body_error" not in v[2]]


def independent_lrc(data: bytes) -> int:
    """XOR of the bytes, written out here so the test does not trust the codec's own LRC."""
    result = 0
    for byte in data:
        result ^= byte
    return result


def independent_crc32(data: bytes) -> int:
    """CRC-32 (IEEE 802.3) bit by bit: reflected polynomial 0xEDB88320, init and final XOR all ones."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_the_independent_crc_is_crc32_ieee():
    assert independent_crc32(b"123456789") == 0xCBF43926  # the catalogue's check value
    assert independent_crc32(b"") == 0


def test_vector_count():
    assert len(VECTORS) == 43
    assert len({name for name, _, _ in VECTORS}) == 43
    by_version = {1: [v for v in VECTORS if v[2]["version"] == 1], 2: [v for v in VECTORS if v[2]["version"] == 2]}
    assert (len(by_version[1]), len(by_version[2])) == (21, 22)
    assert all(name.startswith(f"v{expect['version']}-") for name, _, expect in VECTORS)
    assert len(VALID) == 30


@pytest.mark.parametrize(("name", "data", "expect"), VECTORS, ids=[v[0] for v in VECTORS])
def test_vector(name, data, expect):
    assert set(expect) <= KNOWN_KEYS, f"{name}: unhandled keys {set(expect) - KNOWN_KEYS}"
    version = expect["version"]
    if "encoding" in expect:
        assert expect["encoding"] == TEXT_ENCODING
    if "error" in expect:
        _check_frame_error(data, expect)
        return
    frame = decode_frame(data)
    skip = expect.get("skip", 0)
    assert frame.skipped == skip and skip + frame.size == len(data)
    assert frame.version == version and data[skip] == {1: 0x02, 2: 0x01}[version]
    covered, check = data[skip + 1 : -CHECK_SIZE[version]], data[-CHECK_SIZE[version] :]  # LEN .. ETX
    if version == 1:
        assert independent_lrc(covered) == check[0]
    else:
        assert independent_crc32(covered) == int.from_bytes(check, "big")
    assert int.from_bytes(data[skip + 1 : skip + 3], "big") == len(frame.body)
    if "body_error" in expect:
        with pytest.raises(DecodeError) as caught:
            Message.decode_body(frame.body)
        assert (caught.value.reason, caught.value.offset) == (expect["body_error"], expect["body_offset"])
        _check_link_answers(data, version, expect["link"])
        return
    message = Message.decode_body(frame.body)
    assert message.message_class == expect["class"]
    assert message.fields == expect["fields"]
    assert list(message.fields) == list(expect["fields"])  # wire order too
    # the scanner finds the same frame, fed whole or byte by byte
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        scanner = FrameScanner()
        tokens = [t for chunk in chunks for t in scanner.feed(chunk)]
        assert [t for t in tokens if isinstance(t, FrameToken)] == [FrameToken(frame.body, version)]
    _check_link_answers(data, version, "ACK")


def _check_frame_error(data: bytes, expect: dict) -> None:
    error_type = {"crc": ChecksumError, "incomplete": IncompleteFrame, "etx": DecodeError}[expect["error"]]
    with pytest.raises(error_type) as caught:
        decode_frame(data)
    assert caught.value.reason == expect["error"]
    scanner = FrameScanner()
    tokens = scanner.feed(data)
    if expect["link"] == "NAK":
        assert len(tokens) == 1 and isinstance(tokens[0], BadFrame)
        assert tokens[0].error.reason == expect["error"]
        assert scanner.pending == 0
        for side in (1, 2):
            _check_link_answer(data, side, "NAK", expect["error"])
    else:
        assert expect["link"] == "wait for more bytes"
        assert tokens == [] and scanner.pending == len(data)


def _check_link_answers(data: bytes, version: int, answer: str) -> None:
    """A side of the frame's own version answers ``answer``; a version 1 side takes version 2 frames
    as a version 2 side does; a version 2 side refuses every version 1 frame (NAK, reason "version")."""
    _check_link_answer(data, version, answer)
    if version == 2:
        _check_link_answer(data, 1, answer)
    else:
        _check_link_answer(data, 2, "NAK", "version")


def _check_link_answer(data: bytes, side: int, answer: str, reason: str | None = None) -> None:
    link = Arcus2Link("terminal", LinkTimers(link_version=side))
    events = link.receive(data, 0.0)
    assert link.data_to_send() == bytes([{"ACK": ACK, "NAK": NAK}[answer]])
    expected_event = MessageReceived if answer == "ACK" else FrameRejected
    assert [type(e) for e in events] == [expected_event]
    if reason is not None:
        assert events[0].error.reason == reason


@pytest.mark.parametrize(("name", "data", "expect"), VALID, ids=[v[0] for v in VALID])
def test_vector_re_encodes_to_exact_bytes(name, data, expect):
    """Build each valid vector from its expectation alone and compare with the golden bytes."""
    message = Message(expect["class"], expect["fields"])
    assert encode_frame(message.encode_body(), expect["version"]) == data[expect.get("skip", 0) :]


def test_the_same_bit_flipped_in_two_bytes_passes_the_lrc_but_not_the_crc():
    """amount=813 read as 857: '1' (0x31) -> '5' (0x35) and '3' (0x33) -> '7' (0x37) both flip bit 2.
    The version 1 LRC cannot see it; CRC-32 sees every 2-bit error in a frame of any size this wire allows."""
    by_name = {name: (data, expect) for name, data, expect in VECTORS}
    v1_sent, v1_received = by_name["v1-sale-813"][0], by_name["v1-sale-813-double-bit-error-passes-the-lrc"][0]
    v2_sent, v2_received = by_name["v2-sale-813"][0], by_name["v2-sale-813-double-bit-error"][0]
    for sent, received in ((v1_sent, v1_received), (v2_sent, v2_received)):
        flips = [(i, a ^ b) for i, (a, b) in enumerate(zip(sent, received)) if a != b]
        assert [mask for _, mask in flips] == [0x04, 0x04] and len(sent) == len(received)
    assert Message.decode_body(decode_frame(v1_received).body).fields["amount"] == "857"
    with pytest.raises(ChecksumError):
        decode_frame(v2_received)
