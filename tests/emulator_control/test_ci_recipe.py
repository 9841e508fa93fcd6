"""docs/ci.md's job script, run as a CI job would: a real `posbridge emulate` with its control API,
the bash-and-curl register as the job's command, the batch printed, the artifacts left behind."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "examples" / "ci" / "register-job.sh"
CLIENT = Path(__file__).with_name("sale_client.sh")

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the recipe's register uses curl")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_ci_job_script_runs_a_register_against_the_emulator(tmp_path: Path) -> None:
    port, control = _free_port(), _free_port()
    answer = tmp_path / "answer.hex"
    env = dict(os.environ, POSBRIDGE_PORT=str(port), POSBRIDGE_CONTROL=str(control),
               POSBRIDGE_OUT=str(tmp_path / "artifacts"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    # The job's command: the register (no Python) declines its sale through the control API.
    command = f'bash {CLIENT} "$POSBRIDGE_PORT" "$POSBRIDGE_CONTROL_URL" > {answer}'
    done = subprocess.run(["bash", str(JOB), "bash", "-c", command], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # The register saw the decline it asked for: tag 15 (host response code) "05" in the answer.
    assert "0f02003035" in answer.read_text()
    assert '"sale_count": 0' in done.stdout and '"batch": 1' in done.stdout
    artifacts = tmp_path / "artifacts"
    log = (artifacts / "emulator.log").read_text()
    assert "listening on tcp-listen://127.0.0.1:" in log and "declined" in log.lower()
    assert (artifacts / "emulator.sqlite3").stat().st_size > 0
    assert '"dir"' in (artifacts / "emulator-capture.jsonl").read_text()


def test_the_job_script_fails_when_the_emulator_cannot_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = dict(os.environ, POSBRIDGE_PORT=str(taken.getsockname()[1]), POSBRIDGE_CONTROL=str(_free_port()),
                   POSBRIDGE_OUT=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        done = subprocess.run(["bash", str(JOB), "true"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "cannot" in done.stderr.lower() or "address" in done.stderr.lower()
