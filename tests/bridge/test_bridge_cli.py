"""``posbridge bridge`` as a real process: the register on a pseudo-terminal the bridge creates, the
terminal (a virtual one in a thread) over TCP, the journal a file; SIGTERM ends it with exit 0."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from posbridge.ecr import EcrClient
from posbridge.journal import Journal
from posbridge.model import Operation, Status
from posbridge.testing.background import BackgroundTerminal

from tests.bridge.test_bridge import DIRECTIONS, entries


class Lines:
    """A process's output a line at a time, with a timeout (a thread reads until end of file)."""

    def __init__(self, stream: object) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._queue.put(line.rstrip("\n"))

    def next(self, timeout: float = 15.0) -> str:
        return self._queue.get(timeout=timeout)

    def rest(self) -> list[str]:
        self._thread.join(10)
        lines = []
        while not self._queue.empty():
            lines.append(self._queue.get_nowait())
        return lines


@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_the_bridge_command_serves_a_register_journals_each_operation_and_ends_on_sigterm(
        register_protocol: str, terminal_protocol: str, as_json: bool, tmp_path: Path) -> None:
    link, journal_path = tmp_path / "ttyREG", tmp_path / "bridge.sqlite3"
    with BackgroundTerminal(terminal_protocol, transport="tcp") as terminal:
        command = [sys.executable, "-m", "posbridge", "bridge", "--ecr", f"pty://{link}",
                   "--ecr-protocol", register_protocol, "--terminal", terminal.url,
                   "--terminal-protocol", terminal_protocol, "--journal", str(journal_path)]
        process = subprocess.Popen(command + (["--json"] if as_json else []), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        out, err = Lines(process.stdout), Lines(process.stderr)
        try:
            if as_json:
                ready = json.loads(err.next())
                assert ready == {"bridge": "ready", "ecr": f"pty://{link}", "terminal": terminal.url,
                                 "journal": str(journal_path)}
            else:
                assert out.next() == (f"bridge ready: register ({register_protocol}) on pty://{link} <-> terminal "
                                      f"({terminal_protocol}) on {terminal.url}; journal {journal_path}")

            async def register() -> tuple[object, object]:
                async with EcrClient(f"serial://{link}", register_protocol, journal=Journal()) as client:
                    sale = await client.sale(25_00)
                    refund = await client.refund(5_00, sale.rrn or "")
                    client.journal.close()
                    return sale, refund
            sale, refund = asyncio.run(register())
            first, second = out.next(), out.next()
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
            for stream in (process.stdout, process.stderr):
                assert stream is not None
                stream.close()
        assert sale.status is Status.APPROVED and refund.status is Status.APPROVED  # type: ignore[attr-defined]
        assert out.rest() == []
        assert not any("Traceback" in line for line in err.rest())
        if as_json:
            first_json, second_json = json.loads(first), json.loads(second)
            assert {k: first_json[k] for k in ("operation", "amount", "currency", "status", "rrn", "delivered",
                                                "journal_entry")} == \
                {"operation": "sale", "amount": 25_00, "currency": 643, "status": "approved",
                 "rrn": sale.rrn, "delivered": True, "journal_entry": 1}  # type: ignore[attr-defined]
            assert (second_json["operation"], second_json["amount"], second_json["journal_entry"]) == \
                ("refund", 5_00, 2)
        else:
            assert first.startswith("sale 25.00 RUB #") and f"-> approved code" in first
            assert f"rrn {sale.rrn}, delivered (journal #1)" in first  # type: ignore[attr-defined]
            assert second.startswith("refund 5.00 RUB #") and "delivered (journal #2)" in second
        [terminal_sale, terminal_refund] = terminal.operations()
        assert (terminal_sale.amount, terminal_refund.amount) == (25_00, 5_00)
    with Journal(journal_path, readonly=True) as journal:
        assert [(e.request.operation, e.state) for e in entries(journal)] == \
            [(Operation.SALE, "done"), (Operation.REFUND, "done")]


def test_a_line_the_bridge_cannot_open_is_one_line_and_exit_2(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "posbridge", "bridge", "--ecr", "nosuch://x", "--ecr-protocol", "inpas",
         "--terminal", "tcp://127.0.0.1:9", "--terminal-protocol", "arcus2", "--journal", str(tmp_path / "j.db")],
        capture_output=True, text=True, timeout=30)
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and completed.stderr.startswith("posbridge: ")
    assert "nosuch" in completed.stderr
