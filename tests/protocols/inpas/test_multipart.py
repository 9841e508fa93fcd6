"""INPAS SA multi-part messages: exact split bytes, part headers, reassembly rules, properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posbridge.protocols.common.errors import DecodeError, InvalidRequest
from posbridge.protocols.inpas.constants import ACK, SOH, STX
from posbridge.protocols.inpas.frame import decode_frame, encode_frame, encode_records
from posbridge.protocols.inpas.multipart import (
    Part,
    Reassembler,
    decode_part,
    encode_part,
    split_message,
)

SALE_BODY = bytes.fromhex("000300313530040300363433190100311b08003030333434323234")
PART_1 = bytes.fromhex("0114000800010100310201003100030031353004030036cf71")  # golden vector
PART_LAST = bytes.fromhex("011b00080001010031020100303433190100311b080030303334343232348d6d")


def _bodies(frames):
    return [decode_frame(frame) for frame in frames]


def test_small_body_is_one_stx_frame():
    assert split_message(SALE_BODY, len(SALE_BODY)) == [encode_frame(SALE_BODY)]
    assert split_message(b"", 1) == [encode_frame(b"")]


def test_split_exact_bytes():
    frames = split_message(SALE_BODY, 10)
    assert frames[0] == PART_1  # same bytes as the independently built vector
    assert len(frames) == 3
    parts = [decode_part(f.body) for f in _bodies(frames)]
    assert [p.number for p in parts] == [1, 2, 0]
    assert [len(p.chunk) for p in parts] == [10, 10, 7]
    assert frames[2] == encode_frame(
        b"\x08\x00" + encode_records([(1, b"1"), (2, b"0")]) + SALE_BODY[20:], SOH
    )


def test_encode_part_matches_the_vectors():
    assert encode_part(1, SALE_BODY[:10]) == PART_1
    assert encode_part(0, SALE_BODY[10:]) == PART_LAST
    with pytest.raises(InvalidRequest):
        encode_part(-1, b"")


def test_split_rejects_bad_part_size():
    for size in (0, -5):
        with pytest.raises(InvalidRequest):
            split_message(SALE_BODY, size)


def test_split_part_numbers_grow_past_nine():
    frames = split_message(bytes(range(12)), 1)
    numbers = [decode_part(f.body).number for f in _bodies(frames)]
    assert numbers == [*range(1, 12), 0]


def test_decode_part():
    assert decode_part(decode_frame(PART_1).body) == Part(1, SALE_BODY[:10], False)
    assert decode_part(decode_frame(PART_LAST).body) == Part(0, SALE_BODY[10:], True)
    # extra header records are tolerated
    header = encode_records([(1, b"1"), (2, b"3"), (9, b"x")])
    assert decode_part(len(header).to_bytes(2, "little") + header + b"ab") == Part(3, b"ab", False)


def _header(records):
    header = encode_records(records)
    return len(header).to_bytes(2, "little") + header


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "part"),
        (b"\x08", "part"),
        (b"\x08\x00\x01\x01", "part"),  # header longer than the body
        (_header([(2, b"1")]), "part"),  # no version
        (_header([(1, b"2"), (2, b"1")]), "part"),  # unknown version
        (_header([(1, b"1")]), "part"),  # no number
        (_header([(1, b"1"), (2, b"x")]), "part"),
        (_header([(1, b"1"), (2, b"")]), "part"),
        (b"\x03\x00\x01\x05\x00", "record"),  # header records truncated
        (b"\x08\x00\x01\x01\x001\x01\x01\x001", "duplicate_tag"),
    ],
)
def test_decode_part_errors(body, reason):
    with pytest.raises(DecodeError) as caught:
        decode_part(body)
    assert caught.value.reason == reason


def _add_all(reassembler, frames):
    results = [reassembler.add(f.start, f.body) for f in _bodies(frames)]
    assert all(r is None for r in results[:-1])
    return results[-1]


def test_reassemble_vectors():
    reassembler = Reassembler()
    assert _add_all(reassembler, [PART_1, PART_LAST]) == SALE_BODY
    assert reassembler.pending == 0


def test_stx_returns_at_once_and_drops_partial():
    reassembler = Reassembler()
    assert reassembler.add(SOH, decode_frame(PART_1).body) is None
    assert reassembler.pending == 10
    assert reassembler.add(STX, b"\x19\x02\x0021") == b"\x19\x02\x0021"
    assert reassembler.pending == 0
    # the dropped partial does not leak into the next message
    assert reassembler.add(SOH, decode_frame(PART_LAST).body) == SALE_BODY[10:]


def test_out_of_order_parts_are_errors_and_reset():
    frames = _bodies(split_message(bytes(30), 10))  # parts 1, 2, 0
    reassembler = Reassembler()
    with pytest.raises(DecodeError) as caught:
        reassembler.add(SOH, frames[1].body)  # part 2 first
    assert caught.value.reason == "part_order"
    reassembler.add(SOH, frames[0].body)
    with pytest.raises(DecodeError):
        reassembler.add(SOH, encode_part(3, b"x")[3:-2])  # skips 2
    assert reassembler.pending == 0
    assert _add_all(reassembler, split_message(bytes(30), 10)) == bytes(30)


def test_repeated_part_is_ignored():
    frames = _bodies(split_message(bytes(range(30)), 10))
    reassembler = Reassembler()
    assert reassembler.add(SOH, frames[0].body) is None
    assert reassembler.add(SOH, frames[0].body) is None  # resent after a lost ACK
    assert reassembler.add(SOH, frames[1].body) is None
    assert reassembler.add(SOH, frames[2].body) == bytes(range(30))
    assert reassembler.add(SOH, frames[2].body) is None  # a resent final part is no new message


def test_max_message():
    reassembler = Reassembler(max_message=25)
    frames = _bodies(split_message(bytes(30), 10))
    reassembler.add(SOH, frames[0].body)
    reassembler.add(SOH, frames[1].body)
    with pytest.raises(DecodeError) as caught:
        reassembler.add(SOH, frames[2].body)
    assert caught.value.reason == "too_large"
    assert reassembler.pending == 0


def test_bad_start_and_reset():
    reassembler = Reassembler()
    with pytest.raises(DecodeError):
        reassembler.add(ACK, b"")
    reassembler.add(SOH, decode_frame(PART_1).body)
    reassembler.reset()
    assert reassembler.pending == 0


@settings(max_examples=200)
@given(st.binary(max_size=600), st.integers(1, 200))
def test_split_then_reassemble(body, part_size):
    frames = split_message(body, part_size)
    decoded = _bodies(frames)
    assert sum(f.skipped for f in decoded) == 0
    if len(body) <= part_size:
        assert [f.start for f in decoded] == [STX]
    else:
        assert {f.start for f in decoded} == {SOH}
        parts = [decode_part(f.body) for f in decoded]
        assert [p.number for p in parts] == [*range(1, len(parts)), 0]
        assert all(len(p.chunk) == part_size for p in parts[:-1])
        assert 1 <= len(parts[-1].chunk) <= part_size
    reassembler = Reassembler()
    assert _add_all(reassembler, frames) == body
    assert _add_all(reassembler, frames) == body  # and again, same reassembler


def _part_body(number: int, chunk: bytes) -> bytes:
    return encode_part(number, chunk)[3:-2]  # the SOH frame's body


@settings(max_examples=300)
@given(
    st.binary(max_size=60),
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from([STX, SOH, ACK]), st.binary(max_size=30)),
            st.tuples(st.just(SOH), st.builds(_part_body, st.integers(0, 4), st.binary(max_size=30))),
        ),
        max_size=8,
    ),
)
def test_garbage_only_raises_decode_errors(body, frames):
    try:
        decode_part(body)
    except DecodeError:
        pass
    reassembler = Reassembler(max_message=40)
    for start, part_body in frames:
        try:
            result = reassembler.add(start, part_body)
        except DecodeError:
            continue
        assert result is None or isinstance(result, bytes)
        assert reassembler.pending <= 40
