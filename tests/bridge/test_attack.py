"""Attacks on the protocol bridge's money rules (posbridge/bridge/bridge.py): races and faults a
register can cause. Each documents behaviour that holds; the three same-STAN retry tests found a
real bug (a retry after the bridge's reversal was told "approved" by the host's duplicate control,
nothing charged), fixed in the host: such a retry is answered 9018 REVERSED."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from posbridge.bridge import CODE_BUSY, Bridge
from posbridge.devices import open_device
from posbridge.journal import Journal
from posbridge.testing.background import BackgroundTerminal
from posbridge.model import Operation, Request, Status
from posbridge.protocols.common.session import Completed

from tests.bridge.test_bridge import entries, wait_for_state
from tests.bridge.test_bridge_rules import final_event, raw_register


class TcpBridged:
    """A bridge whose register side listens on TCP (registers may come and go), its terminal, journal."""

    def __init__(self, terminal: BackgroundTerminal, bridge: Bridge, register_url: str, journal: Journal) -> None:
        self.terminal, self.bridge, self.register_url, self.journal = terminal, bridge, register_url, journal


@contextlib.asynccontextmanager
async def tcp_bridged(register_protocol: str, terminal_protocol: str, **options: Any) -> AsyncIterator[TcpBridged]:
    with BackgroundTerminal(terminal_protocol) as terminal:
        device = await open_device("tcp-listen://127.0.0.1:0")
        journal = Journal()
        bridge = Bridge(device, register_protocol, terminal.url, terminal_protocol, journal=journal, **options)
        serving = asyncio.get_running_loop().create_task(bridge.run())
        try:
            yield TcpBridged(terminal, bridge, f"tcp://127.0.0.1:{device.port}", journal)  # type: ignore[attr-defined]
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            await device.close()
            journal.close()


def charged(terminal: object) -> int:
    """Sales left in the terminal's open batch (approved, not reversed)."""
    return terminal.batch().sale_count  # type: ignore[attr-defined,no-any-return]


async def test_a_retry_with_the_same_stan_after_the_undelivered_sale_was_reversed_is_not_told_approved() -> None:
    async with tcp_bridged("inpas", "arcus2", register_options={"ack_timeout": 0.2}) as b:
        b.terminal.control.delays(host=0.5)
        async with raw_register(b.register_url, "inpas") as register:
            register.act(lambda now: register.session.start(Request(Operation.SALE, 70_00, transaction_id="41"), now))
            await wait_for_state(b.terminal, "authorizing")
            await register.stop()  # the register never acknowledges: the bridge reverses the sale
            await b.bridge.wait_idle()
        assert charged(b.terminal) == 0
        b.terminal.control.delays(host=0)
        # The cashier retries the very same sale (same STAN, amount): a retry in the host's eyes.
        async with raw_register(b.register_url, "inpas") as register:
            register.act(lambda now: register.session.start(Request(Operation.SALE, 70_00, transaction_id="41"), now))
            event = await final_event(register)
        await b.bridge.wait_idle()
        assert isinstance(event, Completed)
        told_approved = event.result.status is Status.APPROVED
        # Whatever it is told must match the terminal's batch: approved <=> charged.
        assert told_approved == (charged(b.terminal) == 1), \
            f"register told {event.result.status.value}, terminal holds {charged(b.terminal)} sale(s)"


async def test_a_register_that_hangs_up_mid_sale_and_retries_the_same_stan_at_once_is_never_told_approved_uncharged(
        ) -> None:
    """The retry arrives while the bridge still works on the first sale (busy answers), then after."""
    async with tcp_bridged("inpas", "arcus2") as b:
        b.terminal.control.delays(host=0.6)
        async with raw_register(b.register_url, "inpas") as register:
            register.act(lambda now: register.session.start(Request(Operation.SALE, 70_00, transaction_id="41"), now))
            await wait_for_state(b.terminal, "authorizing")
        # hung up; the cashier retries the same sale at once, again and again while told "busy"
        answers = []
        for _ in range(20):
            async with raw_register(b.register_url, "inpas") as register:
                register.act(lambda now: register.session.start(
                    Request(Operation.SALE, 70_00, transaction_id="41"), now))
                event = await final_event(register)
            assert isinstance(event, Completed)
            answers.append((event.result.status, event.result.host_code))
            if event.result.host_code != CODE_BUSY:
                break
            await asyncio.sleep(0.1)
        await b.bridge.wait_idle()
        final_status = answers[-1][0]
        assert (final_status is Status.APPROVED) == (charged(b.terminal) == 1), \
            f"register heard {answers}, terminal holds {charged(b.terminal)} sale(s)"


async def test_an_inpas_register_eot_while_the_terminal_authorizes_leaves_nothing_charged() -> None:
    async with tcp_bridged("inpas", "arcus2") as b:
        b.terminal.control.delays(host=0.6)
        async with raw_register(b.register_url, "inpas") as register:
            register.act(lambda now: register.session.start(Request(Operation.SALE, 90_00, transaction_id="44"), now))
            await wait_for_state(b.terminal, "authorizing")
            await register.device.write(b"\x04")  # EOT: the register gives the exchange up
            await asyncio.sleep(0.1)
            await b.bridge.wait_idle()
        await b.bridge.wait_idle()
        [outcome] = b.bridge.outcomes
        assert not outcome.delivered
        assert charged(b.terminal) == 0
        sale, reversal = entries(b.journal)
        assert sale.state == "done" and reversal.request.operation is Operation.EMERGENCY_REVERSAL


@pytest.mark.parametrize("register_protocol", ["inpas", "arcus2"])
async def test_a_request_whose_ack_and_wait_are_lost_is_one_operation_and_never_charged_unseen(
        register_protocol: str) -> None:
    """Arcus2 resends the request (the bridge must see one operation); INPAS sends it once and the
    register gives up (NoAck) while the bridge charges: the register's own recovery must undo it."""
    from posbridge.ecr import EcrClient

    terminal_protocol = "arcus2" if register_protocol == "inpas" else "inpas"
    async with tcp_bridged(register_protocol, terminal_protocol) as b:
        b.terminal.control.delays(card=1.0)  # nothing for the register to hear before it resends
        wire: list[tuple[str, bytes]] = []
        register = EcrClient(f"{b.register_url}?faults=rx:silence=0.2@0", register_protocol, journal=Journal(),
                             timers={"ack_timeout": 0.15}, trace=lambda direction, data: wire.append((direction, data)))
        try:
            try:
                sale = await register.sale(25_00)
            except Exception:
                assert register_protocol == "inpas"  # INPAS sends a request once
                await b.bridge.wait_idle()
                [entry] = register.unresolved()
                assert entry.state == "unknown"
                await register.recover()
                assert not register.unresolved()
                await b.bridge.wait_idle()
                assert charged(b.terminal) == 0
                return
        finally:
            await register.close()
        await b.bridge.wait_idle()
        written = [data for direction, data in wire if direction == "tx"]
        assert written and written[0] in written[1:], "the request was not resent"
        # Whatever the register heard matches the terminal's batch, and the terminal saw one sale.
        assert (sale.status is Status.APPROVED) == (charged(b.terminal) == 1), \
            f"register heard {sale.status.value} {sale.host_code}, terminal holds {charged(b.terminal)}"
        assert [o.operation for o in b.terminal.operations() if o.operation is Operation.SALE] == [Operation.SALE]
        assert sale.approved, f"a lost ACK cost the sale: {sale.status.value} {sale.host_code}"


async def test_a_refund_retried_with_the_same_stan_after_the_bridge_reversed_it_is_not_told_approved() -> None:
    async with tcp_bridged("inpas", "arcus2", register_options={"ack_timeout": 0.2}) as b:
        async with raw_register(b.register_url, "inpas") as register:
            register.act(lambda now: register.session.start(Request(Operation.SALE, 50_00, transaction_id="51"), now))
            sale = await final_event(register)
        assert isinstance(sale, Completed) and sale.result.approved and sale.result.rrn
        await b.bridge.wait_idle()
        refund = Request(Operation.REFUND, 50_00, transaction_id="52", rrn=sale.result.rrn)
        b.terminal.control.delays(host=0.5)
        async with raw_register(b.register_url, "inpas") as register:
            register.act(lambda now: register.session.start(refund, now))
            await wait_for_state(b.terminal, "authorizing")
            await register.stop()  # never acknowledged: the bridge reverses the refund
            await b.bridge.wait_idle()
        assert b.terminal.batch().refund_count == 0
        b.terminal.control.delays(host=0)
        async with raw_register(b.register_url, "inpas") as register:
            register.act(lambda now: register.session.start(refund, now))
            event = await final_event(register)
        await b.bridge.wait_idle()
        assert isinstance(event, Completed)
        refunded = b.terminal.batch().refund_count
        assert (event.result.status is Status.APPROVED) == (refunded == 1), \
            f"register told {event.result.status.value}, the batch holds {refunded} refund(s)"
