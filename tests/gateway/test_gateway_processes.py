"""Gateway mode with real processes and real TCP on every hop: `posbridge host` (the bank host, its
own journal) <- the ECR (`posbridge sale/refund/cancel/settlement`, the CLI) -> `posbridge emulate
--host-via-ecr` on a pty. Every host message crosses the ECR."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

from posbridge.journal import Journal
from posbridge.model import Operation, Status
from tests.http.processes import _start, stop


def _cli(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "posbridge", *args, "--json"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode in (0, 3), done.stderr  # approved, or declined by the terminal
    return json.loads(done.stdout)


@pytest.mark.timeout(120)
def test_a_day_through_the_ecr_to_posbridge_host(tmp_path) -> None:
    host_journal = tmp_path / "host.sqlite3"
    host, line = _start(["host", "--listen", "127.0.0.1:0", "--journal", str(host_journal), "--seed", "3"],
                        "posbridge host listening on")
    address = re.search(r"127\.0\.0\.1:\d+", line).group(0)
    link = tmp_path / "ttyPOS"
    emulator, _ = _start(["emulate", "--protocol", "inpas", "--port", f"pty://{link}", "--host-via-ecr", address],
                         "listening on")
    try:
        common = ["--port", f"serial://{link}", "--journal", str(tmp_path / "ecr.sqlite3")]
        sale = _cli("sale", "150.00", *common)
        assert sale["status"] == "approved", sale
        refund = _cli("refund", "50.00", "--rrn", sale["rrn"], *common)
        assert refund["status"] == "approved", refund
        other = _cli("sale", "20.00", *common)
        cancel = _cli("cancel", "20.00", "--rrn", other["rrn"], "--auth-code", other["auth_code"], *common)
        assert cancel["status"] == "approved", cancel
        settlement = _cli("settlement", *common)
        assert settlement["status"] == "approved", settlement
        refused = _cli("sale", "10.00", "--no-gateway", *common)  # an ECR that does not carry it
        assert refused["status"] == "no_connection", refused
    finally:
        emulator_log = stop(emulator)
        host_log = stop(host)
    assert "posbridge host stopped after 5 request(s)" in host_log, host_log
    assert "4111111111111111" not in emulator_log + host_log
    journal = Journal(str(host_journal))
    try:
        rows = journal.ledger.operations("00344224")
    finally:
        journal.close()
    assert [(r.operation, r.status) for r in rows] == [
        (Operation.SALE, Status.APPROVED), (Operation.REFUND, Status.APPROVED), (Operation.SALE, Status.APPROVED),
        (Operation.CANCEL, Status.APPROVED), (Operation.SETTLEMENT, Status.APPROVED)]
    ecr = Journal(str(tmp_path / "ecr.sqlite3"))
    try:
        assert ecr.ecr.counts_by_state() == {"done": 6}  # the 6 operations: the relay added none of its own
    finally:
        ecr.close()


def test_posbridge_host_listens_on_loopback_only(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "posbridge", "host", "--listen", "0.0.0.0:0"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "loopback only" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.timeout(120)
def test_posbridge_serve_carries_the_host_connection_too(tmp_path) -> None:
    from tests.http.processes import curl, start_serve

    host, line = _start(["host", "--listen", "127.0.0.1:0"], "posbridge host listening on")
    address = re.search(r"127\.0\.0\.1:\d+", line).group(0)
    link = tmp_path / "ttyPOS"
    emulator, _ = _start(["emulate", "--protocol", "inpas", "--port", f"pty://{link}", "--host-via-ecr", address],
                         "listening on")
    serve = None
    try:
        serve, base = start_serve(tmp_path / "ecr.sqlite3", terminal=f"kassa1=serial://{link}")
        status, paid = curl("POST", f"{base}/v1/terminals/kassa1/Pay", {"command_id": "g1", "amount": 15000})
        assert status == 200 and paid["status"] == "approved", paid
    finally:
        if serve is not None:
            stop(serve)
        stop(emulator)
        host_log = stop(host)
    assert "posbridge host stopped after 1 request(s)" in host_log
