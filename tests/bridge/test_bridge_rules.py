"""The bridge's money rules, end to end (module docstring of posbridge.bridge.bridge): a result the
register did not take is undone; one operation at a time (the busy answer); the register kept
waiting by progress packets; cashier prompts relayed or refused; bad requests refused before
anything is journaled; operations left open by an earlier run recovered at start."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from posbridge import protocols
from posbridge.bridge import CODE_BAD_REQUEST, CODE_BUSY
from posbridge.devices import open_device
from posbridge.ecr import canonical_port
from posbridge.journal import Journal
from posbridge.model import Operation, Request, Status
from posbridge.protocols.common.errors import ExchangeTimeout
from posbridge.protocols.common.session import CashierPrompt, Completed, Failed, Progress
from posbridge.pump import SessionPump
from posbridge.testing.background import BackgroundTerminal

from tests.bridge.test_bridge import DIRECTIONS, wait_for_state, bridged, entries

TEXT_LAST_DIGITS = "ВВЕДИТЕ ПОСЛЕДНИЕ 4 ЦИФРЫ КАРТЫ"


@contextlib.asynccontextmanager
async def raw_register(url: str, protocol: str) -> AsyncIterator[SessionPump[Any]]:
    """A register made of the protocol's bare ECR session: the test decides what it acknowledges."""
    device = await open_device(url)
    pump: SessionPump[Any] = SessionPump(device, protocols.get(protocol).ecr_session())
    pump.start()
    try:
        yield pump
    finally:
        await pump.stop()
        await device.close()


async def final_event(pump: SessionPump[Any], timeout: float = 10.0) -> Completed | Failed:
    while True:
        event = await pump.next_event(timeout)
        if isinstance(event, (Completed, Failed)):
            return event


def money_moved_then_reversed(terminal: BackgroundTerminal) -> None:
    ops = terminal.operations()
    assert [(o.operation, o.status) for o in ops] == \
        [(Operation.SALE, Status.APPROVED), (Operation.EMERGENCY_REVERSAL, Status.APPROVED)]
    assert terminal.batch().sale_count == 0


@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
async def test_an_approved_sale_the_register_never_acknowledges_is_reversed(
        register_protocol: str, terminal_protocol: str) -> None:
    fast = {"ack_timeout": 0.2}  # the bridge gives an unacknowledged result up after three tries
    async with bridged(register_protocol, terminal_protocol, register_options=fast) as b:
        b.terminal.control.delays(host=1.0)
        async with raw_register(b.register_url, register_protocol) as register:
            register.act(lambda now: register.session.start(Request(Operation.SALE, 70_00, transaction_id="41"), now))
            await wait_for_state(b.terminal, "authorizing")  # the host has charged, the answer is 1 s away
            await register.stop()  # the register hears nothing more: it never acknowledges the result
            await b.bridge.wait_idle()

        [outcome] = b.bridge.outcomes
        assert outcome.answer.status is Status.APPROVED and not outcome.delivered
        sale, reversal = entries(b.journal)
        assert (sale.state, sale.result.status, sale.request.transaction_id) == ("done", Status.APPROVED, "41")
        assert "result not delivered to the register" in sale.error and f"by entry #{reversal.id}" in sale.error
        assert (reversal.request.operation, reversal.request.transaction_id) == (Operation.EMERGENCY_REVERSAL, "41")
        assert reversal.state == "done" and reversal.result.host_code == "400"
        money_moved_then_reversed(b.terminal)


async def test_a_reversal_the_terminal_declines_is_said_plainly_and_the_charge_stays_in_the_books() -> None:
    async with bridged("inpas", "arcus2", register_options={"ack_timeout": 0.2}) as b:
        b.terminal.control.delays(host=1.0)
        b.terminal.control.rule(operation="emergency_reversal", code="05")
        async with raw_register(b.register_url, "inpas") as register:
            register.act(lambda now: register.session.start(Request(Operation.SALE, 70_00, transaction_id="43"), now))
            await wait_for_state(b.terminal, "authorizing")
            await register.stop()
            await b.bridge.wait_idle()
        [outcome] = b.bridge.outcomes
        assert not outcome.delivered and "NOT approved" in outcome.note and "stays charged" in outcome.note
        sale, reversal = entries(b.journal)
        assert "stays charged" in sale.error and reversal.result.status is Status.DECLINED
        assert b.terminal.batch().sale_count == 1


@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
async def test_a_register_that_hangs_up_mid_sale_gets_the_charge_undone(
        register_protocol: str, terminal_protocol: str) -> None:
    async with bridged(register_protocol, terminal_protocol) as b:
        b.terminal.control.delays(host=1.0)
        async with raw_register(b.register_url, register_protocol) as register:
            register.act(lambda now: register.session.start(Request(Operation.SALE, 80_00, transaction_id="42"), now))
            await wait_for_state(b.terminal, "authorizing")  # the terminal's host has charged and waits
        # the register's line is closed now
        await asyncio.sleep(0.1)
        await b.bridge.wait_idle()

        [outcome] = b.bridge.outcomes
        assert not outcome.delivered and "disconnected" in outcome.note and "reversed" in outcome.note
        sale, reversal = entries(b.journal)
        assert sale.state == "done" and reversal.request.operation is Operation.EMERGENCY_REVERSAL
        assert reversal.result.host_code == "400"
        money_moved_then_reversed(b.terminal)


@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
async def test_a_second_request_while_busy_gets_the_busy_answer_and_the_first_is_not_left_charged(
        register_protocol: str, terminal_protocol: str) -> None:
    async with bridged(register_protocol, terminal_protocol) as b:
        b.terminal.control.delays(card=1.0)
        async with raw_register(b.register_url, register_protocol) as register:
            first = Request(Operation.SALE, 10_00, transaction_id="51")
            second = Request(Operation.SALE, 20_00, transaction_id="52")
            register.act(lambda now: register.session.start(first, now))
            await wait_for_state(b.terminal, "waiting_for_card")

            def give_up_and_ask_again(now: float) -> None:  # a register that gave up on the first
                register.session.reset()
                register.session.start(second, now)
            register.act(give_up_and_ask_again)
            answer = await final_event(register)
            await b.bridge.wait_idle()

        assert isinstance(answer, Completed)
        assert answer.result.host_code == CODE_BUSY and not answer.result.approved
        assert answer.result.transaction_id in ("52", None)
        busy, first_outcome = b.bridge.outcomes
        assert busy.request.transaction_id == "52" and busy.delivered and busy.entry_id is None
        assert first_outcome.request.transaction_id == "51" and not first_outcome.delivered
        if terminal_protocol == "arcus2":
            # The bridge aborted the first at the terminal while it waited for the card: nothing moved.
            [entry] = entries(b.journal)
            assert (entry.state, entry.result.status) == ("done", Status.ABORTED)
            assert [(o.operation, o.status) for o in b.terminal.operations()] == [(Operation.SALE, Status.ABORTED)]
        else:
            # INPAS has no abort from the ECR: the first was charged, then reversed.
            sale, reversal = entries(b.journal)
            assert sale.result.status is Status.APPROVED and reversal.result.host_code == "400"
            money_moved_then_reversed(b.terminal)


@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
async def test_progress_packets_keep_a_register_with_a_short_timer_waiting_through_a_slow_card(
        register_protocol: str, terminal_protocol: str) -> None:
    seen: list[Progress] = []
    async with bridged(register_protocol, terminal_protocol, progress_interval=0.2,
                       register_timers={"packet_timeout": 0.8}) as b:
        b.terminal.control.delays(card=2.0)
        b.register.on_progress = seen.append
        result = await b.register.sale(30_00)
        await b.bridge.wait_idle()
    assert result.approved
    assert len(seen) >= 5  # 2 s at most 0.8 s apart: the terminal's own packets alone leave a gap of 2 s


@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
async def test_a_register_that_timed_out_recovers_its_sale_through_the_bridge(
        register_protocol: str, terminal_protocol: str) -> None:
    # Without the bridge's packets (every 30 s) the same register gives up after 0.8 s. Its link
    # still acknowledges the late result (both protocols' links do, whatever the session thinks), so
    # the bridge rightly counts it delivered; the register journaled the sale unknown, and its own
    # recovery reverses it through the bridge.
    async with bridged(register_protocol, terminal_protocol, progress_interval=30.0,
                       register_timers={"packet_timeout": 0.8}) as b:
        b.terminal.control.delays(card=2.0)
        with pytest.raises(ExchangeTimeout):
            await b.register.sale(30_00)
        await b.bridge.wait_idle()  # the terminal finishes the sale meanwhile; its result reaches the line
        [register_sale] = entries(b.register.journal)
        assert register_sale.state == "unknown"
        [recovery] = await b.register.recover()
        await b.bridge.wait_idle()

        assert recovery.outcome == "reversed" and recovery.result is not None and recovery.result.host_code == "400"
        sale, reversal = entries(b.journal)
        assert (sale.state, sale.result.status) == ("done", Status.APPROVED)
        assert (reversal.request.operation, reversal.request.transaction_id) == \
            (Operation.EMERGENCY_REVERSAL, register_sale.request.transaction_id)
        assert reversal.state == "done"
        money_moved_then_reversed(b.terminal)


async def test_a_cashier_prompt_is_relayed_to_a_register_whose_protocol_has_a_dialog() -> None:
    prompts: list[CashierPrompt] = []

    def cashier(prompt: CashierPrompt) -> tuple[str, bool]:
        prompts.append(prompt)
        return ("1111", True) if len(prompts) == 1 else ("0000", True)

    async with bridged("inpas", "inpas") as b:
        b.terminal.control.ask_last_digits(True)
        b.terminal.control.cards("4111111111111111", "4111111111111111")
        b.register.on_prompt = cashier
        right = await b.register.sale(40_00)
        wrong = await b.register.sale(40_00)
        await b.bridge.wait_idle()
    assert [p.prompt for p in prompts] == [TEXT_LAST_DIGITS, TEXT_LAST_DIGITS]
    assert right.approved and right.masked_pan == "411111******1111"
    assert (wrong.status, wrong.host_code) == (Status.DECLINED, "71015")


async def test_a_cashier_prompt_is_refused_for_a_register_without_a_dialog_and_nothing_is_charged() -> None:
    async with bridged("arcus2", "inpas") as b:
        b.terminal.control.ask_last_digits(True)
        result = await b.register.sale(40_00)
        await b.bridge.wait_idle()
        assert result.status is Status.ABORTED and result.response_code == "998"
        [entry] = entries(b.journal)
        assert (entry.state, entry.result.status) == ("done", Status.ABORTED)
        assert [(o.operation, o.status) for o in b.terminal.operations()] == [(Operation.SALE, Status.ABORTED)]


@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
async def test_a_request_that_is_not_valid_is_declined_before_anything_is_journaled_or_sent(
        register_protocol: str, terminal_protocol: str) -> None:
    async with bridged(register_protocol, terminal_protocol) as b:
        async with raw_register(b.register_url, register_protocol) as register:
            register.act(lambda now: register.session.start(Request(Operation.SALE, 0, transaction_id="9"), now))
            answer = await final_event(register)
        await b.bridge.wait_idle()
        assert isinstance(answer, Completed)
        assert (answer.result.status, answer.result.host_code) == (Status.DECLINED, CODE_BAD_REQUEST)
        assert entries(b.journal) == []
        assert b.terminal.operations() == []


async def test_an_operation_left_unknown_by_an_earlier_run_is_recovered_when_the_bridge_starts(tmp_path: Any) -> None:
    with BackgroundTerminal("arcus2", transport="virtual") as terminal:
        path = tmp_path / "bridge.sqlite3"
        with Journal(path) as journal:  # an earlier run sent a sale and lost its outcome
            port = canonical_port(terminal.url)
            entry = journal.ecr.begin(Request(Operation.SALE, 55_00, transaction_id="77"), port, port=port)
            journal.ecr.sent(entry)
            journal.ecr.unknown(entry, "the bridge was killed")
        from posbridge.bridge import Bridge

        with Journal(path) as journal:
            bridge = Bridge("virtual://bridge-restart-register", "inpas", terminal.url, "arcus2", journal=journal)
            task = asyncio.get_running_loop().create_task(bridge.run())
            try:
                for _ in range(1000):  # recovery starts with the bridge, before any register
                    if journal.ecr.entry(entry).state != "unknown":  # type: ignore[union-attr]
                        break
                    await asyncio.sleep(0.01)
                await bridge.wait_idle()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            recovered = journal.ecr.entry(entry)
            assert recovered is not None and recovered.state == "resolved" and recovered.how == "not_charged"
        assert [(o.operation, o.status) for o in terminal.operations()] == \
            [(Operation.EMERGENCY_REVERSAL, Status.APPROVED)]


async def test_an_arcus2_registers_abort_reaches_an_arcus2_terminal_waiting_for_the_card() -> None:
    async with bridged("arcus2", "arcus2") as b:
        b.terminal.control.delays(card=2.0)
        sale = asyncio.get_running_loop().create_task(b.register.sale(60_00))
        await wait_for_state(b.terminal, "waiting_for_card")
        b.register.abort()  # A: the bridge passes it on as its own A
        result = await sale
        await b.bridge.wait_idle()
        assert (result.status, result.response_code) == (Status.ABORTED, "998")
        [entry] = entries(b.journal)
        assert (entry.state, entry.result.status) == ("done", Status.ABORTED)
        assert [(o.operation, o.status) for o in b.terminal.operations()] == [(Operation.SALE, Status.ABORTED)]


async def test_an_abort_the_terminals_protocol_cannot_carry_leaves_the_sale_to_finish_and_be_reported() -> None:
    async with bridged("arcus2", "inpas") as b:  # INPAS has no abort from the ECR
        b.terminal.control.delays(card=1.0)
        sale = asyncio.get_running_loop().create_task(b.register.sale(60_00))
        await wait_for_state(b.terminal, "waiting_for_card")
        b.register.abort()
        result = await sale
        await b.bridge.wait_idle()
        # Arcus: after an A the exchange goes on, and the terminal's real outcome is what the register hears.
        assert result.approved and result.amount == 60_00
        [entry] = entries(b.journal)
        assert (entry.state, entry.result.status, entry.result.rrn) == ("done", Status.APPROVED, result.rrn)
        assert [(o.operation, o.status) for o in b.terminal.operations()] == [(Operation.SALE, Status.APPROVED)]


async def test_the_next_request_in_the_same_read_as_the_acknowledgement_of_the_last_result_is_served() -> None:
    # An INPAS register needs no turn to speak: its ACK and EOT of the sale's result and its refund
    # request can reach the bridge in one read (a fast register does that; the CLI test met it).
    # The sale's answer is settled by the first event of that read, so the refund is no "second
    # request while busy" (it was, before the answer's fate counted from that very event).
    async with bridged("inpas", "arcus2") as b:
        device = await open_device(b.register_url)
        session = protocols.get("inpas").ecr_session()
        try:
            session.start(Request(Operation.SALE, 10_00, transaction_id="61"), time.monotonic())
            await device.write(session.data_to_send())
            sale: Completed | None = None
            while sale is None:
                data = await asyncio.wait_for(device.read(), 10)
                events = session.receive(data, time.monotonic())
                sale = next((e for e in events if isinstance(e, Completed)), None)
                if sale is None:
                    await device.write(session.data_to_send())
            held = session.data_to_send()  # the ACK and EOT of the result, not written yet
            assert held.endswith(b"\x06\x04") or held.endswith(b"\x04")
            refund = Request(Operation.REFUND, 4_00, transaction_id="62", rrn=sale.result.rrn)
            session.start(refund, time.monotonic())
            await device.write(held + session.data_to_send())  # one write, one read at the bridge
            answer: Completed | None = None
            while answer is None:
                data = await asyncio.wait_for(device.read(), 10)
                events = session.receive(data, time.monotonic())
                answer = next((e for e in events if isinstance(e, Completed)), None)
                await device.write(session.data_to_send())
        finally:
            await device.close()
        await b.bridge.wait_idle()
    assert sale.result.approved
    assert (answer.result.status, answer.result.amount) == (Status.APPROVED, 4_00)
    assert [o.answer.status for o in b.bridge.outcomes] == [Status.APPROVED, Status.APPROVED]
