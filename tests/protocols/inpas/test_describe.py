"""describe(): what `posbridge decode --protocol inpas` prints, in the common schema; JSON-able and never raising."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from posbridge.protocols.common.describe import EntryKind, FieldDescription, FrameDescription, PartDescription
from posbridge.protocols.inpas.describe import describe
from posbridge.protocols.inpas.fields import Message
from posbridge.protocols.inpas.frame import encode_frame, encode_records
from posbridge.protocols.inpas.multipart import split_message

SALE = bytes.fromhex("021b00000300313530040300363433190100311b0800303033343432323432dd")
SALE_FIELDS = (
    FieldDescription("0", "amount", "150"),
    FieldDescription("4", "currency", "643"),
    FieldDescription("25", "operation_code", "1"),
    FieldDescription("27", "terminal_id", "00344224"),
)
PART_1 = bytes.fromhex("0114000800010100310201003100030031353004030036cf71")
PART_LAST = bytes.fromhex("011b00080001010031020100303433190100311b080030303334343232348d6d")
BAD_CRC = SALE[:-2] + b"\x32\x22"


def control(offset: int, name: str) -> FrameDescription:
    return FrameDescription(EntryKind.CONTROL, offset, 1, name=name)


def test_describe_frame():
    assert describe(SALE) == [
        FrameDescription(EntryKind.FRAME, 0, 32, name="STX", length=27, check="crc", check_ok=True, fields=SALE_FIELDS)
    ]
    assert describe(SALE)[0].to_dict() == {
        "kind": "frame", "offset": 0, "size": 32, "name": "STX", "length": 27, "check": "crc", "check_ok": True,
        "fields": [{"key": "0", "name": "amount", "value": "150"}, {"key": "4", "name": "currency", "value": "643"},
                   {"key": "25", "name": "operation_code", "value": "1"},
                   {"key": "27", "name": "terminal_id", "value": "00344224"}]}


def test_describe_noise_controls_and_frames():
    data = b"\x00\xff\x06" + SALE + b"\xaa" + PART_1 + b"\x06" + PART_LAST + BAD_CRC + b"\x04\x15\x33"
    entries = describe(data)
    assert entries[0] == FrameDescription(EntryKind.NOISE, 0, 2, data="00ff")
    assert entries[1] == control(2, "ACK")
    assert entries[2].offset == 3 and entries[2].fields == SALE_FIELDS
    part = entries[3]
    assert (part.offset, part.skipped, part.name) == (36, 1, "SOH")
    assert part.part == PartDescription(1, False, "00030031353004030036") and part.fields == ()
    assert entries[4] == control(61, "ACK")
    last = entries[5]
    assert last.part is not None and (last.part.number, last.part.final) == (0, True)
    assert last.fields == SALE_FIELDS  # the whole message, on its final part
    bad = entries[6]
    assert (bad.offset, bad.check_ok, bad.problems[0].reason) == (94, False, "crc")
    assert bad.problems[0].detail and not bad.ok
    assert entries[7:] == [control(126, "EOT"), control(127, "NAK"), FrameDescription(EntryKind.NOISE, 128, 1, data="33")]


def test_describe_incomplete_ends_the_walk():
    entries = describe(b"\x06" + SALE[:-3])
    assert entries[0] == control(0, "ACK")
    assert (entries[1].kind, entries[1].offset, entries[1].size) == (EntryKind.INCOMPLETE, 1, len(SALE) - 3)
    assert entries[1].problems[0].reason == "incomplete" and entries[1].problems[0].detail
    assert len(entries) == 2


def test_describe_bad_body_and_binary_values():
    bad_body = describe(encode_frame(b"\x19\x05\x001"))[0]
    assert (bad_body.check_ok, bad_body.problems[0].reason, bad_body.problems[0].offset) == (True, "record", 3)
    entry = describe(encode_frame(encode_records([(70, b"\x00\xff"), (200, b"\x98")])))[0]
    assert entry.fields == (FieldDescription("70", "gateway_data", "00ff", binary=True),
                            FieldDescription("200", "tag_200", "98", binary=True))
    bad_part = describe(encode_frame(b"\x01", 0x01))[0]
    assert bad_part.problems[0].reason == "part"


def test_describe_masks_the_pan():
    data = encode_frame(Message({10: "4276123456781234", 25: 1}).encode_body())
    text = json.dumps([e.to_dict() for e in describe(data)])
    assert "4276123456781234" not in text and "427612******1234" in text
    assert "4276123456781234" not in describe(data)[0].summary()


def test_describe_text_is_cp1251():
    data = encode_frame(Message({19: "ОДОБРЕНО"}).encode_body())
    assert describe(data)[0].fields == (FieldDescription("19", "response_text", "ОДОБРЕНО"),)


def test_describe_long_multipart_message():
    body = Message({25: 59, 90: "ОТЧЕТ\r\n" * 50}).encode_body()
    entries = describe(b"".join(split_message(body, 64)))
    assert all(e.check_ok for e in entries)
    assert entries[-1].field("90") == FieldDescription("90", "receipt_data", "ОТЧЕТ\r\n" * 50)


def _frames_and_noise():
    pieces = st.one_of(
        st.binary(max_size=20),
        st.binary(max_size=40).map(encode_frame),
        st.binary(max_size=40).map(lambda b: encode_frame(b, 0x01)),
        st.tuples(st.binary(max_size=80), st.integers(1, 20)).map(lambda t: b"".join(split_message(*t))),
    )
    return st.lists(pieces, max_size=6).map(b"".join)


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=300), _frames_and_noise()))
def test_describe_never_raises_and_is_json(data):
    entries = describe(data)
    json.dumps([e.to_dict() for e in entries])
    offsets = [e.offset for e in entries]
    assert offsets == sorted(offsets)
    assert all(0 <= o < len(data) for o in offsets)
    covered = [(e.offset - e.skipped, e.offset + e.size) for e in entries]
    assert all(a < b <= len(data) for a, b in covered) and all(b <= c for (_, b), (c, _) in zip(covered, covered[1:]))
