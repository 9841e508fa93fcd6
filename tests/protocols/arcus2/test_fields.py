"""The Arcus2-style key table and Message: text in CP1251, checks on encode, typed errors on decode."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from posbridge.protocols.arcus2.fields import FIELDS, Message, mask_pan
from posbridge.protocols.arcus2.frame import decode_body, encode_body
from posbridge.protocols.common.errors import DecodeError, InvalidRequest

LIBRARY_KEYS = {
    "amount", "currency", "rrn", "transaction_id", "auth_code", "original_amount", "original_date_time",
    "terminal_id", "response_code", "text_message", "pan", "expiry", "card_type", "application_label", "aid",
    "tvr", "date", "time", "cardholder_name", "result_amount", "slip",
}
POSBRIDGE_KEYS = {"host_code", "original_operation", "sale_count", "sale_amount", "refund_count",
                  "refund_amount", "cancel_count", "cancel_amount"}


def test_table_holds_the_library_keys_and_marks_posbridges_own():
    assert set(FIELDS) == LIBRARY_KEYS | POSBRIDGE_KEYS | {"operation"}
    assert {key for key, spec in FIELDS.items() if spec.source == "posbridge"} == POSBRIDGE_KEYS
    assert all(spec.kind in ("text", "digits") and spec.direction in ("in", "out", "both")
               for spec in FIELDS.values())


def test_encode_decode_cp1251():
    message = Message("I", {"text_message": "ВСТАВЬТЕ КАРТУ"})
    body = message.encode_body()
    assert body == b"Itext_message=" + "ВСТАВЬТЕ КАРТУ".encode("cp1251")
    assert Message.decode_body(body) == message


def test_ints_become_decimal_and_none_is_dropped():
    message = Message("Q", {"operation": 1, "amount": 15000, "rrn": None})
    assert message.fields == {"operation": "1", "amount": "15000"}
    assert len(message) == 2 and "rrn" not in message and list(message) == ["operation", "amount"]
    assert message["amount"] == "15000" and message.get("rrn", "-") == "-"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"amount": "1.50"}, "not ASCII digits"),
        ({"currency": "6430"}, "at most 3"),
        ({"text_message": "a\x1cb"}, "FS"),
        ({"text_message": "₽"}, "not CP1251"),
        ({"unknown_key": "\u20ac\u2603"}, "not CP1251"),
    ],
)
def test_encode_rejects(fields, why):
    with pytest.raises(InvalidRequest, match=why):
        Message("R", fields).encode_body()


@pytest.mark.parametrize("args", [("X", {}), ("Q", {"Amount": "1"}), ("Q", {"a": True}), ("Q", {"a": 1.5}),
                                  ("Q", {1: "x"})])
def test_constructor_rejects(args):
    with pytest.raises(InvalidRequest):
        Message(*args)


def test_unknown_keys_travel():
    message = Message("R", {"vendor_extra": "x"})
    assert Message.decode_body(message.encode_body()).fields == {"vendor_extra": "x"}


def test_undefined_cp1251_byte_is_a_decode_error_with_its_offset():
    with pytest.raises(DecodeError) as caught:
        Message.decode_body(b"Ra=1\x1ctext_message=OK\x98")
    assert (caught.value.reason, caught.value.offset) == ("encoding", 20)


def test_repr_masks_the_card_number():
    message = Message("R", {"pan": "4111111111111111", "rrn": "1"})
    assert "4111111111111111" not in repr(message)
    assert "411111******1111" in repr(message)
    assert mask_pan("411111******1111") == "411111******1111"
    assert mask_pan("1234567") == "***4567" and mask_pan("12") == "**"


@given(st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True),
                       st.text(st.characters(codec="cp1251", exclude_characters="\x1c"), max_size=20),
                       max_size=6))
def test_text_round_trip(fields):
    fields = {f"x_{key}": value for key, value in fields.items()}  # keys outside the digits-only ones
    message = Message("R", fields)
    assert Message.decode_body(message.encode_body()) == message


# --- Message's one-pass codec agrees with the field-by-field one of frame.py ----------------------
def _by_fields(body: bytes):
    try:
        message_class, raw = decode_body(body)
        return message_class, {key: value.decode("cp1251") for key, value in raw}
    except DecodeError as error:
        return error.reason, error.offset
    except UnicodeDecodeError:
        return "encoding"


def _by_message(body: bytes):
    try:
        message = Message.decode_body(body)
        return message.message_class, message.fields
    except DecodeError as error:
        return "encoding" if error.reason == "encoding" else (error.reason, error.offset)


bodies = st.one_of(
    st.binary(max_size=40),
    st.tuples(st.sampled_from([b"Q", b"R", b"X", b""]),
              st.lists(st.sampled_from([b"a", b"b", b"=", b"\x1c", b"1", b"A", b"\x98", b"\xc0"]), max_size=14)
              ).map(lambda t: t[0] + b"".join(t[1])),
)


@settings(max_examples=300)
@given(bodies)
@example(b"Ra=\x98\x1ca=1")  # both a bad byte and a repeated key: the key is reported
def test_message_decode_agrees_with_the_field_by_field_decode(body):
    assert _by_message(body) == _by_fields(body)


@given(st.sampled_from("QIRA"), st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(lambda k: k not in FIELDS),
    st.text(st.characters(codec="cp1251", exclude_characters="\x1c"), max_size=12), max_size=6))
def test_message_encode_agrees_with_encode_body(message_class, fields):
    expected = encode_body(message_class, [(k, v.encode("cp1251")) for k, v in fields.items()])
    assert Message(message_class, fields).encode_body() == expected


def test_bad_keys_put_into_the_public_dict_are_refused():
    message = Message("R", {"a": "1"})
    message.fields["Bad"] = "2"
    with pytest.raises(InvalidRequest, match="'Bad'"):
        message.encode_body()
    message.fields = {1: "x"}  # type: ignore[dict-item]
    with pytest.raises(InvalidRequest, match="1"):
        message.encode_body()
    message.fields = {"a\x1cb": "x"}
    with pytest.raises(InvalidRequest, match="FS"):
        message.encode_body()
    message.fields = {"amount": 5}  # type: ignore[dict-item]
    with pytest.raises(InvalidRequest, match="text"):
        message.encode_body()
