"""INPAS SA field table and Message: normalization, encoding rules, decoding, masking, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posbridge.protocols.common.errors import DecodeError, InvalidRequest
from posbridge.protocols.inpas.fields import (
    BINARY_TAGS,
    FIELDS,
    FieldSpec,
    Message,
    mask_pan,
    name_for,
    tag_for,
)
from posbridge.protocols.inpas.frame import encode_records

SPEC_TAGS = {0, 1, 4, 6, 8, 10, 11, 13, 14, 15, 19, 21, 23, 25, 26, 27, 28, 29, 30, 31, 32, 34, 39,
             49, 50, 57, 64, 65, 66, 67, 70, 71, 76, 77, 89, 90}


def test_table_covers_the_spec():
    assert SPEC_TAGS | {55, 59, 69, 70, 86, 91, 96} == set(FIELDS)
    assert BINARY_TAGS == {55, 59, 69, 70, 86, 91, 96}
    for tag, spec in FIELDS.items():
        assert isinstance(spec, FieldSpec) and spec.tag == tag
        assert spec.kind in {"text", "digits", "binary"}
        assert spec.name.isidentifier() and spec.name == spec.name.lower()
    assert len({spec.name for spec in FIELDS.values()}) == len(FIELDS)


@pytest.mark.parametrize(
    ("name", "tag"),
    [("amount", 0), ("currency", 4), ("pan", 10), ("rrn", 14), ("operation_code", 25), ("stan", 26),
     ("terminal_id", 27), ("status", 39), ("receipt_data", 90), ("gateway_data", 70), ("tag_200", 200)],
)
def test_tag_for(name, tag):
    assert tag_for(name) == tag
    assert tag_for(name_for(tag)) == tag


def test_tag_for_unknown():
    for name in ("nope", "tag_256", "tag_", "tag_x"):
        with pytest.raises(KeyError):
            tag_for(name)


def test_message_normalizes_values():
    message = Message(
        {25: 1, "amount": 150, 70: "10.0.0.1;443", 55: b"\x9f\x26", 19: "ОДОБРЕНО".encode("cp1251"), 5: ""}
    )
    assert message.fields == {25: "1", 0: "150", 70: b"10.0.0.1;443", 55: b"\x9f\x26", 19: "ОДОБРЕНО"}
    assert message.get(25) == "1" and message.get("amount") == "150" and message.get(4) is None
    assert message["operation_code"] == "1" and 25 in message and "currency" not in message
    assert list(message) == [0, 19, 25, 55, 70]


def test_message_accepts_int_enums():
    import enum

    class Tag(enum.IntEnum):
        OPERATION = 25

    class Op(enum.IntEnum):
        WAIT = 21

    message = Message({Tag.OPERATION: Op.WAIT})
    assert message.fields == {25: "21"}
    assert all(type(tag) is int for tag in message.fields)
    assert message.encode_body() == b"\x19\x02\x0021"
    message.fields[26] = Op.WAIT  # an int stored after construction still encodes as digits
    assert message.encode_body() == b"\x19\x02\x0021\x1a\x02\x0021"


@pytest.mark.parametrize(
    "fields", [{256: "x"}, {-1: "x"}, {"nope": "x"}, {25: True}, {25: 1.5}, {70: "\U0001f600"}]
)
def test_message_rejects_bad_construction(fields):
    with pytest.raises(InvalidRequest):
        Message(fields)


def test_encode_body_exact_bytes_ascending_tags():
    message = Message({27: "00344224", 25: 1, 4: 643, 0: 150})
    assert message.encode_body() == bytes.fromhex("000300313530040300363433190100311b08003030333434323234")
    assert Message({19: "ОДОБРЕНО"}).encode_body() == b"\x13\x08\x00" + "ОДОБРЕНО".encode("cp1251")


@pytest.mark.parametrize(
    "fields",
    [{0: "12.5"}, {0: "1" * 13}, {4: "6430"}, {19: "emoji \U0001f600"}, {25: "-1"}, {27: "123456789"},
     {90: "x" * 65536}],
)
def test_encode_body_rejects(fields):
    message = Message(fields)
    with pytest.raises(InvalidRequest):
        message.encode_body()


def test_encode_body_omits_empty_values_set_later():
    message = Message({25: 26})
    message.fields[19] = ""
    assert message.encode_body() == b"\x19\x02\x0026"


def test_decode_body():
    body = encode_records(
        [(25, b"1"), (19, "ОДОБРЕНО".encode("cp1251")), (70, b"\x00\xff"), (200, b"\x98x"), (201, b"ok"), (5, b"")]
    )
    message = Message.decode_body(body)
    # binary tags stay bytes; text is CP1251; not-CP1251 (0x98 is undefined) stays bytes; empty dropped
    assert message.fields == {25: "1", 19: "ОДОБРЕНО", 70: b"\x00\xff", 200: b"\x98x", 201: "ok"}


def test_decode_body_errors_are_decode_errors():
    with pytest.raises(DecodeError) as caught:
        Message.decode_body(b"\x19\x05\x001")
    assert caught.value.reason == "record"
    with pytest.raises(DecodeError) as caught:
        Message.decode_body(b"\x19\x01\x001\x19\x01\x002")
    assert caught.value.reason == "duplicate_tag"


def test_operation_code():
    assert Message({25: "63"}).operation_code == 63
    assert Message({}).operation_code is None
    assert Message({25: "x1"}).operation_code is None
    assert Message({25: "١"}).operation_code is None  # a Unicode digit, not ASCII


def test_equality():
    assert Message({25: 1}) == Message({"operation_code": "1"})
    assert Message({25: 1}) != Message({25: 2})
    assert Message({25: 1}) != {25: "1"}


@pytest.mark.parametrize(
    ("value", "masked"),
    [("4111111111111111", "411111******1111"), ("************1111", "************1111"),
     ("4111111111111111111", "411111*********1111"), ("1234567890", "******7890"), ("1234", "****"),
     ("", "")],
)
def test_mask_pan(value, masked):
    assert mask_pan(value) == masked
    assert mask_pan(masked) == masked


def test_repr_masks_the_pan():
    text = repr(Message({10: "4276123456781234", 25: 1}))
    assert "4276123456781234" not in text and "427612******1234" in text
    assert "operation_code='1'" in text
    text = repr(Message({10: b"\x984276123456781234"}))  # stays bytes (not CP1251): still masked
    assert "4276123456781234" not in text and "56781234" not in text


# --- hypothesis ------------------------------------------------------------------------------------
def _cp1251_alphabet() -> str:
    chars = []
    for byte in range(256):
        try:
            chars.append(bytes([byte]).decode("cp1251"))
        except UnicodeDecodeError:
            pass
    return "".join(chars)


cp1251_text = st.text(alphabet=_cp1251_alphabet(), min_size=1, max_size=30)
digits = st.text(alphabet="0123456789", min_size=1, max_size=12)


@st.composite
def messages(draw):
    fields = {}
    for tag in draw(st.sets(st.integers(0, 255), max_size=10)):
        spec = FIELDS.get(tag)
        if spec is None:
            fields[tag] = draw(st.one_of(cp1251_text, st.binary(min_size=1, max_size=20)))
        elif spec.kind == "binary":
            fields[tag] = draw(st.binary(min_size=1, max_size=20))
        elif spec.kind == "digits":
            fields[tag] = draw(digits)[: spec.max_length]
        else:
            fields[tag] = draw(cp1251_text)[: spec.max_length]
    return Message(fields)


@given(messages())
def test_message_round_trip(message):
    body = message.encode_body()
    assert Message.decode_body(body) == message
    assert Message.decode_body(body).encode_body() == body


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_decode_body_garbage_only_raises_decode_error(body):
    try:
        message = Message.decode_body(body)
    except DecodeError:
        return
    repr(message)
    assert all(isinstance(v, (str, bytes)) and v for v in message.fields.values())


@given(messages())
def test_encode_body_agrees_with_encode_records(message):
    assert message.encode_body() == encode_records(message.records())


def test_encode_body_rejects_bad_tags_set_later():
    message = Message({25: 1})
    for bad in (300, "amount", None):
        message.fields = {25: "1", bad: "x"}
        with pytest.raises(InvalidRequest):
            message.encode_body()
        with pytest.raises(InvalidRequest):
            message.records()
