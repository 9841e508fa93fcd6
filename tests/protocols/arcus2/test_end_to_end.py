"""Arcus2-style against posbridge's virtual terminal over an in-memory link: abort, remapped ops.ini."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from posbridge import protocols
from posbridge.devices import open_device
from posbridge.ecr.client import EcrClient
from posbridge.journal import Journal
from posbridge.pump import SessionPump
from posbridge.emulator.terminal import TerminalConfig, VirtualTerminal
from posbridge.protocols.arcus2.ops import parse_ops_ini
from posbridge.protocols.arcus2.spec import spec_for_installation
from posbridge.protocols.common.model import Operation, Request, Status
from posbridge.protocols.common.session import Completed, Progress

FAST = {"ack_timeout": 1.0, "packet_timeout": 2.0}


@contextlib.asynccontextmanager
async def serving(terminal: VirtualTerminal):
    name = f"virtual://arcus2-e2e-{uuid.uuid4().hex}"
    terminal_end, ecr_end = await open_device(name), await open_device(name)
    task = asyncio.get_running_loop().create_task(terminal.serve(terminal_end, keep_open=True))
    try:
        yield ecr_end
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ecr_end.close()
        await terminal_end.close()


async def test_abort_while_the_terminal_waits_for_the_card():
    config = TerminalConfig(timers=FAST, card_delay=5.0, progress_interval=0.05)
    terminal = VirtualTerminal("arcus2", config=config)
    async with serving(terminal) as device:
        session = protocols.get("arcus2").ecr_session(timers=FAST)
        pump = SessionPump(device, session)
        pump.start()
        try:
            pump.act(lambda now: session.start(Request(Operation.SALE, 100_00, transaction_id="1"), now))
            assert isinstance(await pump.next_event(2.0), Progress)
            pump.act(session.abort)
            while not isinstance(event := await pump.next_event(2.0), Completed):
                assert isinstance(event, Progress)
        finally:
            await pump.stop()
    result = event.result
    assert (result.status, result.response_code, result.host_code) == (Status.ABORTED, "998", "998")
    assert "ОПЕРАЦИЯ ПРЕРВАНА" in result.slips.customer
    assert terminal.host.totals().sale_count == 0


async def test_an_installations_ops_ini_on_both_ends():
    spec = spec_for_installation(parse_ops_ini("101 = 1, 1, PAYMENT\n196 = 3, 96, TEST\n7 = 2, 7, SETTLEMENT\n"))
    terminal = VirtualTerminal("arcus2", config=TerminalConfig(timers=FAST))
    terminal.protocol = spec
    frames: list[bytes] = []
    async with serving(terminal) as device:
        client = EcrClient(device, "arcus2", journal=Journal(), timers=FAST,
                           trace=lambda direction, data: frames.append(data) if direction == "tx" else None)
        client.protocol = spec
        async with client:
            assert (await client.sale(10_00)).approved
            assert (await client.test_connection()).approved
    assert any(b"operation=101\x1c" in frame for frame in frames)
    assert any(b"operation=196" in frame for frame in frames)
