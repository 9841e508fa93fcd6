"""The golden Arcus2-style vectors (vectors.txt, built by hand): every line checked as its JSON says."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.arcus2.constants import ACK, NAK, TEXT_ENCODING
from protocols.arcus2.fields import Message
from protocols.arcus2.frame import (
    BadFrame,
    FrameScanner,
    FrameToken,
    decode_frame,
    encode_frame,
)
from protocols.arcus2.link import Arcus2Link, FrameRejected, MessageReceived
from protocols.common.errors import ChecksumError, DecodeError, IncompleteFrame
from tests.protocols.streams import load_vectors

VECTORS_FILE = Path(__file__).with_name("vectors.txt")
# Every expectation key this file knows; an unknown key fails the test instead of being ignored.
KNOWN_KEYS = {"class", "fields", "encoding", "skip", "error", "body_error", "body_offset", "link"}


VECTORS = load_vectors(VECTORS_FILE)
VALID = [v for v in VECTORS if "error" not in v[2] and "body_error" not in v[2]]


def independent_lrc(data: bytes) -> int:
    """XOR of the bytes, written out here so the test does not trust the codec's own LRC."""
    result = 0
    for byte in data:
        result ^= byte
    return result


def test_vector_count():
    assert len(VECTORS) == 19
    assert len({name for name, _, _ in VECTORS}) == 19
    assert len(VALID) == 13


@pytest.mark.parametrize(("name", "data", "expect"), VECTORS, ids=[v[0] for v in VECTORS])
def test_vector(name, data, expect):
    assert set(expect) <= KNOWN_KEYS, f"{name}: unhandled keys {set(expect) - KNOWN_KEYS}"
    if "encoding" in expect:
        assert expect["encoding"] == TEXT_ENCODING
    if "error" in expect:
        _check_frame_error(data, expect)
        return
    frame = decode_frame(data)
    skip = expect.get("skip", 0)
    assert frame.skipped == skip and skip + frame.size == len(data)
    stx_at = skip
    assert independent_lrc(data[stx_at + 1 : -1]) == data[-1]  # LEN .. ETX
    assert int.from_bytes(data[stx_at + 1 : stx_at + 3], "big") == len(frame.body)
    if "body_error" in expect:
        with pytest.raises(DecodeError) as caught:
            Message.decode_body(frame.body)
        assert (caught.value.reason, caught.value.offset) == (expect["body_error"], expect["body_offset"])
        _check_link_answer(data, expect["link"])
        return
    message = Message.decode_body(frame.body)
    assert message.message_class == expect["class"]
    assert message.fields == expect["fields"]
    assert list(message.fields) == list(expect["fields"])  # wire order too
    # the scanner finds the same frame, fed whole or byte by byte
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        scanner = FrameScanner()
        tokens = [t for chunk in chunks for t in scanner.feed(chunk)]
        assert [t for t in tokens if isinstance(t, FrameToken)] == [FrameToken(frame.body)]
    _check_link_answer(data, "ACK")


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
        _check_link_answer(data, "NAK")
    else:
        assert expect["link"] == "wait for more bytes"
        assert tokens == [] and scanner.pending == len(data)


def _check_link_answer(data: bytes, answer: str) -> None:
    link = Arcus2Link("terminal")
    events = link.receive(data, 0.0)
    assert link.data_to_send() == bytes([{"ACK": ACK, "NAK": NAK}[answer]])
    expected_event = MessageReceived if answer == "ACK" else FrameRejected
    assert [type(e) for e in events] == [expected_event]


@pytest.mark.parametrize(("name", "data", "expect"), VALID, ids=[v[0] for v in VALID])
def test_vector_re_encodes_to_exact_bytes(name, data, expect):
    """Build each valid vector from its expectation alone and compare with the golden bytes."""
    message = Message(expect["class"], expect["fields"])
    assert encode_frame(message.encode_body()) == data[expect.get("skip", 0) :]
