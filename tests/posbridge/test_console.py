"""The technician's console: commands over the client, and the prompt_toolkit loop itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from posbridge.emulator.cards import Card
from posbridge.cli.console import Console, ConsoleQuit, run_console
from posbridge.testing import TerminalLink

ROOT = Path(__file__).resolve().parents[2]


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


async def test_trace_decodes_arcus2_frames_and_the_sale_completes():
    """The Arcus2 trace once raised inside the pump's callback (a describer entry without INPAS's
    shape) and the sale never ended: one description schema for every protocol."""
    async with TerminalLink("arcus2") as link:
        lines: list[str] = []
        console = Console(link.client, lines.append)
        await console.handle("trace on")
        sale = await console.handle("sale 2.00")
        assert sale.startswith("sale: APPROVED"), sale
        decoded = [line.strip() for line in lines if line.startswith("   ")]
        assert "ENQ" in decoded and "ACK" in decoded and "EOT" in decoded
        assert any(line.startswith("SOH v2 length") and "request(Q): operation=1, amount=200" in line
                   for line in decoded)
        assert any("result(R)" in line and "response_code=000" in line for line in decoded)
        assert all("\n" not in line for line in lines if line.startswith("   "))  # a slip stays on one line
        assert "4111111111111111" not in "\n".join(lines)


def test_posbridge_console_arcus2_with_trace_completes_a_sale(tmp_path: Path) -> None:
    """The command as a technician types it, against ``posbridge emulate`` in its own process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "POSBRIDGE_LOCK_DIR": str(tmp_path)}
    emulator = subprocess.Popen(
        [sys.executable, "-m", "posbridge", "emulate", "--protocol", "arcus2", "--port", "tcp-listen://127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", cwd=ROOT, env=env)
    try:
        assert emulator.stdout is not None
        found = re.search(r"listening on tcp-listen://127\.0\.0\.1:(\d+)", emulator.stdout.readline())
        assert found, "the emulator did not start"
        console = subprocess.run(
            [sys.executable, "-m", "posbridge", "console", "--protocol", "arcus2", "--trace",
             "--port", f"tcp://127.0.0.1:{found.group(1)}", "--journal", str(tmp_path / "ecr.sqlite")],
            input="sale 1.00\nquit\n", capture_output=True, text=True, encoding="utf-8", cwd=ROOT, env=env,
            timeout=60)
    finally:
        emulator.terminate()
        emulator.communicate(timeout=10)
    out = console.stdout
    assert console.returncode == 0, console.stderr
    assert "sale: APPROVED" in out and "1.00 RUB" in out
    assert re.search(r"^-> 01 00 [0-9a-f ]+$", out, re.M)  # the request frame, in hex
    assert "request(Q): operation=1, amount=100" in out and "result(R): operation=1, response_code=000" in out
    assert "trace callback failed" not in console.stderr + out
    assert "4111111111111111" not in out + console.stderr


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
