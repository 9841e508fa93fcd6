"""The ``posbridge`` command: demo, decode, operations against ``posbridge emulate``, bad input."""

from __future__ import annotations

import json

import pytest

from posbridge.emulator.cards import TEST_CARDS, Card
from posbridge.cli import main
from tests.e2e.test_outside_program import start_emulator, stop

SALE_HEX = "021b00000300313530040300363433190100311b0800303033343432323432dd"


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
