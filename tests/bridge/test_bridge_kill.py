"""``posbridge bridge`` SIGKILLed at each point of a sale: real processes, three books compared.

The claim (posbridge/bridge/bridge.py, docs/bridge.md): the bridge never loses, double-charges or
misreports a sale — also when its process dies at any moment. Here every party is a real program:

* the terminal: ``posbridge emulate`` (TCP, its batch in its own journal file, ``--control`` API);
* the bridge: ``posbridge bridge`` (register side ``tcp-listen://``, its ECR journal a file);
* the register: posbridge's :class:`~posbridge.ecr.EcrClient` in this process, with its own journal
  file, reaching the bridge through a :class:`Relay` (a TCP relay in this process that can hold the
  bridge's bytes back, or hang up, when a kill point needs it); the bridge reaches the terminal
  through another.

Each test kills the bridge with SIGKILL at one point of a sale (each point is reached by watching
the books, never by sleeping; :data:`POINTS` says how), then restarts it on the same journal and the
same port, lets it recover what it left open at start, lets the register recover its own unknown
sale through it, runs one clean sale and a settlement through it, and compares the three books:

* no money operation is live (charged) at the terminal unless the register's journal holds it as
  approved — and the bridge's journal knows every live one;
* nothing the register holds as approved is missing at the terminal (no reported approval the
  terminal does not have); nothing is live twice for one transaction number;
* nothing stays open in the register's or the bridge's journal;
* the settlement the register got through the bridge, and the terminal's closed batch, equal the
  totals of what the register's journal holds as approved.

Both directions: an INPAS register with an Arcus2 terminal, and an Arcus2 register with an INPAS
terminal. Each test starts its own terminal (its own batch), so the tests are independent. Every
run leaves ``books.txt`` (the three books) and each program's output in its ``tmp_path``;
``BRIDGE_KILL_DEBUG=1`` runs the terminal and the bridges with ``-vv`` (every frame logged).

Where the time goes: an INPAS client waits 1.2 x its ACK timeout (6 s) after a failed exchange
before its next one (a terminal's late resends must die out first), so the INPAS terminal's
"lost_outcome_reversal" run takes ~10 s; the others 3-6 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from posbridge.ecr import EcrClient
from posbridge.ecr.ownership import TerminalLock, canonical_port
from posbridge.journal import Journal
from posbridge.model import Operation, Request, Status
from tests.e2e.kill_matrix import (end_process, expected_totals, format_ecr_row, format_terminal_row, read_ecr,
                                   read_terminal)

ROOT = Path(__file__).resolve().parents[2]
DIRECTIONS = [pytest.param("inpas", "arcus2", id="inpas-register-arcus2-terminal"),
              pytest.param("arcus2", "inpas", id="arcus2-register-inpas-terminal")]
MONEY = ("sale", "refund", "cancel", "preauth", "completion", "cancel_preauth")
OPEN_STATES = ("pending", "sent", "unknown", "refund_needed")
VERBOSE = ["-vv"] if os.environ.get("BRIDGE_KILL_DEBUG") else []  # every frame in the programs' logs
SALE_DELAY = 0.8  # seconds the host takes over a sale at the points that need the terminal busy
REVERSAL_DELAY = 1.5  # ... over an emergency reversal (the "during the reversal" points)
STEP_TIMEOUT = 15.0  # bound on waiting for any one thing a run waits for (never reached when all is well)
SCENARIO = """\
# The terminal of the bridge kill tests: WAIT packets often while a host delay (a rule) runs.
seed = 7
[terminal]
progress_interval = 0.2
"""

POINTS = {
    # The bridge took the register's request and waits for the terminal's cross-process lock, which
    # the test holds: nothing is journaled at the bridge yet. Reached: the register hears the
    # bridge's own progress packet (sent only while the bridge works on its request).
    "waiting_for_lock": "the request taken, the bridge waits for the terminal (nothing journaled)",
    # The bridge has journaled the sale "sent" (write-ahead: before its first byte to the terminal)
    # and written its first bytes (the INPAS request; Arcus ENQ), which the relay on the terminal's
    # line holds: the terminal never gets the request. Reached: the bridge's journal entry is
    # "sent" and the relay holds bytes. (The emulator's own rx:silence line fault cannot serve
    # here: clearing it does not reach the read already waiting, which swallows the next peer's
    # bytes until the silence ends.)
    "before_terminal": "journaled sent, the terminal never got the request",
    # The terminal is at its host (a host_delay rule) when the bridge dies: the terminal completes
    # the sale and keeps its result as undelivered. Reached: the terminal's journal holds the sale
    # (its host decides, then the delay runs) and the control API's /health says "authorizing".
    "authorizing": "the terminal authorizes (slow host)",
    # The terminal has answered and the bridge journaled it "done"; its answer to the register is
    # held back by the relay (armed while the terminal authorized, long after the register's request
    # was acknowledged). Reached: the bridge's journal entry is "done".
    "answered": "the terminal answered, the register has not got it",
    # As "answered", then the relay hangs up on both sides: the bridge cannot deliver the result and
    # sends the terminal an emergency reversal at once (slowed by a host_delay rule). Reached: the
    # bridge's journal holds the reversal "sent", the terminal's journal holds it, /health says
    # "authorizing" (its answer not yet sent).
    "undo_reversal": "during the reversal of a result the register did not take",
    # The terminal's line drops when it next writes (control API line fault tx:disconnect@0, set
    # while it authorizes): the bridge sees the outcome lost and, before it answers the register,
    # recovers it by an emergency reversal (slowed by a host_delay rule). Reached as above.
    "lost_outcome_reversal": "during the recovery of a lost outcome, before the register is answered",
    # Killed while the terminal authorizes (as "authorizing"), restarted, and killed again while the
    # terminal has the restarted bridge's start recovery reversal at its (slow) host; a third bridge
    # finishes the job. Reached as "authorizing", then as "undo_reversal".
    "restart_recovery": "while authorizing, then again during the restarted bridge's start recovery",
    # Killed while the terminal authorizes (as "authorizing"); the restarted bridge recovers; then
    # the register's own recovery sends its reversal through it and it is killed again while the
    # terminal has that reversal at its (slow) host: the register's sale and its reversal are both
    # unknown; a third bridge serves the register's second recovery. Reached as "authorizing",
    # then: the terminal journaled a new reversal of the sale and /health says "authorizing".
    "register_recovery": "while authorizing, then again during the register's recovery through the bridge",
}
NOTHING_SENT = ("waiting_for_lock", "before_terminal")
"""Points where the terminal never got the sale: the register's recovery finds nothing charged."""


# --- processes ------------------------------------------------------------------------------------
def _env(lock_dir: Path) -> dict[str, str]:
    return {**os.environ, "POSBRIDGE_LOCK_DIR": str(lock_dir), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def free_port() -> int:
    """A loopback port nobody listens on now (the bridge must come back on the same one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Program:
    """A ``posbridge`` command as a child process; its stdout and stderr go to files read as it runs."""

    def __init__(self, args: list[str], directory: Path, name: str, lock_dir: Path) -> None:
        self.name = name
        self.stdout_path, self.stderr_path = directory / f"{name}.out", directory / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "posbridge", *args], stdout=out, stderr=err,
                                         cwd=ROOT, env=_env(lock_dir))

    def output(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def log(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    async def wait_output(self, pattern: str, timeout: float = STEP_TIMEOUT) -> re.Match[str]:
        async def found() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} ended ({self.proc.returncode}): {self.log()[-2000:]}")
            return re.search(pattern, self.output())
        return await until(found, f"{pattern!r} on its output", timeout)

    def kill(self) -> None:
        """SIGKILL: no finally, no journal close, no socket shutdown; the kernel closes what it held."""
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def stop(self) -> None:
        end_process(self.proc)


async def until(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = STEP_TIMEOUT) -> Any:
    """Poll ``probe`` (every 10 ms) until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s")
        await asyncio.sleep(0.01)


class Terminal:
    """``posbridge emulate`` with its control API."""

    def __init__(self, protocol: str, directory: Path, lock_dir: Path) -> None:
        self.journal = directory / "terminal.sqlite3"
        scenario = directory / "scenario.toml"
        scenario.write_text(SCENARIO, encoding="utf-8")
        self.program = Program([*VERBOSE, "emulate", "--protocol", protocol, "--port", "tcp-listen://127.0.0.1:0",
                                "--control", "127.0.0.1:0", "--journal", str(self.journal), "--scenario",
                                str(scenario), "--seed", "7"], directory, "terminal", lock_dir)
        self.url = self.control = ""
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.control = (await self.program.wait_output(r"control API on (http://\S+)")).group(1)
        self.url = "tcp://" + (await self.program.wait_output(r"listening on tcp-listen://(\S+)")).group(1)
        self.http = aiohttp.ClientSession()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        assert self.http is not None
        async with self.http.request(method, self.control + path, json=body) as response:
            answer = await response.json()
            assert response.status == 200, (method, path, body, answer)
            return answer

    async def state(self) -> str:
        return str((await self.call("GET", "/health"))["state"])

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        self.program.stop()


class Relay:
    """A TCP relay in the test process between a client and a server (the register and the bridge,
    or the bridge and the terminal), one server connection per client connection. :meth:`hold`
    keeps what one side (``held_side``: "client" or "server") sends from then on, never passing it
    on; :meth:`cut` hangs up on both sides, as a pulled cable would, and passes everything again."""

    def __init__(self, server_port: int, held_side: str) -> None:
        self.server_port = server_port
        self.held_side = held_side
        self.port = 0
        self.holding = False
        self.held = b""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.server_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer, self.held_side == "client")),
                 asyncio.ensure_future(self._pump(up_reader, writer, self.held_side == "server"))]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            w.close()
        for task in pumps:
            task.cancel()
        self._tasks.difference_update(pumps)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, held: bool) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(4096):
                if held and self.holding:
                    self.held += data
                    continue
                writer.write(data)
                await writer.drain()

    def hold(self) -> None:
        self.holding = True

    def cut(self) -> None:
        self.holding = False
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()


# --- the books ------------------------------------------------------------------------------------
def open_entries(path: Path) -> list[dict[str, Any]]:
    """The entries of an ECR journal (the register's or the bridge's) whose outcome is still open."""
    return [r for r in read_ecr(path) if r["state"] in OPEN_STATES or r["api_unresolved"]]


def check_books(register_rows: list[dict[str, Any]], bridge_rows: list[dict[str, Any]],
                terminal_rows: list[dict[str, Any]]) -> list[str]:
    """Every disagreement between the three books (empty: they agree)."""
    problems: list[str] = []
    approved = {(r["transaction_id"], r["operation"]) for r in register_rows
                if r["operation"] in MONEY and r["state"] == "done" and r["status"] == "approved"}
    bridge_approved = {(r["transaction_id"], r["operation"]) for r in bridge_rows
                       if r["operation"] in MONEY and r["state"] == "done" and r["status"] == "approved"}
    live: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in terminal_rows:
        if t["operation"] in MONEY and t["live"]:
            live.setdefault((t["stan"], t["operation"]), []).append(t)
    for key, rows in live.items():
        if key not in approved:
            problems.append(f"LOST: live at the terminal, not approved in the register's journal: "
                            f"{format_terminal_row(rows[0])}")
        if key not in bridge_approved:
            problems.append(f"UNKNOWN TO THE BRIDGE: live at the terminal, not approved in the bridge's journal: "
                            f"{format_terminal_row(rows[0])}")
        if len(rows) > 1:
            problems.append(f"DOUBLE: {len(rows)} live {key[1]} of transaction {key[0]}")
    for key in approved - set(live):
        problems.append(f"PHANTOM: the register holds {key[1]} {key[0]} approved; the terminal has nothing live")
    for name, rows in (("register", register_rows), ("bridge", bridge_rows)):
        problems += [f"OPEN in the {name}'s journal: {format_ecr_row(r)}" for r in rows
                     if r["state"] in OPEN_STATES or r["api_unresolved"]]
    return problems


def closed_batch_totals(path: Path) -> dict[str, Any]:
    """The totals the terminal's journal recorded when its one batch was closed."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT totals FROM batches WHERE closed_at IS NOT NULL ORDER BY number").fetchall()
    finally:
        conn.close()
    assert len(rows) == 1, rows
    return dict(json.loads(rows[0][0]))


# --- one run --------------------------------------------------------------------------------------
class Run:
    """One kill test's parties and files."""

    def __init__(self, register_protocol: str, terminal_protocol: str, directory: Path) -> None:
        self.register_protocol, self.terminal_protocol = register_protocol, terminal_protocol
        self.dir = directory
        self.lock_dir = directory / "locks"
        self.lock_dir.mkdir()
        self.bridge_journal = directory / "bridge.sqlite3"
        self.register_journal_path = directory / "register.sqlite3"
        self.terminal = Terminal(terminal_protocol, directory, self.lock_dir)
        self.bridge_port = free_port()
        self.relay = Relay(self.bridge_port, held_side="server")  # register -> bridge
        self.line: Relay | None = None  # bridge -> terminal
        self.bridges: list[Program] = []
        self.register_journal: Journal | None = None
        self.lock: TerminalLock | None = None  # the test's hold on the terminal ("waiting_for_lock")

    async def start(self) -> None:
        await self.terminal.start()
        self.line = Relay(int(self.terminal.url.rsplit(":", 1)[1]), held_side="client")
        await self.line.start()
        await self.relay.start()
        await self.start_bridge()
        self.register_journal = Journal(self.register_journal_path)

    async def start_bridge(self) -> Program:
        assert self.line is not None
        bridge = Program([*(VERBOSE or ["-v"]), "bridge", "--ecr", f"tcp-listen://127.0.0.1:{self.bridge_port}",
                          "--ecr-protocol", self.register_protocol, "--terminal", f"tcp://127.0.0.1:{self.line.port}",
                          "--terminal-protocol", self.terminal_protocol, "--journal", str(self.bridge_journal),
                          "--progress-interval", "0.5", "--timeout", "20", "--lock-wait", "10"],
                         self.dir, f"bridge{len(self.bridges) + 1}", self.lock_dir)
        self.bridges.append(bridge)
        await bridge.wait_output(r"bridge ready: ")
        return bridge

    def register(self, on_progress: Callable[[Any], None] | None = None, journal: Journal | None = None) -> EcrClient:
        """A register (a new client each time: a killed bridge took its connection); its journal is
        the run's file unless ``journal`` is given."""
        assert self.register_journal is not None
        return EcrClient(f"tcp://127.0.0.1:{self.relay.port}", self.register_protocol,
                         journal=journal or self.register_journal, deadline=30.0, lock_wait=10.0,
                         on_progress=on_progress)

    async def bridge_entry(self, operation: str, states: tuple[str, ...]) -> dict[str, Any] | None:
        return next((r for r in read_ecr(self.bridge_journal)
                     if r["operation"] == operation and r["state"] in states), None)

    async def close(self) -> None:
        if self.lock is not None:
            await self.lock.release()
        for bridge in self.bridges:
            bridge.stop()
        await self.relay.close()
        if self.line is not None:
            await self.line.close()
        await self.terminal.close()
        if self.register_journal is not None:
            self.register_journal.close()

    def diagnosis(self) -> str:
        parts = [f"files in {self.dir}"]
        for program in [*self.bridges, self.terminal.program]:
            parts.append(f"--- {program.stderr_path.name}:\n{program.log()[-3000:]}\n"
                         f"--- {program.stdout_path.name}:\n{program.output()[-2000:]}")
        return "\n".join(parts)


async def prepare(run: Run, point: str) -> None:
    """Set the scene for ``point`` before the sale (see :data:`POINTS`)."""
    terminal = run.terminal
    assert run.line is not None
    if point == "waiting_for_lock":
        run.lock = TerminalLock(canonical_port(f"tcp://127.0.0.1:{run.line.port}"), wait=5.0)
        await run.lock.acquire("the test holds the terminal")
    elif point == "before_terminal":
        run.line.hold()
    else:
        # The sale's answer is slow (the window in which the test arms the relay or the line fault;
        # generous for a loaded machine); so is a reversal's: the kill comes while the terminal has it.
        rules: list[dict[str, Any]] = [{"operation": "sale", "host_delay": SALE_DELAY, "once": True}]
        if point not in ("authorizing", "answered", "register_recovery"):
            rules.append({"operation": "emergency_reversal", "host_delay": REVERSAL_DELAY, "once": True})
        await terminal.call("POST", "/rules", {"rules": rules})


async def terminal_has(run: Run, operation: str, stan: str | None = None, after: int = 0) -> dict[str, Any] | None:
    """The terminal's journaled ``operation`` (of transaction ``stan``; a row after id ``after``),
    once its answer is still in the host delay (the host journals first, then the delay runs:
    /health says "authorizing")."""
    rows = [t for t in read_terminal(run.terminal.journal)
            if t["operation"] == operation and (stan is None or t["stan"] == stan) and t["id"] > after]
    if rows and await run.terminal.state() == "authorizing":
        return rows[-1]
    return None


async def at_point(run: Run, point: str, progress: asyncio.Event) -> str:
    """Wait (watching the books, the control API, the relays) until the running sale is at
    ``point``; returns what was seen there (for a failure message)."""
    assert run.line is not None
    line = run.line
    if point == "waiting_for_lock":
        await asyncio.wait_for(progress.wait(), STEP_TIMEOUT)
        assert read_ecr(run.bridge_journal) == [], "the bridge journaled while the terminal was locked"
        return "the register heard the bridge's progress packet; the bridge's journal is empty"
    if point == "before_terminal":
        entry = await until(lambda: run.bridge_entry("sale", ("sent",)), "sale journaled 'sent' by the bridge")
        await until(lambda: _async(line.held), "the bridge's first bytes to the terminal")
        assert read_terminal(run.terminal.journal) == [], "the terminal got it after all"
        return f"bridge entry {format_ecr_row(entry)}; held {line.held!r} on the way to the terminal"
    sale = await until(lambda: terminal_has(run, "sale"), "terminal authorizing the sale")
    if point in ("authorizing", "restart_recovery", "register_recovery"):
        return f"terminal authorizing: {format_terminal_row(sale)}"
    if point in ("answered", "undo_reversal"):
        run.relay.hold()  # the register's request was ACKed long ago: only WAITs and the result are held
        entry = await until(lambda: run.bridge_entry("sale", ("done",)), "sale journaled 'done' by the bridge")
        if point == "answered":
            return f"bridge entry {format_ecr_row(entry)}; relay held {len(run.relay.held)} bytes"
        run.relay.cut()  # the register "hangs up": the bridge cannot deliver the result
    else:  # lost_outcome_reversal: the terminal's line drops at its next write (a WAIT, or the result)
        await run.terminal.call("POST", "/faults", {"line": "tx:disconnect@0"})
        await until(lambda: run.bridge_entry("sale", ("unknown",)), "sale journaled 'unknown' by the bridge")
    return await reversal_in_hand(run, sale["stan"])


async def reversal_in_hand(run: Run, stan: str) -> str:
    """Until the bridge's reversal of ``stan`` is journaled 'sent' and the terminal holds it at the host."""
    entry = await until(lambda: run.bridge_entry("emergency_reversal", ("sent",)),
                        "the bridge's reversal journaled 'sent'")
    reversal = await until(lambda: terminal_has(run, "emergency_reversal", stan), "terminal authorizing the reversal")
    return f"bridge reversal entry {format_ecr_row(entry)}; terminal {format_terminal_row(reversal)}"


async def kill_during_register_recovery(run: Run, stan: str) -> str:
    """The register's recovery sends its reversal through the restarted bridge; the bridge is killed
    while the terminal has it at its (slow) host. The register's recovery then leaves its sale open
    (its reversal's outcome lost too), and a third bridge is started."""
    after = max((t["id"] for t in read_terminal(run.terminal.journal)), default=0)
    await run.terminal.call("POST", "/rules", {"operation": "emergency_reversal", "host_delay": REVERSAL_DELAY,
                                               "once": True})
    register = run.register()
    recovery = asyncio.ensure_future(register.recover())
    try:
        reversal = await until(lambda: terminal_has(run, "emergency_reversal", stan, after),
                               "terminal authorizing the register's reversal")
    except BaseException:
        recovery.cancel()
        raise
    run.bridges[-1].kill()
    reports = await asyncio.wait_for(recovery, STEP_TIMEOUT)
    await register.close()
    assert [(r.entry.id, r.outcome) for r in reports] == [(1, "open")], [r.describe() for r in reports]
    assert [(r["operation"], r["state"]) for r in read_ecr(run.register_journal_path)] == \
        [("sale", "unknown"), ("emergency_reversal", "unknown")]
    run.relay.cut()
    run.line.cut()  # type: ignore[union-attr]
    await run.start_bridge()
    await until(lambda: _async(not open_entries(run.bridge_journal)), "bridge journal resolved at start")
    return f"the register's reversal at the terminal: {format_terminal_row(reversal)}"


async def kill_mid_sale(run: Run, point: str, journal: Journal | None = None) -> tuple[str, str]:
    """Start the run, sell 101.00 through the bridge and SIGKILL it at ``point``; every line back to
    plain service afterwards. The register's sale must be unknown in its journal (``journal``: the
    register's, default the run's file). Returns (what was seen at the point, the sale's transaction
    number)."""
    await run.start()
    await prepare(run, point)
    progress = asyncio.Event()
    register = run.register(on_progress=lambda _: progress.set(), journal=journal)
    sale = asyncio.ensure_future(register.sale(101_00))
    try:
        seen = await at_point(run, point, progress)
    except BaseException:
        sale.cancel()
        raise
    run.bridges[-1].kill()
    with pytest.raises(Exception):  # the register got no answer
        await asyncio.wait_for(sale, STEP_TIMEOUT)
    await register.close()
    [entry] = [e for e in register.journal.ecr.unresolved()]
    assert (entry.request.operation.value, entry.state) == ("sale", "unknown"), seen
    run.relay.cut()
    run.line.cut()  # type: ignore[union-attr]
    if run.lock is not None:
        await run.lock.release()
    await run.terminal.call("POST", "/faults", {"line": None})
    return seen, str(entry.request.transaction_id)


async def settle_and_compare(run: Run, point: str, seen: str, stan: str, *, charged_once: bool) -> None:
    """A clean sale and a settlement through the bridge; then the three books must agree, the killed
    sale be live ``charged_once`` (else not at all), the settlement equal the register's approved sales."""
    register = run.register()
    clean = await register.sale(202_00)
    assert clean.status is Status.APPROVED
    settlement = await register.settlement()
    await register.close()
    register_rows = read_ecr(run.register_journal_path)
    bridge_rows = read_ecr(run.bridge_journal)
    terminal_rows = read_terminal(run.terminal.journal)
    books = "\n".join([f"killed at {point}: {seen}", "register:", *map(format_ecr_row, register_rows),
                       "bridge:", *map(format_ecr_row, bridge_rows), "terminal:",
                       *map(format_terminal_row, terminal_rows)])
    (run.dir / "books.txt").write_text(books + "\n", encoding="utf-8")
    problems = check_books(register_rows, bridge_rows, terminal_rows)
    assert not problems, "\n".join([*problems, books])
    live = [t for t in terminal_rows if t["stan"] == stan and t["operation"] == "sale" and t["live"]]
    assert len(live) == (1 if charged_once else 0), books
    expected = expected_totals(register_rows)
    assert (expected["sale_count"], expected["sale_amount"]) == \
        ((2, 303_00) if charged_once else (1, 202_00)), books
    assert settlement.status is Status.APPROVED and settlement.totals is not None
    assert (settlement.totals.sale_count, settlement.totals.sale_amount, settlement.totals.refund_count,
            settlement.totals.refund_amount) == (expected["sale_count"], expected["sale_amount"],
                                                 expected["refund_count"], expected["refund_amount"])
    batch = closed_batch_totals(run.terminal.journal)
    assert {k: batch[k] for k in expected} == expected


async def kill_at(register_protocol: str, terminal_protocol: str, point: str, directory: Path) -> None:
    run = Run(register_protocol, terminal_protocol, directory)
    seen = ""
    try:
        seen, stan = await kill_mid_sale(run, point)
        # The bridge restarted on the same journal and port recovers what it left open, by itself.
        await run.start_bridge()
        if point == "restart_recovery":  # killed again, while the terminal has its start recovery's reversal
            seen += "; then " + await reversal_in_hand(run, stan)
            run.bridges[-1].kill()
            run.line.cut()  # type: ignore[union-attr]
            await run.start_bridge()
        await run.terminal.call("DELETE", "/rules")
        await until(lambda: _async(not open_entries(run.bridge_journal)), "bridge journal resolved at start")
        if point == "register_recovery":  # killed again, while the terminal has the register's own reversal
            seen += "; then " + await kill_during_register_recovery(run, stan)
        # The register recovers its unknown sale through the bridge.
        register = run.register()
        reports = await register.recover()
        await register.close()
        assert [(r.entry.id, r.outcome) for r in reports] == \
            [(1, "not_charged" if point in NOTHING_SENT else "reversed")], [r.describe() for r in reports]
        # The killed sale: never charged, or charged and reversed; once at most at the terminal.
        assert len([t for t in read_terminal(run.terminal.journal) if t["stan"] == stan
                    and t["operation"] == "sale"]) == (0 if point in NOTHING_SENT else 1)
        await settle_and_compare(run, point, seen, stan, charged_once=False)
    except BaseException:
        print(f"killed at {point}: {seen}")
        print(run.diagnosis())
        raise
    finally:
        await run.close()


async def retry_after_kill(register_protocol: str, terminal_protocol: str, point: str, directory: Path) -> None:
    """A register without a journal of its own resends its lost sale, same transaction number,
    through the restarted bridge (what an INPAS register does after a lost answer)."""
    run = Run(register_protocol, terminal_protocol, directory)
    seen = ""
    forgetful = Journal()  # the first attempt's journal: forgotten, nobody recovers it
    try:
        seen, stan = await kill_mid_sale(run, point, journal=forgetful)
        await run.start_bridge()
        await run.terminal.call("DELETE", "/rules")
        await until(lambda: _async(not open_entries(run.bridge_journal)), "bridge journal resolved at start")
        register = run.register()
        retry = await register.execute(Request(Operation.SALE, 101_00, transaction_id=stan))
        await register.close()
        [sale] = [t for t in read_terminal(run.terminal.journal) if t["stan"] == stan and t["operation"] == "sale"]
        if point == "answered":  # charged, its answer lost: the retry hears the same approval again
            assert (retry.status, retry.rrn, retry.auth_code) == (Status.APPROVED, sale["rrn"], sale["auth_code"])
        else:  # the restarted bridge reversed it at start: the retry is told so, nothing charged
            assert (retry.status, retry.host_code) == (Status.DECLINED, "9018"), retry
        await settle_and_compare(run, point, seen, stan, charged_once=point == "answered")
    except BaseException:
        print(f"killed at {point}, then a retry: {seen}")
        print(run.diagnosis())
        raise
    finally:
        forgetful.close()
        await run.close()


async def _async(value: Any) -> Any:
    return value


@pytest.mark.parametrize("point", list(POINTS))
@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
def test_a_bridge_killed_mid_sale_leaves_the_three_books_agreeing(
        register_protocol: str, terminal_protocol: str, point: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSBRIDGE_LOCK_DIR", str(tmp_path / "locks"))
    asyncio.run(kill_at(register_protocol, terminal_protocol, point, tmp_path))


@pytest.mark.parametrize("point", ["authorizing", "answered"])
@pytest.mark.parametrize(("register_protocol", "terminal_protocol"), DIRECTIONS)
def test_a_register_that_resends_its_lost_sale_after_the_kill_is_charged_once_and_told_the_truth(
        register_protocol: str, terminal_protocol: str, point: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No recovery at the register: it resends the sale with the same transaction number. Killed
    while the terminal authorized, the restarted bridge reversed the sale: the resend is declined
    9018 (reversed), nothing charged. Killed after the terminal answered: the sale stays charged and
    the resend hears its approval again (same RRN and auth code), charged once."""
    monkeypatch.setenv("POSBRIDGE_LOCK_DIR", str(tmp_path / "locks"))
    asyncio.run(retry_after_kill(register_protocol, terminal_protocol, point, tmp_path))


def test_the_books_check_names_every_disagreement() -> None:
    """check_books is what every kill test stands on: each kind of disagreement is found."""
    def ecr(tid: str, state: str = "done", status: str | None = "approved", operation: str = "sale",
            ) -> dict[str, Any]:
        return {"id": 1, "transaction_id": tid, "operation": operation, "state": state, "status": status,
                "api_unresolved": state in OPEN_STATES}

    def term(stan: str, live: int = 1, operation: str = "sale") -> dict[str, Any]:
        return {"id": 1, "stan": stan, "operation": operation, "live": live, "status": "approved"}

    agreeing = check_books([ecr("1"), ecr("2", "resolved", "approved"), ecr("3", operation="settlement")],
                           [ecr("1"), ecr("2", "resolved", "approved")],
                           [term("1"), term("2", live=0), term("3", operation="settlement")])
    assert agreeing == []
    problems = check_books([ecr("1"), ecr("2", "unknown", None), ecr("4")],
                           [ecr("1"), ecr("4"), ecr("5", "sent", None)],
                           [term("1"), term("1"), term("2"), term("3")])
    assert sorted(p.split(":")[0] for p in problems) == sorted([
        "DOUBLE",  # transaction 1 live twice
        "LOST", "UNKNOWN TO THE BRIDGE",  # 2: live, the register holds it unknown, the bridge not at all
        "LOST", "UNKNOWN TO THE BRIDGE",  # 3: live, nobody holds it
        "PHANTOM",  # 4: approved at the register, nothing live at the terminal
        "OPEN in the register's journal", "OPEN in the bridge's journal"])
