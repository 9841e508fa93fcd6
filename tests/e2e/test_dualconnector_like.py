"""The virtual terminal serves an ECR that behaves like INPAS DualConnector over TCP (inpas-sa.md,
"How the vendor's own ECR library behaves"): one connection per exchange, the request sent at once,
fields in ascending tag order with tag 89, TRIPLEACK (extra ACKs) and EOT, then close."""

from __future__ import annotations

import asyncio
import contextlib

from posbridge.emulator.terminal import VirtualTerminal
from posbridge.protocols.inpas.constants import ACK, EOT
from posbridge.protocols.inpas.fields import Message
from posbridge.protocols.inpas.frame import FrameScanner, FrameToken, encode_frame


async def exchange(port: int, fields: dict, triple_ack: bool) -> Message:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_frame(Message(fields).encode_body()))
    scanner = FrameScanner()
    answer = None
    while answer is None:
        data = await asyncio.wait_for(reader.read(4096), 5)
        assert data, "the terminal closed the connection"
        for token in scanner.feed(data):
            if isinstance(token, FrameToken):
                writer.write(bytes([ACK]))
                message = Message.decode_body(token.body)
                if message.operation_code != 21:
                    answer = message
    if triple_ack:
        await asyncio.sleep(0.02)
        writer.write(bytes([ACK]))
        await asyncio.sleep(0.02)
        writer.write(bytes([ACK, EOT]))
    else:
        writer.write(bytes([EOT]))
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    return answer


async def test_one_connection_per_exchange_with_tripleack():
    terminal = VirtualTerminal("inpas")
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    task = asyncio.get_running_loop().create_task(
        terminal.run("tcp-listen://127.0.0.1:0", ready=lambda device: ready.set_result(device.port)))
    port = await asyncio.wait_for(ready, 5)
    try:
        ecr_id = "CON:SW:DC;1.3.5.2;SA:;2;"
        sale = await exchange(port, {0: 15000, 4: "643", 25: 1, 26: "1", 27: "00344224", 89: ecr_id}, True)
        assert (sale.get(25), sale.get(39), sale.get(15), sale.get(0)) == ("1", "1", "001", "15000")
        test = await exchange(port, {25: 26, 27: "00344224"}, False)
        assert test.get(39) == "1"
        refund = await exchange(port, {0: 5000, 4: "643", 14: sale.get(14), 25: 29, 26: "2", 27: "00344224",
                                       89: ecr_id}, True)
        assert refund.get(39) == "1" and refund.get(0) == "5000"
        no_rrn = await exchange(port, {0: 5000, 4: "643", 25: 29, 26: "3", 27: "00344224", 89: ecr_id}, True)
        assert no_rrn.get(39) == "16" and no_rrn.get(15) == "9012"  # declined clearly: no RRN
        totals = terminal.host.totals()
        assert (totals.sale_amount, totals.refund_amount) == (15000, 5000)
        assert terminal.undelivered == []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_ecr_that_hangs_up_mid_operation_does_not_stop_the_terminal():
    from posbridge.emulator.terminal import TerminalConfig

    terminal = VirtualTerminal("inpas", config=TerminalConfig(card_delay=0.3, progress_interval=0.1))
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    task = asyncio.get_running_loop().create_task(
        terminal.run("tcp-listen://127.0.0.1:0", ready=lambda device: ready.set_result(device.port)))
    port = await asyncio.wait_for(ready, 5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode_frame(Message({0: 15000, 4: "643", 25: 1, 26: "1"}).encode_body()))
        await writer.drain()
        await asyncio.wait_for(reader.read(1), 5)  # the ACK: the terminal now waits for the card
        writer.close()  # the cash register crashes
        await writer.wait_closed()
        await asyncio.sleep(0.6)
        assert not task.done()
        answer = await exchange(port, {25: 26, 27: "00344224"}, False)  # the next ECR is served
        assert answer.get(39) == "1"
        assert terminal.host.totals().sale_amount == 0  # the card never came: nothing charged
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_client_reconnects_after_the_terminal_hung_up():
    from posbridge.devices import open_device
    from posbridge.ecr.client import EcrClient

    terminal = VirtualTerminal("inpas")
    listener = await open_device("tcp-listen://127.0.0.1:0")
    task = asyncio.get_running_loop().create_task(terminal.serve(listener, keep_open=True))
    try:
        async with EcrClient(f"tcp://127.0.0.1:{listener.port}", "inpas") as ecr:
            assert (await ecr.sale(10_00)).approved
            await ecr._device.close()  # the line drops (as when the terminal restarts)
            await asyncio.sleep(0.1)
            assert (await asyncio.wait_for(ecr.sale(20_00), 10)).approved
        assert terminal.host.totals().sale_amount == 30_00
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await listener.close()
