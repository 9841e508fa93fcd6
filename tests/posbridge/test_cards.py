"""Cards: Luhn, schemes, masking, the host-rules test-card table, the virtual card reader."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from posbridge.emulator.cards import DEFAULT_CARD, TEST_CARDS, Card, CardReader, TestCardRule, card_scheme, luhn_valid


def with_check_digit(body: str) -> str:
    """``body`` plus the Luhn check digit that makes it valid."""
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError("unreachable")


# --- Luhn ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pan",
    ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "5432543254325430",
     "639002000000000003", "79927398713"],
)
def test_luhn_valid(pan: str) -> None:
    assert luhn_valid(pan)


@pytest.mark.parametrize(
    "pan",
    ["4111111111111112", "79927398710", "", "0", "4111x11111111111", "４１１１１１１１１１１１１１１１"],
)
def test_luhn_invalid(pan: str) -> None:
    assert not luhn_valid(pan)


@given(st.text(alphabet="0123456789", min_size=1, max_size=18), st.integers(1, 9))
def test_luhn_detects_any_single_digit_change(body: str, delta: int) -> None:
    pan = with_check_digit(body)
    last = str((int(pan[-1]) + delta) % 10)
    assert luhn_valid(pan)
    assert not luhn_valid(pan[:-1] + last)


# --- schemes ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pan", "scheme"),
    [
        ("4111111111111111", "VISA"),
        ("4000000000000002", "VISA"),
        ("5100000000000008", "MASTERCARD"),
        ("5555555555555599", "MASTERCARD"),
        ("2221000000000009", "MASTERCARD"),
        ("2720990000000007", "MASTERCARD"),
        ("2200000000000004", "MIR"),
        ("2204999999999999", "MIR"),
        ("2205000000000003", "UNKNOWN"),
        ("6011000000000004", "DISCOVER"),
        ("6440000000000000", "DISCOVER"),
        ("6500000000000000", "DISCOVER"),
        ("6200000000000005", "UNIONPAY"),
        ("639002000000000003", "MAESTRO"),
        ("5018000000000000", "MAESTRO"),
        ("6761000000000000", "MAESTRO"),
        ("3528000000000000", "JCB"),
        ("3589000000000000", "JCB"),
        ("340000000000009", "AMEX"),
        ("370000000000002", "AMEX"),
        ("9999999999999995", "UNKNOWN"),
        ("1", "UNKNOWN"),
        ("", "UNKNOWN"),
        ("abcd", "UNKNOWN"),
    ],
)
def test_card_scheme(pan: str, scheme: str) -> None:
    assert card_scheme(pan) == scheme
    if pan:
        assert Card(pan).scheme == scheme


# --- Card ---------------------------------------------------------------------------------------
def test_card_repr_and_str_mask_the_pan() -> None:
    card = Card("4111 1111 1111 1111", "2512", "IVAN IVANOV")
    assert card.pan == "4111111111111111"  # spaces dropped: the reader reads digits
    assert card.masked_pan == "411111******1111"
    for shown in (repr(card), str(card), f"{card}", f"{card!r}", repr([card]), repr({"c": card})):
        assert "4111111111111111" not in shown
        assert "411111******1111" in shown


def test_card_defaults_and_value_semantics() -> None:
    card = Card("5100000000000008")
    assert card.expiry == "3012" and card.holder == ""
    assert card == Card("5100 0000 0000 0008")
    with pytest.raises(AttributeError):
        card.pan = "4111111111111111"  # type: ignore[misc]


def test_default_card() -> None:
    assert Card("4111111111111111", "3012") == DEFAULT_CARD
    assert TEST_CARDS[DEFAULT_CARD.pan].approved


# --- the test-card table ------------------------------------------------------------------------
EXPECTED_TABLE = {
    "4111111111111111": (True, "00"),
    "5100000000000008": (True, "00"),
    "6011000000000004": (True, "00"),
    "639002000000000003": (True, "00"),
    "5555555555555599": (True, "00"),
    "4444000000001111": (True, "00"),
    "5555555555555557": (False, "-2011"),
    "4444333322221111": (False, "-2011"),
    "4000000000000002": (False, "-2016"),
    "5555555544444442": (False, "-2016"),
    "4444444444444422": (False, "913"),
    "4444444444444455": (False, "902"),
    "4444444444443333": (False, "123"),
    "4444444444446666": (False, "-20010"),
    "4444444411111111": (False, "5"),
    "4444444499999999": (False, "151017"),
    "5432543254325430": (False, "116"),
}


def test_test_card_table_is_the_host_rules_table() -> None:
    assert {pan: (r.approved, r.code) for pan, r in TEST_CARDS.items()} == EXPECTED_TABLE


@pytest.mark.parametrize("pan", sorted(EXPECTED_TABLE))
def test_test_card_rows(pan: str) -> None:
    rule = TEST_CARDS[pan]
    assert isinstance(rule, TestCardRule)
    assert rule.pan == pan and pan.isdigit()
    assert luhn_valid(pan)  # every table card is a well-formed number: the table, not Luhn, decides
    assert rule.text == "ОДОБРЕНО" if rule.approved else rule.text.startswith("ОТКЛОНЕНО: ")
    assert pan not in repr(rule)


def test_decline_texts_are_russian() -> None:
    texts = {r.code: r.text for r in TEST_CARDS.values()}
    assert texts["116"] == "ОТКЛОНЕНО: НЕДОСТАТОЧНО СРЕДСТВ"
    assert texts["123"] == "ОТКЛОНЕНО: ПРЕВЫШЕН ЛИМИТ"
    assert texts["913"] == "ОТКЛОНЕНО: НЕВЕРНЫЙ ФОРМАТ СООБЩЕНИЯ"


# --- the card reader ----------------------------------------------------------------------------
def test_reader_gives_presented_cards_in_order_then_the_default() -> None:
    reader = CardReader()
    a, b = Card("5100000000000008"), Card("6011000000000004", "2401")
    reader.present(a, b)
    assert reader.pending() == 2
    assert reader.next_card() is a
    assert reader.next_card() is b
    assert reader.next_card() is DEFAULT_CARD
    assert reader.pending() == 0


def test_reader_accepts_bare_numbers_and_its_own_default() -> None:
    default = Card("5555555555555599", "2801")
    reader = CardReader(default)
    reader.present("4444 0000 0000 1111")
    assert reader.next_card() == Card("4444000000001111")
    assert reader.next_card() is default
    reader.present(default, default)
    reader.clear()
    assert reader.pending() == 0
    assert "5555555555555599" not in repr(reader)


def test_reader_is_thread_safe() -> None:
    reader = CardReader()
    cards = [Card(with_check_digit(f"220000{i:09d}")) for i in range(400)]
    reader.present(*cards)
    got: list[Card] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(100):
            card = reader.next_card()
            with lock:
                got.append(card)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.pan for c in got) == sorted(c.pan for c in cards)
