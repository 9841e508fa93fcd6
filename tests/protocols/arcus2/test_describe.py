"""``describe``: any bytes to JSON-able entries, never an exception, never a full card number."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from posbridge import protocols
from posbridge.protocols.arcus2.describe import describe
from posbridge.protocols.arcus2.fields import Message
from posbridge.protocols.arcus2.frame import encode_frame

SALE = encode_frame(Message("Q", {"operation": "1", "amount": "100"}).encode_body(), 1)  # link version 1
RESULT = encode_frame(Message("R", {"response_code": "000", "pan": "4111111111111111"}).encode_body(), 1)
SALE_V2 = encode_frame(Message("Q", {"operation": "1", "amount": "100"}).encode_body())


def test_describe_a_conversation():
    data = b"\x05\x06" + b"\xff\xfe" + SALE + b"\x06\x04" + b"zz\x03" + RESULT
    entries = describe(data)
    assert entries[0] == {"offset": 0, "control": "ENQ"}
    assert entries[1] == {"offset": 1, "control": "ACK"}
    assert entries[2] == {"offset": 4, "version": 1, "length": len(SALE) - 5, "lrc": "ok", "skipped": 2,
                          "class": "Q", "kind": "request", "fields": {"operation": "1", "amount": "100"}}
    assert [e.get("control") for e in entries[3:5]] == ["ACK", "EOT"]
    assert entries[5]["fields"] == {"response_code": "000", "pan": "411111******1111"}
    assert entries[5]["skipped"] == 3
    assert "4111111111111111" not in json.dumps(entries)
    assert protocols.get("arcus2").describe is describe


def test_describe_errors():
    bad_lrc = SALE[:-1] + bytes([SALE[-1] ^ 1])
    bad_body = encode_frame(b"Qoperation")
    entries = describe(bad_lrc + b"\x15" + bad_body + b"\x00" + SALE[:6])  # (0x01 is SOH now, not noise)
    assert entries[0]["error"] == "crc" and entries[0]["lrc"] == "bad"
    assert entries[1] == {"offset": len(SALE), "control": "NAK"}
    assert entries[2]["error"] == "field" and entries[2]["error_offset"] == len(SALE) + 1 + 4
    assert entries[3]["error"] == "incomplete" and entries[3]["skipped"] == 1  # the noise byte before it
    assert len(entries) == 4


def test_describe_version_2_frames():
    result = encode_frame(Message("R", {"response_code": "000", "pan": "4111111111111111"}).encode_body())
    entries = describe(b"\x05\x06\xff" + SALE_V2 + b"\x06" + result + SALE)
    assert entries[2] == {"offset": 3, "version": 2, "length": len(SALE_V2) - 8, "crc": "ok", "skipped": 1,
                          "class": "Q", "kind": "request", "fields": {"operation": "1", "amount": "100"}}
    assert entries[4]["version"] == 2 and entries[4]["fields"] == {"response_code": "000", "pan": "411111******1111"}
    assert entries[5]["version"] == 1 and entries[5]["lrc"] == "ok"
    bad_crc = SALE_V2[:-1] + bytes([SALE_V2[-1] ^ 1])
    bad_etx = SALE_V2[:-5] + b"\x04" + SALE_V2[-4:]
    entries = describe(bad_crc + bad_etx + SALE_V2[:-2])
    assert (entries[0]["error"], entries[0]["crc"], entries[0]["version"]) == ("crc", "bad", 2)
    assert (entries[1]["error"], entries[1]["crc"], entries[1]["offset"]) == ("etx", "unchecked", len(SALE_V2))
    assert entries[2]["error"] == "incomplete" and len(entries) == 3


def test_describe_shows_numbers_too_long_for_their_key_as_invalid():
    huge = "9" * 5000
    fields = {"operation": "1", "response_code": "000", "result_amount": huge, "currency": "6430",
              "transaction_id": huge, "sale_count": huge, "sale_amount": "x1"}
    body = "R" + "\x1c".join(f"{k}={v}" for k, v in fields.items())
    for version in (1, 2):
        [entry] = describe(encode_frame(body.encode("ascii"), version))
        assert entry["fields"] == fields
        assert entry["invalid"] == {
            "result_amount": "result_amount has 5000 digits, at most 12 allowed",
            "currency": "currency has 4 digits, at most 3 allowed",
            "transaction_id": "transaction_id has 5000 digits, at most 12 allowed",
            "sale_count": "sale_count has 5000 digits, at most 18 allowed",
            "sale_amount": "sale_amount must be ASCII digits, got 'x1'",
        }
        json.dumps(entry)
    [entry] = describe(SALE_V2)
    assert "invalid" not in entry


@given(st.one_of(st.binary(max_size=300),
                 st.builds(lambda key, n, v: encode_frame(f"R{key}={'7' * n}".encode("ascii"), v),
                           st.sampled_from(["result_amount", "currency", "transaction_id", "sale_amount", "operation"]),
                           st.integers(4000, 6000), st.sampled_from([1, 2]))))
def test_describe_never_raises(data):
    json.dumps(describe(data), ensure_ascii=False)
