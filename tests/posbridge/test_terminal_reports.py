"""Reports that fit (issue 9): a settlement after thousands of sales carries totals by operation
kind and by card scheme, a full report lists the latest operations and counts the rest, and both
are delivered within one protocol's limits; the terminal keeps serving afterwards."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from posbridge.ecr.client import EcrClient
from posbridge.emulator.host import HostConfig
from posbridge.journal import Journal
from posbridge.model import Operation, Result, Slips, Status
from posbridge.emulator.terminal import SLIP_BUDGET, TerminalConfig, VirtualTerminal

from .terminal_support import PROTOCOLS, TERMINAL_ID, legitimate_sale, serving

NOW = datetime(2026, 11, 22, 9, 0, 0)
CARDS = (("411111******1111", "VISA"), ("510000******0008", "MASTERCARD"), ("220000******0004", "MIR"))



def fill(journal: Journal, sales: int) -> dict[str, int]:
    """``sales`` approved sales straight into the terminal's journal (fast), plus a refund and a
    cancel; returns the expected sale sum per scheme."""
    expected: dict[str, int] = {}
    with journal.transaction():
        batch = journal.ledger.open_batch(TERMINAL_ID, NOW)
        first = None
        for i in range(sales):
            pan, scheme = CARDS[i % len(CARDS)]
            amount = 100 + i
            row = journal.ledger.add_operation(
                terminal_id=TERMINAL_ID, batch=batch, operation=Operation.SALE, status=Status.APPROVED,
                code="00", text="ОДОБРЕНО", host_datetime=NOW + timedelta(seconds=i), transaction_id=str(i + 1),
                amount=amount, currency=643, rrn=f"{i + 1:012d}", auth_code="A1B2C3", masked_pan=pan,
                card_scheme=scheme)
            first = first or row
            expected[scheme] = expected.get(scheme, 0) + amount
        assert first is not None
        # The first VISA sale is cancelled: it counts as a cancel, not a sale.
        journal.ledger.add_operation(
            terminal_id=TERMINAL_ID, batch=batch, operation=Operation.CANCEL, status=Status.APPROVED, code="00",
            text="ОДОБРЕНО", host_datetime=NOW + timedelta(hours=3), transaction_id=str(sales + 1),
            amount=first.amount, currency=643, rrn="C00000000001", masked_pan=first.masked_pan,
            card_scheme=first.card_scheme, original_id=first.id)
        expected["VISA"] -= int(first.amount or 0)
    return expected


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_settlement_and_full_report_after_5000_sales_are_delivered_and_serving_goes_on(protocol: str) -> None:
    journal = Journal()
    expected = fill(journal, 5000)
    terminal = VirtualTerminal(protocol, journal=journal, config=TerminalConfig(idle_timeout=0.3),
                               host_config=HostConfig(), clock=lambda: NOW + timedelta(hours=4))
    async with serving(terminal) as port:
        client = EcrClient(f"tcp://127.0.0.1:{port}", protocol, journal=Journal(), lock_wait=1.0)
        async with client:
            report = await asyncio.wait_for(client.full_report(), 30)
            settlement = await asyncio.wait_for(client.settlement(), 30)
        await legitimate_sale(port, protocol)  # the emulator serves on, in a new batch
    for result in (report, settlement):
        assert isinstance(result, Result) and result.approved, result
        assert result.totals is not None and result.totals.sale_count == 4999
        assert result.totals.sale_amount == sum(expected.values())
        assert (result.totals.cancel_count, result.totals.cancel_amount) == (1, 100)
        assert _size(result.slips) <= SLIP_BUDGET
    # The full report: the latest 300 operations listed, the rest counted, on the slip itself.
    assert "... ЕЩЕ 4701 ОПЕРАЦИЙ РАНЕЕ" in report.slips.customer
    assert report.slips.customer.count("ОПЛАТА ") >= 290
    # The settlement: totals by kind and by scheme, as real terminals print them; no list.
    slip = settlement.slips.customer
    assert "ПО ПЛАТЕЖНЫМ СИСТЕМАМ" in slip and "ОПЕРАЦИИ" not in slip
    for scheme, amount in expected.items():
        assert scheme in slip and f"{amount // 100}.{amount % 100:02d} RUB" in slip, (scheme, slip)
    assert terminal.undelivered == []
    assert all(op.result_delivered is not False for op in journal.ledger.operations(TERMINAL_ID))
    assert terminal.host.totals().sale_count == 1  # the new batch holds the sale after it


def _size(slips: Slips) -> int:
    return len((slips.customer + slips.cashier).encode("cp1251"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_answer_too_big_for_the_protocol_is_replaced_by_a_smaller_one_never_dropped(protocol: str) -> None:
    """Whatever the layout produces, a closed batch is answered: here the printer makes a slip of
    200 KB (a template bug); the settlement still arrives, with its totals, and the batch is closed."""
    journal = Journal()
    fill(journal, 20)
    terminal = VirtualTerminal(protocol, journal=journal, config=TerminalConfig(idle_timeout=0.3),
                               clock=lambda: NOW + timedelta(hours=4))
    original = terminal.printer.render

    def huge(result, **kwargs):  # type: ignore[no-untyped-def]
        slips = original(result, **kwargs)
        if result.operation is Operation.SETTLEMENT:
            return Slips(customer=slips.customer + "\nX" * 100_000, cashier=slips.cashier)
        return slips

    terminal.printer.render = huge  # type: ignore[method-assign]
    async with serving(terminal) as port:
        client = EcrClient(f"tcp://127.0.0.1:{port}", protocol, journal=Journal(), lock_wait=1.0)
        async with client:
            settlement = await asyncio.wait_for(client.settlement(), 30)
        await legitimate_sale(port, protocol)
    assert settlement.approved and settlement.totals is not None and settlement.totals.sale_count == 19
    assert terminal.undelivered == []
    assert terminal.host.batch_number == 2
