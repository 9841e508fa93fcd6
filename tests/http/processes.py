"""Real processes for the HTTP service's tests: ``posbridge emulate`` on a pty, ``posbridge serve``
in front of it, and curl (a client that is not Python) talking to the service."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

START_TIMEOUT = 20.0

_OUTPUT: dict[int, tuple[list[str], threading.Thread]] = {}
"""What each started process printed, read by a thread from the first line on: a process whose
pipe nobody reads blocks on its next log line once the pipe's 64 KB are full (its event loop with
it), which would look like a hung service."""


def _drain(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)


def _start(args: list[str], marker: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "posbridge", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=_drain, args=(proc, lines), daemon=True)
    _OUTPUT[proc.pid] = (lines, reader)
    reader.start()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = next((line for line in list(lines) if marker in line), None)
        if found is not None:
            return proc, found
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"posbridge {args[0]} did not start: {stop(proc, signal.SIGKILL)}")


def output(proc: subprocess.Popen[str]) -> str:
    """What ``proc`` printed so far (stdout and stderr)."""
    lines, _ = _OUTPUT.get(proc.pid, ([], None))
    return "".join(lines)


def start_emulator(link: Path, *extra: str) -> subprocess.Popen[str]:
    """``posbridge emulate`` on a pseudo-terminal whose symlink is ``link``."""
    proc, _ = _start(["emulate", "--protocol", "inpas", "--port", f"pty://{link}", "--seed", "1", *extra],
                     "listening on")
    return proc


def start_serve(journal: Path, *extra: str, terminal: str | None = None) -> tuple[subprocess.Popen[str], str]:
    """``posbridge serve`` on 127.0.0.1 (a free port); returns the process and its base URL."""
    args = ["serve", "--listen", "127.0.0.1:0", "--journal", str(journal), *extra]
    if terminal:
        args += ["--terminal", terminal]
    proc, line = _start(args, "posbridge serve listening on")
    match = re.search(r"https?://127\.0\.0\.1:\d+", line)
    assert match, line
    return proc, match.group(0)


def stop(proc: subprocess.Popen[str], how: int = signal.SIGTERM) -> str:
    """End a process (SIGTERM: cleanly; SIGKILL: as a crash) and return what it printed."""
    if proc.poll() is None:
        proc.send_signal(how)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    lines, reader = _OUTPUT.pop(proc.pid, ([], None))
    if reader is not None:
        reader.join(timeout=5)  # to the end of the pipe (a grandchild holding it open: 5 s at most)
    if proc.stdout is not None and (reader is None or not reader.is_alive()):
        proc.stdout.close()
    return "".join(lines)


def curl(method: str, url: str, body: Any = None, *, user: str | None = None,
         cacert: Path | None = None) -> tuple[int, Any]:
    """One HTTP request by curl (``cacert``: the certificate to trust for https); returns (HTTP
    status, decoded JSON body)."""
    args = ["curl", "-sS", "--max-time", "60", "-X", method, "-w", "\n%{http_code}"]
    if cacert is not None:
        args += ["--cacert", str(cacert)]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body, ensure_ascii=False)]
    if user:
        args += ["-u", user]
    done = subprocess.run([*args, url], capture_output=True, text=True, encoding="utf-8", timeout=70)
    assert done.returncode == 0, f"curl failed: {done.stderr}"
    text, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(text) if text.strip() else None


def poll(url: str, done: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """GET ``url`` until ``done(body)`` is true; the last body."""
    deadline = time.monotonic() + timeout
    while True:
        _, body = curl("GET", url)
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(interval)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command; (cert, key)."""
    cert, key = folder / "serve.crt", folder / "serve.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key
