"""describe(): what `posbridge decode --protocol inpas` prints; JSON-able and never raising."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from posbridge.protocols.inpas.describe import describe
from posbridge.protocols.inpas.fields import Message
from posbridge.protocols.inpas.frame import encode_frame, encode_records
from posbridge.protocols.inpas.multipart import split_message

SALE = bytes.fromhex("021b00000300313530040300363433190100311b0800303033343432323432dd")
SALE_FIELDS = {
    "0": {"name": "amount", "value": "150"},
    "4": {"name": "currency", "value": "643"},
    "25": {"name": "operation_code", "value": "1"},
    "27": {"name": "terminal_id", "value": "00344224"},
}
PART_1 = bytes.fromhex("0114000800010100310201003100030031353004030036cf71")
PART_LAST = bytes.fromhex("011b00080001010031020100303433190100311b080030303334343232348d6d")
BAD_CRC = SALE[:-2] + b"\x32\x22"


def test_describe_frame():
    assert describe(SALE) == [
        {"offset": 0, "start": "STX", "length": 27, "crc": "ok", "skipped": 0, "fields": SALE_FIELDS}
    ]


def test_describe_noise_controls_and_frames():
    data = b"\x00\xff\x06" + SALE + b"\xaa" + PART_1 + b"\x06" + PART_LAST + BAD_CRC + b"\x04\x15\x33"
    entries = describe(data)
    assert entries[0] == {"offset": 0, "noise": "00ff"}
    assert entries[1] == {"offset": 2, "control": "ACK"}
    assert entries[2]["offset"] == 3 and entries[2]["fields"] == SALE_FIELDS
    part = entries[3]
    assert (part["offset"], part["skipped"], part["start"]) == (36, 1, "SOH")
    assert (part["part"], part["final"]) == (1, False)
    assert part["chunk"] == "00030031353004030036" and "reassembled_fields" not in part
    assert entries[4] == {"offset": 61, "control": "ACK"}
    last = entries[5]
    assert (last["part"], last["final"]) == (0, True)
    assert last["reassembled_fields"] == SALE_FIELDS
    bad = entries[6]
    assert (bad["offset"], bad["crc"], bad["error"]) == (94, "bad", "crc")
    assert "detail" in bad
    assert entries[7:] == [
        {"offset": 126, "control": "EOT"},
        {"offset": 127, "control": "NAK"},
        {"offset": 128, "noise": "33"},
    ]


def test_describe_incomplete_ends_the_walk():
    entries = describe(b"\x06" + SALE[:-3])
    assert entries[0] == {"offset": 0, "control": "ACK"}
    assert entries[1]["offset"] == 1 and entries[1]["error"] == "incomplete" and entries[1]["detail"]
    assert len(entries) == 2


def test_describe_bad_body_and_binary_values():
    bad_body = describe(encode_frame(b"\x19\x05\x001"))[0]
    assert (bad_body["crc"], bad_body["error"], bad_body["error_offset"]) == ("ok", "record", 3)
    entry = describe(encode_frame(encode_records([(70, b"\x00\xff"), (200, b"\x98")])))[0]
    assert entry["fields"]["70"] == {"name": "gateway_data", "value": "00ff", "binary": True}
    assert entry["fields"]["200"] == {"name": "tag_200", "value": "98", "binary": True}
    bad_part = describe(encode_frame(b"\x01", 0x01))[0]
    assert bad_part["error"] == "part"


def test_describe_masks_the_pan():
    data = encode_frame(Message({10: "4276123456781234", 25: 1}).encode_body())
    text = json.dumps(describe(data))
    assert "4276123456781234" not in text and "427612******1234" in text


def test_describe_text_is_cp1251():
    data = encode_frame(Message({19: "ОДОБРЕНО"}).encode_body())
    assert describe(data)[0]["fields"]["19"] == {"name": "response_text", "value": "ОДОБРЕНО"}


def test_describe_long_multipart_message():
    body = Message({25: 59, 90: "ОТЧЕТ\r\n" * 50}).encode_body()
    entries = describe(b"".join(split_message(body, 64)))
    assert all(e["crc"] == "ok" for e in entries)
    assert entries[-1]["reassembled_fields"]["90"]["value"] == "ОТЧЕТ\r\n" * 50


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
    json.dumps(entries)
    offsets = [e["offset"] for e in entries]
    assert offsets == sorted(offsets)
    assert all(0 <= o < len(data) for o in offsets)
