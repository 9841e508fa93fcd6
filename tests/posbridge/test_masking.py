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
