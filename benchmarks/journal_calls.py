"""How long the journal calls made from async code take, and whether the slow ones block the loop.

    python benchmarks/journal_calls.py              # 5,000 operations in the batch (~1 min)
    python benchmarks/journal_calls.py --ops 1000

Prints, per call, the median and 95th percentile in milliseconds:

* the ECR client's calls per operation (``ecr.last_transaction_id``, ``ecr.begin``, ``ecr.sent``,
  ``ecr.finish``: made on the event loop, in that order, around the exchange) on a journal file
  (WAL, ``synchronous = FULL``: each write is an fsync) that already holds ``--ops`` entries;
* the terminal's per-operation calls (``BankHost.process`` of a sale, ``ledger.set_result_delivered``)
  on a file and in memory;
* the batch-wide calls over ``--ops`` operations (totals, the full report's list, the export,
  ``check_journal``);
* end to end, a virtual terminal with an in-memory journal of ``--ops`` sales answering a short
  report, a full report and a settlement to an ECR client over ``virtual://``, while a ticker
  measures the longest stall of the event loop (both ends share the loop, as in the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from posbridge.ecr.client import EcrClient  # noqa: E402
from posbridge.emulator.cards import DEFAULT_CARD  # noqa: E402
from posbridge.emulator.host import BankHost, HostConfig  # noqa: E402
from posbridge.emulator.terminal import TerminalConfig, VirtualTerminal  # noqa: E402
from posbridge.journal import Journal, check_journal  # noqa: E402
from posbridge.model import Operation, Request, Result, Status  # noqa: E402

T0 = datetime(2026, 11, 22, 9, 0, 0)
FAST = {"ack_timeout": 0.2, "packet_timeout": 1.0}


class Clock:
    """A clock that moves one second per call (so every sale has its own host time)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Milliseconds of ``repeat`` calls of ``fn``."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def show(name: str, samples: list[float]) -> None:
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    print(f"  {name:<58} median {statistics.median(samples):8.3f} ms   p95 {p95:8.3f} ms   (n={len(samples)})")


def fill_ledger(journal: Journal, ops: int, terminal_id: str = "00344224") -> BankHost:
    host = BankHost(journal, HostConfig(terminal_id=terminal_id), clock=Clock())
    for n in range(1, ops + 1):
        host.process(Request(Operation.SALE, amount=100 + n, currency=643, transaction_id=str(n)), DEFAULT_CARD)
    return host


def ecr_side(folder: Path, ops: int, repeat: int) -> None:
    print(f"ECR client, per operation (journal file holding {ops} entries):")
    journal = Journal(folder / "ecr.sqlite3", clock=Clock())
    result = Result(Operation.SALE, Status.APPROVED, "00", "ОДОБРЕНО", amount=100, currency=643, rrn="1",
                    auth_code="A1", masked_pan="411111******1111")
    for n in range(ops):
        entry = journal.ecr.begin(Request(Operation.SALE, amount=100, currency=643, transaction_id=str(n + 1)),
                                  "T1", port="virtual://t1")
        journal.ecr.sent(entry)
        journal.ecr.finish(entry, result)
    last, begin, sent, finish, whole = [], [], [], [], []
    for n in range(repeat):
        request = Request(Operation.SALE, amount=100, currency=643, transaction_id=str(ops + n + 1))
        t = time.perf_counter()
        journal.ecr.last_transaction_id("T1")
        t1 = time.perf_counter()
        entry = journal.ecr.begin(request, "T1", port="virtual://t1")
        t2 = time.perf_counter()
        journal.ecr.sent(entry)
        t3 = time.perf_counter()
        journal.ecr.finish(entry, result)
        t4 = time.perf_counter()
        last.append((t1 - t) * 1000)
        begin.append((t2 - t1) * 1000)
        sent.append((t3 - t2) * 1000)
        finish.append((t4 - t3) * 1000)
        whole.append((t4 - t) * 1000)
    show("ecr.last_transaction_id", last)
    show("ecr.begin (pending)", begin)
    show("ecr.sent (before the first byte)", sent)
    show("ecr.finish (done)", finish)
    show("all four, one operation", whole)
    show("ecr.unresolved_for (recovery's question, before each run)",
         timed(lambda: journal.ecr.unresolved_for("T1", port="virtual://t1"), repeat))
    journal.close()


def terminal_side(folder: Path, ops: int, repeat: int) -> None:
    for where in ("file", "memory"):
        journal = Journal(folder / "terminal.sqlite3" if where == "file" else ":memory:")
        host = fill_ledger(journal, ops)
        print(f"Terminal, per operation ({where} journal, {ops} operations in the batch):")
        n = [ops]

        def sale() -> None:
            n[0] += 1
            host.process(Request(Operation.SALE, amount=100, currency=643, transaction_id=str(n[0])), DEFAULT_CARD)

        show("BankHost.process(sale): the host's journal transaction", timed(sale, repeat))
        last = journal.ledger.operations()[-1].id
        show("ledger.set_result_delivered", timed(lambda: journal.ledger.set_result_delivered(last, True), repeat))
        print(f"Terminal, batch-wide ({where} journal, {ops + repeat} operations in the batch):")
        tid, batch = "00344224", host.batch_number
        show("ledger.batch_totals (short report, settlement)",
             timed(lambda: journal.ledger.batch_totals(tid, batch, 643), 5))
        show("ledger.operations(batch) (full report, settlement slips)",
             timed(lambda: journal.ledger.operations(tid, batch), 5))
        show("BankHost.process(short report)",
             timed(lambda: host.process(Request(Operation.SHORT_REPORT, currency=643)), 5))
        show("BankHost.process(full report)",
             timed(lambda: host.process(Request(Operation.FULL_REPORT, currency=643)), 5))
        show("export.csv (both sides)", timed(lambda: journal.export.csv(io.StringIO()), 3))
        show("export.xml (both sides)", timed(lambda: journal.export.xml(io.StringIO()), 3))
        if where == "file":
            show("check_journal (integrity_check of the whole file)",
                 timed(lambda: check_journal(folder / "terminal.sqlite3"), 3))
        show("BankHost.process(settlement)",
             timed(lambda: host.process(Request(Operation.SETTLEMENT, currency=643)), 1))
        journal.close()


async def end_to_end(ops: int) -> None:
    print(f"End to end over virtual:// (terminal journal in memory, {ops} sales in the batch), "
          "longest event-loop stall while each operation runs:")
    from posbridge.devices import open_device

    journal = Journal()
    fill_ledger(journal, ops)
    vt = VirtualTerminal("inpas", journal=journal, config=TerminalConfig(timers=FAST))
    device = await open_device("virtual://bench-journal")
    serving = asyncio.get_running_loop().create_task(vt.serve(device, keep_open=True))
    client = EcrClient("virtual://bench-journal", "inpas", journal=Journal(), timers=FAST, deadline=60.0)
    stall = [0.0]
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            start = loop.time()
            await asyncio.sleep(0.001)
            stall[0] = max(stall[0], (loop.time() - start - 0.001) * 1000)

    async with client:
        await client.sale(100)  # warm up: the line is open, the sessions are set up
        for name, run in (("sale", lambda: client.sale(100)), ("short report", client.short_report),
                          ("full report", client.full_report), ("settlement", client.settlement)):
            stall[0] = 0.0
            stop.clear()
            tick = asyncio.get_running_loop().create_task(ticker())
            start = time.perf_counter()
            result = await run()
            took = (time.perf_counter() - start) * 1000
            stop.set()
            await tick
            print(f"  {name:<14} {result.status.value:<9} took {took:8.1f} ms; longest loop stall {stall[0]:7.1f} ms")
    serving.cancel()
    try:
        await serving
    except asyncio.CancelledError:
        pass
    journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000, help="operations in the batch (default 5000)")
    parser.add_argument("--folder", default=None, help="where the journal files go (default: the temp folder)")
    parser.add_argument("--repeat", type=int, default=200, help="samples per per-operation call")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        ecr_side(Path(folder), args.ops, args.repeat)
        terminal_side(Path(folder), args.ops, args.repeat)
    asyncio.run(end_to_end(args.ops))


if __name__ == "__main__":
    main()
