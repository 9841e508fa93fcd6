"""The golden INPAS SA vectors (tests/vectors/inpas-sa.txt, a copy of ../shared/vectors/inpas-sa.txt):
every line checked as its JSON says."""

from __future__ import annotations

import pytest

from posbridge.protocols.common.errors import ChecksumError, IncompleteFrame
from posbridge.protocols.inpas.constants import SOH, STX, TEXT_ENCODING
from posbridge.protocols.inpas.fields import Message
from posbridge.protocols.inpas.frame import (
    BadFrame,
    FrameScanner,
    FrameToken,
    decode_frame,
    encode_frame,
)
from posbridge.protocols.inpas.multipart import Reassembler, decode_part, encode_part
from tests.vectors import load_vectors, vector_file

VECTORS_FILE = vector_file("inpas-sa.txt")
START_NAMES = {"STX": STX, "SOH": SOH}
# Every expectation key this file knows; an unknown key fails the test instead of being ignored.
KNOWN_KEYS = {"start", "fields", "encoding", "skip", "part", "chunk", "reassembled_fields", "error", "link"}


VECTORS = load_vectors(VECTORS_FILE)
BY_NAME = {name: (data, expect) for name, data, expect in VECTORS}


def _fields(expected: dict) -> dict[int, str]:
    return {int(tag): value for tag, value in expected.items()}


def test_vector_count():
    assert len(VECTORS) == 9
    assert len(BY_NAME) == 9


@pytest.mark.parametrize(("name", "data", "expect"), VECTORS, ids=[v[0] for v in VECTORS])
def test_vector(name, data, expect):
    assert set(expect) <= KNOWN_KEYS, f"{name}: unhandled keys {set(expect) - KNOWN_KEYS}"
    if "encoding" in expect:
        assert expect["encoding"] == TEXT_ENCODING

    if "error" in expect:
        _check_error(data, expect)
        return

    frame = decode_frame(data)
    assert frame.skipped == expect.get("skip", 0)
    assert frame.skipped + frame.size == len(data)
    if "start" in expect:
        assert frame.start == START_NAMES[expect["start"]]
    if "fields" in expect:
        assert frame.start == STX
        assert Message.decode_body(frame.body).fields == _fields(expect["fields"])
    if "part" in expect:
        assert frame.start == SOH
        part = decode_part(frame.body)
        assert part.number == expect["part"]
        assert part.chunk.hex() == expect["chunk"]
        assert part.final == (expect["part"] == 0)
    if "reassembled_fields" in expect:
        # the parts are the SOH vectors of the file up to this one, in file order
        reassembler = Reassembler()
        body = None
        for _, part_data, _ in VECTORS[: [v[0] for v in VECTORS].index(name) + 1]:
            part_frame = decode_frame(part_data)
            if part_frame.start == SOH:
                body = reassembler.add(part_frame.start, part_frame.body)
        assert body is not None
        assert Message.decode_body(body).fields == _fields(expect["reassembled_fields"])

    # the scanner finds the same frame, fed whole or byte by byte
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        scanner = FrameScanner()
        tokens = [t for chunk in chunks for t in scanner.feed(chunk)]
        assert [t for t in tokens if isinstance(t, FrameToken)] == [FrameToken(frame.start, frame.body)]


def _check_error(data: bytes, expect: dict) -> None:
    error_type = {"crc": ChecksumError, "incomplete": IncompleteFrame}[expect["error"]]
    with pytest.raises(error_type) as caught:
        decode_frame(data)
    assert caught.value.reason == expect["error"]
    scanner = FrameScanner()
    tokens = scanner.feed(data)
    if expect["error"] == "crc":
        assert expect["link"] == "NAK"  # what the link answers to a BadFrame
        assert len(tokens) == 1 and isinstance(tokens[0], BadFrame)
        assert tokens[0].error.reason == "crc"
        assert scanner.pending == 0
    else:
        assert expect["link"] == "wait for more bytes"
        assert tokens == []
        assert scanner.pending == len(data)


@pytest.mark.parametrize(
    ("name", "data", "expect"),
    [v for v in VECTORS if "error" not in v[2]],
    ids=[v[0] for v in VECTORS if "error" not in v[2]],
)
def test_vector_re_encodes_to_exact_bytes(name, data, expect):
    """Build each valid vector from its expectation alone and compare with the golden bytes."""
    frame_bytes = data[expect.get("skip", 0) :]
    if "fields" in expect:
        body = Message(_fields(expect["fields"])).encode_body()
        assert encode_frame(body, START_NAMES[expect.get("start", "STX")]) == frame_bytes
    else:
        assert encode_part(expect["part"], bytes.fromhex(expect["chunk"])) == frame_bytes
