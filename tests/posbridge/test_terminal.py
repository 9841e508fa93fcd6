"""The virtual terminal's state machine, determinism and the blocking client facade."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import datetime

import pytest

from posbridge.devices import open_device
from posbridge.emulator.cards import Card
from posbridge.ecr.client import BlockingEcrClient
from posbridge.emulator.host import HostConfig
from posbridge.journal import Journal
from posbridge.emulator.scenario import ScenarioError, scenario_from_dict
from posbridge.emulator.terminal import TerminalConfig, VirtualTerminal
from posbridge.testing import TerminalLink

NOW = datetime(2026, 11, 22, 9, 15, 0)


async def test_a_sale_walks_every_state_of_the_machine():
    async with TerminalLink("inpas", clock=lambda: NOW) as link:
        assert (await link.client.sale(10_00)).approved
        for _ in range(100):  # the ECR has its result before the terminal has seen the ACK
            if link.terminal.state == "idle":
                break
            await asyncio.sleep(0.01)
        assert list(link.terminal.state_history) == ["request_received", "waiting_for_card", "pin_entry", "authorizing", "printing",
                          "sending_result", "idle"]


async def _wire_bytes(seed: int) -> list[tuple[str, bytes]]:
    trace: list[tuple[str, bytes]] = []
    link = TerminalLink("inpas", clock=lambda: NOW, host_config=HostConfig(seed=seed),
                        trace=lambda direction, data: trace.append((direction, data)),
                        client_options={"clock": lambda: NOW})
    async with link:
        sale = await link.client.sale(123_45)
        await link.client.refund(23_45, rrn=sale.rrn)
        link.terminal.cards.present(Card("5432543254325430"))
        await link.client.sale(1_00)
        await link.client.settlement()
    return trace


async def test_same_inputs_same_bytes_and_another_seed_other_bytes():
    first, second, other = await _wire_bytes(5), await _wire_bytes(5), await _wire_bytes(6)
    assert b"".join(d for _, d in first) == b"".join(d for _, d in second)
    assert b"".join(d for _, d in first) != b"".join(d for _, d in other)


async def test_settlement_report_arrives_in_parts_and_is_reassembled():
    config = TerminalConfig(part_size=128)
    frames = []
    link = TerminalLink("inpas", config=config, trace=lambda d, data: frames.append(data) if d == "tx" else None)
    async with link:
        for amount in (100_00, 200_00, 300_00):
            assert (await link.client.sale(amount)).approved
        frames.clear()
        result = await link.client.settlement()
    assert any(frame[:1] == b"\x01" for frame in frames)  # SOH parts went out
    assert result.totals.sale_amount == 600_00 and "СВЕРКА ИТОГОВ" in result.slips.customer


def test_blocking_client_runs_operations_from_plain_code():
    name = f"virtual://blocking-{uuid.uuid4().hex}"
    loop = asyncio.new_event_loop()
    terminal = VirtualTerminal("inpas")
    ready = threading.Event()

    async def serve():
        device = await open_device(name)
        ready.set()
        try:
            await terminal.serve(device, keep_open=True)
        except asyncio.CancelledError:
            await device.close()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert ready.wait(5)
    with BlockingEcrClient(name, "inpas") as ecr:
        sale = ecr.sale(150_00)
        assert sale.approved and sale.amount == 150_00
        assert ecr.refund(150_00, rrn=sale.rrn).approved
        assert ecr.settlement().totals.refund_amount == 150_00
        assert ecr.journal.ecr.unresolved() == []
        with pytest.raises(AttributeError):
            ecr.no_such_operation  # noqa: B018
    loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
    thread.join(5)
    loop.run_until_complete(loop.shutdown_default_executor())  # the terminal's report threads
    loop.close()


async def test_client_journal_on_a_real_file_records_every_operation(tmp_path):
    path = tmp_path / "ecr.sqlite3"
    async with TerminalLink("inpas", client_options={"journal": Journal(path)}) as link:
        await link.client.sale(10_00)
        link.terminal.cards.present(Card("4444444444443333"))
        await link.client.sale(20_00)
        link.client.journal.close()
    journal = Journal(path)
    last = journal.ecr.last(link.client.journal_key)
    assert last is not None and last.state == "done"
    assert journal.ecr.unresolved() == []
    raw = path.read_bytes()
    assert b"4444444444443333" not in raw and b"4111111111111111" not in raw


def test_scenario_keys_are_checked():
    scenario = scenario_from_dict({"seed": 3, "terminal": {"copies": 1, "timers": {"ack_timeout": 0.5}},
                                   "host": {"latency": 0.2, "fault": "no_connection"},
                                   "cards": [{"pan": "5100000000000008"}]})
    assert scenario.host.seed == 3 and scenario.host.fault == "no_connection"
    assert scenario.terminal.copies == 1 and scenario.terminal.timers == {"ack_timeout": 0.5}
    assert scenario.cards[0].masked_pan == "510000******0008"
    with pytest.raises(ScenarioError, match="terminal.colour"):
        scenario_from_dict({"terminal": {"colour": "red"}})
    with pytest.raises(ScenarioError, match="fault"):
        scenario_from_dict({"host": {"fault": "meteor"}})
