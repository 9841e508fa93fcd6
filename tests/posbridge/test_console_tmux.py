"""The real console in a real terminal: ``posbridge console --emulate`` run under tmux, driven by
keystrokes and read off the screen (``tmux capture-pane``), as a technician would see it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
POSBRIDGE = Path(sys.executable).with_name("posbridge")
# A trace line as the terminal gets it: its time in a colour, then the arrow in the direction's colour.
COLOURED_FRAME = r"(?:\x1b\[[0-9;]*m)+\d\d:\d\d:\d\d\.\d{{3}} (?:\x1b\[[0-9;]*m)*\x1b\[{colour}m{arrow} "


class Tmux:
    """One detached tmux session on a private server (never the user's), running one command."""

    def __init__(self, command: list[str], env: dict[str, str], exit_status: Path) -> None:
        assert TMUX is not None
        self.base = [TMUX, "-L", f"posbridge-test-{uuid.uuid4().hex[:12]}"]
        # The exit status goes to a file: tmux marks a pane dead only some time after its process
        # ends (seconds, now and then), and a closed pane can no longer be read.
        shell_line = (" ".join(f"{key}={shlex.quote(value)}" for key, value in env.items()) + " "
                      + " ".join(shlex.quote(word) for word in command)
                      + f"; echo $? > {shlex.quote(str(exit_status))}; sleep 60")
        self.run("new-session", "-d", "-s", "console", "-x", "160", "-y", "50", shell_line)
        self.socket = Path(self.run("display-message", "-p", "#{socket_path}").strip())

    def run(self, *args: str) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "console", *keys)

    def screen(self) -> str:
        """The pane and its scrollback, wrapped lines joined."""
        return self.run("capture-pane", "-p", "-J", "-S", "-500", "-t", "console")

    def wait_for(self, pattern: str, deadline: float) -> re.Match[str]:
        """Poll the screen until ``pattern`` (a regex) shows, or fail at ``deadline`` (monotonic)."""
        while True:
            found = re.search(pattern, self.screen(), re.M)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on the screen:\n{self.screen()}")
            time.sleep(0.05)

    def close(self) -> None:
        """End the private server and remove its socket file."""
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)
        self.socket.unlink(missing_ok=True)


def test_console_under_tmux_sells_and_ctrl_c_cancels_a_slow_sale_without_leaving(tmp_path: Path) -> None:
    started = time.monotonic()
    deadline = started + 14
    program = [str(POSBRIDGE)] if POSBRIDGE.exists() else [sys.executable, "-m", "posbridge"]
    command = [*program, "console", "--emulate",
               "--protocol", "inpas", "--journal", str(tmp_path / "ecr.sqlite"), "--history",
               str(tmp_path / "history")]
    env = {"POSBRIDGE_LOCK_DIR": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "TERM": "xterm-256color"}
    exit_status = tmp_path / "exit-status"
    tmux = Tmux(command, env, exit_status)
    try:
        tmux.wait_for(r"│ link idle │ terminal - │ last -", deadline)  # the toolbar: the prompt is up

        tmux.keys("sale 1.50", "Enter")
        tmux.wait_for(r"│ last sale APPROVED 1\.50 RUB", deadline)
        screen = tmux.screen()
        assert re.search(r"^sale: APPROVED \(code \d+\)", screen, re.M), screen
        assert re.search(r"^  amount: 1\.50 RUB$", screen, re.M)
        assert re.search(r"^  card: VISA 411111\*{6}1111$", screen, re.M)
        assert "4111111111111111" not in screen

        tmux.keys("trace both", "Enter", "test", "Enter")  # frames with time and direction, in colour
        tmux.wait_for(r"│ last test_connection APPROVED", deadline)
        coloured = tmux.run("capture-pane", "-p", "-e", "-t", "console")
        assert re.search(COLOURED_FRAME.format(colour=36, arrow="->"), coloured), coloured  # cyan
        assert re.search(COLOURED_FRAME.format(colour=32, arrow="<-"), coloured), coloured  # green
        tmux.keys("trace off", "Enter")

        tmux.keys("delay card 5", "Enter")
        tmux.wait_for(r"^card delay 5 s from now on", deadline)
        tmux.keys("sale 2.00", "Enter")
        tmux.wait_for(r"│ link running sale │", deadline)
        tmux.wait_for(r"terminal busy", deadline)  # the terminal waits for the card: the sale is under way
        tmux.keys("C-c")
        tmux.wait_for(r"^sale: outcome unknown \(cancelled by Ctrl-C\)\.", deadline)
        tmux.wait_for(r"type recover to resolve it", deadline)
        tmux.wait_for(r"│ link idle │ terminal 00344224 │ last sale outcome unknown", deadline)
        assert not exit_status.exists()  # still in the console

        tmux.keys("journal", "Enter")  # and it still answers
        tmux.wait_for(r"^#3 sale 2\.00 RUB transaction \d+ \(unknown: interrupted before its answer came\)$", deadline)

        tmux.keys("C-d")  # Ctrl-D leaves, with exit status 0
        while not exit_status.exists() or not exit_status.read_text():
            assert time.monotonic() < deadline, f"the console did not end on Ctrl-D:\n{tmux.screen()}"
            time.sleep(0.05)
        assert exit_status.read_text().strip() == "0"
        assert "Traceback" not in tmux.screen()
    finally:
        tmux.close()
    assert time.monotonic() - started < 15
