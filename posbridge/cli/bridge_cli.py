"""``posbridge bridge``: a register speaking one protocol served by a terminal speaking another.

    posbridge bridge --ecr tcp-listen://127.0.0.1:9000 --ecr-protocol inpas \\
                     --terminal serial:///dev/ttyACM0 --terminal-protocol arcus2 [--journal FILE]

A thin front end over :class:`posbridge.bridge.Bridge` (its docstring has the money rules). It
prints one line per request of the register (``--json``: one JSON object a line) and runs until
SIGTERM or Ctrl-C (exit 0). A line that cannot be opened at the start is one line on stderr, exit 2
(``main`` prints it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from posbridge import protocols
from posbridge.cli.formatting import seconds_argument
from posbridge.bridge import Bridge, BridgeOutcome
from posbridge.ecr import DEFAULT_DEADLINE
from posbridge.ecr.ownership import DEFAULT_LOCK_WAIT
from posbridge.journal import Journal, default_journal_path
from posbridge.model import format_amount
from posbridge.pump import WireLogger

__all__ = ["add_bridge_parser", "run_bridge"]


def add_bridge_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``bridge`` command to ``sub`` (the ``posbridge`` command's sub-parsers)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "bridge", help="serve a register speaking one protocol with a terminal speaking another, "
                       "every operation journaled")
    p.add_argument("--ecr", required=True, metavar="URL",
                   help="the register's line, e.g. tcp-listen://127.0.0.1:9000 or pty:///tmp/ttyPOS")
    p.add_argument("--ecr-protocol", required=True, choices=protocols.names(),
                   help="the protocol the register speaks")
    p.add_argument("--terminal", required=True, metavar="URL",
                   help="the terminal's line, e.g. serial:///dev/ttyACM0 or tcp://10.0.0.5:2000")
    p.add_argument("--terminal-protocol", required=True, choices=protocols.names(),
                   help="the protocol the terminal speaks")
    p.add_argument("--journal", default=str(default_journal_path()),
                   help="the bridge's ECR journal (SQLite; default %(default)s)")
    p.add_argument("--terminal-id", help="terminal id to send when the register sends none")
    p.add_argument("--timeout", type=seconds_argument, default=DEFAULT_DEADLINE,
                   help="seconds one operation may take at the terminal (default %(default)g); then its "
                        "outcome is unknown and recovered")
    p.add_argument("--lock-wait", type=seconds_argument, default=DEFAULT_LOCK_WAIT,
                   help="seconds to wait for a terminal another process is using (default %(default)g)")
    p.add_argument("--progress-interval", type=seconds_argument, default=5.0,
                   help="seconds between the bridge's own progress packets to the register (default %(default)g)")
    p.add_argument("--json", action="store_true", help="one JSON object a line instead of text")
    return p




def outcome_line(outcome: BridgeOutcome) -> str:
    """One line for people: what the register asked, what it was told, whether it took it."""
    request, answer = outcome.request, outcome.answer
    asked = "unreadable request"
    if request is not None:
        asked = request.operation.value
        if request.amount is not None:
            asked += f" {format_amount(request.amount, request.currency)}"
        if request.transaction_id:
            asked += f" #{request.transaction_id}"
    told = f"{answer.status.value} code {answer.host_code or answer.response_code or '-'}"
    if answer.rrn:
        told += f" rrn {answer.rrn}"
    line = f"{asked} -> {told}, {'delivered' if outcome.delivered else 'NOT delivered'}"
    if outcome.entry_id is not None:
        line += f" (journal #{outcome.entry_id})"
    return line + (f": {outcome.note}" if outcome.note else "")


def outcome_json(outcome: BridgeOutcome) -> dict[str, Any]:
    """The outcome as JSON-ready data (card numbers masked as the result carries them)."""
    request, answer = outcome.request, outcome.answer
    return {
        "operation": request.operation.value if request is not None else None,
        "amount": request.amount if request is not None else None,
        "currency": request.currency if request is not None else None,
        "transaction_id": request.transaction_id if request is not None else None,
        "status": answer.status.value,
        "code": answer.host_code or answer.response_code,
        "text": answer.response_text,
        "rrn": answer.rrn,
        "auth_code": answer.auth_code,
        "masked_pan": answer.masked_pan,
        "delivered": outcome.delivered,
        "journal_entry": outcome.entry_id,
        "note": outcome.note,
    }


class _Printer:
    """Writes each outcome as a line; a closed output is said once on stderr, then ignored (the
    bridge goes on: the register matters more than the screen)."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out, self.as_json, self.broken = out, as_json, False

    def say(self, line: str) -> None:
        if self.broken:
            return
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.broken = True
            print("posbridge bridge: the output closed; the bridge goes on", file=sys.stderr)

    def __call__(self, outcome: BridgeOutcome) -> None:
        self.say(json.dumps(outcome_json(outcome), ensure_ascii=False) if self.as_json else outcome_line(outcome))


def _wire_log(protocol: str, line: str) -> WireLogger:
    """``-vv``: every frame of one line, decoded, under ``posbridge.wire.register`` / ``.terminal``."""
    return WireLogger(protocols.get(protocol).describe, logger=logging.getLogger(f"posbridge.wire.{line}"))


async def _bridge(args: argparse.Namespace, out: TextIO) -> int:
    path = Path(args.journal)
    if args.journal == str(default_journal_path()):
        path.parent.mkdir(parents=True, exist_ok=True)
    journal = Journal(path)
    printer = _Printer(out, args.json)
    verbose = getattr(args, "verbose", 0)
    try:
        bridge = Bridge(args.ecr, args.ecr_protocol, args.terminal, args.terminal_protocol, journal=journal,
                        terminal_id=args.terminal_id, deadline=args.timeout, lock_wait=args.lock_wait,
                        progress_interval=args.progress_interval, on_outcome=printer,
                        register_trace=_wire_log(args.ecr_protocol, "register") if verbose >= 2 else None,
                        terminal_trace=_wire_log(args.terminal_protocol, "terminal") if verbose >= 2 else None)
        task = asyncio.current_task()
        assert task is not None  # asyncio.run made one for this coroutine
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)

        def ready(_: object) -> None:
            where = f"register ({bridge.register_protocol.name}) on {args.ecr} <-> terminal " \
                    f"({bridge.terminal_protocol.name}) on {args.terminal}; journal {path}"
            if args.json:
                print(json.dumps({"bridge": "ready", "ecr": args.ecr, "terminal": args.terminal,
                                  "journal": str(path)}), file=sys.stderr)
            else:
                printer.say(f"bridge ready: {where}")
        try:
            await bridge.run(ready=ready)
        except asyncio.CancelledError:
            pass  # SIGTERM or Ctrl-C: run() closed both lines
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        open_entries = bridge.client.unresolved()
        if open_entries:
            print(f"posbridge bridge: {len(open_entries)} operation(s) with an unknown outcome stay in {path}: "
                  f"run `posbridge recover --port {args.terminal} --protocol {args.terminal_protocol} "
                  f"--journal {path}`", file=sys.stderr)
        return 0
    finally:
        journal.close()


def run_bridge(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run ``posbridge bridge`` until SIGTERM or Ctrl-C (exit 0)."""
    return asyncio.run(_bridge(args, out))
