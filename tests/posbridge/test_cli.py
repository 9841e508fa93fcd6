"""The ``posbridge`` command: demo, decode, operations against ``posbridge emulate``, bad input."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import posbridge
from posbridge.emulator.cards import TEST_CARDS, Card
from posbridge.cli import main
from posbridge.journal import default_journal_path
from tests.e2e.test_outside_program import start_emulator, stop

SALE_HEX = "021b00000300313530040300363433190100311b0800303033343432323432dd"
ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_every_operation_and_shows_no_card_number(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for title in ("Sale 150.00", "Refund 50.00", "Cancel of the 200.00 sale", "Pre-authorization 1000.00",
                  "Partial completion 750.00", "no funds", "Settlement"):
        assert title in out
    assert "UNEXPECTED" not in out and "all steps gave the expected outcome" in out
    assert "ОТКЛОНЕНО" in out and "116" in out and "КОПИЯ КАССИРА" in out
    for pan in [*TEST_CARDS, "4111111111111111"]:
        assert pan not in out


def test_decode_prints_each_frame_as_json(capsys):
    assert main(["decode", "--protocol", "inpas", SALE_HEX, "06"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (lines[0]["kind"], lines[0]["name"], lines[0]["check"], lines[0]["check_ok"]) == ("frame", "STX", "crc", True)
    assert {f["key"]: f["value"] for f in lines[0]["fields"]} == {
        "0": "150", "4": "643", "25": "1", "27": "00344224"}
    assert {"key": "25", "name": "operation_code", "value": "1"} in lines[0]["fields"]
    assert lines[1] == {"kind": "control", "offset": 32, "size": 1, "name": "ACK"}


def test_decode_names_offset_and_reason_of_a_bad_frame(capsys):
    assert main(["decode", "--protocol", "inpas", SALE_HEX[:-4] + "3222"]) == 1
    frame = json.loads(capsys.readouterr().out)
    assert frame["problems"][0]["reason"] == "crc" and frame["offset"] == 0 and frame["check_ok"] is False
    assert main(["decode", "--protocol", "inpas", "zz"]) == 2
    assert "hex" in capsys.readouterr().err


def test_bad_amount_is_a_clear_error(capsys, tmp_path):
    code = main(["sale", "0", "--port", "virtual://nobody", "--journal", str(tmp_path / "j.sqlite3")])
    assert code == 2
    assert "InvalidRequest" in capsys.readouterr().err
    assert main(["sale", "12.345", "--port", "virtual://nobody", "--journal", str(tmp_path / "j.sqlite3")]) == 2


@pytest.mark.timeout(90)
def test_operations_from_the_command_line_against_the_emulator(tmp_path, capsys):
    link = tmp_path / "ttyPOS"
    journal = str(tmp_path / "ecr.sqlite3")
    proc = start_emulator(link)
    try:
        port = f"serial://{link}"
        assert main(["sale", "150.00", "--port", port, "--journal", journal, "--json"]) == 0
        sale = json.loads(capsys.readouterr().out)
        assert sale["approved"] and sale["amount"] == 15000 and sale["status"] == "approved"
        assert main(["refund", "20.00", "--rrn", sale["rrn"], "--port", port, "--journal", journal]) == 0
        text = capsys.readouterr().out
        assert text.startswith("refund: APPROVED") and "20.00 RUB" in text and "ВОЗВРАТ" in text
        assert main(["test", "--port", port, "--journal", journal]) == 0
        assert capsys.readouterr().out.startswith("test_connection: APPROVED")
        assert main(["settlement", "--port", port, "--journal", journal, "--json"]) == 0
        settlement = json.loads(capsys.readouterr().out)
    finally:
        log = stop(proc)
    assert settlement["totals"]["sale_amount"] == 15000 and settlement["totals"]["refund_amount"] == 2000
    assert "4111111111111111" not in log


def test_devices_explains_in_a_sentence(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "Traceback" not in out
    assert out.startswith(("No terminal found.", "Terminals found:"))


def test_port_auto_without_a_terminal_says_why(capsys, tmp_path):
    code = main(["sale", "1.00", "--port", "auto", "--journal", str(tmp_path / "j.sqlite3")])
    err = capsys.readouterr().err
    if code == 2:  # no terminal on this machine (CI): the sentence says what was seen and what to do
        assert "--port auto found" in err and "--port" in err


def test_arcus2_cli_is_reachable_from_the_posbridge_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["arcus2-cli", "/o1", "/a15000", "/c643"]) == 0
    assert (tmp_path / "rc.out").read_bytes() == b"000"
    assert (tmp_path / "output.dat").read_bytes().startswith(b"000\r\n")
    assert "ОДОБРЕНО" in (tmp_path / "cheq.out").read_text(encoding="cp1251")


@pytest.mark.timeout(60)
def test_emulator_with_a_line_fault_still_completes_a_sale(tmp_path, capsys):
    link = tmp_path / "ttyPOS"
    # The 5th byte the terminal receives is damaged: the CRC fails, NAK, the ECR resends.
    proc = start_emulator(link, "--fault", "rx:corrupt@4")
    try:
        assert main(["sale", "10.00", "--port", f"serial://{link}", "--journal", str(tmp_path / "e.sqlite3"),
                     "--json"]) == 0
    finally:
        stop(proc)
    assert json.loads(capsys.readouterr().out)["approved"]


def test_registry_export_from_the_emulators_journal(tmp_path, capsys):
    import asyncio
    import csv
    import xml.etree.ElementTree as ET

    from posbridge.journal import Journal
    from posbridge.testing import TerminalLink

    path = tmp_path / "terminal.sqlite3"

    async def run() -> None:
        async with TerminalLink("inpas", journal=Journal(path)) as link:
            sale = await link.client.sale(150_00)
            await link.client.refund(50_00, rrn=sale.rrn)
            link.terminal.cards.present(Card("5432543254325430"))
            await link.client.sale(1_00)
            link.terminal.journal.close()

    asyncio.run(run())
    assert main(["export", "--journal", str(path), "--side", "terminal"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [(r["kind"], r["outcome"], r["amount_minor_units"]) for r in rows] == [
        ("sale", "approved", "15000"), ("refund", "approved", "5000"), ("sale", "declined", "100")]
    assert rows[2]["response_code"] == "116" and rows[0]["masked_pan"] == "411111******1111"
    out = tmp_path / "registry.xml"
    assert main(["export", "--journal", str(path), "--format", "xml", "--outcome", "approved",
                 "-o", str(out)]) == 0
    root = ET.parse(out).getroot()
    assert len(root) == 2 and "4111111111111111" not in out.read_text(encoding="utf-8")
    assert main(["export", "--journal", str(tmp_path / "none.sqlite3")]) == 2


# --- issue 13, item 6: the command as scripts and technicians meet it (real processes) ----------------
def posbridge_process(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess[str]:
    """``python -m posbridge ARGS`` as a separate process, its output captured."""
    return subprocess.run([sys.executable, "-m", "posbridge", *args], capture_output=True, text=True,
                          encoding="utf-8", cwd=ROOT, timeout=timeout, **kwargs)



def test_version_and_the_default_journal_in_help():
    done = posbridge_process("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"posbridge {posbridge.__version__}\n", "")
    wide = {**os.environ, "COLUMNS": "200"}  # argparse wraps at the terminal's width
    journal = str(default_journal_path())
    top = posbridge_process("--help", env=wide)
    assert top.returncode == 0 and journal in top.stdout and "141" in top.stdout
    for command in ("sale", "reverse-last", "recover", "console"):
        assert f"default {journal}" in posbridge_process(command, "--help", env=wide).stdout, command


@pytest.mark.parametrize("args", [["demo"], ["decode", "06" * 40_000], ["decode", "--text", SALE_HEX * 2000]])
def test_a_closed_output_pipe_ends_quietly_with_141(args):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: `posbridge … | head -c0`
    try:
        proc = subprocess.run([sys.executable, "-m", "posbridge", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_head_c1_on_the_shell_gives_no_traceback():
    command = f"{shlex.quote(sys.executable)} -m posbridge demo | head -c1; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert len(done.stdout) == 1
    assert done.returncode in (0, 141) and done.stderr == ""  # 0 when all was written before head left


@pytest.mark.timeout(180)
def test_json_alone_on_stdout_after_recovery_then_cancel_of_a_refund_and_reverse_last(tmp_path):
    from tests.posbridge.test_terminal_logs import Emulator

    emulator = Emulator(tmp_path, "inpas")  # its host answers after 0.4 s
    journal = str(tmp_path / "ecr.sqlite3")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return posbridge_process(*args, "--port", f"tcp://127.0.0.1:{emulator.port}", "--journal", journal)

    try:
        lost = cli("sale", "5.00", "--timeout", "0.2", "--json")  # gives up before the host answers
        assert lost.returncode == 2 and lost.stdout == ""
        assert "outcome of this sale is UNKNOWN" in lost.stderr and "posbridge recover" in lost.stderr
        after = cli("sale", "150.00", "--json")  # recovery of the lost sale runs first
        assert after.returncode == 0, after.stderr
        sale = json.loads(after.stdout)  # stdout holds the JSON and nothing else
        assert sale["approved"] and sale["amount"] == 150_00
        assert after.stderr.startswith("recovery: #1 sale 5.00 RUB") and "reversed" in after.stderr
        refund = json.loads(cli("refund", "20.00", "--rrn", sale["rrn"], "--json").stdout)
        assert refund["approved"] and refund["operation"] == "refund"
        cancel = cli("cancel", "20.00", "--of", "refund", "--rrn", refund["rrn"], "--json")
        assert cancel.returncode == 0, cancel.stderr
        voided = json.loads(cancel.stdout)
        assert (voided["operation"], voided["status"], voided["amount"]) == ("cancel", "approved", 20_00)
        small = json.loads(cli("sale", "3.00", "--json").stdout)
        reverse = cli("reverse-last", "--json")
        assert reverse.returncode == 0, reverse.stderr
        reversed_ = json.loads(reverse.stdout)
        assert (reversed_["operation"], reversed_["status"], reversed_["host_code"]) == (
            "emergency_reversal", "approved", "400")
        assert (reversed_["rrn"], reversed_["amount"]) == (small["rrn"], 3_00)
        settled = cli("settlement", "--json")
        totals = json.loads(settled.stdout)["totals"]
    finally:
        log = emulator.stop()
    # What the terminal's batch says: the 5.00 and 3.00 sales reversed, the refund voided.
    assert (totals["sale_count"], totals["sale_amount"]) == (1, 150_00)
    assert (totals["refund_count"], totals["refund_amount"]) == (0, 0)
    assert (totals["cancel_count"], totals["cancel_amount"]) == (1, 20_00)
    assert "4111111111111111" not in log


@pytest.mark.timeout(90)
def test_a_cashier_dialog_on_a_tty_asks_on_stderr_and_json_stays_alone_on_stdout(tmp_path):
    """The terminal asks for the card's last 4 digits; the cashier types them on the terminal (a pty as
    stdin); the question and the prompt go to stderr, stdout holds the result's JSON only."""
    link = tmp_path / "ttyPOS"
    proc = start_emulator(link, "--scenario", str(ROOT / "examples" / "scenarios" / "cashier_dialog.toml"))
    master, slave = os.openpty()
    try:
        sale = subprocess.Popen([sys.executable, "-m", "posbridge", "sale", "10.77", "--port", f"serial://{link}",
                                 "--journal", str(tmp_path / "ecr.sqlite3"), "--json"],
                                stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        os.write(master, b"1111\n")  # typed ahead: the line waits in the tty until the question comes
        out, err = sale.communicate(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
        stop(proc)
    assert sale.returncode == 0, err
    assert json.loads(out)["approved"] is True
    assert "terminal asks:" in err and "> " in err
