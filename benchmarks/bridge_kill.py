"""``posbridge bridge`` SIGKILLed at random moments: the three books after many kills.

    python benchmarks/bridge_kill.py                       # 6 sessions x 8 sales, both directions
    python benchmarks/bridge_kill.py --sessions 20 --sales 10 --seed 3

The suite (tests/bridge/test_bridge_kill.py) kills the bridge at chosen points, one kill per test;
this run kills it at random moments instead, many times over one terminal, one register journal
and one bridge journal per session, so what earlier kills left behind meets the later ones.

A session: ``posbridge emulate`` (with a random slow host per sale), ``posbridge bridge``, a
register (:class:`~posbridge.ecr.EcrClient`, its own journal) behind a relay. For each sale: a
random host delay for the sale and for reversals, sometimes the register "hangs up" as the answer
comes (the relay holds the bridge's bytes, then cuts: the bridge must undo the sale); the bridge is
SIGKILLed at a random moment in [0, 1.6] s after the sale starts (whatever it is doing then, or
idle), restarted on the same journal and port, and the register recovers through it before its next
sale. At the end the register settles through the bridge, and the books are compared as in the
suite (:func:`tests.bridge.test_bridge_kill.check_books`): nothing live at the terminal that the
register's journal does not hold approved (or the bridge's does not know), nothing the register
holds approved missing at the terminal, nothing live twice, nothing open in either journal; the
settlement and the terminal's closed batch equal the register's approved sales.

Prints one line per session and a summary; exit status 1 when any session's books disagree.

Measured (2 shared cores, 2026-12-03): 12 sessions x 10 sales, seed 5: 120 kills in 191 s, books agree
in every session (54 sales whose answer the register lost: 48 reversed, 6 never charged; 66 approved
before the kill); earlier runs of 100 (seed 7) and 160 (seed 11) kills: the same.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from posbridge.model import Status  # noqa: E402
from tests.bridge.test_bridge_kill import (  # noqa: E402
    Run, check_books, closed_batch_totals, open_entries, until, _async,
)
from tests.e2e.kill_matrix import expected_totals, read_ecr, read_terminal  # noqa: E402

DIRECTIONS = (("inpas", "arcus2"), ("arcus2", "inpas"))
KILL_WINDOW = 1.6  # seconds after a sale starts within which the bridge is killed


async def session(register_protocol: str, terminal_protocol: str, sales: int, rng: random.Random,
                  directory: Path) -> dict[str, Any]:
    """One terminal, one bridge journal, one register journal; ``sales`` sales, each with a kill."""
    run = Run(register_protocol, terminal_protocol, directory)
    tally: Counter[str] = Counter()
    problems: list[str] = []
    started = time.monotonic()
    try:
        await run.start()
        for number in range(sales):
            amount = 100_00 + number
            sale_delay = rng.choice((0.0, 0.2, 0.6))
            reversal_delay = rng.choice((0.0, 0.4))
            await run.terminal.call("DELETE", "/rules")
            await run.terminal.call("POST", "/rules", {"rules": [
                {"operation": "sale", "host_delay": sale_delay, "once": True},
                {"operation": "emergency_reversal", "host_delay": reversal_delay}]})
            hang_up = rng.random() < 0.3  # the register hangs up as the answer comes: the bridge undoes
            kill_after = rng.uniform(0.0, KILL_WINDOW)
            register = run.register()
            sale = asyncio.ensure_future(register.sale(amount))
            timers = []
            if hang_up:
                loop = asyncio.get_running_loop()
                timers = [loop.call_later(max(0.0, sale_delay - 0.05), run.relay.hold),
                          loop.call_later(sale_delay + 0.15, run.relay.cut)]
            await asyncio.sleep(kill_after)
            run.bridges[-1].kill()
            for timer in timers:  # a hang-up still to come belongs to this sale, not to the recovery
                timer.cancel()
            try:
                result = await asyncio.wait_for(sale, 30)
                tally[f"register told {result.status.value} before the kill"] += 1
            except Exception:
                tally["register lost its answer"] += 1
            await register.close()
            run.relay.cut()
            assert run.line is not None
            run.line.cut()
            await run.start_bridge()
            await until(lambda: _async(not open_entries(run.bridge_journal)), "bridge journal resolved at start", 60)
            register = run.register()
            for report in await register.recover():
                tally[f"register recovery: {report.outcome}"] += 1
            await register.close()
        register = run.register()
        settlement = await register.settlement()
        await register.close()
        register_rows = read_ecr(run.register_journal_path)
        bridge_rows = read_ecr(run.bridge_journal)
        terminal_rows = read_terminal(run.terminal.journal)
        problems += check_books(register_rows, bridge_rows, terminal_rows)
        expected = expected_totals(register_rows)
        totals = settlement.totals
        if settlement.status is not Status.APPROVED or totals is None or \
                (totals.sale_count, totals.sale_amount) != (expected["sale_count"], expected["sale_amount"]):
            problems.append(f"settlement {settlement.status.value} {totals} differs from the register's {expected}")
        batch = closed_batch_totals(run.terminal.journal)
        if {k: batch[k] for k in expected} != expected:
            problems.append(f"the terminal's closed batch {batch} differs from the register's {expected}")
        tally["sales approved in the end"] += expected["sale_count"]
        tally["terminal rows"] += len(terminal_rows)
    except Exception as error:  # a harness failure is a failure too: say it with the files
        problems.append(f"session stopped: {type(error).__name__}: {error}")
    finally:
        await run.close()
    return {"tally": tally, "problems": problems, "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="posbridge bridge killed at random moments (books compared)")
    parser.add_argument("--sessions", type=int, default=6, help="sessions, alternating direction (default 6)")
    parser.add_argument("--sales", type=int, default=8, help="sales per session, each with a kill (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--workdir", help="where journals and logs go (default: a new temporary folder)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="posbridge-bridge-kill-"))
    rng = random.Random(args.seed)
    total: Counter[str] = Counter()
    failed = 0
    started = time.monotonic()
    import os
    os.environ["POSBRIDGE_LOCK_DIR"] = str(workdir / "register-locks")
    for number in range(args.sessions):
        register_protocol, terminal_protocol = DIRECTIONS[number % 2]
        directory = workdir / f"session{number:02d}-{register_protocol}-to-{terminal_protocol}"
        directory.mkdir(parents=True)
        outcome = asyncio.run(session(register_protocol, terminal_protocol, args.sales, rng, directory))
        total += outcome["tally"]
        failed += bool(outcome["problems"])
        print(f"session {number} {register_protocol}->{terminal_protocol}: {args.sales} kills, "
              f"{outcome['seconds']:.1f} s, {'OK' if not outcome['problems'] else 'PROBLEMS'}", flush=True)
        for problem in outcome["problems"]:
            print(f"  {problem}", flush=True)
    print(f"\n{args.sessions} sessions, {args.sessions * args.sales} kills in {time.monotonic() - started:.0f} s; "
          f"{failed} session(s) with disagreeing books. Files: {workdir}")
    for key, count in sorted(total.items()):
        print(f"  {key}: {count}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
