"""The process kill matrix: real processes, real SIGKILL, and a ledger check after every run.

Claim under test (README, DESIGN.md "ECR client"): whatever process dies at whatever moment,
nothing is charged without a record, nothing is charged twice, and every unknown outcome is
resolved by recovery.

Two kinds of runs, each in its own *cell* (victim, operation, step, protocol, transport, timing):

* **ECR killed.** A long-lived ``posbridge emulate`` (one per protocol and transport, its batch in
  its own journal, a scenario with a slow host: WAIT / intermediate packets during ``latency``)
  serves a child ECR process (:func:`kill_children.ecr_child`, the public ``EcrClient`` with a
  fresh write-ahead journal per run) that makes the original operation an operation needs (a clean
  sale or pre-authorization), then runs the operation under test and SIGKILLs itself at one step:
  ``journaled`` (a: after journaling, before its first byte), ``acked`` (b: the request's ACK has
  arrived), ``wait`` (c: during WAIT), ``final`` (d: the final answer arrived, not ACKed yet),
  ``finished`` (e: ACKed, the outcome not journaled yet). Then a separate ``posbridge recover``
  process resolves the journal, either ``at_once`` or ``after_idle``: once the terminal has
  finished with the dead ECR's operation (its journal records whether the result was delivered).
* **Terminal killed.** The same, but the terminal (:func:`kill_children.emulator_child`:
  ``posbridge emulate``'s code with a trace hook) SIGKILLs itself at ``received`` (a request has
  arrived), ``decided`` (the host decided and journaled; during the host latency) or
  ``result_sent`` (the result went out; its ACK not processed). The ECR sees the link fail and
  journals "unknown". The terminal is restarted as ``posbridge emulate`` on the same port and the
  same terminal journal. Recovery: ``at_once`` — the very ECR process that saw the failure calls
  ``EcrClient.recover()`` on its own client the moment the terminal is back; ``after_idle`` — the
  ECR has exited and a separate ``posbridge recover`` process runs.

After the runs of a group, the ledgers are compared (:func:`classify`): the terminal's batch
(``op_state`` view: what is live, i.e. charged and not reversed) against each run's ECR journal:

* **lost** — a money operation live at the terminal without an ECR entry saying it was approved;
* **double** — more than one live operation of one kind in one run (one intended operation);
* **unresolved** — ECR entries still ``pending`` / ``sent`` / ``unknown`` (or ``refund_needed``:
  recovery gave up and a person must look) after recovery;
* also counted, and failed on: **phantom** — an ECR entry says approved, the terminal has nothing
  live for it; **write-ahead** — the ECR's first byte of an exchange was about to be written
  while its journal entry was not ``sent`` yet; **harness** — the run did not reach its step
  (then it proves nothing).

Finally each group settles its batch (``posbridge settlement``) and the terminal's totals are
compared with the totals the ECR journals imply.

Run ``python -m tests.e2e.kill_matrix --help`` (or ``benchmarks/kill_matrix.py``) for the table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import selectors
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script (benchmarks/kill_matrix.py)
    sys.path.insert(0, str(ROOT))

from tests.e2e import kill_children  # noqa: E402

# --- the matrix -----------------------------------------------------------------------------------
OPERATIONS = ("sale", "refund", "cancel", "preauth", "completion", "cancel_preauth")
SETUP = {"refund": "sale", "cancel": "sale", "completion": "preauth", "cancel_preauth": "preauth"}
"""The clean operation each operation needs first (its approved original)."""
MONEY = OPERATIONS
ECR_STEPS = {
    "journaled": "a: journaled, before the first byte",
    "acked": "b: request ACKed",
    "wait": "c: during WAIT",
    "final": "d: answer in, not ACKed",
    "finished": "e: ACKed, outcome not journaled",
}
EMULATOR_STEPS = {
    "received": "request received",
    "decided": "host decided, during latency",
    "result_sent": "result sent, before its ACK",
}
assert tuple(ECR_STEPS) == kill_children.ECR_STEPS and tuple(EMULATOR_STEPS) == kill_children.EMULATOR_STEPS
PROTOCOLS = ("inpas", "arcus2")
TRANSPORTS = ("tcp", "pty")
TIMINGS = ("at_once", "after_idle")
VICTIMS = ("ecr", "emulator")

# --- timing: the terminal's scenario and the link timers of the processes the harness controls -----
HOST_LATENCY = 0.6  # seconds the host takes; the terminal sends WAIT / I packets meanwhile
PROGRESS_INTERVAL = 0.2  # seconds between WAIT packets
TERMINAL_ACK_TIMEOUT = 0.5  # the terminal's WAITACK / T1: it gives up on a dead ECR's ACK sooner
TERMINAL_TRIES = 3
ECR_TIMERS = {  # the child ECR's link timers (EcrClient(timers=…)); `posbridge recover` keeps its defaults
    "inpas": {"ack_timeout": 1.0, "packet_timeout": 5.0},
    "arcus2": {"ack_timeout": 1.0, "packet_timeout": 5.0},
}
ECR_DEADLINE = 15.0  # EcrClient(deadline=…) of the child ECR
RECOVER_TIMEOUT = 20.0  # `posbridge recover --timeout` (per operation it sends)
IDLE_BOUND = HOST_LATENCY + (TERMINAL_TRIES + 1) * TERMINAL_ACK_TIMEOUT + 2.0
"""Longest the terminal can stay busy with a dead ECR's operation (latency, then its resends of the
result); only a bound: the harness waits for the terminal journal to say the result's fate."""
CHILD_TIMEOUT = 40.0  # bound on any one child process
UNRESOLVED_STATES = ("pending", "sent", "unknown", "refund_needed")

SCENARIO = f"""\
# The kill matrix's terminal: a slow host, so the ECR sees WAIT / intermediate packets.
seed = 7
[terminal]
progress_interval = {PROGRESS_INTERVAL}
[terminal.timers]
ack_timeout = {TERMINAL_ACK_TIMEOUT}
[host]
latency = {HOST_LATENCY}
"""


@dataclass(frozen=True, order=True)
class Cell:
    """One cell of the matrix: who dies, in which operation, at which step, over what, recovered when."""

    victim: str
    operation: str
    step: str
    protocol: str
    transport: str
    timing: str

    @property
    def group(self) -> tuple[str, str, str]:
        """Runs of one group share a terminal (one emulator per victim, protocol and transport)."""
        return (self.victim, self.protocol, self.transport)

    @property
    def id(self) -> str:
        return f"{self.victim}-{self.operation}-{self.step}-{self.protocol}-{self.transport}-{self.timing}"

    @staticmethod
    def parse(text: str) -> Cell:
        victim, rest = text.split("-", 1)
        parts = rest.rsplit("-", 4)
        return Cell(victim, *parts)


def _steps(victim: str) -> tuple[str, ...]:
    return tuple(ECR_STEPS if victim == "ecr" else EMULATOR_STEPS)


def full_cells() -> list[Cell]:
    """The whole cross product (384 cells)."""
    return [Cell(v, o, s, p, t, m) for v in VICTIMS for o in OPERATIONS for s in _steps(v)
            for p in PROTOCOLS for t in TRANSPORTS for m in TIMINGS]


def ci_cells() -> list[Cell]:
    """The CI selection: sale over the whole cross product; every other operation at every step
    once per protocol, rotating transport and timing so each operation meets both of each."""
    cells = []
    for victim in VICTIMS:
        for si, step in enumerate(_steps(victim)):
            for pi, protocol in enumerate(PROTOCOLS):
                for transport in TRANSPORTS:
                    for timing in TIMINGS:
                        cells.append(Cell(victim, "sale", step, protocol, transport, timing))
                for oi, operation in enumerate(OPERATIONS[1:], 1):
                    transport = TRANSPORTS[(oi + si) % 2]
                    timing = TIMINGS[(oi + si + pi) % 2]
                    cells.append(Cell(victim, operation, step, protocol, transport, timing))
    return cells


# --- results --------------------------------------------------------------------------------------
@dataclass
class Verdict:
    """What the ledgers say about one run."""

    lost: int = 0
    double: int = 0
    unresolved: int = 0
    phantom: int = 0
    write_ahead: int = 0
    evidence: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.double or self.unresolved or self.phantom or self.write_ahead)


@dataclass
class Run:
    """One run of a cell: what the processes did, what recovery said, what the ledgers show."""

    cell: Cell
    number: int
    amount: int
    directory: Path
    ecr_journal: Path
    seconds: float = 0.0
    messages: list[tuple[str, Any]] = field(default_factory=list)
    terminal_messages: list[tuple[str, Any]] = field(default_factory=list)
    recovery: dict[str, Any] = field(default_factory=dict)
    harness_errors: list[str] = field(default_factory=list)
    verdict: Verdict | None = None
    ecr_rows: list[dict[str, Any]] = field(default_factory=list)
    terminal_rows: list[dict[str, Any]] = field(default_factory=list)
    phases: list[tuple[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def ok(self) -> bool:
        return not self.harness_errors and self.verdict is not None and self.verdict.ok

    def phase(self, name: str) -> None:
        """Note when a phase ended (seconds since the run started): where the time goes."""
        self.phases.append((name, round(time.monotonic() - self.started, 2)))

    def kill_message(self) -> dict[str, Any] | None:
        for kind, body in self.messages + self.terminal_messages:
            if kind == "killing":
                return body
        return None

    def report(self) -> str:
        """Everything a person needs to see why this run failed."""
        v = self.verdict or Verdict()
        lines = [f"run {self.number} of {self.cell.id}: amount {self.amount}, {self.seconds:.1f} s, "
                 f"lost {v.lost}, double {v.double}, unresolved {v.unresolved}, phantom {v.phantom}, "
                 f"write-ahead {v.write_ahead}; files in {self.directory}"]
        lines += [f"  HARNESS: {e}" for e in self.harness_errors]
        lines += [f"  {e}" for e in v.evidence]
        lines.append("  phases: " + ", ".join(f"{name} {at:.2f}" for name, at in self.phases))
        kill = self.kill_message()
        if kill:
            lines.append(f"  kill: {json.dumps(kill, ensure_ascii=False, default=str)}")
        if self.recovery:
            rec = {k: self.recovery[k] for k in ("how", "rc", "stdout", "stderr", "messages", "idle") if k in self.recovery}
            lines.append(f"  recovery: {json.dumps(rec, ensure_ascii=False, default=str)[:1500]}")
        lines.append("  ECR journal:")
        lines += [f"    {format_ecr_row(r)}" for r in self.ecr_rows]
        lines.append("  terminal journal (rows of this run's transaction numbers):")
        lines += [f"    {format_terminal_row(r)}" for r in self.terminal_rows]
        return "\n".join(lines)


@dataclass
class GroupResult:
    victim: str
    protocol: str
    transport: str
    runs: list[Run] = field(default_factory=list)
    settlement: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.victim, self.protocol, self.transport)


@dataclass
class MatrixResult:
    groups: list[GroupResult]
    seconds: float
    workdir: Path

    @property
    def runs(self) -> list[Run]:
        return [run for group in self.groups for run in group.runs]

    def runs_of(self, cell: Cell) -> list[Run]:
        return [run for run in self.runs if run.cell == cell]

    def group(self, key: tuple[str, str, str]) -> GroupResult | None:
        return next((g for g in self.groups if g.key == key), None)


# --- the ledgers ----------------------------------------------------------------------------------
def _connect_ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def read_terminal(path: Path) -> list[dict[str, Any]]:
    """Every operation the terminal journaled, with ``live`` / ``voided`` from its ``op_state`` view."""
    if not path.exists():
        return []
    conn = _connect_ro(path)
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM op_state ORDER BY id")]
    finally:
        conn.close()


def read_closed_batches(path: Path) -> list[dict[str, Any]]:
    conn = _connect_ro(path)
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM batches ORDER BY number")]
    finally:
        conn.close()


def read_ecr(path: Path) -> list[dict[str, Any]]:
    """The ECR journal's entries, read through the public API's view of what is unresolved too."""
    if not path.exists():
        return []
    conn = _connect_ro(path)
    try:
        rows = [dict(r) for r in conn.execute("SELECT * FROM ecr_entries ORDER BY id")]
    finally:
        conn.close()
    from posbridge.journal import Journal

    try:
        journal = Journal(path, readonly=True)  # the API's own word on what is unresolved
    except TypeError:  # a posbridge without read-only journals (checking an old commit)
        journal = Journal(path)
    with journal:
        open_ids = {e.id for e in journal.ecr.unresolved()}
    for row in rows:
        row["api_unresolved"] = row["id"] in open_ids
    return rows


def format_ecr_row(r: dict[str, Any]) -> str:
    keys = ("id", "operation", "state", "how", "status", "response_code", "host_code", "amount",
            "transaction_id", "rrn", "res_rrn", "error", "answer")
    return "ecr " + " ".join(f"{k}={r.get(k)!r}" for k in keys if r.get(k) not in (None, ""))


def format_terminal_row(r: dict[str, Any]) -> str:
    keys = ("id", "operation", "status", "code", "amount", "stan", "rrn", "original_id", "live",
            "voided", "result_delivered", "delivered", "auto_reversed")
    return "terminal " + " ".join(f"{k}={r.get(k)!r}" for k in keys if r.get(k) is not None)


def classify(ecr_rows: list[dict[str, Any]], terminal_rows: list[dict[str, Any]],
             write_ahead: Iterable[dict[str, Any]] = (), amounts: set[int] | None = None,
             ) -> tuple[Verdict, list[dict[str, Any]]]:
    """Compare one run's ECR journal with the terminal's batch; returns the verdict and the
    terminal rows that belong to the run: those with its transaction numbers (and, given
    ``amounts``, one of its amounts: every run has amounts of its own, so a transaction number
    two journals both issued still tells the runs apart)."""
    v = Verdict()
    stans = {r["transaction_id"] for r in ecr_rows if r.get("transaction_id")}
    mine = [t for t in terminal_rows if t.get("stan") in stans
            and (amounts is None or t.get("amount") in amounts)]
    approved = {(r["transaction_id"], r["operation"]): r for r in ecr_rows
                if r["operation"] in MONEY and r["state"] == "done" and r["status"] == "approved"}
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in ecr_rows:
        by_key.setdefault((r["transaction_id"], r["operation"]), []).append(r)
    for t in mine:
        if t["operation"] in MONEY and t["live"] and (t["stan"], t["operation"]) not in approved:
            v.lost += 1
            ecr = by_key.get((t["stan"], t["operation"]), [])
            v.evidence.append(f"LOST: {format_terminal_row(t)} is live (charged) but the ECR journal says "
                              + ("; ".join(format_ecr_row(e) for e in ecr) or "nothing"))
    for key, r in approved.items():
        if not any((t["stan"], t["operation"]) == key and t["live"] for t in mine):
            v.phantom += 1
            v.evidence.append(f"PHANTOM: {format_ecr_row(r)} says approved; the terminal has nothing live for it")
    live_by_kind: dict[str, list[dict[str, Any]]] = {}
    for t in mine:
        if t["operation"] in MONEY and t["live"]:
            live_by_kind.setdefault(t["operation"], []).append(t)
    for kind, rows in live_by_kind.items():
        if len(rows) > 1:
            v.double += len(rows) - 1
            v.evidence.append(f"DOUBLE: {len(rows)} live {kind} operations in one run: "
                              + "; ".join(format_terminal_row(t) for t in rows))
    for r in ecr_rows:
        if r["state"] in UNRESOLVED_STATES or r.get("api_unresolved"):
            v.unresolved += 1
            v.evidence.append(f"UNRESOLVED: {format_ecr_row(r)}")
    for w in write_ahead:
        if w.get("entry_state") != "sent" or w.get("entry_operation") not in (w.get("operation"), None):
            v.write_ahead += 1
            v.evidence.append(f"WRITE-AHEAD: the first byte of {w.get('operation')} was about to be written "
                              f"while its journal entry was {w.get('entry_state')!r} ({w})")
    return v, mine


def expected_totals(ecr_rows: list[dict[str, Any]]) -> dict[str, int]:
    """Batch totals as the ECR journals see them (host-rules.md: sales = sales + completions not
    cancelled; refunds not cancelled; cancels of sales, completions, refunds)."""
    done = [r for r in ecr_rows if r["state"] == "done" and r["status"] == "approved"]
    voided = {r["rrn"] for r in done if r["operation"] == "cancel"}
    t = {"sale_count": 0, "sale_amount": 0, "refund_count": 0, "refund_amount": 0, "cancel_count": 0,
         "cancel_amount": 0}
    for r in done:
        amount = r["res_amount"] if r["res_amount"] is not None else r["amount"]
        if r["operation"] in ("sale", "completion") and r["res_rrn"] not in voided:
            t["sale_count"] += 1
            t["sale_amount"] += amount
        elif r["operation"] == "refund" and r["res_rrn"] not in voided:
            t["refund_count"] += 1
            t["refund_amount"] += amount
        elif r["operation"] == "cancel" and r["original_operation"] in ("sale", "completion", "refund", None):
            t["cancel_count"] += 1
            t["cancel_amount"] += amount
    return t


# --- processes ------------------------------------------------------------------------------------
_CONTEXT: Any = None
_CONTEXT_LOCK = threading.Lock()


def context() -> Any:
    """multiprocessing's forkserver: one clean process that imported posbridge forks every child."""
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["tests.e2e.kill_children", "posbridge.ecr.client",
                                        "posbridge.emulator.terminal", "posbridge.emulator.scenario",
                                        "posbridge.journal", "posbridge.protocols.inpas",
                                        "posbridge.protocols.arcus2", "posbridge.devices"])
            _CONTEXT = ctx
        return _CONTEXT


# A forkserver child's exit code is read once from its sentinel pipe: two threads polling the same
# child at once (one in wait_exit, another in Process.start(), which polls every live child) make
# the loser read EOF and multiprocessing records 255 over the real code. Seen once in CI: a
# recovery that ended with 0 reported as 255. Every poll of a child's state goes under this lock.
_PROCESS_LOCK = threading.RLock()


class Child:
    """A forked child with a message pipe; every wait is bounded."""

    def __init__(self, target: Callable[..., None], params: dict[str, Any]) -> None:
        ctx = context()
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child_conn, params), daemon=True)
        with _PROCESS_LOCK:  # start() polls every other child (multiprocessing's _cleanup)
            self.proc.start()
        child_conn.close()
        self.messages: list[tuple[str, Any]] = []
        self._closed = False

    def _drain(self) -> None:
        while not self._closed:
            try:
                if not self.conn.poll():
                    return
                self.messages.append(self.conn.recv())
            except (EOFError, OSError):
                self._closed = True

    def wait_for(self, kinds: set[str], timeout: float) -> tuple[str, Any] | None:
        """The first message of one of ``kinds`` (None if the child exits or time runs out first)."""
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            for message in self.messages[seen:]:
                if message[0] in kinds:
                    return message
            seen = len(self.messages)
            left = deadline - time.monotonic()
            if left <= 0 or (self._closed and not self._alive()):
                return None
            ready = mp_wait([self.conn, self.proc.sentinel] if not self._closed else [self.proc.sentinel],
                            min(left, 1.0))
            if self.proc.sentinel in ready:
                self._reap(1)
                self._drain()
                for message in self.messages[seen:]:
                    if message[0] in kinds:
                        return message
                return None

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code (negative: killed by that signal); a child still alive after ``timeout``
        is killed (SIGKILL) and None is returned."""
        deadline = time.monotonic() + timeout
        while self._alive() and time.monotonic() < deadline:
            self._drain()
            mp_wait([self.conn, self.proc.sentinel] if not self._closed else [self.proc.sentinel],
                    max(0.0, min(1.0, deadline - time.monotonic())))
        if self._alive():
            self._kill()
            self._drain()
            return None
        code = self._reap(5)
        self._drain()
        return code

    def _alive(self) -> bool:
        with _PROCESS_LOCK:
            return self.proc.is_alive()

    def _reap(self, timeout: float) -> int | None:
        """Wait (outside the lock) for the child to end, then collect its exit code (inside)."""
        mp_wait([self.proc.sentinel], timeout)
        with _PROCESS_LOCK:
            self.proc.join(0)
            return self.proc.exitcode

    def _kill(self) -> None:
        with _PROCESS_LOCK:
            if self.proc.is_alive():
                self.proc.kill()
        self._reap(5)

    def send(self, obj: Any) -> None:
        self.conn.send(obj)

    def first(self, kind: str) -> Any:
        return next((body for k, body in self.messages if k == kind), None)

    def close(self) -> None:
        self._kill()
        self.conn.close()


def _env(lock_dir: Path) -> dict[str, str]:
    return {**os.environ, "POSBRIDGE_LOCK_DIR": str(lock_dir), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def end_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM ``proc`` if it still runs, SIGKILL if it has not ended 10 s later; wait for it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Emulator:
    """``posbridge emulate`` as an outside program runs it; ready when it prints where it listens."""

    def __init__(self, protocol: str, port: str, scenario: Path, journal: Path, log: Path,
                 lock_dir: Path) -> None:
        self.log_file = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "posbridge", "emulate", "--protocol", protocol, "--port", port,
             "--scenario", str(scenario), "--journal", str(journal), "--seed", "7"],
            stdout=subprocess.PIPE, stderr=self.log_file, cwd=ROOT, env=_env(lock_dir))
        self.where = ""

    def wait_ready(self, timeout: float = 20.0) -> str:
        """Where it listens (``tcp-listen://127.0.0.1:PORT`` or the pty link), from its first line."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not sel.select(0):
                    self.stop()
                    raise RuntimeError(f"posbridge emulate did not say where it listens: {buffer!r}")
                if sel.select(min(left, 1.0)):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        self.stop()
                        raise RuntimeError(f"posbridge emulate ended: {buffer!r}")
                    buffer += chunk
        line = buffer.decode("utf-8", "replace").splitlines()[0]
        match = re.search(r"listening on (\S+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"posbridge emulate said {line!r}")
        self.where = match.group(1)
        return self.where

    def stop(self) -> None:
        end_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log_file.close()


def wait_for_link(path: Path, timeout: float = 10.0) -> None:
    """A pty's symlink, pointing at a live device node."""
    deadline = time.monotonic() + timeout
    while not (path.is_symlink() and path.exists()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no pty link at {path}")
        time.sleep(0.02)


_CLI_OPTIONS: dict[str, str] = {}
_CLI_LOCK = threading.Lock()


def _supported(args: list[str], lock_dir: Path) -> list[str]:
    """``args`` without the options this posbridge's command does not know (``--timeout`` and
    ``--lock-wait`` came later: an old commit can still be put through the matrix)."""
    with _CLI_LOCK:
        if args[0] not in _CLI_OPTIONS:
            done = subprocess.run([sys.executable, "-m", "posbridge", args[0], "--help"], capture_output=True,
                                  text=True, cwd=ROOT, env=_env(lock_dir), timeout=60)
            _CLI_OPTIONS[args[0]] = done.stdout
        helptext = _CLI_OPTIONS[args[0]]
    out, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg in ("--timeout", "--lock-wait", "--json") and arg not in helptext:
            skip = arg != "--json"
            continue
        out.append(arg)
    return out


def run_cli(args: list[str], lock_dir: Path, timeout: float) -> dict[str, Any]:
    args = _supported(args, lock_dir)
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "posbridge", *args], capture_output=True, text=True,
                              cwd=ROOT, env=_env(lock_dir), timeout=timeout)
        out = {"rc": done.returncode, "stdout": done.stdout.strip(), "stderr": done.stderr.strip()}
    except subprocess.TimeoutExpired as expired:
        out = {"rc": None, "stdout": str(expired.stdout or ""), "stderr": f"timed out after {timeout} s"}
    out["seconds"] = round(time.monotonic() - started, 2)
    return out


# --- a group: one terminal, its runs one after another --------------------------------------------
class Group:
    """The runs of one (victim, protocol, transport) on one terminal and its journal."""

    def __init__(self, key: tuple[str, str, str], cells: list[tuple[int, Cell]], workdir: Path,
                 lock_dir: Path, say: Callable[[str], None], deadline: float) -> None:
        self.victim, self.protocol, self.transport = key
        self.cells = cells
        self.dir = workdir / "-".join(key)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock_dir = lock_dir
        self.say = say
        self.deadline = deadline
        self.scenario = self.dir / "scenario.toml"
        self.scenario.write_text(SCENARIO, encoding="utf-8")
        self.journal = self.dir / "terminal.sqlite3"
        self.log = self.dir / "emulator.log"
        self.link = Path(tempfile.mkdtemp(prefix="km-", dir=self.dir)) / "tty"
        self.listen = f"pty://{self.link}" if self.transport == "pty" else "tcp-listen://127.0.0.1:0"
        self.ecr_port = f"serial://{self.link}" if self.transport == "pty" else ""
        self.result = GroupResult(*key)

    # ports
    def _learn_port(self, where: str, port: Any = None) -> None:
        if self.transport == "tcp":
            if port is None:
                port = int(where.rsplit(":", 1)[1])
            self.listen = f"tcp-listen://127.0.0.1:{port}"
            self.ecr_port = f"tcp://127.0.0.1:{port}"
        else:
            wait_for_link(self.link)

    def start_emulator(self) -> Emulator:
        emulator = Emulator(self.protocol, self.listen, self.scenario, self.journal, self.log, self.lock_dir)
        self._learn_port(emulator.wait_ready())
        return emulator

    def run(self) -> GroupResult:
        started = time.monotonic()
        try:
            if self.victim == "ecr":
                self._run_ecr_group()
            else:
                self._run_emulator_group()
        except Exception:
            self.result.errors.append("the group stopped: " + traceback.format_exc())
        self.result.seconds = time.monotonic() - started
        self._judge()
        return self.result

    # --- ECR killed ---------------------------------------------------------------------------
    def _run_ecr_group(self) -> None:
        emulator = self.start_emulator()
        try:
            for number, cell in self.cells:
                if time.monotonic() > self.deadline:
                    self.result.errors.append(f"out of time before {cell.id}")
                    break
                run = self._ecr_run(number, cell)
                self.result.runs.append(run)
                self.say(f"{cell.id}: {run.seconds:.1f} s" + (f" HARNESS {run.harness_errors}" if run.harness_errors else ""))
                if emulator.proc.poll() is not None:
                    self.result.errors.append(f"posbridge emulate ended (exit {emulator.proc.returncode}) "
                                              f"during {cell.id}: see {self.log}")
                    emulator = self.start_emulator()
                elif run.harness_errors or run.recovery.get("rc") != 0:
                    # A failed run may leave the terminal stuck: the next cell gets a fresh process
                    # (same port, same journal), so one failure does not spread to the cells after it.
                    self.result.notes.append(f"terminal restarted after run {number} ({cell.id})")
                    emulator.stop()
                    emulator = self.start_emulator()
            self._settle()
        finally:
            emulator.stop()

    def _new_run(self, number: int, cell: Cell) -> Run:
        directory = self.dir / f"run{number:03d}-{cell.operation}-{cell.step}-{cell.timing}"
        directory.mkdir(parents=True, exist_ok=True)
        return Run(cell, number, 10_000 + number, directory, directory / "ecr.sqlite3")

    def _ecr_params(self, run: Run, step: str | None, recover_in_process: bool = False) -> dict[str, Any]:
        cell = run.cell
        return {
            "port": self.ecr_port, "protocol": cell.protocol, "ecr_journal": str(run.ecr_journal),
            "lock_dir": str(self.lock_dir), "operation": cell.operation, "setup": SETUP.get(cell.operation),
            "amount": run.amount, "step": step, "timers": ECR_TIMERS[cell.protocol], "deadline": ECR_DEADLINE,
            "lock_wait": 10.0, "recover_in_process": recover_in_process, "go_timeout": CHILD_TIMEOUT,
            "output": str(run.directory / "ecr.log"),
        }

    def _ecr_run(self, number: int, cell: Cell) -> Run:
        run = self._new_run(number, cell)
        child = Child(kill_children.ecr_child, self._ecr_params(run, cell.step))
        try:
            code = child.wait_exit(CHILD_TIMEOUT)
        finally:
            child.close()
        run.phase("ECR dead")
        run.messages = child.messages
        kill = run.kill_message()
        if code != -signal.SIGKILL or kill is None:
            run.harness_errors.append(f"the ECR was not killed at {cell.step}: exit {code}, messages {child.messages}")
        elif kill.get("step") != cell.step:
            run.harness_errors.append(f"the ECR died at {kill.get('step')}, not {cell.step}")
        stan = (kill or {}).get("transaction_id")
        if cell.timing == "after_idle" and cell.step != "journaled" and stan:
            # Nothing was written at "journaled": the terminal never heard of it, it is idle.
            run.recovery["idle"] = self.wait_idle({stan})
            run.phase("terminal idle")
        run.recovery.update(how="posbridge recover", **self.recover_cli(run))
        run.phase("recovered")
        self.wait_idle(self._stans(run))  # the next run starts on an idle terminal
        run.phase("terminal idle")
        run.seconds = time.monotonic() - run.started
        return run

    def recover_cli(self, run: Run) -> dict[str, Any]:
        return run_cli(["recover", "--protocol", run.cell.protocol, "--port", self.ecr_port, "--journal",
                        str(run.ecr_journal), "--json", "--timeout", str(RECOVER_TIMEOUT), "--lock-wait", "10"],
                       self.lock_dir, timeout=4 * RECOVER_TIMEOUT + 20)

    def _stans(self, run: Run) -> set[str]:
        try:
            return {r["transaction_id"] for r in read_ecr(run.ecr_journal) if r["transaction_id"]}
        except Exception:
            return set()

    def wait_idle(self, stans: set[str], bound: float = IDLE_BOUND, since_id: int = 0,
                  expect_rows: bool = True) -> dict[str, Any]:
        """Until the terminal has finished with every operation of these transaction numbers
        (rows after ``since_id``: a killed terminal never finishes its own): its journal records
        whether each result was delivered, or its log line says so. Bounded by ``bound``.
        ``expect_rows=False``: no row yet means no work (the exchanges that could make one are over)."""
        started = time.monotonic()
        deadline = started + bound
        how = "bound"
        while time.monotonic() < deadline:
            try:
                rows = [r for r in read_terminal(self.journal) if r.get("stan") in stans and r["id"] > since_id]
            except sqlite3.Error:
                rows = []
            if (rows or not expect_rows) and all(r.get("result_delivered") is not None for r in rows):
                how = "journal"
                break
            if stans and self._log_says_done(stans):
                how = "log"
                break
            time.sleep(0.05)
        return {"waited": round(time.monotonic() - started, 2), "by": how}

    def _last_terminal_id(self) -> int:
        try:
            rows = read_terminal(self.journal)
        except sqlite3.Error:
            return 0
        return max((r["id"] for r in rows), default=0)

    def _log_says_done(self, stans: set[str]) -> bool:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        lines = [line for line in text.splitlines() if "deliver" in line.lower()]
        return all(any(stan in line for line in lines) for stan in stans)

    # --- terminal killed ------------------------------------------------------------------------
    def _run_emulator_group(self) -> None:
        for number, cell in self.cells:
            if time.monotonic() > self.deadline:
                self.result.errors.append(f"out of time before {cell.id}")
                break
            run = self._emulator_run(number, cell)
            self.result.runs.append(run)
            self.say(f"{cell.id}: {run.seconds:.1f} s" + (f" HARNESS {run.harness_errors}" if run.harness_errors else ""))
        emulator = self.start_emulator()
        try:
            self._settle()
        finally:
            emulator.stop()

    def _emulator_run(self, number: int, cell: Cell) -> Run:
        run = self._new_run(number, cell)
        in_process = cell.timing == "at_once"
        terminal = Child(kill_children.emulator_child, {
            "protocol": cell.protocol, "port": self.listen, "journal": str(self.journal),
            "scenario": str(self.scenario), "seed": 7, "step": cell.step, "nth": 2 if cell.operation in SETUP else 1,
            "output": str(self.log)})
        ecr: Child | None = None
        emulator: Emulator | None = None
        try:
            ready = terminal.wait_for({"ready", "error"}, 20.0)
            if ready is None or ready[0] != "ready":
                run.harness_errors.append(f"the hooked terminal did not start: {terminal.messages}")
                return run
            self._learn_port(ready[1]["where"], ready[1].get("port"))
            run.phase("terminal up")
            ecr = Child(kill_children.ecr_child, self._ecr_params(run, None, recover_in_process=in_process))
            code = terminal.wait_exit(CHILD_TIMEOUT)
            run.phase("terminal dead")
            run.terminal_messages = terminal.messages
            kill = run.kill_message()
            if code != -signal.SIGKILL or kill is None:
                run.harness_errors.append(f"the terminal was not killed at {cell.step}: exit {code}, "
                                          f"messages {terminal.messages}")
            elif kill.get("step") != cell.step:
                run.harness_errors.append(f"the terminal died at {kill.get('step')}, not {cell.step}")
            # The ECR sees the link fail and journals "unknown" (at result_sent it has its answer).
            if in_process:
                if ecr.wait_for({"waiting"}, CHILD_TIMEOUT) is None:
                    run.harness_errors.append(f"the ECR did not wait for recovery: {ecr.messages}")
            else:
                exit_code = ecr.wait_exit(CHILD_TIMEOUT)
                if exit_code != 0:
                    run.harness_errors.append(f"the ECR ended with {exit_code}: {ecr.messages}")
            run.phase("ECR saw it")
            since = self._last_terminal_id()
            emulator = Emulator(cell.protocol, self.listen, self.scenario, self.journal, self.log, self.lock_dir)
            self._learn_port(emulator.wait_ready())
            run.phase("terminal restarted")
            if in_process:
                ecr.send("go")
                exit_code = ecr.wait_exit(4 * RECOVER_TIMEOUT + 20)
                run.recovery = {"how": "EcrClient.recover() in the ECR that saw the failure", "rc": exit_code,
                                "messages": [m for m in ecr.messages if m[0] in ("recovered", "recover_failed")]}
                if exit_code != 0:
                    run.harness_errors.append(f"the ECR's own recovery ended with {exit_code}: {ecr.messages}")
            else:
                run.recovery = {"how": "posbridge recover", **self.recover_cli(run)}
            run.phase("recovered")
            self.wait_idle(self._stans(run), since_id=since, expect_rows=False)
            run.phase("terminal idle")
        finally:
            terminal.close()
            if ecr is not None:
                ecr.close()
                run.messages = ecr.messages
            if emulator is not None:
                emulator.stop()
            run.seconds = time.monotonic() - run.started
        return run

    # --- settlement and the verdicts ------------------------------------------------------------
    def _settle(self) -> None:
        journal = self.dir / "settlement-ecr.sqlite3"
        out = run_cli(["settlement", "--protocol", self.protocol, "--port", self.ecr_port, "--journal",
                       str(journal), "--json", "--timeout", str(RECOVER_TIMEOUT), "--lock-wait", "10"],
                      self.lock_dir, timeout=RECOVER_TIMEOUT + 30)
        self.result.settlement = {"cli": out, "journal": journal}
        if out["rc"] != 0:
            self.result.errors.append(f"posbridge settlement failed: {out}")
            return
        try:
            self.result.settlement["answer"] = json.loads(out["stdout"])
        except ValueError:
            self.result.errors.append(f"posbridge settlement printed no JSON: {out['stdout'][:500]}")

    def _judge(self) -> None:
        """Classify every run against the terminal's final journal, then check the settlement."""
        try:
            terminal_rows = read_terminal(self.journal)
        except Exception as error:
            self.result.errors.append(f"the terminal journal cannot be read: {error}")
            return
        all_ecr: list[dict[str, Any]] = []
        known: set[str] = set()
        for run in self.result.runs:
            try:
                run.ecr_rows = read_ecr(run.ecr_journal)
            except Exception as error:
                run.harness_errors.append(f"the ECR journal cannot be read: {error}")
                run.ecr_rows = []
            write_ahead = []
            for kind, body in run.messages:
                if isinstance(body, dict) and body.get("write_ahead"):
                    write_ahead = body["write_ahead"]  # the last report holds the whole list
            run.verdict, run.terminal_rows = classify(run.ecr_rows, terminal_rows, write_ahead, {run.amount})
            (run.directory / "run.txt").write_text(run.report() + "\n", encoding="utf-8")
            all_ecr += run.ecr_rows
            known |= {r["transaction_id"] for r in run.ecr_rows if r["transaction_id"]}
        settle_journal = self.result.settlement.get("journal")
        settle_rows = read_ecr(settle_journal) if settle_journal else []
        known |= {r["transaction_id"] for r in settle_rows if r["transaction_id"]}
        for t in terminal_rows:
            if t.get("stan") not in known and t["operation"] in MONEY and t["live"]:
                self.result.errors.append(f"LOST (no ECR journal knows its transaction number): "
                                          f"{format_terminal_row(t)}")
        self._check_totals(all_ecr)

    def _check_totals(self, all_ecr: list[dict[str, Any]]) -> None:
        if "answer" not in self.result.settlement:
            return
        expected = expected_totals(all_ecr)
        closed = [b for b in read_closed_batches(self.journal) if b["closed_at"]]
        if not closed:
            self.result.errors.append("the settlement closed no batch in the terminal's journal")
            return
        terminal = json.loads(closed[-1]["totals"])
        self.result.settlement["expected"] = expected
        self.result.settlement["terminal"] = terminal
        diff = {k: (expected[k], terminal.get(k)) for k in expected if terminal.get(k) != expected[k]}
        if diff:
            self.result.errors.append(f"settlement totals differ (ECR journals, terminal batch): {diff}")
        answer = self.result.settlement["answer"].get("totals")
        if answer:
            wrong = {k: (answer.get(k), terminal.get(k)) for k in expected if answer.get(k) != terminal.get(k)}
            if wrong:
                self.result.errors.append(f"the settlement answer's totals differ from the batch's: {wrong}")


# --- the whole matrix -----------------------------------------------------------------------------
def run_matrix(cells: Iterable[Cell], workdir: Path, *, repeat: int = 1, jobs: int | None = None,
               say: Callable[[str], None] = lambda text: None, time_limit: float = 900.0) -> MatrixResult:
    """Run ``cells`` (``repeat`` runs each), the groups concurrently; returns every run, judged."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lock_dir = workdir / "locks"
    lock_dir.mkdir(exist_ok=True)
    context()
    groups: dict[tuple[str, str, str], list[tuple[int, Cell]]] = {}
    number = 0
    for _ in range(repeat):
        for cell in sorted(set(cells), key=lambda c: (c.group, OPERATIONS.index(c.operation),
                                                         _steps(c.victim).index(c.step), c.timing)):
            number += 1
            groups.setdefault(cell.group, []).append((number, cell))
    started = time.monotonic()
    deadline = started + time_limit
    lock = threading.Lock()

    def said(text: str) -> None:
        with lock:
            say(f"[{time.monotonic() - started:6.1f} s] {text}")

    # The biggest groups first: the wall time is the longest group's.
    order = sorted(groups, key=lambda k: -len(groups[k]))
    with ThreadPoolExecutor(max_workers=jobs or len(order) or 1, thread_name_prefix="kill-matrix") as pool:
        futures = [pool.submit(Group(key, groups[key], workdir, lock_dir, said, deadline).run) for key in order]
        results = [f.result() for f in futures]
    return MatrixResult(results, time.monotonic() - started, workdir)


def cell_counts(runs: list[Run]) -> dict[str, int]:
    counts = {"runs": len(runs), "lost": 0, "double": 0, "unresolved": 0, "phantom": 0, "write_ahead": 0,
              "harness": 0}
    for run in runs:
        v = run.verdict or Verdict()
        counts["lost"] += v.lost
        counts["double"] += v.double
        counts["unresolved"] += v.unresolved
        counts["phantom"] += v.phantom
        counts["write_ahead"] += v.write_ahead
        counts["harness"] += bool(run.harness_errors)
    return counts


def format_table(result: MatrixResult) -> str:
    """The matrix as a Markdown table: rows victim × operation × step, columns protocol ×
    transport × timing; a cell is ``runs/lost/double/unresolved``, bold when it fails."""
    columns = [(p, t, m) for p in PROTOCOLS for t in TRANSPORTS for m in TIMINGS]
    by_cell: dict[Cell, list[Run]] = {}
    for run in result.runs:
        by_cell.setdefault(run.cell, []).append(run)
    head = "| killed | operation | step | " + " | ".join(f"{p} {t} {m.replace('_', ' ')}" for p, t, m in columns) + " |"
    lines = [head, "|" + "---|" * (3 + len(columns))]
    for victim in VICTIMS:
        steps = ECR_STEPS if victim == "ecr" else EMULATOR_STEPS
        for operation in OPERATIONS:
            for step, words in steps.items():
                cells = []
                for p, t, m in columns:
                    runs = by_cell.get(Cell(victim, operation, step, p, t, m), [])
                    if not runs:
                        cells.append("–")
                        continue
                    c = cell_counts(runs)
                    text = f"{c['runs']}/{c['lost']}/{c['double']}/{c['unresolved']}"
                    extra = "".join(f" {flag}{c[key]}" for key, flag in
                                    (("phantom", "p"), ("write_ahead", "w"), ("harness", "h")) if c[key])
                    ok = not any(c[k] for k in ("lost", "double", "unresolved", "phantom", "write_ahead", "harness"))
                    cells.append(text + extra if ok else f"**{text}{extra}**")
                if any(c != "–" for c in cells):
                    who = "ECR" if victim == "ecr" else "terminal"
                    lines.append(f"| {who} | {operation} | {words} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_summary(result: MatrixResult) -> str:
    runs = result.runs
    total = cell_counts(runs)
    failing = sorted({run.cell for run in runs if not run.ok})
    lines = [
        f"{total['runs']} runs in {result.seconds:.0f} s ({len(result.groups)} groups concurrently); "
        f"lost {total['lost']}, double {total['double']}, unresolved {total['unresolved']}, "
        f"phantom {total['phantom']}, write-ahead {total['write_ahead']}, harness errors {total['harness']}; "
        f"{len(failing)} failing cell(s). Files: {result.workdir}",
        "Cell: runs/lost/double/unresolved; p = phantom (ECR says approved, nothing live at the terminal), "
        "w = first byte written before the entry was journaled 'sent', h = the run did not reach its step. "
        "Terminal-killed rows: 'at once' = the ECR that saw the failure recovers in its own process as soon "
        "as the restarted terminal is up; 'after idle' = a separate `posbridge recover` after that ECR exited.",
    ]
    for group in result.groups:
        settle = group.settlement
        if group.notes:
            lines.append(f"group {'-'.join(group.key)}: " + "; ".join(group.notes))
        if group.errors:
            lines.append(f"group {'-'.join(group.key)} ({group.seconds:.0f} s): " + " | ".join(group.errors))
        elif settle.get("expected") is not None:
            lines.append(f"group {'-'.join(group.key)} ({group.seconds:.0f} s): settlement totals match the ECR "
                         f"journals: {settle['expected']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="posbridge process kill matrix (prints a Markdown table)")
    parser.add_argument("--full", action="store_true", help="the whole cross product (default: the CI selection)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (default 1)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="only cells whose id contains TEXT (repeatable; all must match), "
                             "e.g. --only ecr- --only -sale-")
    parser.add_argument("--workdir", help="where the journals and logs go (default: a new temporary folder)")
    parser.add_argument("--jobs", type=int, default=None, help="groups run at once (default: all)")
    parser.add_argument("--details", action="store_true", help="print every failing run's evidence")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    cells = full_cells() if args.full else ci_cells()
    cells = [c for c in cells if all(text in c.id for text in args.only)]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="posbridge-kill-matrix-"))
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    result = run_matrix(cells, workdir, repeat=args.repeat, jobs=args.jobs, say=say, time_limit=3600)
    print(format_table(result))
    print()
    print(format_summary(result))
    if args.details:
        for run in result.runs:
            if not run.ok:
                print()
                print(run.report())
    failing = [run for run in result.runs if not run.ok] or any(g.errors for g in result.groups)
    return 1 if failing else 0


if __name__ == "__main__":
    raise SystemExit(main())
