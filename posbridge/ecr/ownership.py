"""One owner per terminal: a cross-process lock per terminal, who holds it, and its transaction numbers.

Two programs must never share a terminal's line: their bytes would interleave, one would read the
other's answers, and one's recovery would reverse the other's approved sale. So every operation
takes the terminal's lock first, a file lock (``flock``: the kernel releases it when the process
dies, even by SIGKILL) in a folder shared by every user of the machine (``POSBRIDGE_LOCK_DIR``,
default ``<tmp>/posbridge-locks``). The lock is keyed by the terminal, not by the spelling of its
URL: :func:`canonical_port` turns ``tcp://localhost:5000`` and ``tcp://127.0.0.1:5000/`` into one
key, ``serial:///dev/serial/by-id/…`` and ``serial:///dev/ttyACM0`` into another.

A second process waits a bounded time, then fails with a sentence naming the holder
(:class:`TerminalBusy`: "terminal busy: sale by pid 4242 since 12:01:07"); the holder writes who it
is and what it does beside the lock. File locking comes from the ``filelock`` package (maintained,
asyncio-aware); its soft-lock fallback is switched off, since a soft lock outlives a killed process.

**Transaction numbers** (STAN in INPAS SA, ``transaction_id`` in Arcus) are the terminal's
duplicate-control key: a number reused in one batch for the same operation and amount is taken as a
retry and answered with the first outcome, so two journals that each number from 1 produce false
approvals. :meth:`TerminalLock.next_transaction_id` issues ``max(last + 1, now)`` where ``now`` is
the count of tenths of a second since 2025-01-01 UTC (11 digits until 2056, 12 until 2341) and
``last`` is the highest number issued for this terminal on this machine (a state file beside the
lock, read and written under it) or found in the caller's journal. Why that is safe:

- one machine, any number of journals and processes: numbers are issued under the terminal's lock
  from one shared counter, so they strictly increase;
- a new install, a new journal or another machine starts from the clock, above every number
  issued before it unless an earlier issuer ran ahead of the clock, which takes more than ten
  operations per second on one terminal, sustained (a terminal does about one per few seconds);
- two machines driving one terminal *at the same time* (not supported: the terminal serves one
  register) could only collide within the same tenth of a second, and the host then declines the
  second request as a duplicate unless operation, amount and currency are all equal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator, Callable
from urllib.parse import urlsplit

from filelock import AsyncFileLock, Timeout

from posbridge.model import PosbridgeError

__all__ = [
    "DEFAULT_LOCK_WAIT", "Owner", "TerminalBusy", "TerminalLock", "canonical_port", "lock_dir",
    "owner_alive", "this_process",
]

DEFAULT_LOCK_WAIT = 30.0
"""Seconds a second process waits for a busy terminal before it gives up (a sale takes seconds)."""

MAX_TRANSACTION_ID = 999_999_999_999  # 12 digits: the widest the protocols carry
_EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()


class TerminalBusy(PosbridgeError):
    """Another process (or client) holds the terminal; ``owner`` says who, when known."""

    def __init__(self, message: str, owner: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.owner = owner or {}


# --- who is a process ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Owner:
    """A process, told apart from a later one that reuses its pid by its start time."""

    host: str
    pid: int
    started: str  # the kernel's start time of the process (clock ticks since boot), "" if unknown

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.started}"

    @classmethod
    def parse(cls, text: str | None) -> Owner | None:
        """The owner written by ``str(owner)``, or None for nothing or garbage."""
        parts = (text or "").rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        host, pid, started = parts
        return cls(host, int(pid), started)


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 2 (comm) may hold spaces and parentheses: count fields after its closing parenthesis.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else ""


def this_process() -> Owner:
    """The calling process as an :class:`Owner`."""
    pid = os.getpid()
    return Owner(socket.gethostname(), pid, _start_time(pid))


def owner_alive(owner: Owner | str | None) -> bool | None:
    """True if ``owner`` still runs, False if it is gone, None if it cannot be told (another host)."""
    if isinstance(owner, str) or owner is None:
        owner = Owner.parse(owner)
    if owner is None:
        return False
    if owner.host != socket.gethostname():
        return None
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    started = _start_time(owner.pid)
    return not (owner.started and started and started != owner.started)


# --- one key per terminal --------------------------------------------------------------------------
_PATH_SCHEMES = ("serial", "pty")
_HOST_SCHEMES = ("tcp", "socket", "rfc2217")


def _canonical_host(host: str, port: int | None) -> str:
    host = host.strip("[]").lower()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return host
    # A sockaddr starts with the address text for IPv4 and IPv6; typeshed also allows an int
    # (families a TCP lookup never returns).
    addresses = sorted({info[4][0] for info in infos if isinstance(info[4][0], str)})
    if any(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        return "127.0.0.1"  # localhost, 127.0.0.1 and ::1 are one machine
    return addresses[0] if addresses else host


def _canonical_path(path: str) -> str:
    path = os.path.abspath(os.path.expanduser(path))
    real = os.path.realpath(path)
    # A pseudo-terminal's node changes whenever its emulator restarts: its stable name is the link.
    # A real device's node is its identity (/dev/serial/by-id/... and /dev/ttyACM0 are one port).
    if real.startswith("/dev/") and not real.startswith("/dev/pts/"):
        return real
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def canonical_port(url: str) -> str:
    """One spelling per terminal port (see the module docstring); query parameters are dropped."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    scheme = scheme.lower()
    if scheme in _PATH_SCHEMES:
        path = rest.partition("?")[0]
        return f"serial://{_canonical_path(path)}" if path else url
    if scheme in _HOST_SCHEMES:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return url
        host = _canonical_host(parts.hostname or "", port)
        return f"tcp://{host}:{port}" if scheme in ("tcp", "socket") else f"{scheme}://{host}:{port}"
    if scheme == "usb":
        ids, _, query = rest.partition("?")
        vid, _, pid = ids.partition(":")
        key = f"usb://{vid.lower().zfill(4)}:{pid.lower().zfill(4)}"
        serial = re.search(r"(?:^|&)serial=([^&]*)", query)
        return key + (f"?serial={serial.group(1)}" if serial else "")
    return f"{scheme}://{rest.partition('?')[0]}"


def lock_dir() -> Path:
    """The folder of terminal locks (``POSBRIDGE_LOCK_DIR``, default ``<tmp>/posbridge-locks``)."""
    path = Path(os.environ.get("POSBRIDGE_LOCK_DIR") or Path(tempfile.gettempdir()) / "posbridge-locks")
    if not path.is_dir():
        with contextlib.suppress(FileExistsError):
            path.mkdir(parents=True)
            # Shared by every user of the machine, like /tmp itself (sticky: users keep their files).
            with contextlib.suppress(OSError):
                path.chmod(0o1777)
    return path


def _file_stem(key: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9.]+", "_", key).strip("_")[-60:]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


# --- the lock ----------------------------------------------------------------------------------------
def clock_number(timestamp: float) -> int:
    """Tenths of a second since 2025-01-01 UTC at ``timestamp``: where transaction numbers start."""
    return int((timestamp - _EPOCH) * 10)


_IN_PROCESS: dict[str, object] = {}  # virtual:// keys held in this process, by holder


class TerminalLock:
    """The cross-process lock of one terminal (``key``: :func:`canonical_port` or a terminal id).

    An in-memory ``virtual://`` pair lives in one process only, so its lock is in-process too and
    its transaction numbers come from the clock and the caller's journal alone (no state file):
    tests that inject a clock get the same numbers on every run.

    ``async with lock.held("sale"):`` — waits at most ``wait`` seconds, then raises
    :class:`TerminalBusy`. Re-entrant within one holder (recovery runs operations while it holds the
    lock). ``clock`` gives the wall time for transaction numbers.
    """

    def __init__(
        self,
        key: str,
        *,
        wait: float = DEFAULT_LOCK_WAIT,
        directory: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.wait = wait
        self.clock = clock
        folder = directory or lock_dir()
        stem = _file_stem(key)
        self.path = folder / f"{stem}.lock"
        self._owner_path = folder / f"{stem}.owner"
        self._counter_path = folder / f"{stem}.stan"
        self.in_process = key.startswith("virtual://")
        self._lock = None if self.in_process else AsyncFileLock(
            str(self.path), fallback_to_soft=False, thread_local=False, mode=0o666, preserve_lock_file=True)
        self._depth = 0

    @property
    def locked(self) -> bool:
        """True while this object holds the lock."""
        return self._depth > 0

    @contextlib.asynccontextmanager
    async def held(self, activity: str) -> AsyncIterator[TerminalLock]:
        """Hold the lock for the block (see the class docstring)."""
        await self.acquire(activity)
        try:
            yield self
        finally:
            await self.release()

    async def acquire(self, activity: str) -> None:
        """Take the lock (bounded wait) and say who holds it and for what."""
        if self._depth:
            self._depth += 1
            if activity != "connected":  # opening the line inside an operation keeps its name
                self._write_owner(activity)
            return
        if self._lock is None:
            await self._acquire_in_process()
            self._depth = 1
            return
        try:
            await self._lock.acquire(timeout=max(self.wait, 0.0), poll_interval=0.05)
        except Timeout:
            raise self._busy_error() from None
        except OSError as error:
            raise TerminalBusy(f"cannot lock terminal {self.key} ({self.path}): {error.strerror or error}") \
                from None
        self._depth = 1
        self._write_owner(activity)

    async def _acquire_in_process(self) -> None:
        give_up = time.monotonic() + max(self.wait, 0.0)
        while _IN_PROCESS.setdefault(self.key, self) is not self:
            if time.monotonic() >= give_up:
                raise TerminalBusy(f"terminal busy: {self.key} is used by another client of this process "
                                   f"(waited {self.wait:g} s)")
            await asyncio.sleep(0.01)

    async def release(self) -> None:
        """Give the lock up (the outermost release frees it)."""
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth:
            if self._depth == 1:
                self._write_owner("idle")
            return
        if self._lock is None:
            _IN_PROCESS.pop(self.key, None)
            return
        with contextlib.suppress(OSError):
            self._owner_path.write_text("")
        await self._lock.release()

    def _write_owner(self, activity: str) -> None:
        if self.in_process:
            return
        me = this_process()
        info = {"pid": me.pid, "host": me.host, "owner": str(me), "activity": activity,
                "since": datetime.now().strftime("%H:%M:%S"), "terminal": self.key}
        with contextlib.suppress(OSError):
            self._owner_path.write_text(json.dumps(info, ensure_ascii=False))

    def holder(self) -> dict[str, object]:
        """What the current holder wrote about itself ({} if nothing readable)."""
        try:
            info = json.loads(self._owner_path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def _busy_error(self) -> TerminalBusy:
        info = self.holder()
        if info.get("pid"):
            what = f"{info.get('activity', 'an operation')} by pid {info['pid']} since {info.get('since', '?')}"
        else:
            what = "held by another process"
        return TerminalBusy(f"terminal busy: {what} (waited {self.wait:g} s for {self.key})", info)

    # --- transaction numbers ---------------------------------------------------------------------
    def next_transaction_id(self, journal_last: int | None = None) -> str:
        """The terminal's next transaction number (see the module docstring). Call it holding the lock."""
        if not self._depth:
            raise RuntimeError("transaction numbers are issued under the terminal's lock")
        last = 0
        if not self.in_process:
            try:
                last = int(self._counter_path.read_text().strip() or 0)
            except (OSError, ValueError):
                last = 0
        number = max(last + 1, (journal_last or 0) + 1, clock_number(self.clock()))
        if number > MAX_TRANSACTION_ID:
            raise PosbridgeError(f"transaction numbers of {self.key} exhausted (12 digits)")
        if self.in_process:
            return str(number)
        scratch = self._counter_path.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            scratch.write_text(str(number))
            os.replace(scratch, self._counter_path)  # atomic: a reader sees the old or the new value
        return str(number)
