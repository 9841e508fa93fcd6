"""``describe``: any bytes to JSON-able entries, never an exception, never a full card number."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

import protocols
from protocols.arcus2.describe import describe
from protocols.arcus2.fields import Message
from protocols.arcus2.frame import encode_frame

SALE = encode_frame(Message("Q", {"operation": "1", "amount": "100"}).encode_body())
RESULT = encode_frame(Message("R", {"response_code": "000", "pan": "4111111111111111"}).encode_body())


def test_describe_a_conversation():
    data = b"\x05\x06" + b"\xff\xfe" + SALE + b"\x06\x04" + b"zz\x03" + RESULT
    entries = describe(data)
    assert entries[0] == {"offset": 0, "control": "ENQ"}
    assert entries[1] == {"offset": 1, "control": "ACK"}
    assert entries[2] == {"offset": 4, "length": len(SALE) - 5, "lrc": "ok", "skipped": 2, "class": "Q",
                          "kind": "request", "fields": {"operation": "1", "amount": "100"}}
    assert [e.get("control") for e in entries[3:5]] == ["ACK", "EOT"]
    assert entries[5]["fields"] == {"response_code": "000", "pan": "411111******1111"}
    assert entries[5]["skipped"] == 3
    assert "4111111111111111" not in json.dumps(entries)
    assert protocols.get("arcus2").describe is describe


def test_describe_errors():
    bad_lrc = SALE[:-1] + bytes([SALE[-1] ^ 1])
    bad_body = encode_frame(b"Qoperation")
    entries = describe(bad_lrc + b"\x15" + bad_body + b"\x01" + SALE[:6])
    assert entries[0]["error"] == "crc" and entries[0]["lrc"] == "bad"
    assert entries[1] == {"offset": len(SALE), "control": "NAK"}
    assert entries[2]["error"] == "field" and entries[2]["error_offset"] == len(SALE) + 1 + 4
    assert entries[3]["error"] == "incomplete" and entries[3]["skipped"] == 1  # the noise byte before it
    assert len(entries) == 4


@given(st.binary(max_size=300))
def test_describe_never_raises(data):
    json.dumps(describe(data), ensure_ascii=False)
