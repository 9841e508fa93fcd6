"""The virtual terminal's bank host: every rule of host-rules.md and the decisions host.py documents."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from posbridge.emulator.cards import DEFAULT_CARD, TEST_CARDS, Card
from posbridge.emulator.host import TEXTS, BankHost, HostConfig, HostDecision, Limits
from posbridge.journal import Journal, OperationRecord
from posbridge.model import Operation, Request, Status, Totals

from .test_cards import with_check_digit

NOW = datetime(2025, 3, 10, 12, 0, 0)
OTHER_CARD = Card(with_check_digit("220070123456789"), "2712")  # a valid MIR card not in the table

Op = Operation


class Clock:
    """An injectable host clock that tests move by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


_stans = itertools.count(1)


def next_stan() -> str:
    return str(next(_stans))


def run(
    host: BankHost,
    op: Operation,
    amount: int | None = None,
    card: Card | None = None,
    *,
    stan: str | None = None,
    **fields: object,
) -> HostDecision:
    """Send one request (with a fresh STAN unless given); card-present operations read ``card``."""
    if card is None and op in (Op.SALE, Op.PREAUTH):
        card = DEFAULT_CARD
    request = Request(op, amount, transaction_id=stan or next_stan(), **fields)  # type: ignore[arg-type]
    return host.process(request, card)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal() -> Iterator[Journal]:
    j = Journal()
    yield j
    j.close()


@pytest.fixture
def host(journal: Journal, clock: Clock) -> BankHost:
    return BankHost(journal, HostConfig(), clock)


def recompute_totals(records: list[OperationRecord], batch: int, currency: int = 643) -> Totals:
    """Settlement totals recomputed in Python from the journal's rows (independently of its SQL)."""
    by_id = {r.id: r for r in records}
    reversed_ids = {
        r.original_id for r in records if r.operation is Op.EMERGENCY_REVERSAL and r.status is Status.APPROVED
    }

    def live(r: OperationRecord) -> bool:
        approved = r.status is Status.APPROVED and r.operation is not Op.EMERGENCY_REVERSAL
        return approved and r.id not in reversed_ids

    voided = {r.original_id for r in records if r.operation in (Op.CANCEL, Op.CANCEL_PREAUTH) and live(r)}
    mine = [r for r in records if r.batch == batch and r.currency == currency and live(r)]
    sales = [r.amount or 0 for r in mine if r.operation in (Op.SALE, Op.COMPLETION) and r.id not in voided]
    refunds = [r.amount or 0 for r in mine if r.operation is Op.REFUND and r.id not in voided]
    cancels = [
        r.amount or 0 for r in mine
        if r.operation is Op.CANCEL
        and by_id[r.original_id or 0].operation in (Op.SALE, Op.COMPLETION, Op.REFUND)
    ]
    return Totals(currency, len(sales), sum(sales), len(refunds), sum(refunds), len(cancels), sum(cancels))


def assert_totals_match_journal(host: BankHost) -> Totals:
    totals = host.totals()
    assert totals == recompute_totals(host.journal.ledger.operations(), host.batch_number)
    return totals


# --- test cards ---------------------------------------------------------------------------------
@pytest.mark.parametrize("op", [Op.SALE, Op.PREAUTH])
@pytest.mark.parametrize("pan", sorted(TEST_CARDS))
@pytest.mark.parametrize("expiry", ["3012", "1901"])  # "whatever its printed expiry"
def test_every_test_card_gives_its_outcome(host: BankHost, op: Operation, pan: str, expiry: str) -> None:
    rule = TEST_CARDS[pan]
    d = run(host, op, 12_345, Card(pan, expiry))
    assert d.code == rule.code
    assert d.text == rule.text
    assert d.masked_pan == Card(pan).masked_pan and pan not in repr(d)
    assert d.expiry == expiry and d.amount == 12_345 and d.currency == 643
    if rule.approved:
        assert d.status is Status.APPROVED and d.code == "00"
        assert d.rrn is not None and len(d.rrn) == 12 and d.rrn.isdigit()
        assert d.auth_code is not None and len(d.auth_code) == 6 and d.auth_code.isalnum()
    else:
        assert d.status is Status.DECLINED
        assert d.rrn is None and d.auth_code is None
    expected_sales = 12_345 if rule.approved and op is Op.SALE else 0
    assert host.totals().sale_amount == expected_sales


def test_unknown_valid_card_is_approved(host: BankHost) -> None:
    d = run(host, Op.SALE, 500, OTHER_CARD)
    assert d.status is Status.APPROVED and d.card_scheme == "MIR"


@pytest.mark.parametrize("pan", ["4111111111111112", "2200701234567890123456", "22007", "4111x11111111111"])
def test_bad_card_number_is_111(host: BankHost, pan: str) -> None:
    for op in (Op.SALE, Op.PREAUTH):
        d = run(host, op, 500, Card(pan))
        assert (d.status, d.code, d.text) == (Status.DECLINED, "111", "ОТКЛОНЕНО: НЕВЕРНЫЙ НОМЕР КАРТЫ")
    assert host.totals() == Totals()


def test_expiry_by_the_host_clock(host: BankHost, clock: Clock) -> None:
    this_month = Card(OTHER_CARD.pan, "2503")  # clock is 2025-03-10
    last_month = Card(OTHER_CARD.pan, "2502")
    assert run(host, Op.SALE, 100, this_month).status is Status.APPROVED
    d = run(host, Op.SALE, 100, last_month)
    assert (d.status, d.code, d.text) == (Status.DECLINED, "101", "ОТКЛОНЕНО: СРОК ДЕЙСТВИЯ КАРТЫ ИСТЕК")
    clock.now = datetime(2025, 3, 31, 23, 59, 59)  # valid through the last day of the month
    assert run(host, Op.PREAUTH, 100, this_month).status is Status.APPROVED
    clock.now = datetime(2025, 4, 1, 0, 0, 0)
    assert run(host, Op.PREAUTH, 100, this_month).code == "101"


@pytest.mark.parametrize("expiry", ["2513", "2500", "25-3", "253", ""])
def test_malformed_expiry_is_71015(host: BankHost, expiry: str) -> None:
    assert run(host, Op.SALE, 100, Card(OTHER_CARD.pan, expiry)).code == "71015"


def test_sale_without_a_card_is_declined(host: BankHost) -> None:
    d = host.process(Request(Op.SALE, 100, transaction_id=next_stan()), None)
    assert (d.status, d.code) == (Status.DECLINED, "71015")


# --- amounts and format -------------------------------------------------------------------------
@pytest.mark.parametrize("amount", [0, -1, -10_000, 10**12, None, 1.5, True])
@pytest.mark.parametrize("op", [Op.SALE, Op.PREAUTH, Op.REFUND, Op.CANCEL, Op.COMPLETION, Op.CANCEL_PREAUTH])
def test_bad_amount_is_110(host: BankHost, op: Operation, amount: object) -> None:
    sale = run(host, Op.SALE, 1000)
    d = run(host, op, amount, DEFAULT_CARD, rrn=sale.rrn)  # type: ignore[arg-type]
    assert (d.status, d.code, d.text) == (Status.DECLINED, "110", "ОТКЛОНЕНО: НЕВЕРНАЯ СУММА")
    assert host.totals() == Totals(sale_count=1, sale_amount=1000)


def test_twelve_digit_amount_is_fine(host: BankHost) -> None:
    assert run(host, Op.SALE, 999_999_999_999).status is Status.APPROVED
    assert host.totals().sale_amount == 999_999_999_999


@pytest.mark.parametrize("currency", [840, 1000, 0])
def test_other_or_bad_currency_is_913(host: BankHost, currency: int) -> None:
    d = host.process(Request(Op.SALE, 100, currency=currency, transaction_id=next_stan()), DEFAULT_CARD)
    assert (d.status, d.code) == (Status.DECLINED, "913")


def test_malformed_stan_or_rrn_is_913(host: BankHost) -> None:
    assert host.process(Request(Op.SALE, 100, transaction_id="12a"), DEFAULT_CARD).code == "913"
    assert run(host, Op.REFUND, 100, rrn="12-34").code == "913"


def test_unknown_operation_is_913_and_not_journaled(host: BankHost) -> None:
    d = host.process(Request("bogus", 100), DEFAULT_CARD)  # type: ignore[arg-type]
    assert (d.status, d.code) == (Status.DECLINED, "913")
    assert host.journal.ledger.operations() == []


def test_operation_given_as_its_value(host: BankHost) -> None:
    request = Request("sale", 100, transaction_id=next_stan())  # type: ignore[arg-type]
    assert host.process(request, DEFAULT_CARD).approved


# --- one stage, two stages ----------------------------------------------------------------------
def test_sale_charges(host: BankHost) -> None:
    run(host, Op.SALE, 1000)
    run(host, Op.SALE, 2500, OTHER_CARD)
    assert assert_totals_match_journal(host) == Totals(sale_count=2, sale_amount=3500)


def test_preauth_holds_and_partial_completion_charges(host: BankHost) -> None:
    hold = run(host, Op.PREAUTH, 1000)
    assert hold.approved and host.totals() == Totals()  # a hold is not a charge
    done = run(host, Op.COMPLETION, 600, rrn=hold.rrn)
    assert done.approved and done.amount == 600
    assert done.auth_code == hold.auth_code and done.rrn != hold.rrn
    assert done.masked_pan == hold.masked_pan
    assert assert_totals_match_journal(host) == Totals(sale_count=1, sale_amount=600)
    again = run(host, Op.COMPLETION, 400, rrn=hold.rrn)  # completion closes the hold: the rest is released
    assert (again.status, again.code) == (Status.DECLINED, "9014")
    assert host.totals().sale_amount == 600


def test_full_completion(host: BankHost) -> None:
    hold = run(host, Op.PREAUTH, 1000)
    assert run(host, Op.COMPLETION, 1000, rrn=hold.rrn).approved
    assert host.totals() == Totals(sale_count=1, sale_amount=1000)


def test_completion_over_the_hold_is_110(host: BankHost) -> None:
    hold = run(host, Op.PREAUTH, 1000)
    d = run(host, Op.COMPLETION, 1001, rrn=hold.rrn)
    assert (d.status, d.code, d.text) == (Status.DECLINED, "110", "ОТКЛОНЕНО: СУММА БОЛЬШЕ ЗАБЛОКИРОВАННОЙ")
    assert run(host, Op.COMPLETION, 1000, rrn=hold.rrn).approved


def test_completion_of_unknown_or_wrong_original(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    assert run(host, Op.COMPLETION, 100, rrn="000000000000").code == "9011"
    assert run(host, Op.COMPLETION, 100, rrn=sale.rrn).code == "9015"
    declined = run(host, Op.PREAUTH, 100, Card("5432543254325430"))
    assert declined.rrn is None


def test_hold_expires_after_hold_ttl(journal: Journal, clock: Clock) -> None:
    host = BankHost(journal, HostConfig(hold_ttl=timedelta(hours=2)), clock)
    early, late = run(host, Op.PREAUTH, 1000), run(host, Op.PREAUTH, 2000)
    clock.advance(hours=2)  # exactly at the TTL: still held
    assert run(host, Op.COMPLETION, 1000, rrn=early.rrn).approved
    clock.advance(seconds=1)
    d = run(host, Op.COMPLETION, 2000, rrn=late.rrn)
    assert (d.status, d.code, d.text) == (Status.DECLINED, "9013", "ОТКЛОНЕНО: СРОК АВТОРИЗАЦИИ ИСТЕК")
    assert run(host, Op.CANCEL_PREAUTH, 2000, rrn=late.rrn).code == "9013"
    assert host.totals() == Totals(sale_count=1, sale_amount=1000)


def test_default_hold_ttl_is_seven_days(host: BankHost, clock: Clock) -> None:
    hold = run(host, Op.PREAUTH, 1000)
    clock.advance(days=7, seconds=1)
    assert run(host, Op.COMPLETION, 1000, rrn=hold.rrn).code == "9013"


def test_completion_works_across_batches(host: BankHost) -> None:
    hold = run(host, Op.PREAUTH, 1000)
    run(host, Op.SETTLEMENT)
    assert run(host, Op.COMPLETION, 700, rrn=hold.rrn).approved
    assert host.totals() == Totals(sale_count=1, sale_amount=700)


def test_cancel_preauth_releases_the_hold(host: BankHost) -> None:
    hold = run(host, Op.PREAUTH, 1000)
    assert run(host, Op.CANCEL_PREAUTH, 999, rrn=hold.rrn).code == "110"  # whole hold only
    released = run(host, Op.CANCEL_PREAUTH, 1000, rrn=hold.rrn)
    assert released.approved and released.masked_pan == hold.masked_pan
    assert run(host, Op.COMPLETION, 1000, rrn=hold.rrn).code == "9014"
    assert run(host, Op.CANCEL_PREAUTH, 1000, rrn=hold.rrn).code == "9014"
    assert assert_totals_match_journal(host) == Totals()  # releasing a hold is not a cancel of money


def test_cancel_preauth_of_a_sale_is_9015(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    assert run(host, Op.CANCEL_PREAUTH, 1000, rrn=sale.rrn).code == "9015"


def test_cancel_preauth_after_completion_is_9014(host: BankHost) -> None:
    hold = run(host, Op.PREAUTH, 1000)
    run(host, Op.COMPLETION, 500, rrn=hold.rrn)
    assert run(host, Op.CANCEL_PREAUTH, 1000, rrn=hold.rrn).code == "9014"


# --- cancel (void) ------------------------------------------------------------------------------
def test_cancel_releases_a_sale_of_the_open_batch(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    run(host, Op.SALE, 300)
    d = run(host, Op.CANCEL, 1000, rrn=sale.rrn, original_operation=Op.SALE)
    assert d.approved and d.amount == 1000 and d.masked_pan == sale.masked_pan and d.rrn != sale.rrn
    assert assert_totals_match_journal(host) == Totals(
        sale_count=1, sale_amount=300, cancel_count=1, cancel_amount=1000
    )
    again = run(host, Op.CANCEL, 1000, rrn=sale.rrn)
    assert (again.code, again.text) == ("9014", "ОТКЛОНЕНО: ОПЕРАЦИЯ УЖЕ ОТМЕНЕНА")


@pytest.mark.parametrize("amount", [999, 1001, 1])
def test_cancel_is_for_the_whole_amount_only(host: BankHost, amount: int) -> None:
    sale = run(host, Op.SALE, 1000)
    d = run(host, Op.CANCEL, amount, rrn=sale.rrn)
    assert (d.status, d.code, d.text) == (Status.DECLINED, "110", "ОТКЛОНЕНО: ОТМЕНА ТОЛЬКО НА ПОЛНУЮ СУММУ")
    assert host.totals() == Totals(sale_count=1, sale_amount=1000)


def test_cancel_needs_a_known_original_of_the_right_kind(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    assert run(host, Op.CANCEL, 1000).code == "9012"
    assert run(host, Op.CANCEL, 1000, rrn="999999999999").code == "9011"
    assert run(host, Op.CANCEL, 1000, rrn=sale.rrn, original_operation=Op.REFUND).code == "9015"
    cancel = run(host, Op.CANCEL, 1000, rrn=sale.rrn)
    assert run(host, Op.CANCEL, 1000, rrn=cancel.rrn).code == "9015"  # a cancel is not cancelled


def test_after_settlement_cancel_is_refused_and_only_refund_works(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    run(host, Op.SETTLEMENT)
    d = run(host, Op.CANCEL, 1000, rrn=sale.rrn)
    assert (d.status, d.code, d.text) == (
        Status.DECLINED, "9010", "ОТКЛОНЕНО: ОПЕРАЦИЯ НЕ В ОТКРЫТОМ ПАКЕТЕ, ИСПОЛЬЗУЙТЕ ВОЗВРАТ"
    )
    r = run(host, Op.REFUND, 1000, rrn=sale.rrn)
    assert r.approved and r.batch_number == 2
    assert host.totals() == Totals(refund_count=1, refund_amount=1000)


def test_cancel_of_a_reversed_sale_is_9014(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000, stan="31")
    run(host, Op.EMERGENCY_REVERSAL, 1000, stan="31")
    d = run(host, Op.CANCEL, 1000, rrn=sale.rrn)
    assert (d.code, d.text) == ("9014", "ОТКЛОНЕНО: ИСХОДНАЯ ОПЕРАЦИЯ НЕ ОДОБРЕНА ИЛИ ОТМЕНЕНА")


def test_cancel_of_a_refunded_sale_is_refused(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    run(host, Op.REFUND, 100, rrn=sale.rrn)
    d = run(host, Op.CANCEL, 1000, rrn=sale.rrn)
    assert (d.code, d.text) == ("9014", "ОТКЛОНЕНО: ПО ОПЕРАЦИИ БЫЛ ВОЗВРАТ")


def test_cancel_of_a_refund_gives_the_refundable_amount_back(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    refund = run(host, Op.REFUND, 1000, rrn=sale.rrn)
    assert run(host, Op.REFUND, 1, rrn=sale.rrn).code == "110"
    assert run(host, Op.CANCEL, 1000, rrn=refund.rrn, original_operation=Op.REFUND).approved
    assert assert_totals_match_journal(host) == Totals(
        sale_count=1, sale_amount=1000, cancel_count=1, cancel_amount=1000
    )
    assert run(host, Op.REFUND, 1000, rrn=sale.rrn).approved
    assert run(host, Op.CANCEL, 1000, rrn=sale.rrn).code == "9014"  # refunded now


def test_cancel_of_a_completion(host: BankHost) -> None:
    hold = run(host, Op.PREAUTH, 1000)
    done = run(host, Op.COMPLETION, 800, rrn=hold.rrn)
    assert run(host, Op.CANCEL, 800, rrn=done.rrn).approved
    assert host.totals() == Totals(cancel_count=1, cancel_amount=800)
    assert run(host, Op.COMPLETION, 800, rrn=hold.rrn).code == "9014"  # the hold does not come back


def test_cancel_of_a_preauth_releases_it(host: BankHost) -> None:
    hold = run(host, Op.PREAUTH, 1000)
    assert run(host, Op.CANCEL, 1000, rrn=hold.rrn, original_operation=Op.PREAUTH).approved
    assert run(host, Op.COMPLETION, 1000, rrn=hold.rrn).code == "9014"
    assert host.totals() == Totals()


# --- refund -------------------------------------------------------------------------------------
def test_partial_refunds_never_exceed_the_charge(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    assert run(host, Op.REFUND, 300, rrn=sale.rrn).approved
    assert run(host, Op.REFUND, 700, rrn=sale.rrn).approved
    d = run(host, Op.REFUND, 1, rrn=sale.rrn)
    assert (d.status, d.code, d.text) == (
        Status.DECLINED, "110", "ОТКЛОНЕНО: СУММА ВОЗВРАТА БОЛЬШЕ СУММЫ ОПЛАТЫ"
    )
    assert assert_totals_match_journal(host) == Totals(
        sale_count=1, sale_amount=1000, refund_count=2, refund_amount=1000
    )


def test_refund_over_the_charge_at_once(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    assert run(host, Op.REFUND, 1001, rrn=sale.rrn).code == "110"
    assert run(host, Op.REFUND, 1000, rrn=sale.rrn).approved


def test_refund_needs_an_rrn(host: BankHost) -> None:
    run(host, Op.SALE, 1000)
    d = run(host, Op.REFUND, 1000)
    assert (d.status, d.code, d.text) == (Status.DECLINED, "9012", "ОТКЛОНЕНО: НУЖЕН RRN ИСХОДНОЙ ОПЕРАЦИИ")
    assert run(host, Op.REFUND, 1000, rrn="000000000001").code == "9011"
    assert host.totals().refund_count == 0


def test_refund_of_a_cancelled_or_uncompleted_operation(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    run(host, Op.CANCEL, 1000, rrn=sale.rrn)
    assert run(host, Op.REFUND, 100, rrn=sale.rrn).code == "9014"
    hold = run(host, Op.PREAUTH, 1000)
    assert run(host, Op.REFUND, 100, rrn=hold.rrn).code == "9015"
    refund_of_nothing = run(host, Op.REFUND, 100, rrn=run(host, Op.SALE, 50).rrn)
    assert refund_of_nothing.code == "110"


def test_refund_by_the_preauth_rrn_refunds_its_completion(host: BankHost) -> None:
    hold = run(host, Op.PREAUTH, 1000)
    run(host, Op.COMPLETION, 600, rrn=hold.rrn)
    assert run(host, Op.REFUND, 601, rrn=hold.rrn).code == "110"
    assert run(host, Op.REFUND, 600, rrn=hold.rrn).approved
    assert host.totals() == Totals(sale_count=1, sale_amount=600, refund_count=1, refund_amount=600)


def test_refund_with_a_card(host: BankHost, clock: Clock) -> None:
    sale = run(host, Op.SALE, 1000, OTHER_CARD)
    assert run(host, Op.REFUND, 100, Card("4111111111111112"), rrn=sale.rrn).code == "111"
    assert run(host, Op.REFUND, 100, Card(OTHER_CARD.pan, "2401"), rrn=sale.rrn).code == "101"
    d = run(host, Op.REFUND, 100, OTHER_CARD, rrn=sale.rrn)
    assert d.approved and d.masked_pan == OTHER_CARD.masked_pan
    without = run(host, Op.REFUND, 100, rrn=sale.rrn)  # no card: back to the card that paid
    assert without.approved and without.masked_pan == OTHER_CARD.masked_pan


def test_refund_in_a_later_batch_in_parts(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    run(host, Op.REFUND, 400, rrn=sale.rrn)
    run(host, Op.SETTLEMENT)
    assert run(host, Op.REFUND, 601, rrn=sale.rrn).code == "110"
    assert run(host, Op.REFUND, 600, rrn=sale.rrn).approved
    assert host.totals() == Totals(refund_count=1, refund_amount=600)


# --- emergency reversal -------------------------------------------------------------------------
def test_emergency_reversal_reverses_an_approved_operation(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000, stan="77")
    run(host, Op.SALE, 300)
    d = run(host, Op.EMERGENCY_REVERSAL, 1000, stan="77", original_operation=Op.SALE)
    assert (d.status, d.code, d.text) == (Status.APPROVED, "400", "ОТМЕНА ПРОВЕДЕНА")
    assert (d.rrn, d.auth_code, d.amount, d.masked_pan) == (sale.rrn, sale.auth_code, 1000, sale.masked_pan)
    assert not d.duplicate
    assert assert_totals_match_journal(host) == Totals(sale_count=1, sale_amount=300)
    again = run(host, Op.EMERGENCY_REVERSAL, 1000, stan="77")
    assert (again.status, again.code, again.duplicate) == (Status.APPROVED, "400", True)
    assert host.totals() == Totals(sale_count=1, sale_amount=300)
    assert run(host, Op.REFUND, 100, rrn=sale.rrn).code == "9014"  # a reversed sale is not refundable


def test_blind_emergency_reversal_changes_nothing(host: BankHost) -> None:
    run(host, Op.SALE, 1000, stan="5")
    before = host.totals()
    d = run(host, Op.EMERGENCY_REVERSAL, 1000, stan="6")  # the host never saw STAN 6
    # Approved, and explicitly "nothing to reverse", so the ECR can tell it from a reversal (400).
    assert (d.status, d.code, d.text, d.duplicate) == (
        Status.APPROVED, "9020", "ОТМЕНЯТЬ НЕЧЕГО: ОПЕРАЦИЯ НЕ ПРОВОДИЛАСЬ", False)
    assert d.rrn is None
    assert host.totals() == before
    no_stan = host.process(Request(Op.EMERGENCY_REVERSAL, 1000), None)
    assert (no_stan.status, no_stan.code) == (Status.APPROVED, "9020")
    assert host.totals() == before


def test_emergency_reversal_of_a_declined_operation_changes_nothing(host: BankHost) -> None:
    run(host, Op.SALE, 1000, Card("5432543254325430"), stan="8")
    d = run(host, Op.EMERGENCY_REVERSAL, 1000, stan="8")
    assert (d.status, d.code) == (Status.APPROVED, "9020")


def test_emergency_reversal_after_settlement_says_refund_it(host: BankHost) -> None:
    # Charged and settled since: a reversal cannot undo it, and must not claim "nothing to undo".
    run(host, Op.SALE, 1000, stan="9")
    totals = run(host, Op.SETTLEMENT).totals
    late = run(host, Op.EMERGENCY_REVERSAL, 1000, stan="9")
    assert (late.status, late.code) == (Status.DECLINED, "9010")
    assert host.journal.ledger.batch_totals("00344224", 1, 643) == totals
    # A STAN that was declined in the settled batch was never charged: nothing to reverse.
    run(host, Op.SALE, 1000, Card("5432543254325430"), stan="10")
    run(host, Op.SETTLEMENT)
    assert run(host, Op.EMERGENCY_REVERSAL, 1000, stan="10").code == "9020"


def test_emergency_reversal_with_another_amount_reverses_nothing(host: BankHost) -> None:
    run(host, Op.SALE, 1000, stan="11")
    wrong = run(host, Op.EMERGENCY_REVERSAL, 999, stan="11")
    assert (wrong.status, wrong.code) == (Status.DECLINED, "9017")
    assert host.totals() == Totals(sale_count=1, sale_amount=1000)
    assert run(host, Op.EMERGENCY_REVERSAL, 1000, stan="11").code == "400"
    assert host.totals() == Totals()


def test_emergency_reversal_of_a_refund_and_of_a_completion(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    run(host, Op.REFUND, 1000, rrn=sale.rrn, stan="20")
    assert run(host, Op.EMERGENCY_REVERSAL, 1000, stan="20").code == "400"
    assert run(host, Op.REFUND, 1000, rrn=sale.rrn).approved  # refundable again
    hold = run(host, Op.PREAUTH, 500)
    run(host, Op.COMPLETION, 500, rrn=hold.rrn, stan="21")
    assert run(host, Op.EMERGENCY_REVERSAL, 500, stan="21").code == "400"
    assert run(host, Op.COMPLETION, 200, rrn=hold.rrn).approved  # held again
    assert_totals_match_journal(host)


def test_emergency_reversal_of_a_cancel_restores_the_sale(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    run(host, Op.CANCEL, 1000, rrn=sale.rrn, stan="30")
    assert run(host, Op.EMERGENCY_REVERSAL, 1000, stan="30").code == "400"
    assert assert_totals_match_journal(host) == Totals(sale_count=1, sale_amount=1000)


def test_emergency_reversal_with_later_operations_is_refused(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000, stan="40")
    run(host, Op.REFUND, 100, rrn=sale.rrn)
    d = run(host, Op.EMERGENCY_REVERSAL, 1000, stan="40")
    assert (d.status, d.code) == (Status.DECLINED, "9014")
    assert host.totals() == Totals(sale_count=1, sale_amount=1000, refund_count=1, refund_amount=100)


# --- duplicate control --------------------------------------------------------------------------
def test_repeated_stan_returns_the_first_outcome_and_charges_nothing(host: BankHost, clock: Clock) -> None:
    first = run(host, Op.SALE, 1000, stan="100")
    clock.advance(minutes=1)
    second = run(host, Op.SALE, 1000, stan="100")
    assert second.duplicate and not first.duplicate
    assert replace(second, duplicate=False) == first
    assert host.totals() == Totals(sale_count=1, sale_amount=1000)
    assert len(host.journal.ledger.operations()) == 1


@pytest.mark.parametrize("operation, amount, currency", [
    (Op.SALE, 5000, 643),  # another amount
    (Op.SALE, 1000, 840),  # another currency (refused before any check of its own)
    (Op.PREAUTH, 1000, 643),  # another operation
])
def test_same_stan_for_another_operation_is_declined_never_answered_with_the_first(
        host: BankHost, operation: Op, amount: int, currency: int) -> None:
    first = run(host, Op.SALE, 1000, stan="100")
    other = host.process(Request(operation, amount, currency, transaction_id="100"), OTHER_CARD)
    assert (other.status, other.code, other.duplicate) == (Status.DECLINED, "9016", False)
    assert other.rrn is None and other.rrn != first.rrn
    assert host.totals() == Totals(sale_count=1, sale_amount=1000)


def test_repeated_stan_of_a_decline_returns_the_decline(host: BankHost) -> None:
    first = run(host, Op.SALE, 1000, Card("5432543254325430"), stan="101")
    second = run(host, Op.SALE, 1000, DEFAULT_CARD, stan="101")
    assert second.duplicate and (second.status, second.code) == (Status.DECLINED, "116")
    assert replace(second, duplicate=False) == first
    assert host.totals() == Totals()


def test_same_stan_in_the_next_batch_is_a_new_operation(host: BankHost) -> None:
    run(host, Op.SALE, 1000, stan="102")
    run(host, Op.SETTLEMENT, stan="103")
    d = run(host, Op.SALE, 1000, stan="102")
    assert d.approved and not d.duplicate and d.batch_number == 2


def test_repeated_settlement_does_not_close_the_next_batch(host: BankHost) -> None:
    run(host, Op.SALE, 1000)
    first = run(host, Op.SETTLEMENT, stan="104")
    again = run(host, Op.SETTLEMENT, stan="104")
    assert again.duplicate and again.totals == first.totals and again.batch_number == 1
    assert host.batch_number == 2


def test_stan_is_per_terminal(journal: Journal, clock: Clock) -> None:
    a = BankHost(journal, HostConfig(terminal_id="00000001"), clock)
    b = BankHost(journal, HostConfig(terminal_id="00000002"), clock)
    assert not run(a, Op.SALE, 100, stan="1").duplicate
    assert not run(b, Op.SALE, 100, stan="1").duplicate
    assert run(a, Op.SALE, 100, stan="1").duplicate
    assert a.totals().sale_count == 1 and b.totals().sale_count == 1


# --- settlement and reports ---------------------------------------------------------------------
def test_settlement_totals_by_kind_equal_the_journal_and_close_the_batch(host: BankHost) -> None:
    s1 = run(host, Op.SALE, 1000)
    s2 = run(host, Op.SALE, 2000)
    run(host, Op.SALE, 50, Card("5432543254325430"))  # declined: not in totals
    run(host, Op.CANCEL, 2000, rrn=s2.rrn)
    run(host, Op.REFUND, 250, rrn=s1.rrn)
    hold = run(host, Op.PREAUTH, 700)
    run(host, Op.COMPLETION, 500, rrn=hold.rrn)
    run(host, Op.PREAUTH, 900)  # held only
    run(host, Op.SALE, 40, stan="900")
    run(host, Op.EMERGENCY_REVERSAL, 40, stan="900")
    expected = Totals(
        sale_count=2, sale_amount=1500, refund_count=1, refund_amount=250, cancel_count=1, cancel_amount=2000
    )
    assert assert_totals_match_journal(host) == expected
    short, full = run(host, Op.SHORT_REPORT), run(host, Op.FULL_REPORT)
    assert short.totals == full.totals == expected and host.batch_number == 1  # reports do not close
    d = run(host, Op.SETTLEMENT)
    assert (d.status, d.code, d.totals, d.batch_number) == (Status.APPROVED, "00", expected, 1)
    assert d.totals is not None and d.totals.net_amount == 1250
    assert host.batch_number == 2 and host.totals() == Totals()
    assert recompute_totals(host.journal.ledger.operations(), 1) == expected
    assert run(host, Op.SALE, 10).batch_number == 2
    assert run(host, Op.SETTLEMENT).totals == Totals(sale_count=1, sale_amount=10)
    assert run(host, Op.SETTLEMENT).totals == Totals()  # an empty batch settles too
    assert host.batch_number == 4


def test_test_connection_and_slip_copy(host: BankHost) -> None:
    d = run(host, Op.TEST_CONNECTION)
    assert (d.status, d.code, d.text) == (Status.APPROVED, "00", "ОДОБРЕНО")
    copy = run(host, Op.SLIP_COPY)
    assert copy.approved and copy.rrn is None and copy.totals is None
    # the last slip is the terminal's business: the host journals nothing for it
    assert [r.operation for r in host.journal.ledger.operations()] == [Op.TEST_CONNECTION]


def test_batch_survives_a_restart_on_a_real_file(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "terminal.sqlite"
    journal = Journal(path)
    host = BankHost(journal, HostConfig(seed=7), clock)
    first = run(host, Op.SALE, 1000, stan="1")
    run(host, Op.SALE, 2000, OTHER_CARD, stan="2")
    hold = run(host, Op.PREAUTH, 500, stan="3")
    journal.close()

    journal = Journal(path)
    host = BankHost(journal, HostConfig(seed=7), clock)  # same seed: RRNs must still not repeat
    assert host.batch_number == 1
    dup = run(host, Op.SALE, 1000, stan="1")
    assert dup.duplicate and replace(dup, duplicate=False) == first
    third = run(host, Op.SALE, 300, stan="4")
    assert third.rrn not in {first.rrn, hold.rrn}
    assert run(host, Op.COMPLETION, 500, rrn=hold.rrn, stan="5").approved
    d = run(host, Op.SETTLEMENT, stan="6")
    assert d.totals == Totals(sale_count=4, sale_amount=3800)
    assert d.totals == recompute_totals(journal.ledger.operations(), 1)
    journal.close()

    journal = Journal(path)
    host = BankHost(journal, HostConfig(seed=7), clock)
    assert host.batch_number == 2 and host.totals() == Totals()
    assert run(host, Op.REFUND, 1000, rrn=first.rrn).approved
    journal.close()


# --- faults -------------------------------------------------------------------------------------
def test_no_connection(host: BankHost) -> None:
    host.config.fault = "no_connection"
    d = run(host, Op.SALE, 1000, stan="50")
    assert (d.status, d.code, d.text) == (Status.NO_CONNECTION, "", "НЕТ СВЯЗИ С БАНКОМ")
    assert d.rrn is None and host.totals() == Totals()
    assert run(host, Op.TEST_CONNECTION).status is Status.NO_CONNECTION
    assert run(host, Op.SETTLEMENT).status is Status.NO_CONNECTION and host.batch_number == 1
    host.config.fault = None
    again = run(host, Op.SALE, 1000, stan="50")  # it never reached the host: processed now
    assert again.approved and not again.duplicate
    assert host.totals() == Totals(sale_count=1, sale_amount=1000)


def test_request_not_sent(host: BankHost) -> None:
    host.config.fault = "request_not_sent"
    d = run(host, Op.SALE, 1000)
    assert (d.status, d.code) == (Status.DECLINED, "151018")
    assert d.text == "ОТКЛОНЕНО: ТАЙМАУТ, ЗАПРОС НЕ ОТПРАВЛЕН" and d.rrn is None
    assert host.totals() == Totals()


def test_answer_lost_is_reversed_by_the_terminal(host: BankHost) -> None:
    sale = run(host, Op.SALE, 1000)
    host.config.fault = "answer_lost"
    d = run(host, Op.SALE, 700, stan="60")
    assert (d.status, d.code, d.auto_reversed) == (Status.REVERSED, "151019", True)
    assert d.text == "ОПЕРАЦИЯ ОТМЕНЕНА: НЕТ ОТВЕТА БАНКА"
    assert not d.approved and d.rrn is None
    assert run(host, Op.REFUND, 1000, rrn=sale.rrn).status is Status.REVERSED
    assert assert_totals_match_journal(host) == Totals(sale_count=1, sale_amount=1000)
    reversal = host.journal.ledger.operations()[-1]
    assert (reversal.operation, reversal.status, reversal.code, reversal.auto_reversed) == (
        Op.EMERGENCY_REVERSAL, Status.APPROVED, "400", True
    )
    # a reversal still goes through (it is retried until answered); the ECR's own one is harmless
    er = run(host, Op.EMERGENCY_REVERSAL, 700, stan="60")
    assert (er.status, er.code, er.duplicate) == (Status.APPROVED, "400", True)
    settle = run(host, Op.SETTLEMENT)
    assert (settle.status, settle.code) == (Status.DECLINED, "151019") and host.batch_number == 1
    host.config.fault = None
    dup = run(host, Op.SALE, 700, stan="60")
    assert dup.duplicate and dup.status is Status.REVERSED  # the host saw it: first outcome
    assert run(host, Op.SETTLEMENT).totals == Totals(sale_count=1, sale_amount=1000)


def test_unknown_fault_and_bad_config_are_refused() -> None:
    with pytest.raises(ValueError):
        HostConfig(fault="slow")
    with pytest.raises(ValueError):
        HostConfig(hold_ttl=timedelta(minutes=59))
    with pytest.raises(ValueError):
        HostConfig(hold_ttl=timedelta(days=46))
    with pytest.raises(ValueError):
        HostConfig(currency=1)
    with pytest.raises(ValueError):
        HostConfig(latency=-1)
    assert HostConfig(latency=2.5).latency == 2.5


# --- limits -------------------------------------------------------------------------------------
def test_terminal_single_limit_is_903(journal: Journal, clock: Clock) -> None:
    host = BankHost(journal, HostConfig(terminal_limits=Limits(single_max=10_000)), clock)
    assert run(host, Op.SALE, 10_000).approved
    d = run(host, Op.PREAUTH, 10_001)
    assert (d.status, d.code, d.text) == (Status.DECLINED, "903", "ОТКЛОНЕНО: СУММА ПРЕВЫШАЕТ ЛИМИТ")


def test_card_limits_are_123(journal: Journal, clock: Clock) -> None:
    config = HostConfig(card_limits={"2200 7012 3456 789" + OTHER_CARD.pan[-1]: Limits(5_000, 8_000)})
    host = BankHost(journal, config, clock)
    assert run(host, Op.SALE, 5_001, OTHER_CARD).code == "123"
    assert run(host, Op.SALE, 5_000, OTHER_CARD).approved
    hold = run(host, Op.PREAUTH, 3_000, OTHER_CARD)
    d = run(host, Op.SALE, 1, OTHER_CARD)
    assert (d.status, d.code, d.text) == (Status.DECLINED, "123", "ОТКЛОНЕНО: ПРЕВЫШЕН ЛИМИТ")
    assert run(host, Op.SALE, 9_000).approved  # another card: its own limits (none)
    run(host, Op.CANCEL_PREAUTH, 3_000, rrn=hold.rrn)  # a released hold no longer counts
    assert run(host, Op.SALE, 3_000, OTHER_CARD).approved
    clock.advance(days=1)  # a new day
    assert run(host, Op.SALE, 5_000, OTHER_CARD).approved


def test_terminal_daily_limit_is_123(journal: Journal, clock: Clock) -> None:
    host = BankHost(journal, HostConfig(terminal_limits=Limits(daily_max=10_000)), clock)
    sale = run(host, Op.SALE, 6_000)
    assert run(host, Op.SALE, 4_000, OTHER_CARD).approved
    assert run(host, Op.SALE, 1).code == "123"
    run(host, Op.REFUND, 4_000, rrn=sale.rrn)
    assert run(host, Op.SALE, 1).code == "123"  # refunds do not lower the day's spend
    clock.now = NOW.replace(hour=23, minute=59, second=59)
    assert run(host, Op.SALE, 1).code == "123"
    clock.advance(seconds=1)
    assert run(host, Op.SALE, 10_000).approved


def test_cancelled_sale_frees_the_daily_limit(journal: Journal, clock: Clock) -> None:
    host = BankHost(journal, HostConfig(terminal_limits=Limits(daily_max=10_000)), clock)
    sale = run(host, Op.SALE, 10_000)
    assert run(host, Op.SALE, 1).code == "123"
    run(host, Op.CANCEL, 10_000, rrn=sale.rrn)
    assert run(host, Op.SALE, 10_000).approved


def test_test_card_table_comes_before_limits_and_limits_apply_to_approved_cards(
    journal: Journal, clock: Clock
) -> None:
    host = BankHost(journal, HostConfig(terminal_limits=Limits(single_max=100)), clock)
    assert run(host, Op.SALE, 1_000, Card("5432543254325430")).code == "116"
    assert run(host, Op.SALE, 1_000, DEFAULT_CARD).code == "903"


def test_limits_do_not_apply_to_refunds_and_completions(journal: Journal, clock: Clock) -> None:
    config = HostConfig()
    host = BankHost(journal, config, clock)
    sale, hold = run(host, Op.SALE, 5_000), run(host, Op.PREAUTH, 5_000)
    config.terminal_limits = Limits(single_max=10, daily_max=10)
    assert run(host, Op.REFUND, 5_000, rrn=sale.rrn).approved
    assert run(host, Op.COMPLETION, 5_000, rrn=hold.rrn).approved


def test_pan_hash_is_salted_and_no_pan_is_stored(journal: Journal, clock: Clock) -> None:
    host = BankHost(journal, HostConfig(), clock)
    run(host, Op.SALE, 100, OTHER_CARD)
    record = journal.ledger.operations()[-1]
    assert record.pan_hash is not None and len(record.pan_hash) == 64
    assert record.pan_hash != hashlib.sha256(OTHER_CARD.pan.encode()).hexdigest()
    assert OTHER_CARD.pan not in repr(record)
    assert record.masked_pan == OTHER_CARD.masked_pan


# --- determinism --------------------------------------------------------------------------------
SCENARIO = [
    (Op.SALE, 1000, DEFAULT_CARD, {}),
    (Op.PREAUTH, 5000, OTHER_CARD, {}),
    (Op.SALE, 1000, Card("4444444444446666"), {}),
    (Op.REFUND, 300, None, {"rrn_of": 0}),
    (Op.COMPLETION, 4000, None, {"rrn_of": 1}),
    (Op.SALE, 700, OTHER_CARD, {}),
    (Op.CANCEL, 700, None, {"rrn_of": 5}),
    (Op.SETTLEMENT, None, None, {}),
    (Op.SALE, 1, DEFAULT_CARD, {}),
]


def play(seed: int) -> list[HostDecision]:
    clock = Clock()
    host = BankHost(Journal(), HostConfig(seed=seed), clock)
    decisions: list[HostDecision] = []
    for i, (op, amount, card, extra) in enumerate(SCENARIO):
        rrn = decisions[extra["rrn_of"]].rrn if "rrn_of" in extra else None
        decisions.append(host.process(Request(op, amount, transaction_id=str(i + 1), rrn=rrn), card))
        clock.advance(seconds=17)
    host.journal.close()
    return decisions


def test_same_seed_same_decisions_different_seed_different_codes() -> None:
    a, b, c = play(42), play(42), play(43)
    assert a == b
    assert all(d.approved or d.code == "-20010" for d in a)
    rrns = lambda ds: [d.rrn for d in ds if d.rrn]  # noqa: E731
    assert rrns(a) != rrns(c) and [d.auth_code for d in a] != [d.auth_code for d in c]
    assert [(d.status, d.code, d.amount) for d in a] == [(d.status, d.code, d.amount) for d in c]
    assert len(set(rrns(a))) == len(rrns(a))  # unique


def test_hosts_on_one_journal_are_thread_safe(journal: Journal) -> None:
    host = BankHost(journal, HostConfig())
    errors: list[BaseException] = []

    def work(base: int) -> None:
        try:
            for i in range(25):
                request = Request(Op.SALE, 100, transaction_id=str(base + i))
                assert host.process(request, DEFAULT_CARD).approved
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(1000 * k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert host.totals() == Totals(sale_count=100, sale_amount=10_000)
    rrns = [r.rrn for r in journal.ledger.operations()]
    assert len(set(rrns)) == 100


# --- random sequences ---------------------------------------------------------------------------
_cards = st.sampled_from([DEFAULT_CARD, OTHER_CARD, Card("5432543254325430"), Card("4111111111111112")])
_amounts = st.one_of(st.integers(1, 3000), st.sampled_from([0, -5]))
_pick = st.integers(0, 10_000)
_step = st.one_of(
    st.tuples(st.just("sale"), _amounts, _cards),
    st.tuples(st.just("preauth"), _amounts, _cards),
    st.tuples(st.just("completion"), _amounts, _pick),
    st.tuples(st.just("cancel"), st.booleans(), _pick),
    st.tuples(st.just("cancel_preauth"), st.booleans(), _pick),
    st.tuples(st.just("refund"), _amounts, _pick),
    st.tuples(st.just("reversal"), _pick),
    st.tuples(st.just("resend"), _pick),
    st.tuples(st.just("settle")),
    st.tuples(st.just("fault"), st.sampled_from(["no_connection", "answer_lost", "request_not_sent"])),
    st.tuples(st.just("wait"), st.integers(1, 60)),
)


def _never_reached_the_host(decision: HostDecision) -> bool:
    """A request a link fault stopped (no connection, request not sent, a settlement's lost answer)."""
    return decision.status is Status.NO_CONNECTION or decision.code == "151018" or \
        (decision.code == "151019" and not decision.auto_reversed)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step, min_size=1, max_size=30))
# found by hypothesis: a retry of a sale the host never saw (no connection) is a new first outcome
@example([("fault", "no_connection"), ("sale", 1, Card("4111111111111111", "3012")), ("resend", 0),
          ("resend", 0)])
# found by hypothesis: a retry when no attempt of that STAN ever reached the host has no first outcome
@example([("fault", "no_connection"), ("settle",), ("fault", "no_connection"), ("resend", 0)])
def test_random_operations_keep_the_money_rules(steps: list[tuple]) -> None:
    clock = Clock()
    journal = Journal()
    host = BankHost(journal, HostConfig(hold_ttl=timedelta(days=2)), clock)
    sent: list[tuple[Request, Card | None, HostDecision]] = []
    stan = itertools.count(1)

    def send(request: Request, card: Card | None = None) -> HostDecision:
        decision = host.process(request, card)
        sent.append((request, card, decision))
        host.config.fault = None  # a fault lasts one operation
        return decision

    def earlier(pick: int, *ops: Operation) -> tuple[Request, Card | None, HostDecision] | None:
        found = [s for s in sent if s[0].operation in ops and s[2].rrn] if ops else sent
        return found[pick % len(found)] if found else None

    for step in steps:
        kind = step[0]
        if kind in ("sale", "preauth"):
            op = Op.SALE if kind == "sale" else Op.PREAUTH
            send(Request(op, step[1], transaction_id=str(next(stan))), step[2])
        elif kind in ("completion", "refund"):
            target = earlier(step[2], Op.PREAUTH if kind == "completion" else Op.SALE, Op.COMPLETION)
            if target:
                op = Op.COMPLETION if kind == "completion" else Op.REFUND
                send(Request(op, step[1], transaction_id=str(next(stan)), rrn=target[2].rrn))
        elif kind in ("cancel", "cancel_preauth"):
            ops = (Op.PREAUTH,) if kind == "cancel_preauth" else (Op.SALE, Op.COMPLETION, Op.REFUND)
            target = earlier(step[2], *ops)
            if target:
                amount = target[2].amount if step[1] else max(1, (target[2].amount or 2) - 1)
                op = Op.CANCEL if kind == "cancel" else Op.CANCEL_PREAUTH
                send(Request(op, amount, transaction_id=str(next(stan)), rrn=target[2].rrn))
        elif kind == "reversal":
            target = earlier(step[1])
            if target and target[0].operation.moves_money:
                send(target[0].with_changes(operation=Op.EMERGENCY_REVERSAL), None)
        elif kind == "resend":
            target = earlier(step[1])
            if target and target[0].operation is not Op.EMERGENCY_REVERSAL:
                rows_before = len(journal.ledger.operations())
                totals_before = host.totals()
                batch = host.batch_number
                again = send(*target[:2])
                # The first outcome is the first decision of this STAN that reached the host:
                # requests a link fault stopped (no connection, not sent) are not first outcomes.
                first = next((s[2] for s in sent if s[0].transaction_id == target[0].transaction_id
                              and not _never_reached_the_host(s[2])), None)
                if first is None:  # the host never saw this STAN before: nothing to repeat
                    assert not again.duplicate
                elif first.batch_number == batch and again.duplicate:
                    assert replace(again, duplicate=False) == replace(first, duplicate=False)
                    assert len(journal.ledger.operations()) == rows_before
                    assert host.totals() == totals_before
        elif kind == "settle":
            d = send(Request(Op.SETTLEMENT, transaction_id=str(next(stan))))
            if d.approved:
                assert d.totals == recompute_totals(journal.ledger.operations(), d.batch_number)
        elif kind == "fault":
            host.config.fault = step[1]
        elif kind == "wait":
            clock.advance(hours=step[1])
        check_invariants(host)
    journal.close()


def check_invariants(host: BankHost) -> None:
    records = host.journal.ledger.operations()
    assert_totals_match_journal(host)
    by_id = {r.id: r for r in records}
    reversed_ids = {
        r.original_id for r in records if r.operation is Op.EMERGENCY_REVERSAL and r.status is Status.APPROVED
    }
    live = [r for r in records if r.status is Status.APPROVED and r.operation is not Op.EMERGENCY_REVERSAL
            and r.id not in reversed_ids]
    voided = {r.original_id for r in live if r.operation in (Op.CANCEL, Op.CANCEL_PREAUTH)}
    # refunded never exceeds charged; nothing refunded from a cancelled charge
    refunded: Counter[int] = Counter()
    for r in live:
        if r.operation is Op.REFUND and r.id not in voided:
            refunded[r.original_id or 0] += r.amount or 0
    for charge_id, total in refunded.items():
        charge = by_id[charge_id]
        assert charge.operation in (Op.SALE, Op.COMPLETION)
        assert charge in live and charge_id not in voided
        assert total <= (charge.amount or 0)
    # a hold completes once, for at most its amount
    completions: Counter[int] = Counter(r.original_id or 0 for r in live if r.operation is Op.COMPLETION)
    for hold_id, n in completions.items():
        assert n == 1
        done = next(r for r in live if r.operation is Op.COMPLETION and r.original_id == hold_id)
        assert (done.amount or 0) <= (by_id[hold_id].amount or 0)
    # nothing is cancelled twice
    cancels = Counter(r.original_id for r in live if r.operation in (Op.CANCEL, Op.CANCEL_PREAUTH))
    assert all(n == 1 for n in cancels.values())
    # one first outcome per STAN and batch: nothing charged twice for a STAN
    firsts = Counter(
        (r.batch, r.transaction_id) for r in records
        if r.delivered and r.operation is not Op.EMERGENCY_REVERSAL and r.transaction_id
    )
    assert all(n == 1 for n in firsts.values())
    assert all(len(r.rrn) == 12 for r in live if r.rrn)
    own_rrns = [r.rrn for r in records if r.rrn and r.operation is not Op.EMERGENCY_REVERSAL]
    assert len(set(own_rrns)) == len(own_rrns)


def test_texts_cover_every_code_the_host_uses() -> None:
    for code in ("00", "400", "101", "110", "111", "123", "903", "913", "71015", "9010", "9011", "9012",
                 "9013", "9014", "9015", "151018", "151019", ""):
        assert TEXTS[code].isupper() or TEXTS[code] == TEXTS["400"]
