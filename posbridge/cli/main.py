"""``posbridge`` command line: a thin layer over the public API (client, virtual terminal, codecs).

    posbridge demo [--protocol inpas]
    posbridge emulate --protocol inpas --port pty:///tmp/ttyPOS [--scenario FILE]
    posbridge sale 150.00 --port URL [--protocol inpas]      (and refund, cancel, preauth, …)
    posbridge decode --protocol inpas HEX…
    posbridge console --port URL                               (the technician's console)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import select
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, TextIO

from posbridge import __version__, protocols
from posbridge.devices import DeviceError
from posbridge.cli.formatting import format_result, link_option_argument, result_to_json, seconds_argument
from posbridge.ecr.gateway import GatewaySettings
from posbridge.model import Operation, PosbridgeError, Request, parse_amount
from posbridge.ecr.client import DEFAULT_DEADLINE, EcrClient, PromptHandler, Recovery
from posbridge.journal import EXPORT_OUTCOMES, Journal, default_journal_path
from posbridge.ecr.ownership import DEFAULT_LOCK_WAIT
from posbridge.protocols.common.errors import LinkError
from posbridge.protocols.common.session import CashierPrompt

if TYPE_CHECKING:
    from posbridge.devices import Device

DEFAULT_PROTOCOL = "inpas"


# --- commands ----------------------------------------------------------------------------------
OPERATION_COMMANDS: dict[str, tuple[Operation, str]] = {
    "sale": (Operation.SALE, "charge an amount (оплата)"),
    "refund": (Operation.REFUND, "return all or part of a purchase by RRN (возврат)"),
    "cancel": (Operation.CANCEL, "void an operation of the open batch by RRN (отмена)"),
    "preauth": (Operation.PREAUTH, "hold an amount (предавторизация)"),
    "completion": (Operation.COMPLETION, "complete a hold, fully or partly, by RRN (завершение)"),
    "cancel-preauth": (Operation.CANCEL_PREAUTH, "release a hold by RRN (отмена предавторизации)"),
    "settlement": (Operation.SETTLEMENT, "close the batch (сверка итогов)"),
    "short-report": (Operation.SHORT_REPORT, "short report of the open batch"),
    "full-report": (Operation.FULL_REPORT, "full report of the open batch"),
    "slip-copy": (Operation.SLIP_COPY, "copy of the last slip"),
    "test": (Operation.TEST_CONNECTION, "test the connection to the terminal and its host"),
}


def _resolve_port(args: argparse.Namespace) -> None:
    """``--port auto``: the single connected terminal and, unless --protocol was given, its protocol."""
    if args.port == "auto":
        from posbridge.devices.discovery import choose_auto

        args.port, protocol = choose_auto()
        args.protocol = args.protocol or protocol
    args.protocol = args.protocol or DEFAULT_PROTOCOL
    if getattr(args, "link_option", None):  # refused before a journal file is made or a line opened
        protocols.get(args.protocol).options(dict(args.link_option))


async def _run_console(args: argparse.Namespace) -> int:
    from posbridge.cli.console import run_console_command

    _resolve_port(args)
    journal = _open_journal(args)
    try:
        return await run_console_command(args, lambda: _make_client(args, journal))
    finally:
        journal.close()


def _cmd_export(args: argparse.Namespace) -> int:
    from datetime import datetime

    from posbridge.journal import Journal
    if not Path(args.journal).exists():
        raise ValueError(f"no journal at {args.journal}")
    filters = {
        "side": args.side,
        "since": datetime.fromisoformat(args.since) if args.since else None,
        "until": datetime.fromisoformat(args.until) if args.until else None,
        "operation": Operation(args.kind) if args.kind else None,
        "status": args.outcome,
    }
    with Journal(args.journal, readonly=True) as journal:  # an export never changes the journal
        if args.output:
            with open(args.output, "w", encoding="utf-8", newline="") as fp:
                count = (journal.export.csv if args.format == "csv" else journal.export.xml)(fp, **filters)
            print(f"{count} operation(s) written to {args.output}", file=sys.stderr)
        else:
            (journal.export.csv if args.format == "csv" else journal.export.xml)(sys.stdout, **filters)
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    from posbridge.devices.discovery import format_report

    print(format_report())
    return 0


def _open_journal(args: argparse.Namespace) -> Journal:
    """The ECR journal of ``--journal``; the default one's folder is created, a named one's is not."""
    path = Path(args.journal)
    if args.journal == str(default_journal_path()):
        path.parent.mkdir(parents=True, exist_ok=True)
    return Journal(path)


def _make_client(args: argparse.Namespace, journal: Journal, on_prompt: PromptHandler | None = None) -> EcrClient:
    return EcrClient(args.port, args.protocol, journal=journal, terminal_id=args.terminal_id,
                     deadline=args.timeout, lock_wait=args.lock_wait, on_prompt=on_prompt, record=args.record,
                     gateway=GatewaySettings(enabled=not args.no_gateway), timers=dict(args.link_option) or None)


def _print_recovery(recoveries: list[Recovery], out: TextIO = sys.stderr) -> None:
    for recovery in recoveries:
        print(f"recovery: {recovery.describe()}", file=out)


async def _run_operation(args: argparse.Namespace) -> int:
    _resolve_port(args)
    operation, _ = OPERATION_COMMANDS.get(args.command, (Operation.EMERGENCY_REVERSAL, ""))
    request = None
    if args.command != "reverse-last":
        original = {Operation.CANCEL_PREAUTH: Operation.PREAUTH, Operation.CANCEL: Operation.SALE}.get(operation)
        if operation is Operation.CANCEL and getattr(args, "of", None) == "refund":
            original = Operation.REFUND
        request = Request(
            operation,
            amount=parse_amount(args.amount) if getattr(args, "amount", None) else None,
            currency=args.currency if operation.moves_money else 643,
            rrn=getattr(args, "rrn", None),
            auth_code=getattr(args, "auth_code", None),
            original_operation=original,
        ).validated()  # bad input: nothing opened, journaled or sent

    def answer(prompt: CashierPrompt) -> tuple[str, bool]:
        print(f"terminal asks: {prompt.prompt}", file=sys.stderr)
        if not sys.stdin.isatty():
            return "", False
        print("> ", end="", file=sys.stderr, flush=True)  # not input(): its prompt would go to stdout (--json)
        text = sys.stdin.readline().rstrip("\n")
        return text, bool(text)

    journal = _open_journal(args)
    try:
        client = _make_client(args, journal, on_prompt=answer)
        try:  # the client opens the line itself, after it has journaled the operation
            if client.unresolved():  # operations whose outcome an earlier run lost: resolve them first
                _print_recovery(await client.recover())
            try:
                result = await (client.reverse_last() if request is None else client.execute(request))
            except LinkError as error:  # journaled as unknown by the client before it got here
                print(f"posbridge: the outcome of this {operation.value} is UNKNOWN ({error}); it is in the "
                      "journal, and `posbridge recover` (or the next operation) resolves it", file=sys.stderr)
                return 2
        finally:
            await client.close()
    finally:
        journal.close()
    print(json.dumps(result_to_json(result), ensure_ascii=False, indent=2) if args.json else format_result(result))
    return 0 if result.approved else 3


async def _run_recover(args: argparse.Namespace) -> int:
    _resolve_port(args)
    journal = _open_journal(args)
    try:
        async with _make_client(args, journal) as client:
            recoveries = await client.recover()
    finally:
        journal.close()
    if args.json:
        print(json.dumps([{"entry": r.entry.id, "operation": str(getattr(r.entry.request.operation, "value", "")),
                           "amount": r.entry.request.amount, "transaction_id": r.entry.request.transaction_id,
                           "outcome": r.outcome, "note": r.note} for r in recoveries], ensure_ascii=False))
    else:
        _print_recovery(recoveries, sys.stdout)
        print(f"{sum(r.resolved for r in recoveries)} of {len(recoveries)} operation(s) resolved")
    if any(not r.resolved for r in recoveries):
        return 2  # still unknown (or owned by a running process): said above, try again later
    return 3 if any(r.outcome == "refund_needed" for r in recoveries) else 0


def _cmd_journal(args: argparse.Namespace) -> int:
    from posbridge.journal import check_journal

    report = check_journal(args.file)
    print(report.text)
    return 0 if report.ok else 2


def _cmd_decode(args: argparse.Namespace) -> int:
    spec = protocols.get(args.protocol)
    hex_text = "".join(args.hex).replace(" ", "").replace(":", "")
    try:
        data = bytes.fromhex(hex_text)
    except ValueError as error:
        print(json.dumps({"error": "hex", "detail": str(error)}), file=sys.stderr)
        return 2
    frames = spec.describe(data)
    if args.text:
        from posbridge.cli.explain import explain_entries

        print(explain_entries(spec.name, frames))
    else:
        for frame in frames:
            print(json.dumps(frame.to_dict(), ensure_ascii=False))
    return 1 if any(not frame.ok for frame in frames) else 0


async def _run_emulate(args: argparse.Namespace) -> int:
    from posbridge.emulator.cards import Card, load_cards
    from posbridge.pump import Trace, WireLogger
    from posbridge.emulator.scenario import load_scenario
    from posbridge.emulator.terminal import VirtualTerminal

    scenario = load_scenario(args.scenario) if args.scenario else None
    # -vv: every frame on the line, in hex and decoded (card numbers masked)
    wire_log = WireLogger(protocols.get(args.protocol).describe) if args.verbose >= 2 else None
    trace: Trace | None = wire_log
    recorder = None
    if args.record:  # the capture and the wire log both see every byte
        from posbridge.capture import CaptureWriter, chain_traces

        recorder = CaptureWriter(args.record, args.protocol, side="terminal", link={"port": args.port})
        trace = chain_traces(recorder, trace)
    terminal = VirtualTerminal.from_scenario(scenario, protocol=args.protocol, journal_path=args.journal,
                                             seed=args.seed, trace=trace)
    if args.host_via_ecr or args.host_key_file:  # gateway mode (docs/host-protocol.md)
        from posbridge.cli.host_cli import configure_gateway

        configure_gateway(terminal, args.host_via_ecr, args.host_key_file)
    if args.idle_timeout is not None:
        terminal.config.idle_timeout = args.idle_timeout
    if args.cards:
        terminal.cards.present(*load_cards(args.cards))
    if args.card:
        # A log record, not a print: with --log-format json every stderr line stays one JSON object.
        logging.getLogger("posbridge.cli").warning(
            "a full card number on the command line is visible to every user in the process list; prefer "
            "--cards FILE or a scenario's [[cards]]")
        terminal.cards.present(*(Card(pan) for pan in args.card))

    control = None
    if args.control:  # in this loop, beside the terminal; loopback only (checked before anything opens)
        from posbridge.http.control import start_control

        control, control_url = await start_control(terminal, args.control)
        print(f"posbridge control API on {control_url} (GET {control_url}/openapi.json)", flush=True)

    def ready(device: Device) -> None:
        where = getattr(device, "link_path", None) or device.url
        print(f"posbridge virtual terminal ({terminal.protocol.title}) listening on {where}", flush=True)

    # SIGTERM and Ctrl-C end the emulator cleanly (a pty's symlink is removed on the way out).
    task = asyncio.current_task()
    assert task is not None  # this coroutine runs in the task asyncio.run made for it
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await terminal.run(args.port, ready=ready, faults=args.fault or (scenario.faults if scenario else None),
                           switchable_faults=control is not None)  # POST /faults may change them
    except asyncio.CancelledError:
        print("posbridge virtual terminal stopped", flush=True)
    finally:
        if wire_log is not None:
            wire_log.flush()  # a half frame or a split message's parts still held: logged, not lost
        if recorder is not None:
            recorder.close()
        if control is not None:
            await control.cleanup()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from posbridge.cli.demo import run_demo

    return asyncio.run(run_demo(args.protocol, out=sys.stdout))


# --- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posbridge", description="Bank card terminals (INPAS SmartSale, Arcus 2) for cash registers: "
                                      "operations, a virtual terminal, an HTTP service, technician's tools.",
        epilog=f"The ECR journal (every operation, written before its first byte) is {default_journal_path()} "
               "unless --journal says otherwise. Exit codes: 0 done/approved, 2 bad input or failure (an "
               "operation's outcome then unknown says so), 3 declined, 130 interrupted, 141 the output pipe "
               "was closed (`| head`): nothing more is printed, an operation's outcome is in the journal.")
    parser.add_argument("--version", action="version", version=f"posbridge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: every byte)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def protocol_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--protocol", default=DEFAULT_PROTOCOL, choices=protocols.names(),
                       help=f"wire protocol (default {DEFAULT_PROTOCOL})")

    demo = sub.add_parser("demo", help="run every kind of operation against the built-in virtual terminal")
    protocol_option(demo)

    emulate = sub.add_parser("emulate", help="run the virtual terminal for an outside program")
    protocol_option(emulate)
    emulate.add_argument("--port", required=True, help="device URL, e.g. pty:///tmp/ttyPOS or tcp-listen://127.0.0.1:0")
    emulate.add_argument("--scenario", help="scenario TOML file (cards, outcomes, delays, faults)")
    emulate.add_argument("--journal", help="terminal batch journal (SQLite file; default in memory)")
    emulate.add_argument("--cards", metavar="FILE", help="cards the next operations read, in order: one "
                         "PAN[,YYMM] a line (# comments); kept out of the process list")
    emulate.add_argument("--card", action="append", help="card the next operation reads (repeatable; visible "
                         "in the process list: prefer --cards)")
    emulate.add_argument("--idle-timeout", type=float, metavar="SECONDS", default=None,
                         help="tcp-listen: hang up on a connection with no request for this long when another "
                              "ECR waits (default 2; 0 = never)")
    emulate.add_argument("--seed", type=int, default=None, help="seed for RRNs and authorization codes")
    emulate.add_argument("--log-format", choices=("text", "json"), default="text",
                         help="log lines on stderr: text (default) or json, one object a line (time, level, "
                              "logger, message; an operation's outcome line adds its fields)")
    emulate.add_argument("--record", metavar="FILE", help="write every byte on the line to a capture (JSON lines, "
                         "card numbers masked) for `posbridge replay`")
    emulate.add_argument("--control", metavar="127.0.0.1:PORT", help="serve the control API (HTTP/JSON: cards, "
                         "rules, faults, batch, settle, reset; GET /openapi.json) on this loopback address")
    emulate.add_argument("--fault", metavar="SPEC", help="line faults, e.g. 'rx:drop@12,split=3,seed=7'"
                         " (grammar: devices/faults.py); rx = what the terminal receives")
    emulate.add_argument("--host-via-ecr", metavar="HOST:PORT",
                         help="gateway mode: reach the bank host (`posbridge host` at HOST:PORT) through the ECR "
                              "(INPAS operation 63; docs/host-protocol.md)")
    emulate.add_argument("--host-key-file", metavar="FILE", help="key sealing card numbers for that host "
                         "(the same file as posbridge host --key-file; default: the built-in test key)")

    sub.add_parser("devices", help="list connected terminals (serial and USB) that match a model profile")

    from posbridge.http.config import add_serve_arguments  # the HTTP service's own options (docs/http-service.md)

    add_serve_arguments(sub.add_parser("serve", help="the terminals as a local HTTP service for any cash register "
                                                     "(1C vocabulary, KKM-Server-compatible /Execute)"))

    export = sub.add_parser("export", help="registry export of a journal (either side) to CSV or XML")
    export.add_argument("--journal", required=True, help="journal file (the ECR's or the emulator's)")
    export.add_argument("--format", choices=("csv", "xml"), default="csv")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    export.add_argument("--since", help="from this date-time on, ISO (2026-11-01 or 2026-11-01T09:00)")
    export.add_argument("--until", help="before this date-time, ISO")
    export.add_argument("--kind", choices=[op.value for op in Operation], help="only this operation")
    export.add_argument("--outcome", choices=EXPORT_OUTCOMES,
                        help="only this final outcome (an operation reversed later is 'reversed'; an ECR "
                             "entry whose outcome was lost is 'unknown')")
    export.add_argument("--side", choices=("terminal", "ecr"), help="only the terminal's or the ECR's rows")
    sub.add_parser("arcus2-cli", add_help=False,
                   help="Arcus command-line tool drop-in: /o<op> /a<amount> /c<currency> … (rc.out, cheq.out, output.dat)")

    decode = sub.add_parser("decode", help="decode frames given in hex into JSON")
    protocol_option(decode)
    decode.add_argument("hex", nargs="+", help="frame bytes in hex (spaces and colons allowed)")
    decode.add_argument("--text", action="store_true", help="for people: fields named, amounts in money, codes "
                        "explained (default: one JSON object a line, for programs)")

    for name, (operation, text) in OPERATION_COMMANDS.items():
        p = sub.add_parser(name, help=text)
        if operation.moves_money:
            p.add_argument("amount", help="amount in roubles, e.g. 150.00")
            p.add_argument("--currency", type=int, default=643, help="ISO 4217 numeric code (default 643)")
        if operation.needs_rrn or operation is Operation.REFUND:
            p.add_argument("--rrn", required=True, help="RRN of the original operation")
            p.add_argument("--auth-code", help="authorization code of the original operation")
        if operation is Operation.CANCEL:
            p.add_argument("--of", choices=("sale", "refund"), default="sale",
                           help="what the cancel voids (default: a sale)")
        _link_options(p)
    reverse = sub.add_parser("reverse-last", help="emergency reversal of the terminal's last money operation "
                             "in the journal (1C's EmergencyReversal)")
    _link_options(reverse)
    recover = sub.add_parser("recover", help="resolve operations whose outcome was lost (emergency reversal); "
                             "exit 0 all resolved, 3 some need a refund check, 2 some stay unknown")
    _link_options(recover)
    journal = sub.add_parser("journal", help="look after a journal file")
    journal_sub = journal.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    check = journal_sub.add_parser("check", help="say what is wrong with a journal (exit 0 sound, 2 not)")
    check.add_argument("file", help="journal file (the ECR's or the emulator's)")
    console = sub.add_parser("console", help="technician's console: run operations, watch the line")
    _link_options(console, port_required=False)  # --emulate needs none
    console.add_argument("--trace", action="store_true", help="show every byte on the line from the start")
    from posbridge.cli.console import add_console_arguments

    add_console_arguments(console)
    from posbridge.cli.monitor import add_monitor_arguments
    from posbridge.cli.replay import add_replay_arguments

    add_monitor_arguments(sub.add_parser("monitor", help="sit between a register and a terminal: relay every byte "
                                                         "unchanged, show the frames of both directions decoded"))

    add_replay_arguments(sub.add_parser("replay", help="play a capture's requests against a terminal and compare "
                                                       "its answers (exit 0 identical, 1 different, 2 bad input)"))
    from posbridge.cli.host_cli import add_host_arguments

    add_host_arguments(sub.add_parser("host", help="the virtual terminal's bank host as a TCP service, for "
                                                   "emulate --host-via-ecr (gateway mode)"))
    from posbridge.cli.bridge_cli import add_bridge_parser

    add_bridge_parser(sub)
    return parser


def _link_options(p: argparse.ArgumentParser, *, port_required: bool = True) -> None:
    p.add_argument("--protocol", default=None, choices=protocols.names(),
                   help=f"wire protocol (default {DEFAULT_PROTOCOL}, or the model's with --port auto)")
    p.add_argument("--port", required=port_required,
                   help="device URL of the terminal (serial://…, tcp://…, usb://VID:PID), or 'auto'")
    p.add_argument("--terminal-id", help="terminal id to send (tag 27)")
    p.add_argument("--journal", default=str(default_journal_path()),
                   help="ECR journal file (SQLite; default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (recovery notes go to stderr)")
    p.add_argument("--timeout", type=seconds_argument, default=DEFAULT_DEADLINE,
                   help="seconds one operation may take in all (default %(default)g); then its outcome is "
                        "unknown and recovered")
    p.add_argument("--lock-wait", type=seconds_argument, default=DEFAULT_LOCK_WAIT,
                   help="seconds to wait for a terminal another process is using (default %(default)g)")
    p.add_argument("--record", metavar="FILE", help="write every byte on the line to a capture (JSON lines, card "
                   "numbers masked) for `posbridge replay`")
    p.add_argument("--no-gateway", action="store_true",
                   help="refuse to carry an INPAS terminal's connection to its bank host (gateway mode, "
                        "docs/host-protocol.md); carried by default")
    p.add_argument("--link-option", metavar="NAME=VALUE", type=link_option_argument, action="append", default=[],
                   help="a protocol link option (repeatable; serve's [terminals.timers]), e.g. ack_timeout=0.5, "
                        "or link_version=1 for an Arcus2-style peer that speaks only version 1")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``posbridge`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["arcus2-cli"]:  # its own /o1 /a100 argument style, parsed by the tool itself
        from posbridge.cli.arcus2_cli import main as arcus2_cli_main

        return arcus2_cli_main(argv[1:])
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    if args.command == "emulate":
        # One INFO line per operation; -v adds the link's events (DEBUG), -vv every frame as well.
        level = logging.DEBUG if args.verbose else logging.INFO
    if getattr(args, "log_format", "text") == "json":
        from posbridge.cli.formatting import JsonLogFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JsonLogFormatter())
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Libraries' chatter: transitions' line per state change never; the event loop's debug only with -vv.
    logging.getLogger("transitions").setLevel(logging.WARNING)  # ~23 lines a sale: never wanted
    logging.getLogger("asyncio").setLevel(logging.DEBUG if args.verbose >= 2 else logging.INFO)
    if args.command == "emulate" and args.verbose < 2:
        logging.getLogger("posbridge.wire").setLevel(logging.INFO)
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # here, not at exit: a reader gone away is handled below, not by a traceback
        return code
    except KeyboardInterrupt:
        return 130
    except (PosbridgeError, DeviceError, ValueError, OSError) as error:
        if isinstance(error, BrokenPipeError) and _stdout_closed():
            _silence_stdout()
            return 141  # as a program ended by SIGPIPE; the operation's outcome (if any) is journaled
        # One line, never a traceback: bad input, a busy terminal, a journal fault, a link failure.
        print(f"posbridge: {type(error).__name__}: {error}", file=sys.stderr)
        return 2


def _stdout_closed() -> bool:
    """True when standard output is a pipe nobody reads any more (``posbridge … | head -c1``)."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # not a real file (tests' capture), or already closed
        return False


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's last flush finds no broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


def _dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; its exit code."""
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "decode":
        return _cmd_decode(args)
    if args.command == "devices":
        return _cmd_devices(args)
    if args.command == "export":
        return _cmd_export(args)
    if args.command == "emulate":
        return asyncio.run(_run_emulate(args))
    if args.command == "recover":
        return asyncio.run(_run_recover(args))
    if args.command == "journal":
        return _cmd_journal(args)
    if args.command == "serve":
        from posbridge.http.app import run_serve

        return run_serve(args)
    if args.command == "console":
        return asyncio.run(_run_console(args))
    if args.command == "monitor":
        from posbridge.cli.monitor import run_monitor

        return run_monitor(args)
    if args.command == "host":
        from posbridge.cli.host_cli import run_host

        return run_host(args)
    if args.command == "replay":
        from posbridge.cli.replay import run_replay

        return run_replay(args)
    if args.command == "bridge":
        from posbridge.cli.bridge_cli import run_bridge

        return run_bridge(args)
    return asyncio.run(_run_operation(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
