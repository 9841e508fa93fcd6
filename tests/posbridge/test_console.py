"""The technician's console: commands over the client, and the prompt_toolkit loop itself."""

from __future__ import annotations

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from posbridge.emulator.cards import Card
from posbridge.cli.console import Console, ConsoleQuit, run_console
from posbridge.testing import TerminalLink


async def test_commands_run_operations_and_show_results():
    async with TerminalLink("inpas") as link:
        lines: list[str] = []
        console = Console(link.client, lines.append)
        sale = await console.handle("sale 150.00")
        assert sale.startswith("sale: APPROVED") and "150.00 RUB" in sale
        rrn = next(line.split()[-1] for line in sale.splitlines() if line.strip().startswith("rrn:"))
        assert (await console.handle(f"refund 50 {rrn}")).startswith("refund: APPROVED")
        link.terminal.cards.present(Card("5432543254325430"))
        declined = await console.handle("sale 1.00")
        assert "DECLINED" in declined and "5432543254325430" not in declined
        assert "totals: sales 1 / 150.00 RUB" in await console.handle("settlement")
        assert await console.handle("journal") == "no unresolved operations"


async def test_trace_shows_bytes_and_decoded_frames():
    async with TerminalLink("inpas") as link:
        lines: list[str] = []
        console = Console(link.client, lines.append)
        assert await console.handle("trace on") == "trace on"
        await console.handle("test")
        assert any(line.startswith("-> 02") for line in lines)  # our request frame
        assert any("operation_code=26" in line for line in lines)  # decoded
        assert any(line.strip() == "ACK" for line in lines)
        await console.handle("trace off")
        count = len(lines)
        await console.handle("test")
        assert len(lines) == count


async def test_bad_input_is_answered_not_raised():
    async with TerminalLink("inpas") as link:
        console = Console(link.client, lambda text: None)
        assert "type help" in await console.handle("sale")
        assert "type help" in await console.handle("sale 0")
        assert "unknown command" in await console.handle("fly")
        assert "cannot read" in await console.handle('sale "150')
        assert "trace on | trace off" == await console.handle("trace maybe")
        assert await console.handle("decode 0205001902003231a5c2") == "STX length 5 crc ok: 25:operation_code=21"
        assert "sale AMOUNT" in await console.handle("help")
        with pytest.raises(ConsoleQuit):
            await console.handle("quit")


async def test_the_prompt_loop_reads_commands_until_quit():
    async with TerminalLink("inpas") as link:
        with create_pipe_input() as pipe:
            pipe.send_text("test\nsale 2.00\nquit\n")
            await run_console(link.client, input=pipe, output=DummyOutput())
        assert link.terminal.host.totals().sale_amount == 200
