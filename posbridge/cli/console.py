"""The technician's console: drive, watch and diagnose a terminal link interactively.

    posbridge console --port serial:///dev/ttyACM0 [--protocol inpas] [--trace]

A prompt_toolkit prompt over the public API (:class:`~posbridge.ecr.client.EcrClient`), nothing more:
each command is one client call or one codec call, so the console cannot drift from the core.
With ``trace on`` every byte on the line is shown as it goes, with each frame decoded.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from posbridge.capture import mask_decoded, masked_line_bytes
from posbridge.ecr.client import EcrClient
from posbridge.cli.formatting import format_result
from posbridge.model import InvalidRequest, PosbridgeError, Result, parse_amount

if TYPE_CHECKING:  # prompt_toolkit is imported when the console starts, not with the CLI
    from prompt_toolkit.input import Input
    from prompt_toolkit.output import Output

HELP = """commands (amounts in roubles, e.g. 150.00):
  sale AMOUNT                      preauth AMOUNT
  refund AMOUNT RRN                completion AMOUNT RRN [AUTH]
  cancel AMOUNT RRN [AUTH]         cancel-preauth AMOUNT RRN [AUTH]
  settlement   short-report   full-report   slip-copy   test
  recover        resolve operations whose outcome was lost (emergency reversal)
  journal        operations of the ECR journal still unresolved
  trace on|off   show every byte on the line, frames decoded
  decode HEX     decode frames of the current protocol
  help   quit"""

COMMANDS = ("sale", "refund", "cancel", "preauth", "completion", "cancel-preauth", "settlement",
            "short-report", "full-report", "slip-copy", "test", "recover", "journal", "trace", "decode",
            "help", "quit")


class ConsoleQuit(Exception):
    """The technician asked to leave."""


class Console:
    """Turns command lines into client calls; :meth:`handle` returns the text to show."""

    def __init__(self, client: EcrClient, show: Callable[[str], None] = print) -> None:
        self.client = client
        self.show = show
        self.tracing = False
        client.trace = self._trace
        client.on_progress = lambda progress: self.show(f"… {progress.text or 'terminal busy'}")

    def _trace(self, direction: str, data: bytes) -> None:
        if not self.tracing:
            return
        arrow = "->" if direction == "tx" else "<-"
        items = self.client.protocol.describe(data)  # one schema for every protocol
        # Card numbers masked in the hex too: a terminal may send a full one, and a screen is a log.
        self.show(f"{arrow} {masked_line_bytes(data, items).hex(' ')}")
        for item in items:
            self.show(f"   {mask_decoded(item.summary())}")

    async def handle(self, line: str) -> str:
        """Run one command line; errors come back as text, never as exceptions (but quit)."""
        try:
            words = shlex.split(line)
        except ValueError as error:
            return f"cannot read that line: {error}"
        if not words:
            return ""
        command, args = words[0].lower(), words[1:]
        try:
            return await self._dispatch(command, args)
        except ConsoleQuit:
            raise
        except (InvalidRequest, ValueError, IndexError) as error:
            return f"{command}: {error or 'missing arguments'} (type help)"
        except PosbridgeError as error:
            return f"{command} failed: {type(error).__name__}: {error}"

    async def _dispatch(self, command: str, args: list[str]) -> str:
        ecr = self.client
        money: dict[str, Callable[[list[str]], Awaitable[Result]]] = {
            "sale": lambda a: ecr.sale(parse_amount(a[0])),
            "preauth": lambda a: ecr.preauth(parse_amount(a[0])),
            "refund": lambda a: ecr.refund(parse_amount(a[0]), rrn=a[1]),
            "cancel": lambda a: ecr.cancel(parse_amount(a[0]), rrn=a[1], auth_code=_opt(a, 2)),
            "completion": lambda a: ecr.completion(parse_amount(a[0]), rrn=a[1], auth_code=_opt(a, 2)),
            "cancel-preauth": lambda a: ecr.cancel_preauth(parse_amount(a[0]), rrn=a[1], auth_code=_opt(a, 2)),
        }
        plain: dict[str, Callable[[], Awaitable[Result]]] = {
            "settlement": ecr.settlement, "short-report": ecr.short_report, "full-report": ecr.full_report,
            "slip-copy": ecr.slip_copy, "test": ecr.test_connection,
        }
        if command in money:
            return format_result(await money[command](args))
        if command in plain:
            return format_result(await plain[command]())
        if command == "recover":
            recoveries = await ecr.recover()
            lines = [r.describe() for r in recoveries]
            return "\n".join(lines + [f"{sum(r.resolved for r in recoveries)} of {len(recoveries)} resolved"])
        if command == "journal":
            entries = ecr.unresolved()
            if not entries:
                return "no unresolved operations"
            return "\n".join(f"#{e.id} {e.state:<8} {e.request.operation.value} amount={e.request.amount}"
                             f" transaction={e.request.transaction_id}" for e in entries)
        if command == "trace":
            if args[:1] not in (["on"], ["off"]):
                return "trace on | trace off"
            self.tracing = args[0] == "on"
            return f"trace {args[0]}"
        if command == "decode":
            data = bytes.fromhex("".join(args))
            return "\n".join(item.summary() for item in ecr.protocol.describe(data))
        if command == "help":
            return HELP
        if command in ("quit", "exit"):
            raise ConsoleQuit
        return f"unknown command {command!r} (type help)"


def _opt(args: list[str], index: int) -> str | None:
    return args[index] if len(args) > index else None


async def run_console(client: EcrClient, *, trace: bool = False, input: Input | None = None,
                      output: Output | None = None) -> None:
    """The interactive loop (prompt_toolkit): history, completion, output above the prompt.
    ``input`` and ``output`` default to the terminal's (tests pass a pipe and a DummyOutput)."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.patch_stdout import patch_stdout
    from prompt_toolkit.shortcuts import print_formatted_text

    session: PromptSession[str] = PromptSession(completer=WordCompleter(list(COMMANDS)), input=input,
                                                output=output)

    def show(text: str) -> None:
        print_formatted_text(text, output=output)

    console = Console(client, show)
    console.tracing = trace
    spec = client.protocol
    show(f"posbridge console — {spec.title} on {client.port if isinstance(client.port, str) else client.port.url}"
         " (help for commands)")
    async with client:
        with patch_stdout():
            while True:
                try:
                    line = await session.prompt_async("posbridge> ")
                except (EOFError, KeyboardInterrupt):
                    return
                try:
                    text = await console.handle(line)
                except ConsoleQuit:
                    return
                if text:
                    show(text)


__all__ = ["COMMANDS", "Console", "ConsoleQuit", "HELP", "run_console"]
