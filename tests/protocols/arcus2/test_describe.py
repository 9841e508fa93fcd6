"""``describe``: entries of the common schema, never a full card number (that any bytes give entries and
never an exception is in the protocol kit: tests/protocols/kit/test_codec.py)."""

from __future__ import annotations

import json

from posbridge import protocols
from posbridge.protocols.arcus2.describe import describe
from posbridge.protocols.common.describe import EntryKind, FieldDescription, FrameDescription
from posbridge.protocols.arcus2.fields import Message
from posbridge.protocols.arcus2.frame import encode_frame

SALE = encode_frame(Message("Q", {"operation": "1", "amount": "100"}).encode_body(), 1)  # link version 1
RESULT = encode_frame(Message("R", {"response_code": "000", "pan": "4111111111111111"}).encode_body(), 1)
SALE_V2 = encode_frame(Message("Q", {"operation": "1", "amount": "100"}).encode_body())


def fields(entry: FrameDescription) -> dict[str, str]:
    return {f.key: f.value for f in entry.fields}


def test_describe_a_conversation():
    data = b"\x05\x06" + b"\xff\xfe" + SALE + b"\x06\x04" + b"zz\x03" + RESULT
    entries = describe(data)
    assert entries[0] == FrameDescription(EntryKind.CONTROL, 0, 1, name="ENQ")
    assert entries[1] == FrameDescription(EntryKind.CONTROL, 1, 1, name="ACK")
    assert entries[2] == FrameDescription(
        EntryKind.FRAME, 4, len(SALE), name="STX", skipped=2, version=1, length=len(SALE) - 5, check="lrc",
        check_ok=True, message="Q", message_kind="request",
        fields=(FieldDescription("operation", "operation", "1"), FieldDescription("amount", "amount", "100")))
    assert [e.name for e in entries[3:5]] == ["ACK", "EOT"]
    assert fields(entries[5]) == {"response_code": "000", "pan": "411111******1111"}
    assert entries[5].skipped == 3
    assert "4111111111111111" not in json.dumps([e.to_dict() for e in entries])
    assert protocols.get("arcus2").describe is describe


def test_describe_errors():
    bad_lrc = SALE[:-1] + bytes([SALE[-1] ^ 1])
    bad_body = encode_frame(b"Qoperation")
    entries = describe(bad_lrc + b"\x15" + bad_body + b"\x00" + SALE[:6])  # (0x01 is SOH now, not noise)
    assert entries[0].problems[0].reason == "crc" and (entries[0].check, entries[0].check_ok) == ("lrc", False)
    assert entries[1] == FrameDescription(EntryKind.CONTROL, len(SALE), 1, name="NAK")
    assert entries[2].check_ok is True and entries[2].fields == ()
    assert entries[2].problems[0].reason == "field" and entries[2].problems[0].offset == len(SALE) + 1 + 4
    incomplete = entries[3]
    assert incomplete.kind is EntryKind.INCOMPLETE and incomplete.skipped == 1  # the noise byte before it
    assert incomplete.problems[0].reason == "incomplete" and incomplete.offset + incomplete.size == \
        len(bad_lrc) + 1 + len(bad_body) + 1 + 6
    assert len(entries) == 4 and not any(e.ok for e in (entries[0], entries[2], entries[3]))


def test_describe_version_2_frames():
    result = encode_frame(Message("R", {"response_code": "000", "pan": "4111111111111111"}).encode_body())
    entries = describe(b"\x05\x06\xff" + SALE_V2 + b"\x06" + result + SALE)
    assert entries[2] == FrameDescription(
        EntryKind.FRAME, 3, len(SALE_V2), name="SOH", skipped=1, version=2, length=len(SALE_V2) - 8, check="crc",
        check_ok=True, message="Q", message_kind="request",
        fields=(FieldDescription("operation", "operation", "1"), FieldDescription("amount", "amount", "100")))
    assert entries[4].version == 2 and fields(entries[4]) == {"response_code": "000", "pan": "411111******1111"}
    assert (entries[5].version, entries[5].check, entries[5].check_ok) == (1, "lrc", True)
    bad_crc = SALE_V2[:-1] + bytes([SALE_V2[-1] ^ 1])
    bad_etx = SALE_V2[:-5] + b"\x04" + SALE_V2[-4:]
    entries = describe(bad_crc + bad_etx + SALE_V2[:-2])
    assert (entries[0].problems[0].reason, entries[0].check_ok, entries[0].version) == ("crc", False, 2)
    assert (entries[1].problems[0].reason, entries[1].check_ok, entries[1].offset) == ("etx", None, len(SALE_V2))
    assert "crc unchecked" in entries[1].summary()
    assert entries[2].kind is EntryKind.INCOMPLETE and len(entries) == 3


def test_describe_shows_numbers_too_long_for_their_key_as_invalid():
    huge = "9" * 5000
    fields = {"operation": "1", "response_code": "000", "result_amount": huge, "currency": "6430",
              "transaction_id": huge, "sale_count": huge, "sale_amount": "x1"}
    body = "R" + "\x1c".join(f"{k}={v}" for k, v in fields.items())
    for version in (1, 2):
        [entry] = describe(encode_frame(body.encode("ascii"), version))
        assert {f.key: f.value for f in entry.fields} == fields
        assert {f.key: f.problem for f in entry.fields if f.problem} == {
            "result_amount": "result_amount has 5000 digits, at most 12 allowed",
            "currency": "currency has 4 digits, at most 3 allowed",
            "transaction_id": "transaction_id has 5000 digits, at most 12 allowed",
            "sale_count": "sale_count has 5000 digits, at most 18 allowed",
            "sale_amount": "sale_amount must be ASCII digits, got 'x1'",
        }
        assert entry.ok  # the frame is sound; its values are not
        json.dumps(entry.to_dict())
    [entry] = describe(SALE_V2)
    assert not any(f.problem for f in entry.fields)
