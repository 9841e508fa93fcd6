"""``posbridge emulate`` (issue 9): a second emulator on a live one's pty path is refused in one
line and leaves the link alone; ``--fault disconnect@N`` on tcp-listen is a pulled cable, after
which the emulator serves on."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from posbridge import protocols
from posbridge.cli.formatting import link_option_argument
from posbridge.ecr.client import EcrClient
from posbridge.journal import Journal

from .test_terminal_logs import ROOT, Emulator
from .terminal_support import legitimate_sale



def test_a_second_emulator_on_a_live_emulators_pty_is_refused_in_one_line(tmp_path: Path) -> None:
    link = tmp_path / "ttyPOS"
    first = subprocess.Popen([sys.executable, "-m", "posbridge", "emulate", "--port", f"pty://{link}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert first.stdout is not None and "listening on" in first.stdout.readline()
        target = os.readlink(link)
        second = subprocess.run([sys.executable, "-m", "posbridge", "emulate", "--port", f"pty://{link}"],
                                capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and "in use by another running emulator" in second.stderr
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert os.readlink(link) == target  # neither taken over nor deleted
    finally:
        first.terminate()
        first.wait(10)
    assert not link.is_symlink()  # the owner removed its own link on the way out


async def test_a_disconnect_fault_on_tcp_listen_is_a_pulled_cable_and_serving_resumes(tmp_path: Path) -> None:
    emulator = Emulator(tmp_path, "inpas", "-v", "--fault", "rx:disconnect@10")
    try:
        client = EcrClient(f"tcp://127.0.0.1:{emulator.port}", "inpas", journal=Journal(), lock_wait=1.0)
        async with client:
            with pytest.raises(Exception):
                await asyncio.wait_for(client.sale(5_00), 8)
        await legitimate_sale(emulator.port, "inpas")
        await legitimate_sale(emulator.port, "inpas")
        assert emulator.proc.poll() is None
    finally:
        log = emulator.stop(outcomes=3)
    assert log.count("result delivered") == 2


@pytest.mark.parametrize("cli_options", [["--link-option", "link_version=1"], []], ids=["cli v1", "cli v2"])
def test_the_cli_drives_a_version_1_arcus2_emulator_with_or_without_link_option(
        tmp_path: Path, cli_options: list[str]) -> None:
    # --link-option carries the protocol's link options as serve's [terminals.timers] does; a
    # version 1 terminal answers a version 2 ECR in version 2, so both complete.
    link = tmp_path / "ttyPOS"
    scenario = tmp_path / "v1.toml"
    scenario.write_text("[terminal.timers]\nlink_version = 1\n")
    emulator = subprocess.Popen([sys.executable, "-m", "posbridge", "emulate", "--protocol", "arcus2",
                                 "--port", f"pty://{link}", "--scenario", str(scenario),
                                 "--journal", str(tmp_path / "terminal.sqlite")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert emulator.stdout is not None and "listening on" in emulator.stdout.readline()
        sale = subprocess.run([sys.executable, "-m", "posbridge", "sale", "12.34", "--protocol", "arcus2",
                               "--port", f"serial://{link}", "--journal", str(tmp_path / "ecr.sqlite"), "--json",
                               "--link-option", "ack_timeout=1.5", *cli_options],
                              capture_output=True, text=True, cwd=ROOT, timeout=60, env=os.environ | {
                                  "POSBRIDGE_LOCK_DIR": str(tmp_path)})
        assert sale.returncode == 0, sale.stderr
        assert '"status": "approved"' in sale.stdout and '"amount": 1234' in sale.stdout
    finally:
        emulator.terminate()
        emulator.wait(10)


def test_a_bad_link_option_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for option, message in (("link_version=3", "arcus2 option link_version: expected one of 1, 2, got 3"),
                            ("bogus=1", "unknown arcus2 option(s): bogus"), ("nonsense", "expected NAME=VALUE"),
                            # Python's int() reads any script's digits: "١" (Arabic-Indic one) was taken as 1.
                            ("link_version=\u0661", "link_version: expected a number or true/false in ASCII")):
        done = subprocess.run([sys.executable, "-m", "posbridge", "sale", "1", "--protocol", "arcus2",
                               "--port", "virtual://nobody", "--journal", str(tmp_path / "ecr.sqlite"),
                               "--link-option", option], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not (tmp_path / "ecr.sqlite").exists()  # refused before a journal file was made


def test_a_link_option_that_is_a_switch_is_given_as_true_or_false() -> None:
    # INPAS resend_on_ack_timeout takes only a boolean: as the text "true" it was refused, so the
    # switch could not be set from the command line at all.
    parser = argparse.ArgumentParser()
    parser.add_argument("--link-option", type=link_option_argument, action="append", default=[])
    args = parser.parse_args(["--link-option", "resend_on_ack_timeout=true", "--link-option", "ack_timeout=0.5"])
    options = protocols.get("inpas").options(dict(args.link_option))
    assert (options.resend_on_ack_timeout, options.ack_timeout) == (True, 0.5)
    off = protocols.get("inpas").options(dict([link_option_argument("resend_on_ack_timeout=False")]))
    assert off.resend_on_ack_timeout is False
