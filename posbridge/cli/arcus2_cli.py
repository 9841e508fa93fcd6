"""``posbridge arcus2-cli``: the Arcus command-line tool's interface, over posbridge.

    posbridge arcus2-cli /o1 /a12345 /c643 [/r<rrn> /v<auth code> /h<original amount>
                         /f<original date-time yyMMddhhmmss>] [--port URL] [--encoding cp1251|cp866]
                         [--copies N] [--ops FILE] [--rc-res FILE] [--journal FILE]

Runs one operation -- on a built-in virtual terminal in this process (the default), or on the
terminal at ``--port`` speaking posbridge's Arcus2-style link -- and writes into the current folder
what software built on the Arcus command-line tool reads:

* ``rc.out`` -- the three-character response code, nothing else ("000" = approved);
* ``cheq.out`` -- the slip in CP1251 (``--encoding cp866`` for printers that want it): the card
  holder's copy, then for each further copy (``--copies``, default 2) a separator line and the
  cashier's copy; lines end with CRLF;
* ``output.dat`` -- CP1251, CRLF lines: the response code, then ``key=value`` lines of the result
  (the Arcus keys of the terminal's answer, the slip excepted).

Old output files are removed first, so a stale "000" can never be read as this run's outcome.
Codes posbridge writes itself: ``999`` the terminal did not answer (link failure: no cheq.out);
``913`` the arguments were wrong (nothing was sent). Exit status: 0 approved, 3 not approved,
2 wrong arguments or link failure.

Operation codes come from ops.ini (``--ops`` for an installation's own); texts for codes the
terminal leaves without text come from rc_res.ini (``--rc-res``). ``CANCEL_LAST`` (code 2 by
default) reverses the last operation in the ECR journal (``--journal``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from posbridge.devices import Device, DeviceError, open_device
from posbridge.protocols import ProtocolSpec
from posbridge.protocols.arcus2.codes import DEFAULT_TEXTS, NO_ANSWER, parse_rc_res
from posbridge.protocols.arcus2.mapping import (
    SLIP_SEPARATOR,
    RequestContext,
    parse_original_date_time,
    request_to_message,
    result_to_message,
)
from posbridge.protocols.arcus2.ops import (
    IniFileError,
    OpsTable,
    default_ops_table,
    parse_ops_ini,
)
from posbridge.protocols.arcus2.spec import spec_for_installation
from posbridge.protocols.common.errors import LinkError, PosbridgeError

from posbridge.ecr.client import EcrClient
from posbridge.journal import Journal, default_journal_path
from posbridge.model import Operation, Request, Result
from posbridge.emulator.terminal import VirtualTerminal

__all__ = ["main", "BAD_ARGUMENTS", "BUILTIN_TERMINAL_URL", "RC_FILE", "SLIP_FILE", "OUTPUT_FILE"]

RC_FILE, SLIP_FILE, OUTPUT_FILE = "rc.out", "cheq.out", "output.dat"
# A fixed name, so that the ECR journal knows the built-in terminal again on the next run (CANCEL_LAST).
BUILTIN_TERMINAL_URL = "virtual://posbridge-arcus2-cli"
BAD_ARGUMENTS = "913"  # the manual's "invalid message format": the request was not sent
EOL = "\r\n"  # the files are read by Windows-born cash-register software
OUTPUT_ENCODING = "cp1251"

# /x<value> arguments of the Arcus command-line tool and what they carry.
_SLASH_ARGUMENTS = {
    "o": "operation", "a": "amount", "c": "currency", "r": "rrn", "v": "auth_code",
    "h": "original_amount", "f": "original_date_time",
}


class _UsageError(Exception):
    """The arguments cannot make a request; the message says why."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # a bad option is a usage error like any other
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="posbridge arcus2-cli",
        description="Run one operation the way the Arcus command-line tool does; writes rc.out, "
                    "cheq.out and output.dat into the current folder.",
        epilog="/o<code> operation (ops.ini), /a<amount in minor units>, /c<currency, default 643>, "
               "/r<RRN>, /v<authorization code>, /h<original amount>, /f<original date-time yyMMddhhmmss>")
    parser.add_argument("--port", help="device URL of an Arcus2-style terminal (default: a built-in virtual one)")
    parser.add_argument("--encoding", default="cp1251", choices=("cp1251", "cp866"), help="cheq.out encoding")
    parser.add_argument("--copies", type=int, default=2, help="slip copies written to cheq.out (default 2)")
    parser.add_argument("--ops", help="ops.ini-format operation table (default: posbridge's)")
    parser.add_argument("--rc-res", help="rc_res.ini-format response texts")
    parser.add_argument("--journal", help="ECR journal (SQLite file); default: in memory with the built-in "
                                          "terminal, posbridge's ECR journal with --port")
    return parser


_VALUE_OPTIONS = frozenset({"--port", "--encoding", "--copies", "--ops", "--rc-res", "--journal"})


def _split_arguments(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The /x<value> arguments by name, and the rest for argparse (option values may be paths)."""
    slash: dict[str, str] = {}
    rest: list[str] = []
    for arg in argv:
        if rest and rest[-1] in _VALUE_OPTIONS:
            rest.append(arg)
        elif len(arg) >= 2 and arg[0] == "/" and arg[1].lower() in _SLASH_ARGUMENTS:
            name = _SLASH_ARGUMENTS[arg[1].lower()]
            if name in slash:
                raise _UsageError(f"{arg[:2]} is given twice")
            slash[name] = arg[2:]
        elif arg.startswith("/"):
            raise _UsageError(f"unknown argument {arg!r}")
        else:
            rest.append(arg)
    return slash, rest


def _number(slash: Mapping[str, str], name: str) -> int | None:
    value = slash.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise _UsageError(f"{name} must be digits, got {value!r}")
    return int(value)


def _load_ops(path: str) -> OpsTable:
    """The installation's ops.ini (``--ops``); IniFileError naming the line of a bad one, OSError."""
    return parse_ops_ini(Path(path).read_bytes(), source=path)


def _load_texts(path: str) -> Mapping[str, str]:
    """The installation's rc_res.ini texts (``--rc-res``) over posbridge's defaults."""
    return {**DEFAULT_TEXTS, **parse_rc_res(Path(path).read_bytes(), source=path)}


def _build_request(slash: Mapping[str, str], ops: OpsTable) -> Request:
    code = _number(slash, "operation")
    if code is None:
        raise _UsageError("the operation is required: /o<code>")
    operation = ops.operation_for(code)
    if operation is None:
        raise _UsageError(f"operation code {code} is not in {ops.source}")
    changes: dict[str, object] = {}
    when = slash.get("original_date_time")
    if when is not None:
        try:
            original = parse_original_date_time(when)
        except ValueError:
            raise _UsageError(f"/f must be yyMMddhhmmss, got {when!r}") from None
        changes["original_datetime"] = original
    request = Request(
        operation,
        amount=_number(slash, "amount") if operation.moves_money else None,  # Arcus users pass /a0 too
        currency=_number(slash, "currency") or 643,
        rrn=slash.get("rrn") or None,
        auth_code=slash.get("auth_code") or None,
        original_amount=_number(slash, "original_amount"),
    )
    return request.with_changes(**changes) if changes else request


# --- the exchange ------------------------------------------------------------------------------
async def _run(request: Request, client: EcrClient) -> Result:
    async with client:
        if request.operation is Operation.EMERGENCY_REVERSAL:
            return await _reverse_last(client)
        if client.unresolved():
            for recovery in await client.recover():
                print(f"arcus2-cli: an earlier lost operation: {recovery.describe()}", file=sys.stderr)
        return await client.execute(request)


async def _reverse_last(client: EcrClient) -> Result:
    try:
        return await client.reverse_last()
    except ValueError:
        raise _UsageError("CANCEL_LAST: the journal holds no earlier money operation to reverse (see --journal)") \
            from None


def _client(port: str | Device, spec: ProtocolSpec, journal: Journal,
            timers: Mapping[str, float] | None = None, clock: Callable[[], datetime] | None = None) -> EcrClient:
    # ``spec``: the Arcus protocol bound to the installation's ops.ini and texts.
    return EcrClient(port, spec, journal=journal, timers=dict(timers or {}), clock=clock or datetime.now)


async def _run_builtin(request: Request, spec: ProtocolSpec, journal: Journal,
                       terminal_factory: Callable[[], VirtualTerminal] | None,
                       timers: Mapping[str, float] | None,
                       clock: Callable[[], datetime] | None = None) -> Result:
    terminal = terminal_factory() if terminal_factory else VirtualTerminal("arcus2")
    terminal.protocol = spec
    terminal_end = await open_device(BUILTIN_TERMINAL_URL)
    serving = asyncio.get_running_loop().create_task(terminal.serve(terminal_end))
    try:
        return await _run(request, _client(BUILTIN_TERMINAL_URL, spec, journal, timers, clock))
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await terminal_end.close()


def _open_journal(path: str | None, default_on_disk: bool) -> Journal:
    if path is None and not default_on_disk:
        return Journal()
    journal_path = Path(path) if path else default_journal_path()
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    return Journal(journal_path)


# --- output files ------------------------------------------------------------------------------
def _write(name: str, text: str, encoding: str) -> None:
    Path(name).write_bytes(text.encode(encoding, "replace"))


def _lines(lines: Sequence[str]) -> str:
    return "".join(line + EOL for line in lines)


def _write_outcome(code: str, fields: Mapping[str, str]) -> None:
    """rc.out and output.dat: the code, then ``key=value`` lines (values kept on one line)."""
    _write(RC_FILE, code, "ascii")
    values = [f"{key}={' '.join(value.splitlines())}" for key, value in fields.items()]
    _write(OUTPUT_FILE, _lines([code, *values]), OUTPUT_ENCODING)


def _write_result(result: Result, request: Request, ops: OpsTable, copies: int, encoding: str) -> None:
    sent = request_to_message(request, ops)
    context = RequestContext(sent["operation"], result.transaction_id, sent.get("original_operation"))
    fields = dict(result_to_message(result, context).fields)
    fields["response_code"] = result.response_code  # as the terminal sent it
    del fields["slip"]  # the slip goes to cheq.out
    _write_outcome(result.response_code, fields)
    slips = result.slips
    lines: list[str] = []
    for number, text in enumerate([slips.customer] + [slips.cashier or slips.customer] * (copies - 1)):
        if number:
            lines.append(SLIP_SEPARATOR)
        lines += text.splitlines()
    _write(SLIP_FILE, _lines(lines) if slips.customer or slips.cashier else "", encoding)


def _remove_old_outputs() -> None:
    for name in (RC_FILE, SLIP_FILE, OUTPUT_FILE):
        Path(name).unlink(missing_ok=True)


def main(
    argv: list[str],
    *,
    terminal_factory: Callable[[], VirtualTerminal] | None = None,
    timers: Mapping[str, float] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> int:
    """Run ``posbridge arcus2-cli`` with ``argv`` (the arguments after ``arcus2-cli``).

    ``terminal_factory`` makes the built-in virtual terminal (tests pass one with a fixed clock and
    seed); it is not used with ``--port``. ``clock`` is the ECR's (it dates requests and starts
    transaction numbers; tests fix it). ``timers`` override the ECR's link timers (seconds, as
    ``posbridge.protocols.arcus2.spec.ecr_session`` takes them). Returns the exit status (module docstring).
    """
    if any(arg in ("-h", "--help") for arg in argv):
        _parser().print_help()
        return 0
    _remove_old_outputs()
    texts: Mapping[str, str] = DEFAULT_TEXTS
    try:
        slash, rest = _split_arguments(argv)
        args = _parser().parse_args(rest)
        if args.copies < 1:
            raise _UsageError("--copies must be at least 1")
        ops = _load_ops(args.ops) if args.ops else default_ops_table()
        texts = _load_texts(args.rc_res) if args.rc_res else DEFAULT_TEXTS
        request = _build_request(slash, ops)
        spec = spec_for_installation(ops, texts)
        journal = _open_journal(args.journal, default_on_disk=bool(args.port))
        try:
            if args.port:
                result = asyncio.run(_run(request, _client(args.port, spec, journal, timers, clock)))
            else:
                result = asyncio.run(_run_builtin(request, spec, journal, terminal_factory, timers, clock))
        finally:
            journal.close()
    except (LinkError, DeviceError) as error:  # before PosbridgeError: a LinkError is one too
        print(f"arcus2-cli: the terminal did not answer: {error}", file=sys.stderr)
        _write_outcome(NO_ANSWER, {"text_message": texts.get(NO_ANSWER, "")})
        return 2
    except (_UsageError, PosbridgeError, IniFileError, OSError) as error:
        # Nothing was sent: bad arguments, a busy terminal, a journal that cannot record it.
        print(f"arcus2-cli: {error}", file=sys.stderr)
        _write_outcome(BAD_ARGUMENTS, {"text_message": str(error)})
        return 2
    _write_result(result, request, ops, args.copies, args.encoding)
    print(f"{result.response_code} {result.response_text}".rstrip())
    return 0 if result.approved else 3


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
