"""The emulator's log (issue 9): exactly one INFO line per operation — request, outcome, delivered
or not —, no ``transitions`` chatter, link events with ``-v``, every frame in hex and decoded with
``-vv``; cards from a file; a full card number never in a log line. ``--log-format json`` (issue 13):
the same lines as one JSON object each, the outcome line with its fields."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import logging
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from posbridge.model import Operation

from .terminal_support import Register, legitimate_sale, request

ROOT = Path(__file__).resolve().parents[2]
CARD = "5100000000000008"



class Emulator:
    def __init__(self, tmp_path: Path, protocol: str, *extra: str) -> None:
        self.log_path = tmp_path / f"emulator-{protocol}.log"
        scenario = tmp_path / "slow.toml"
        scenario.write_text("[terminal]\nprogress_interval = 0.1\nidle_timeout = 0.3\n[host]\nlatency = 0.4\n",
                            encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "posbridge", *extra[:1], "emulate", "--protocol", protocol,
             "--port", "tcp-listen://127.0.0.1:0", "--scenario", str(scenario), "--seed", "1", *extra[1:]],
            stdout=subprocess.PIPE, stderr=open(self.log_path, "w", encoding="utf-8"), text=True,
            encoding="utf-8", cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 20
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            found = re.search(r"listening on tcp-listen://127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                return
            if self.proc.poll() is not None:
                break
        self.proc.kill()
        raise AssertionError(f"the emulator did not start: {self.log_path.read_text()}")

    def stop(self, outcomes: int | None = None) -> str:
        """SIGTERM the emulator and return its log; first wait (at most 10 s) until the log holds
        ``outcomes`` outcome lines: the ECR has its answer a moment before the terminal's books and
        its outcome line are done, and a loaded machine stretches that moment."""
        deadline = time.monotonic() + 10
        while outcomes is not None and time.monotonic() < deadline and \
                _outcomes_logged(self.log_path.read_text(encoding="utf-8")) < outcomes:
            time.sleep(0.02)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.log_path.read_text(encoding="utf-8")


async def four_operations(port: int, protocol: str) -> None:
    """A sale, a sale whose register dies at the host (undelivered), a refused message, a sale."""
    await legitimate_sale(port, protocol)
    dying = await Register(protocol, port, {"ack_timeout": 3.0, "packet_timeout": 5.0}).open()
    dying.send(request(Operation.SALE, 777_00, "900"))
    await dying.wait_progress()
    await dying.close()
    await asyncio.sleep(0.6)  # the host answers; nobody is there to take it
    from .terminal_support import RawLink, sale_body

    async with RawLink(protocol, port) as raw:
        raw.send(sale_body(protocol, amount="9" * 5000))
        await raw.final_answer()
    await legitimate_sale(port, protocol)


def _outcomes_logged(log: str) -> int:
    """Outcome lines in a text or a JSON log."""
    return sum(" posbridge.terminal INFO " in line or '"outcome": {' in line for line in log.splitlines())


def outcome_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " posbridge.terminal INFO " in line]


@pytest.mark.parametrize("protocol", ["inpas", "arcus2"])
async def test_one_outcome_line_per_operation_no_chatter_and_hex_frames_with_vv(protocol: str, tmp_path: Path) -> None:
    cards = tmp_path / "cards.txt"
    cards.write_text(f"# test cards\n{CARD},3012\n\n", encoding="utf-8")
    emulator = Emulator(tmp_path, protocol, "-vv", "--cards", str(cards))
    try:
        await four_operations(emulator.port, protocol)
    finally:
        log = emulator.stop(outcomes=4)
    outcomes = outcome_lines(log)
    assert len(outcomes) == 4, "\n".join(outcomes)
    assert [("NOT delivered" in line) for line in outcomes] == [False, True, False, False]
    assert all("result delivered" in line or "result NOT delivered" in line for line in outcomes)
    assert "777.00 RUB" in outcomes[1] and "the ECR disconnected" in outcomes[1]
    assert "510000******0008" in outcomes[0]  # the card from the file, masked
    assert "unreadable request" in outcomes[2] and "code=913" in outcomes[2]
    assert "9" * 100 not in log  # a hostile value is never copied into the log whole
    assert "transitions" not in log
    wire = [line for line in log.splitlines() if " posbridge.wire DEBUG " in line]
    assert any(re.search(r" rx [0-9a-f]{20,} \[\{", line) for line in wire)  # hex, then decoded
    assert any(re.search(r" tx [0-9a-f]{20,} \[\{", line) for line in wire)
    assert CARD not in log and "4111111111111111" not in log


async def test_without_v_only_outcomes_with_v_link_events_but_no_frames(tmp_path: Path) -> None:
    quiet = Emulator(tmp_path, "inpas")
    try:
        await legitimate_sale(quiet.port, "inpas")
    finally:
        log = quiet.stop(outcomes=1)
    assert [line.split(" INFO ")[0].split()[-1] for line in log.splitlines() if " INFO " in line] == [
        "posbridge.terminal"]
    assert " DEBUG " not in log and "transitions" not in log
    verbose = Emulator(tmp_path, "inpas", "-v")
    try:
        await legitimate_sale(verbose.port, "inpas")
    finally:
        log = verbose.stop(outcomes=1)
    assert len(outcome_lines(log)) == 1
    assert " posbridge.terminal DEBUG request (exchange" in log and "the ECR disconnected" in log
    assert "posbridge.wire" not in log and "transitions" not in log


async def test_a_card_on_the_command_line_works_but_warns_and_is_never_logged(tmp_path: Path) -> None:
    emulator = Emulator(tmp_path, "inpas", "-v", "--card", CARD)
    try:
        result = await legitimate_sale(emulator.port, "inpas")
    finally:
        log = emulator.stop(outcomes=1)
    assert result.masked_pan is not None and result.masked_pan.endswith("0008")
    assert "visible to every user in the process list" in log and "--cards" in log
    assert CARD not in log


def test_a_bad_cards_file_is_one_line_naming_the_line_and_masking_the_number(tmp_path: Path) -> None:
    cards = tmp_path / "cards.txt"
    cards.write_text("5100000000000008\n5100000000000008,12345\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "posbridge", "emulate", "--port", "tcp-listen://127.0.0.1:0",
                           "--cards", str(cards)], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "line 2" in done.stderr and "YYMM" in done.stderr
    cards.write_text("51000000000000089999999\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "posbridge", "emulate", "--port", "tcp-listen://127.0.0.1:0",
                           "--cards", str(cards)], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert done.returncode == 2 and "line 1" in done.stderr and "51000000000000089999999" not in done.stderr


@pytest.mark.parametrize("protocol", ["inpas", "arcus2"])
async def test_log_format_json_is_one_object_a_line_with_each_operations_outcome_fields(
        protocol: str, tmp_path: Path) -> None:
    cards = tmp_path / "cards.txt"
    cards.write_text(f"{CARD},3012\n", encoding="utf-8")
    emulator = Emulator(tmp_path, protocol, "-v", "--cards", str(cards), "--log-format", "json")
    try:
        await four_operations(emulator.port, protocol)
    finally:
        log = emulator.stop(outcomes=4)
    records = [json.loads(line) for line in log.splitlines()]  # every line is one JSON object
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
        assert datetime.fromisoformat(record["time"]).utcoffset() == timedelta(0)
    outcomes = [record for record in records if "outcome" in record]
    assert all((r["level"], r["logger"]) == ("INFO", "posbridge.terminal") for r in outcomes)
    fields = [r["outcome"] for r in outcomes]
    assert [(f["operation"], f["amount"], f["currency"], f["status"], f["delivered"]) for f in fields] == [
        ("sale", 10_00, 643, "approved", True),
        ("sale", 777_00, 643, "approved", False),
        ("unreadable_request", None, None, "declined", True),
        ("sale", 10_00, 643, "approved", True),
    ]
    assert [f["code"] for f in fields] == ["00", "00", "913", "00"]
    assert fields[1]["reason"] == "the ECR disconnected" and fields[0]["reason"] is None
    assert fields[0]["masked_pan"] == "510000******0008" and fields[0]["rrn"]
    assert outcomes[0]["message"].endswith("result delivered")  # the text line's words, unchanged
    assert CARD not in log and "transitions" not in log
    assert not any(r["logger"] == "asyncio" for r in records)  # the event loop's debug: only with -vv
    assert any(r["level"] == "DEBUG" and r["message"].startswith("request (exchange") for r in records)  # -v


async def test_log_format_json_keeps_the_card_warning_a_json_line_without_the_number(tmp_path: Path) -> None:
    emulator = Emulator(tmp_path, "inpas", "-v", "--log-format", "json", "--card", CARD)
    try:
        await legitimate_sale(emulator.port, "inpas")
    finally:
        log = emulator.stop(outcomes=1)
    records = [json.loads(line) for line in log.splitlines()]
    warning = next(r for r in records if r["level"] == "WARNING")
    assert "visible to every user in the process list" in warning["message"] and "--cards" in warning["message"]
    assert [r["outcome"]["masked_pan"] for r in records if "outcome" in r] == ["510000******0008"]
    assert CARD not in log


def test_the_wire_log_masks_a_card_number_in_any_decoded_field(caplog) -> None:
    """-vv: a terminal that prints a full card number in a field the describer does not know as a
    card number (its response text, a slip line) must not put it in the log, in hex or decoded,
    even when the frame arrives in two reads."""
    from posbridge import protocols
    from posbridge.protocols.inpas.fields import Message
    from posbridge.protocols.inpas.frame import encode_frame
    from posbridge.pump import WireLogger

    pan = "4111111111111111"
    data = encode_frame(Message({25: 1, 39: 1, 19: f"CARD {pan} OK", 90: f"0xDF^^SALE {pan}~"}).encode_body())
    logger = WireLogger(protocols.get("inpas").describe)
    with caplog.at_level(logging.DEBUG, logger="posbridge.wire"):
        logger("rx", data[:len(data) // 2])
        logger("rx", data[len(data) // 2:])
    assert caplog.text.count(" rx ") == 1 and "411111******1111" in caplog.text
    assert pan not in caplog.text and pan.encode().hex() not in caplog.text


def test_the_wire_log_masks_a_card_number_straddling_two_parts_of_a_split_message(caplog) -> None:
    """-vv: an INPAS answer in SOH parts (part size 40), its slip holding a full card number at
    every offset; where the number is cut between two parts neither part alone shows one, yet the
    log must not let a reader put it back together, from the hex or from the parts' chunks."""
    from posbridge import protocols
    from posbridge.pump import WireLogger
    from tests.protocols.inpas.split_answers import (FULL_PAN, PART_SIZE, reassembled_chunks, split_answer_writes,
                                                     straddling_offsets)

    finals = []
    for offset in range(PART_SIZE):
        caplog.clear()
        logger = WireLogger(protocols.get("inpas").describe)
        with caplog.at_level(logging.DEBUG, logger="posbridge.wire"):
            for write in split_answer_writes(offset):
                logger("tx", write)
        text = caplog.text
        assert FULL_PAN not in text and FULL_PAN.encode().hex() not in text, offset
        lines = [record.getMessage().split(" ", 2) for record in caplog.records]
        assert lines and all(direction == "tx" for direction, _, _ in lines)
        data = bytes.fromhex("".join(hex_text for _, hex_text, _ in lines))
        assert FULL_PAN.encode() not in reassembled_chunks(data), offset
        decoded = [entry for _, _, rest in lines for entry in json.loads(rest)]
        # the parts' chunks joined (hex, byte-aligned: mask_decoded may star a digit run in it)
        chunks = "".join(entry["part"]["chunk"] for entry in decoded if "part" in entry)
        assert FULL_PAN.encode().hex() not in chunks and "411111".encode().hex() in chunks, offset
        finals.append(decoded[-1])
    assert straddling_offsets()
    # the final part is logged with the whole message's fields (the parts before it are described again)
    assert all({"key": "10", "name": "pan", "value": "411111******1111"} in final.get("fields", []) for final in finals)
