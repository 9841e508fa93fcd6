"""The protocol bridge end to end: a register (posbridge's own EcrClient, speaking one protocol) on a
virtual:// line to the bridge, the bridge driving a virtual terminal (speaking the other protocol)
in a thread of its own (BackgroundTerminal). Both directions: INPAS register -> Arcus2 terminal and
Arcus2 register -> INPAS terminal. Each test asserts what the register got, what the terminal
journaled, and the bridge's own ECR journal (one entry per operation, its state)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from posbridge.bridge import CODE_OUTCOME_UNKNOWN, CODE_UNDONE, Bridge
from posbridge.ecr import EcrClient
from posbridge.journal import Journal
from posbridge.model import Operation, Status
from posbridge.testing.background import BackgroundTerminal

DIRECTIONS = [pytest.param("inpas", "arcus2", id="inpas-register-arcus2-terminal"),
              pytest.param("arcus2", "inpas", id="arcus2-register-inpas-terminal")]


@dataclass
class Bridged:
    terminal: BackgroundTerminal
    bridge: Bridge
    register: EcrClient
    register_url: str
    journal: Journal  # the bridge's


@contextlib.asynccontextmanager
async def bridged(register_protocol: str, terminal_protocol: str, *, transport: str = "virtual",
                  register_timers: dict[str, Any] | None = None, **options: Any) -> AsyncIterator[Bridged]:
    """A virtual terminal, the bridge in front of it, and a register client on the bridge's line."""
    with BackgroundTerminal(terminal_protocol, transport=transport) as terminal:
        register_url = f"virtual://bridge-register-{uuid.uuid4().hex}"
        journal = Journal()
        bridge = Bridge(register_url, register_protocol, terminal.url, terminal_protocol, journal=journal,
                        **options)
        opened = asyncio.Event()
        serving = asyncio.get_running_loop().create_task(bridge.run(ready=lambda device: opened.set()))
        await asyncio.wait_for(opened.wait(), 5)
        register = EcrClient(register_url, register_protocol, journal=Journal(), timers=register_timers)
        try:
            yield Bridged(terminal, bridge, register, register_url, journal)
        finally:
            await register.close()
            register.journal.close()
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            journal.close()


def entries(journal: Journal) -> list[Any]:
    """Every entry of the bridge's ECR journal, oldest first."""
    rows = journal.storage.query("SELECT id FROM ecr_entries ORDER BY id")
    return [journal.ecr.entry(row[0]) for row in rows]


@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
async def test_sale_refund_and_settlement_cross_the_bridge_and_each_is_journaled_once(
        register_protocol: str, terminal_protocol: str) -> None:
    async with bridged(register_protocol, terminal_protocol) as b:
        sale = await b.register.sale(150_00)
        refund = await b.register.refund(50_00, sale.rrn or "")
        settlement = await b.register.settlement()
        await b.bridge.wait_idle()

        assert (sale.status, sale.amount, sale.currency) == (Status.APPROVED, 150_00, 643)
        assert (refund.status, refund.amount) == (Status.APPROVED, 50_00)
        assert settlement.status is Status.APPROVED and settlement.totals is not None
        assert (settlement.totals.sale_count, settlement.totals.sale_amount) == (1, 150_00)
        assert (settlement.totals.refund_count, settlement.totals.refund_amount) == (1, 50_00)
        # What the terminal did is what the register was told: amounts, RRN, auth code, card.
        sale_op, refund_op, settle_op = b.terminal.operations()
        assert (sale_op.operation, sale_op.amount, sale_op.rrn, sale_op.auth_code) == \
            (Operation.SALE, 150_00, sale.rrn, sale.auth_code)
        assert sale.rrn and len(sale.rrn) == 12 and sale.masked_pan == sale_op.masked_pan
        assert (refund_op.operation, refund_op.amount, refund_op.rrn) == (Operation.REFUND, 50_00, refund.rrn)
        assert settle_op.operation is Operation.SETTLEMENT
        # The terminal's slips reach the register.
        assert sale.rrn in sale.slips.customer and "150.00" in sale.slips.customer
        # The bridge's journal: exactly one entry per operation, done, with the register's numbers.
        register_entries = entries(b.register.journal)
        bridge_entries = entries(b.journal)
        assert [e.state for e in bridge_entries] == ["done", "done", "done"]
        assert [e.request.operation for e in bridge_entries] == \
            [Operation.SALE, Operation.REFUND, Operation.SETTLEMENT]
        assert [e.request.transaction_id for e in bridge_entries] == \
            [e.request.transaction_id for e in register_entries]
        assert [(e.result.status, e.result.amount, e.result.rrn) for e in bridge_entries[:2]] == \
            [(Status.APPROVED, 150_00, sale.rrn), (Status.APPROVED, 50_00, refund.rrn)]
        assert [e.state for e in register_entries] == ["done", "done", "done"]
        assert [o.delivered for o in b.bridge.outcomes] == [True, True, True]
        assert [o.entry_id for o in b.bridge.outcomes] == [e.id for e in bridge_entries]


@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
async def test_a_decline_passes_through_with_its_code(register_protocol: str, terminal_protocol: str) -> None:
    async with bridged(register_protocol, terminal_protocol) as b:
        b.terminal.control.decline_next("51")
        declined = await b.register.sale(99_00)
        await b.bridge.wait_idle()

        assert declined.status is Status.DECLINED
        assert declined.host_code == "51"
        assert declined.response_code == ("51" if register_protocol == "inpas" else "051")
        [op] = b.terminal.operations()
        assert (op.status, op.code) == (Status.DECLINED, "51")
        [entry] = entries(b.journal)
        assert entry.state == "done" and entry.result.status is Status.DECLINED and entry.result.host_code == "51"


async def wait_for_state(terminal: BackgroundTerminal, state: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while terminal.call(lambda: terminal.terminal.state) != state:
        assert time.monotonic() < deadline, f"the terminal never reached {state}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
async def test_the_terminal_killed_mid_sale_gives_no_approval_and_recovery_reverses_the_charge(
        register_protocol: str, terminal_protocol: str) -> None:
    async with bridged(register_protocol, terminal_protocol, transport="tcp") as b:
        b.terminal.control.delays(host=1.5)  # the host has decided (charged) before this wait
        sale = asyncio.get_running_loop().create_task(b.register.sale(120_00))
        await wait_for_state(b.terminal, "authorizing")
        assert b.terminal.call(lambda: b.terminal.line.drop_peer("killed mid-operation"))
        result = await sale
        await b.bridge.wait_idle()

        # Recovery ran before the answer: the register hears a definite "declined, undone".
        assert result.status is Status.DECLINED
        assert result.host_code == CODE_UNDONE
        # The bridge's entry went unknown and recovery resolved it by an emergency reversal.
        sale_entry, reversal_entry = entries(b.journal)
        assert (sale_entry.request.operation, sale_entry.state, sale_entry.how) == \
            (Operation.SALE, "resolved", "reversed")
        assert "disconnect" in (sale_entry.error or "").lower() or "closed" in (sale_entry.error or "").lower()
        assert reversal_entry.request.operation is Operation.EMERGENCY_REVERSAL
        assert reversal_entry.request.transaction_id == sale_entry.request.transaction_id
        assert reversal_entry.state == "done" and reversal_entry.result.host_code == "400"
        [outcome] = b.bridge.outcomes
        assert outcome.delivered and "recovery" in outcome.note and "reversed" in outcome.note
        # The terminal charged, then reversed: nothing is left in its batch.
        ops = b.terminal.operations()
        assert [(o.operation, o.status) for o in ops] == \
            [(Operation.SALE, Status.APPROVED), (Operation.EMERGENCY_REVERSAL, Status.APPROVED)]
        assert b.terminal.batch().sale_count == 0
        # The register's own journal never saw an approval.
        [register_entry] = entries(b.register.journal)
        assert register_entry.state == "done" and register_entry.result.status is not Status.APPROVED
        # The bridge serves on: the next sale is approved over a new connection.
        b.terminal.control.delays(host=0)
        again = await b.register.sale(120_00)
        assert again.approved


@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
async def test_an_outcome_recovery_cannot_settle_is_answered_unknown_and_recovered_before_the_next_sale(
        register_protocol: str, terminal_protocol: str) -> None:
    async with bridged(register_protocol, terminal_protocol, transport="tcp") as b:
        b.terminal.control.delays(host=1.5)
        b.terminal.control.decline_next("96", operation="emergency_reversal")  # recovery's reversal fails
        sale = asyncio.get_running_loop().create_task(b.register.sale(130_00))
        await wait_for_state(b.terminal, "authorizing")
        assert b.terminal.call(lambda: b.terminal.line.drop_peer("killed mid-operation"))
        result = await sale
        await b.bridge.wait_idle()

        # Not "declined": the customer may be charged. INPAS says "undefined" (status 0); Arcus has
        # no such status and hears the code as a decline.
        assert result.status is (Status.UNDEFINED if register_protocol == "inpas" else Status.DECLINED)
        assert result.host_code == CODE_OUTCOME_UNKNOWN
        [sale_entry, reversal_entry] = entries(b.journal)
        assert (sale_entry.request.operation, sale_entry.state) == (Operation.SALE, "unknown")
        assert reversal_entry.request.operation is Operation.EMERGENCY_REVERSAL
        assert reversal_entry.result.status is Status.DECLINED
        [outcome] = b.bridge.outcomes
        assert outcome.delivered and "stays unknown" in outcome.note
        assert b.terminal.batch().sale_count == 1  # charged, and the bridge knows it may be

        # The next operation waits for recovery: the sale is reversed, then the new one runs.
        b.terminal.control.delays(host=0)
        again = await b.register.sale(131_00)
        assert again.approved
        await b.bridge.wait_idle()
        first = entries(b.journal)[0]
        assert (first.state, first.how) == ("resolved", "reversed")
        assert b.terminal.batch().sale_count == 1 and b.terminal.batch().sale_amount == 131_00


@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
async def test_a_registers_reversal_whose_outcome_recovery_completes_is_never_answered_declined(
        register_protocol: str, terminal_protocol: str) -> None:
    # The register's own emergency reversal loses its answer at the terminal; the bridge's recovery
    # sends it again and the host reverses the sale (400). The register must not hear "declined":
    # its reversal was performed, the customer has the money back; a register told "declined"
    # believes the sale stands and may refund it by other means (paid twice).
    async with bridged(register_protocol, terminal_protocol, transport="tcp") as b:
        sale = await b.register.sale(140_00)
        assert sale.approved
        [register_sale] = entries(b.register.journal)
        b.terminal.control.delays(host=1.5)
        reversal = asyncio.get_running_loop().create_task(b.register.emergency_reversal(register_sale.request))
        await wait_for_state(b.terminal, "authorizing")
        assert b.terminal.call(lambda: b.terminal.line.drop_peer("killed mid-reversal"))
        result = await reversal
        await b.bridge.wait_idle()

        assert b.terminal.batch().sale_count == 0  # the sale is reversed: nothing is charged
        _, reversal_entry, *_ = entries(b.journal)
        assert (reversal_entry.request.operation, reversal_entry.state, reversal_entry.how) == \
            (Operation.EMERGENCY_REVERSAL, "resolved", "reversed")
        # "Unknown" (INPAS status 0; Arcus hears the code as a decline): the register's recovery
        # sends its reversal again, which the host answers 400 — never a plain "declined, undone".
        assert result.host_code == CODE_OUTCOME_UNKNOWN
        assert result.status is (Status.UNDEFINED if register_protocol == "inpas" else Status.DECLINED)
