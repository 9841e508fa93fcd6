"""Gateway mode end to end: the virtual terminal reaches its bank host only through the ECR.

posbridge's EcrClient <-> virtual terminal (host_via_ecr) over a virtual line; every host message
crosses the client's GatewayRelay over real TCP to a HostService (the `posbridge host` core) with a
journal of its own."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from posbridge.ecr.gateway import GatewaySettings
from posbridge.emulator.config import TerminalConfig
from posbridge.emulator.host import BankHost, HostConfig
from posbridge.emulator.remote_host import HostService, start_host_service
from posbridge.journal import Journal
from posbridge.model import Operation, Status
from posbridge.testing import TerminalLink

TIMERS = {"ack_timeout": 0.5, "packet_timeout": 1.0}


class Host:
    """A HostService on a real loopback port, its journal in a file."""

    def __init__(self, journal_path: str) -> None:
        self.journal = Journal(journal_path)
        self.service = HostService(BankHost(self.journal, HostConfig(terminal_id="00344224")))
        self.server: asyncio.Server | None = None
        self.address = ""

    async def __aenter__(self) -> Host:
        self.server = await start_host_service(self.service, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.journal.close()


def _link(address: str, **client: object) -> TerminalLink:
    client.setdefault("gateway", GatewaySettings(receive_wait=0.3))
    return TerminalLink("inpas", config=TerminalConfig(host_via_ecr=address, timers=dict(TIMERS)),
                        client_options={"timers": dict(TIMERS), **client})


async def test_sale_refund_cancel_and_settlement_cross_the_ecr(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="posbridge.gateway")
    wire: list[bytes] = []
    async with Host(str(tmp_path / "host.sqlite3")) as host, \
            _link(host.address, trace=lambda direction, data: wire.append(data)) as link:
        sale = await link.client.sale(150_00)
        assert sale.approved and sale.rrn
        refund = await link.client.refund(50_00, rrn=sale.rrn)
        assert refund.approved
        other = await link.client.sale(20_00)
        cancel = await link.client.cancel(20_00, rrn=other.rrn, auth_code=other.auth_code)
        assert cancel.approved
        settlement = await link.client.settlement()
        assert settlement.approved
        assert host.service.requests == 5  # every decision was the remote host's
        # The host's batch lives in the host's journal; the terminal journaled nothing of its own.
        rows = host.journal.ledger.operations("00344224")
        assert [(r.operation, r.status) for r in rows] == [
            (Operation.SALE, Status.APPROVED), (Operation.REFUND, Status.APPROVED), (Operation.SALE, Status.APPROVED),
            (Operation.CANCEL, Status.APPROVED), (Operation.SETTLEMENT, Status.APPROVED)]
        assert link.terminal.journal.ledger.operations("00344224") == []
        assert settlement.totals is not None and settlement.totals.sale_amount == 150_00
        # The relay adds no operation of its own to the ECR's journal: one entry per operation.
        assert link.client.journal.ecr.counts_by_state() == {"done": 5}
        assert not link.client.unresolved()
    # No card number crossed the ECR in clear: not on its line, not in the gateway's logs.
    assert b"4111111111111111" not in b"".join(wire) and len(b"".join(wire)) > 2000
    assert "4111111111111111" not in caplog.text
    assert "gateway: connected to host" in caplog.text


async def test_an_unreachable_host_is_no_connection_and_nothing_charged(tmp_path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    async with _link(dead) as link:
        result = await link.client.sale(150_00)
    assert result.status is Status.NO_CONNECTION and not result.approved
    assert not link.client.unresolved()


async def test_an_ecr_that_refuses_to_relay_gets_no_connection(tmp_path) -> None:
    async with Host(str(tmp_path / "host.sqlite3")) as host, \
            _link(host.address, gateway=GatewaySettings(enabled=False)) as link:
        result = await link.client.sale(150_00)
    assert result.status is Status.NO_CONNECTION
    assert host.service.requests == 0


async def test_a_host_that_closes_mid_exchange_leaves_an_unknown_outcome_that_recovery_resolves(tmp_path) -> None:
    """The host decides (and charges) but its answer never comes back: the ECR must not report a
    result it did not see; recovery reverses the charge through the same gateway."""
    async with Host(str(tmp_path / "host.sqlite3")) as host, _link(host.address) as link:
        original = host.service._answer

        async def decide_then_hang_up(message):
            await original(message)  # the host journals its decision...
            raise ConnectionResetError("host went away")  # ...and closes without answering
        host.service._answer = decide_then_hang_up  # type: ignore[method-assign]
        with pytest.raises(Exception):
            await link.client.sale(150_00)
        assert len(link.client.unresolved()) == 1
        host.service._answer = original  # type: ignore[method-assign]
        recoveries = await link.client.recover()
        assert [r.resolved for r in recoveries] == [True]
        rows = host.journal.ledger.operations("00344224")
        # The sale was approved and charged at the host, then reversed by the recovery's request,
        # which crossed the ECR like any other: nothing stays charged.
        assert rows[0].operation is Operation.SALE and rows[0].status is Status.APPROVED
        assert len(rows) == 2 and host.service.requests == 2  # the sale, then recovery's reversal
        assert rows[1].operation is not Operation.SALE and rows[1].status is Status.APPROVED
        assert host.service.host.totals().sale_amount == 0
        assert not link.client.unresolved()


async def test_a_slow_host_keeps_the_ecr_waiting_with_wait_packets(tmp_path) -> None:
    """The host answers in 2.5 s; the ECR gives up on a silent terminal after 1 s (packet timer). Each
    receive that finds nothing yet is followed by the terminal's WAIT, so the sale completes."""
    progress: list[str] = []
    async with Host(str(tmp_path / "host.sqlite3")) as host:
        host.service.latency = 2.5
        async with _link(host.address, on_progress=lambda p: progress.append(p.text)) as link:
            result = await link.client.sale(150_00)
    assert result.approved
    assert len(progress) >= 3  # WAIT packets while the host thought (receive_wait 0.3 s, WAITPACKET 1 s)


async def test_a_host_slower_than_the_terminals_host_timeout_is_an_unknown_outcome(tmp_path) -> None:
    async with Host(str(tmp_path / "host.sqlite3")) as host:
        host.service.latency = 3.0
        config = TerminalConfig(host_via_ecr=host.address, timers=dict(TIMERS), host_timeout=1.0)
        async with TerminalLink("inpas", config=config, client_options={
                "timers": dict(TIMERS), "gateway": GatewaySettings(receive_wait=0.3)}) as link:
            with pytest.raises(Exception):
                await link.client.sale(150_00)
            assert len(link.client.unresolved()) == 1  # never reported as declined or approved
            await asyncio.sleep(2.5)  # the host has decided (and charged) meanwhile
            assert host.service.host.totals().sale_amount == 150_00
            host.service.latency = 0.0  # the host is quick again: recovery's reversal gets through
            [recovery] = await link.client.recover()
            assert recovery.resolved
        assert host.service.host.totals().sale_amount == 0  # reversed at the host
