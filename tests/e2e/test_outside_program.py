"""A separate process that knows only pyserial and the SA spec completes a sale against
``posbridge emulate`` through its pty path; the emulator's log never shows a full card number."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FULL_PAN = "4111111111111111"


def start_emulator(link: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "posbridge", "emulate", "--protocol", "inpas", "--port", f"pty://{link}",
         "--seed", "1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line:
            assert str(link) in line
            return proc
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the emulator did not start: {proc.stdout.read()}")


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


@pytest.mark.timeout(60)
def test_pyserial_only_program_completes_a_sale(tmp_path):
    link = tmp_path / "ttyPOS"
    proc = start_emulator(link, "--card", "5100000000000008")
    try:
        outputs = []
        for stan, amount in (("1", "15000"), ("2", "2500")):
            done = subprocess.run([sys.executable, str(HERE / "outside_ecr.py"), str(link), amount, stan],
                                  capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
            outputs.append(json.loads(done.stdout))
    finally:
        log = stop(proc)
    first, second = outputs
    assert first["25"] == "1" and first["39"] == "1" and first["15"] == "001"
    assert first["0"] == "15000" and first["4"] == "643" and first["26"] == "1"
    assert len(first["14"]) == 12 and len(first["13"]) == 6
    assert first["10"].endswith("0008") and "5100000000000008" not in json.dumps(first)
    assert "0xDF^^" in first["90"] and "ОДОБРЕНО" in first["90"]
    assert second["39"] == "1" and second["10"].endswith("1111")  # the default card next
    assert "sale" in log and "result delivered" in log
    for pan in ("5100000000000008", FULL_PAN):
        assert pan not in log
    assert not link.exists()  # the emulator removed its symlink on exit
