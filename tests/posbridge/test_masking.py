"""One masking rule for card numbers (DESIGN.md), used by every layer: protocols/common's ``mask_pan``."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import posbridge.model
from posbridge.journal import safe_masked_pan
from posbridge.protocols.arcus2 import fields as arcus2_fields
from posbridge.protocols.common import model as common_model
from posbridge.protocols.common.model import mask_card_numbers, mask_pan
from posbridge.protocols.inpas import fields as inpas_fields


@pytest.mark.parametrize(
    ("given", "masked"),
    [
        ("4111111111111111", "411111******1111"),
        ("4111 1111 1111 1111", "411111******1111"),
        ("4111-1111-1111-1111", "411111******1111"),
        ("4111111111111111111", "411111*********1111"),
        ("411111******1111", "411111******1111"),
        ("************1111", "************1111"),
        ("41111111111111**", "411111****1111"),
        ("1234567890", "******7890"),
        ("1234567", "***4567"),
        ("1234", "****"),
        ("12", "**"),
        ("", ""),
    ],
)
def test_mask_pan(given: str, masked: str) -> None:
    assert mask_pan(given) == masked
    assert mask_pan(masked) == masked  # idempotent: a masked PAN passes any layer unchanged


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


@given(st.text(alphabet="0123456789 -*ab", max_size=40))
def test_mask_pan_never_shows_more_than_6_plus_4_digits(value: str) -> None:
    masked = mask_pan(value)
    assert len(_digits(masked)) <= 10
    assert mask_pan(masked) == masked


@given(st.text(alphabet="0123456789", min_size=12, max_size=19))
def test_a_full_number_keeps_its_first_6_and_last_4_digits(pan: str) -> None:
    assert mask_pan(pan) == pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def test_mask_card_numbers_in_free_text() -> None:
    assert mask_card_numbers("pan 4111111111111111 rrn 123456789012") == "pan 411111******1111 rrn 123456**9012"
    assert mask_card_numbers("stan 12345678901 ok") == "stan 12345678901 ok"  # 11 digits: no card number
    assert mask_card_numbers("x" + "7" * 5000) == "x7777…(5000 digits)"
    assert mask_card_numbers("got '4111 1111 1111 1111'") == "got '411111******1111'"
    assert mask_card_numbers("pan 4111-1111-1111-1111.") == "pan 411111******1111."
    assert mask_card_numbers("at 2024-01-01 12:00:00, stan 000123") == "at 2024-01-01 12:00:00, stan 000123"


@given(st.text(alphabet="0123456789 -ab", max_size=60))
def test_no_card_number_survives_mask_card_numbers(text: str) -> None:
    masked = mask_card_numbers(text)
    joined = re.sub(r"(?<=[0-9])[ -](?=[0-9])", "", masked)  # 4111 1111 … read as one number
    assert re.search(r"[0-9]{12}", joined) is None, masked


def test_every_layer_uses_the_one_implementation() -> None:
    """The protocols, the model, the journal and the slips share protocols/common's function."""
    assert posbridge.model.mask_pan is common_model.mask_pan
    assert inpas_fields.mask_pan is common_model.mask_pan
    assert arcus2_fields.mask_pan is common_model.mask_pan
    assert not hasattr(arcus2_fields, "mask_pan_text")
    assert safe_masked_pan(None) is None and safe_masked_pan("") == ""
    assert safe_masked_pan("4111 1111 1111 1111") == mask_pan("4111 1111 1111 1111")


def test_errors_in_logs_and_events_mask_card_numbers() -> None:
    """The pump and the terminal summarize exceptions with one function, which masks."""
    from posbridge.emulator import terminal
    from posbridge.pump import summarize_error

    text = summarize_error(ValueError("field pan=4111111111111111 unreadable"))
    assert text == "ValueError: field pan=411111******1111 unreadable"
    assert len(summarize_error(RuntimeError("x" * 500), limit=50)) == 50
    assert terminal.summarize_error is summarize_error


def test_cli_output_masks_whatever_a_result_carries() -> None:
    """A Result built by hand (or by a buggy mapping) with a full number is still masked on output."""
    from posbridge.cli.formatting import format_result, result_to_json
    from posbridge.model import Operation, Result, Status

    result = Result(Operation.SALE, Status.APPROVED, masked_pan="4111111111111111", card_scheme="VISA")
    assert "4111111111111111" not in format_result(result)
    assert "VISA 411111******1111" in format_result(result)
    assert result_to_json(result)["masked_pan"] == "411111******1111"


def test_card_numbers_in_raw_bytes_are_masked_to_the_same_length_and_nothing_else() -> None:
    from posbridge.protocols.common.model import could_be_card_number, mask_card_bytes

    line = b"\x02 4111111111111111 20261203092430 000000001234567 2200000000000004 4111111111111112"
    masked = mask_card_bytes(line)
    assert len(masked) == len(line)
    assert b"4111111111111111" not in masked and b"411111******1111" in masked
    assert b"220000******0004" in masked
    assert b"20261203092430" in masked  # a date-time is no card number
    assert b"000000001234567" in masked  # nor a zero-padded id
    assert b"4111111111111112" in masked  # not Luhn-valid
    assert could_be_card_number(b"5500000000000004") and not could_be_card_number(b"55000000000000041234")


def test_the_wire_log_and_describe_never_hold_a_full_card_number_in_hex(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from posbridge import protocols
    from posbridge.pump import WireLogger

    pan = b"4111111111111111"
    for name in protocols.names():
        spec = protocols.get(name)
        noise = b"garbage " + pan + b" more garbage"
        entries = spec.describe(noise)
        assert all(pan.hex() not in str(entry.to_dict()) and pan.decode() not in str(entry.to_dict())
                   for entry in entries)
        logger = logging.getLogger(f"posbridge.wire.test.{name}")
        with caplog.at_level(logging.DEBUG, logger=logger.name):
            WireLogger(spec.describe, logger)("rx", noise)
        assert caplog.text and pan.hex() not in caplog.text and pan.decode() not in caplog.text
        caplog.clear()


# --- mask_decoded: descriptions (to_dict()) whose text holds hex dumps -----------------------------------
SBER_PAN = "4276001234567896"  # Luhn-valid, a real issuer prefix (427600)


def test_mask_decoded_masks_a_card_number_in_a_text_field_and_in_track_2_shaped_hex() -> None:
    from posbridge.protocols.common.model import mask_decoded

    decoded = {"fields": [{"name": "receipt_data", "value": f"CARD {SBER_PAN} APPROVED"},
                          {"name": "57", "value": "4111111111111111D25122010000000000000F"}]}
    assert mask_decoded(decoded) == {"fields": [
        {"name": "receipt_data", "value": "CARD 427600******7896 APPROVED"},
        {"name": "57", "value": "411111******1111D25122010000000000000F"}]}  # digits in hex-looking text: masked


@pytest.mark.parametrize(("text", "expected"), [
    ("CARD 4276 0012 3456 7896 OK", "CARD 4276 00** **** 7896 OK"),
    ("4276-0012-3456-7896", "4276-00**-****-7896"),
    ("42760 01234 567896", "42760 0**** **7896"),
    ("ТЕЛ 8 800 555 35 35", "ТЕЛ 8 800 555 35 35"),  # 11 digits: no card number
    ("2026 12 03 10 00 00 0001", "2026 12 03 10 00 00 0001"),  # an issuer-less, Luhn-failing date
    # A run of digits the groups pass does not take for a card number must not undo what the
    # digit and hex passes masked: these came out in full for a while.
    ("CARD 4276001234567896 2025", "CARD 427600******7896 2025"),
    ("4276001234567896-01", "427600******7896-01"),
    ("34323736303031323334353637383936 12", "3432373630302a2a2a2a2a2a37383936 12"),
])
def test_mask_decoded_masks_a_card_number_written_in_groups_as_log_text_masking_does(text: str, expected: str) -> None:
    # A terminal's text field ("4276 0012 3456 7896") reached traces and captures in full:
    # mask_card_numbers (logs, errors) read grouped digits, mask_decoded did not.
    from posbridge.protocols.common.model import mask_decoded

    assert mask_decoded({"value": text}) == {"value": expected}


@pytest.mark.parametrize("hex_text", [
    "deadbeef1234567890123456cafebabe00",  # 16 decimal digits, no issuer's prefix
    "deadbeef4111111111111112cafebabe00",  # an issuer's prefix, not Luhn-valid
    "00000000004111111111111111ffff0000",  # 26 digits: longer than any card number
    "ab3132333435363738abababababababab",  # ASCII "12345678" in hex: not Luhn-valid as digits
])
def test_mask_decoded_leaves_hex_whose_digit_runs_are_no_card_numbers_as_it_is(hex_text: str) -> None:
    from posbridge.protocols.common.model import mask_decoded

    assert mask_decoded({"kind": "noise", "data": hex_text}) == {"kind": "noise", "data": hex_text}


def test_the_hex_of_a_card_numbers_bytes_is_the_hex_of_the_masked_number_and_stays_hex() -> None:
    from posbridge.protocols.common.model import mask_decoded

    data = b"\xfe" + SBER_PAN.encode() + b"\x03"
    # "3432373630302a…": its first 13 characters are digits that pass Luhn with a prefix of 3. They
    # came from masking, not from the text; they were starred too (fe343237***0302a…), breaking the
    # hex and hiding the first 6 digits the masked number shows.
    assert mask_decoded(data.hex()) == (b"\xfe" + b"427600******7896" + b"\x03").hex()
    assert mask_decoded(data.hex().upper()) == (b"\xfe" + b"427600******7896" + b"\x03").hex().upper()


@given(pan_body=st.text("0123456789", min_size=9, max_size=9), head=st.binary(max_size=40),
       tail=st.binary(max_size=40), upper=st.booleans())
def test_a_card_number_in_bytes_shown_as_hex_is_always_masked_and_the_hex_stays_hex(
        pan_body: str, head: bytes, tail: bytes, upper: bool) -> None:
    from posbridge.protocols.common.model import could_be_card_number, mask_card_bytes, mask_decoded

    pan = next(candidate for candidate in (f"427600{pan_body}{d}" for d in "0123456789")
               if could_be_card_number(candidate.encode()))
    data = head + b"|" + pan.encode() + b"|" + tail  # '|': the number is a run of its own
    text = data.hex().upper() if upper else data.hex()
    shown = mask_decoded(text)
    assert len(shown) == len(text)
    assert pan.encode().hex() not in shown.lower()
    at = text.lower().index(pan.encode().hex())
    assert shown[at:at + 32].lower() == mask_card_bytes(pan.encode()).hex()  # first 6 and last 4 shown
    # everything else is the text as it was, but digit runs of the text that could be card numbers
    outside = shown[:at] + shown[at + 32:]
    original = text[:at] + text[at + 32:]
    for mine, theirs in zip(outside, original):
        assert mine == theirs or (mine == "*" and theirs.isdigit())
