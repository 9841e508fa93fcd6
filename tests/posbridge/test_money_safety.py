"""Money safety on the ECR side: answers belong to their requests, one owner per terminal, unique
transaction numbers, write-ahead before the first byte, recovery that resolves only on proof, a
truthful export. Process-level claims are tested with real processes (``posbridge`` CLI and
``posbridge emulate``); the rest in-process with the real virtual terminal.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from posbridge.ecr.client import EcrClient, RECOVERY_TABLE
from posbridge.emulator.host import HostConfig
from posbridge.journal import EcrLog, Journal, JournalError
from posbridge.model import Operation, Request, Status
from posbridge.ecr.ownership import (
    Owner,
    TerminalBusy,
    TerminalLock,
    canonical_port,
    clock_number,
    owner_alive,
    this_process,
)
from posbridge.emulator.terminal import TerminalConfig, VirtualTerminal
from posbridge.testing import TerminalLink
from posbridge.protocols.common.errors import LinkError

PROTOCOLS = ("inpas", "arcus2")
FAST = {"ack_timeout": 0.2, "packet_timeout": 1.0}
NOW = datetime(2026, 11, 22, 12, 30, 0)



# --- real processes ---------------------------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "posbridge", *args]


class Emulator:
    """``posbridge emulate`` in a process of its own, on a pty or TCP."""

    def __init__(self, folder: Path, protocol: str = "inpas", *, transport: str = "pty", latency: float = 0.0,
                 progress: float = 0.2) -> None:
        self.folder, self.protocol, self.transport = folder, protocol, transport
        scenario = folder / f"scenario-{protocol}.toml"
        scenario.write_text(f"seed = 3\n[terminal]\nprogress_interval = {progress}\n"
                            f"[host]\nlatency = {latency}\n", encoding="utf-8")
        self.journal = folder / f"terminal-{protocol}.sqlite3"
        listen = f"pty://{folder}/tty-{protocol}" if transport == "pty" else "tcp-listen://127.0.0.1:0"
        self.process = subprocess.Popen(
            _cli("emulate", "--protocol", protocol, "--port", listen, "--scenario", str(scenario),
                 "--journal", str(self.journal)),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""  # the ready line
        assert "listening on" in line, f"emulator did not start: {line!r}"
        where = line.rsplit("listening on ", 1)[1].strip()
        self.port = f"serial://{where}" if transport == "pty" else where.replace("tcp-listen://", "tcp://")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process.stdout.close()  # type: ignore[union-attr]  # the ready line's pipe

    def terminal_journal(self) -> Journal:
        return Journal(self.journal, readonly=True)


@pytest.fixture
def emulators(tmp_path: Path) -> Iterator[list[Emulator]]:
    started: list[Emulator] = []
    yield started
    for emulator in started:
        emulator.stop()


def start(emulators: list[Emulator], folder: Path, protocol: str = "inpas", **options: object) -> Emulator:
    emulator = Emulator(folder, protocol, **options)  # type: ignore[arg-type]
    emulators.append(emulator)
    return emulator


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli(*args), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_two_journals_on_one_terminal_get_their_own_answers(tmp_path: Path, emulators: list[Emulator],
                                                            protocol: str) -> None:
    emulator = start(emulators, tmp_path, protocol)
    a = run_cli("sale", "77.00", "--port", emulator.port, "--protocol", protocol,
                "--journal", str(tmp_path / "a.sqlite3"), "--json")
    b = run_cli("sale", "33.00", "--port", emulator.port, "--protocol", protocol,
                "--journal", str(tmp_path / "b.sqlite3"), "--json")
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    first, second = json.loads(a.stdout), json.loads(b.stdout)
    assert (first["amount"], second["amount"]) == (7700, 3300)
    assert second["approved"] and second["rrn"] != first["rrn"]
    assert second["transaction_id"] != first["transaction_id"]
    # A settlement from a third journal closes the batch with both sales in it, never a sale's data.
    c = run_cli("settlement", "--port", emulator.port, "--protocol", protocol,
                "--journal", str(tmp_path / "c.sqlite3"), "--json")
    assert c.returncode == 0, c.stderr
    settlement = json.loads(c.stdout)
    assert settlement["operation"] == "settlement" and settlement["rrn"] not in (first["rrn"], second["rrn"])
    assert (settlement["totals"]["sale_count"], settlement["totals"]["sale_amount"]) == (2, 110_00)
    with emulator.terminal_journal() as journal:
        assert journal.ledger.batch_number("00344224") == 2  # batch 1 closed


def test_a_second_process_waits_for_the_terminal_and_never_reverses_a_running_sale(
        tmp_path: Path, emulators: list[Emulator]) -> None:
    emulator = start(emulators, tmp_path, latency=1.5)
    journal = str(tmp_path / "ecr.sqlite3")
    sale = subprocess.Popen(_cli("sale", "50.00", "--port", emulator.port, "--journal", journal, "--json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.6)  # the sale is now waiting for the slow host
    report = run_cli("short-report", "--port", emulator.port, "--journal", journal, "--lock-wait", "20")
    out, err = sale.communicate(timeout=30)
    assert sale.returncode == 0, err
    assert report.returncode == 0, report.stderr
    assert "recovery" not in report.stderr  # nothing of the running sale was touched
    approved = json.loads(out)
    settlement = run_cli("settlement", "--port", emulator.port, "--journal", journal, "--json")
    totals = json.loads(settlement.stdout)["totals"]
    assert (totals["sale_count"], totals["sale_amount"]) == (1, 50_00), "the approved sale was reversed"
    with Journal(journal) as ecr:
        kinds = [row["kind"] for row in ecr.export.rows(side="ecr")]
        assert "emergency_reversal" not in kinds and approved["approved"]


def test_a_busy_terminal_is_refused_with_a_sentence_naming_the_holder(
        tmp_path: Path, emulators: list[Emulator]) -> None:
    emulator = start(emulators, tmp_path, latency=2.0)
    sale = subprocess.Popen(_cli("sale", "10.00", "--port", emulator.port, "--journal",
                                 str(tmp_path / "a.sqlite3")), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.7)
    busy = run_cli("sale", "20.00", "--port", emulator.port.replace(str(tmp_path), f"{tmp_path}/."),
                   "--journal", str(tmp_path / "b.sqlite3"), "--lock-wait", "0.3")
    sale.communicate(timeout=30)
    assert busy.returncode == 2
    line = busy.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"terminal busy: sale by pid {sale.pid} since " in line


def test_eight_parallel_sales_on_one_journal_are_approved_or_busy(tmp_path: Path,
                                                                  emulators: list[Emulator]) -> None:
    emulator = start(emulators, tmp_path)
    journal = str(tmp_path / "ecr.sqlite3")
    processes = [subprocess.Popen(_cli("sale", f"{10 + n}.00", "--port", emulator.port, "--journal", journal,
                                       "--json", "--lock-wait", "30"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(8)]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert "Traceback" not in err
        if process.returncode == 0:
            outcomes.append(json.loads(out)["amount"])
        else:
            assert process.returncode == 2 and "terminal busy" in err, err
    assert len(outcomes) >= 1
    with Journal(journal) as ecr:
        assert ecr.ecr.unresolved() == []
        numbers = [row["transaction_id"] for row in ecr.export.rows(side="ecr")]
        assert len(numbers) == len(set(numbers)) == len(outcomes)
    with emulator.terminal_journal() as terminal:
        assert sorted(op.amount for op in terminal.ledger.operations()) == sorted(outcomes)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_recovery_finds_a_lost_sale_under_another_spelling_of_the_port(
        tmp_path: Path, emulators: list[Emulator], protocol: str) -> None:
    emulator = start(emulators, tmp_path, protocol, transport="tcp", latency=1.5, progress=10.0)
    port = int(emulator.port.rsplit(":", 1)[1])
    journal = str(tmp_path / "ecr.sqlite3")
    lost = run_cli("sale", "12.34", "--port", f"tcp://localhost:{port}", "--protocol", protocol,
                   "--journal", journal, "--timeout", "0.5")
    assert lost.returncode == 2, lost.stderr  # no outcome within the deadline: unknown
    time.sleep(1.5)  # the terminal finishes: the host charged
    recovered = run_cli("recover", "--port", f"tcp://127.0.0.1:{port}/", "--protocol", protocol,
                        "--journal", journal)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "1 of 1 operation(s) resolved" in recovered.stdout and "reversed" in recovered.stdout
    with Journal(journal) as ecr:
        assert ecr.ecr.unresolved() == []
    with emulator.terminal_journal() as terminal:
        assert terminal.ledger.batch_totals("00344224", 1, 643).sale_amount == 0


def test_the_terminal_lock_dies_with_its_process(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import asyncio, sys\n"
        "from posbridge.ecr.ownership import TerminalLock\n"
        "async def main():\n"
        "    lock = TerminalLock('tcp://127.0.0.1:9', wait=1)\n"
        "    await lock.acquire('sale')\n"
        "    print('held', flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n")], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert holder.stdout and holder.stdout.readline().strip() == "held"

    async def take(wait: float) -> None:
        lock = TerminalLock(canonical_port("tcp://localhost:9"), wait=wait)
        await lock.acquire("refund")
        await lock.release()

    with pytest.raises(TerminalBusy, match=rf"terminal busy: sale by pid {holder.pid} since \d\d:\d\d:\d\d"):
        asyncio.run(take(0.2))
    holder.send_signal(signal.SIGKILL)
    holder.wait(5)
    asyncio.run(take(2.0))  # the kernel released the dead holder's lock


# --- ownership, in-process -----------------------------------------------------------------------------
@pytest.mark.parametrize("a, b", [
    ("tcp://localhost:5000", "tcp://127.0.0.1:5000/"),
    ("tcp://127.0.0.1:5000", "socket://127.0.0.1:5000"),
    ("serial:///tmp/x/../x/tty?baudrate=9600", "pty:///tmp/x/tty"),
    ("usb://1209:1", "usb://1209:0001"),
])
def test_one_key_per_terminal_whatever_the_spelling(a: str, b: str) -> None:
    assert canonical_port(a) == canonical_port(b)


def test_other_terminals_get_other_keys() -> None:
    assert canonical_port("tcp://127.0.0.1:5000") != canonical_port("tcp://127.0.0.1:5001")
    assert canonical_port("serial:///tmp/a") != canonical_port("serial:///tmp/b")


def test_transaction_numbers_are_unique_across_journals_and_start_from_the_clock() -> None:
    clock = [NOW.timestamp()]

    async def issue(lock: TerminalLock, journal_last: int | None = None) -> str:
        async with lock.held("sale"):
            return lock.next_transaction_id(journal_last)

    first = TerminalLock("tcp://127.0.0.1:7000", clock=lambda: clock[0])
    second = TerminalLock("tcp://127.0.0.1:7000", clock=lambda: clock[0])  # another journal, same terminal
    numbers = [asyncio.run(issue(first)), asyncio.run(issue(second)), asyncio.run(issue(first))]
    start_number = clock_number(NOW.timestamp())
    assert numbers == [str(start_number), str(start_number + 1), str(start_number + 2)]
    assert asyncio.run(issue(second, journal_last=start_number + 50)) == str(start_number + 51)
    clock[0] += 3600  # an hour later, a fresh install starts from the clock, above all of these
    fresh = TerminalLock("tcp://127.0.0.1:7000", clock=lambda: clock[0], directory=None)
    assert int(asyncio.run(issue(fresh))) == clock_number(clock[0])
    assert len(str(clock_number(datetime(2056, 1, 1).timestamp()))) <= 12


def test_owner_identity_tells_a_dead_process_from_a_live_one() -> None:
    me = this_process()
    assert owner_alive(str(me)) is True and Owner.parse(str(me)) == me
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert owner_alive(Owner(me.host, dead.pid, "1")) is False or dead.pid == me.pid
    assert owner_alive(Owner(me.host, me.pid, "0")) is False  # same pid, another start: pid reuse
    assert owner_alive(Owner("elsewhere", 1, "1")) is None
    assert owner_alive("garbage") is False


# --- write-ahead for real ------------------------------------------------------------------------------
class FailingEcrLog(EcrLog):
    """The ECR's write-ahead log failing the named write (a full disk, a lock held elsewhere)."""

    failing = ""

    def _maybe_fail(self, name: str) -> None:
        if name == self.failing:
            raise JournalError(f"journal :memory:: full (simulated failure of {name})")

    def begin(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._maybe_fail("begin")
        return super().begin(*args, **kwargs)

    def sent(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._maybe_fail("sent")
        return super().sent(*args, **kwargs)

    def finish(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._maybe_fail("finish")
        return super().finish(*args, **kwargs)

    def unknown(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._maybe_fail("unknown")
        return super().unknown(*args, **kwargs)


def failing_journal(failing: str) -> tuple[Journal, FailingEcrLog]:
    """An in-memory journal whose ECR log fails the write named ``failing``."""
    journal = Journal()
    journal.ecr = log = FailingEcrLog(journal.storage)
    log.failing = failing
    return journal, log


async def _pair(protocol: str, name: str, journal: Journal, **terminal: object) -> tuple[VirtualTerminal,
                                                                                         asyncio.Task[None],
                                                                                         EcrClient]:
    from posbridge.devices import open_device

    vt = VirtualTerminal(protocol, clock=lambda: NOW, config=TerminalConfig(timers=FAST), **terminal)  # type: ignore[arg-type]
    device = await open_device(f"virtual://{name}")
    task = asyncio.get_running_loop().create_task(vt.serve(device, keep_open=True))
    client = EcrClient(f"virtual://{name}", protocol, journal=journal, timers=FAST, clock=lambda: NOW,
                       deadline=5.0)
    return vt, task, client


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("failing", ["begin", "sent"])
async def test_nothing_is_sent_when_the_journal_cannot_record_the_operation(protocol: str, failing: str) -> None:
    seen: list[bytes] = []
    vt, task, client = await _pair(protocol, f"wa-{protocol}-{failing}", failing_journal(failing)[0],
                                   trace=lambda direction, data: seen.append(data) if direction == "rx" else None)
    async with client:
        with pytest.raises(JournalError):
            await client.sale(10_00)
    await asyncio.sleep(0.3)  # anything flushed on close would have arrived by now
    task.cancel()
    assert seen == [] and vt.journal.ledger.operations() == []
    assert [e.state for e in client.journal.ecr.unresolved()] == (["pending"] if failing == "sent" else [])


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_result_that_cannot_be_journaled_is_reversed_by_recovery(protocol: str) -> None:
    journal, log = failing_journal("finish")
    vt, task, client = await _pair(protocol, f"wa-{protocol}-finish", journal)
    async with client:
        with pytest.raises(JournalError):
            await client.sale(10_00)
        assert [e.state for e in client.unresolved()] == ["sent"]
        assert vt.host.totals().sale_amount == 10_00  # the terminal did charge
        log.failing = ""
        [recovery] = await client.recover()
    task.cancel()
    assert recovery.outcome == "reversed" and vt.host.totals().sale_amount == 0


# --- recovery resolves only on proof ----------------------------------------------------------------------
async def _lose_a_sale(protocol: str, name: str, **host: object) -> tuple[VirtualTerminal, asyncio.Task[None],
                                                                          EcrClient]:
    """A sale whose answer the ECR never gets: the host is slower than the ECR's deadline."""
    vt, task, client = await _pair(protocol, name, Journal(), host_config=HostConfig(latency=0.6, **host))
    client.deadline = 0.3
    await client.open()
    with pytest.raises(LinkError):
        await client.sale(25_00)
    client.deadline = 5.0
    await asyncio.sleep(0.8)  # the terminal finishes the sale meanwhile
    vt.host_config.latency = 0.0
    return vt, task, client


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_recovery_outcomes_follow_the_decision_table(protocol: str) -> None:
    # reversed (host 400)
    vt, task, client = await _lose_a_sale(protocol, f"rt-{protocol}-1")
    [r] = await client.recover()
    assert (r.outcome, r.result.host_code) == ("reversed", "400") and vt.host.totals().sale_amount == 0
    # a reversal that cannot reach the host leaves it open, and says so
    vt.host_config.fault = "no_connection"
    entry = client.journal.ecr.begin(Request(Operation.SALE, 7_00, transaction_id="42"), client.journal_key,
                                     port=client.port_key)
    client.journal.ecr.sent(entry)
    client.journal.ecr.unknown(entry, "simulated loss")
    [still] = await client.recover()
    assert still.outcome == "open" and not still.resolved and "no_connection" in still.note
    assert [e.id for e in client.unresolved()] == [entry]
    # the host never saw it: explicitly not charged
    vt.host_config.fault = None
    [blind] = await client.recover()
    assert (blind.outcome, blind.result.host_code) == ("not_charged", "9020")
    assert client.unresolved() == []
    await client.close()
    task.cancel()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_lost_sale_of_a_settled_batch_is_flagged_for_a_refund_not_marked_reversed(protocol: str) -> None:
    vt, task, client = await _lose_a_sale(protocol, f"rt-{protocol}-2")
    settled = await client.settlement()
    assert settled.totals.sale_amount == 25_00  # the lost sale was charged and settled
    [r] = await client.recover()
    assert r.outcome == "refund_needed" and r.resolved
    assert client.unresolved() == []
    entry = client.journal.ecr.entry(r.entry.id)
    assert entry is not None and entry.state == "refund_needed" and "refund" in (entry.error or "")
    await client.close()
    task.cancel()


def test_the_decision_table_is_documented() -> None:
    text = (Path(__file__).parents[2] / "docs" / "recovery.md").read_text(encoding="utf-8")
    for situation, outcome in RECOVERY_TABLE:
        assert situation in text and outcome in text


# --- the export tells the truth --------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_export_shows_a_lost_and_reversed_sale_as_reversed(protocol: str) -> None:
    vt, task, client = await _lose_a_sale(protocol, f"ex-{protocol}")
    await client.recover()
    await client.close()
    task.cancel()
    for journal, side in ((client.journal, "ecr"), (vt.journal, "terminal")):
        out = io.StringIO()
        journal.export.csv(out, side=side)
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        sale = [r for r in rows if r["kind"] == "sale"][0]
        reversal = [r for r in rows if r["kind"] == "emergency_reversal"][0]
        assert sale["outcome"] == "reversed" and sale["amount_minor_units"] == "2500"
        assert reversal["original_transaction_id"] == sale["transaction_id"]
        assert [r["kind"] for r in journal.export.rows(side=side, status="reversed")] == ["sale"]
    assert [r["outcome"] for r in client.journal.export.rows(status="unknown")] == []


async def test_blocking_client_calls_are_bounded() -> None:
    from posbridge.ecr.client import BlockingEcrClient
    from posbridge.protocols.common.errors import ExchangeTimeout

    def run() -> float:
        # Nobody answers on this virtual line: the operation ends at its deadline as unknown.
        with BlockingEcrClient("virtual://nobody-home", "inpas", timers={"ack_timeout": 30, "packet_timeout": 60},
                               deadline=0.5) as ecr:
            started = time.monotonic()
            with pytest.raises(ExchangeTimeout):
                ecr.sale(1_00)
            assert [e.state for e in ecr.journal.ecr.unresolved()] == ["unknown"]
            assert "sale" in dir(ecr) and ecr.sale.__doc__
            return time.monotonic() - started

    assert await asyncio.to_thread(run) < 3.0
    assert Status.APPROVED  # the module's names stay used


@pytest.mark.parametrize("protocol", ["inpas", "arcus2"])
async def test_reverse_last_twice_says_it_was_already_reversed_and_sends_nothing(protocol):
    """1C's EmergencyReversal called twice for one failed receipt: the second call must not run a
    second reversal (nor claim one); a declined last operation has nothing to reverse."""
    async with TerminalLink(protocol) as link:
        sale = await link.client.sale(150_00)
        reversal = await link.client.reverse_last()
        assert sale.approved and reversal.approved
        operations = len(link.terminal.journal.ledger.operations(link.terminal.host_config.terminal_id))
        with pytest.raises(ValueError, match="already reversed"):
            await link.client.reverse_last()
        assert len(link.terminal.journal.ledger.operations(link.terminal.host_config.terminal_id)) == operations
        link.terminal.cards.present("4000000000000002")  # a card the host declines
        declined = await link.client.sale(10_00)
        assert not declined.approved
        with pytest.raises(ValueError, match="nothing was charged"):
            await link.client.reverse_last()
