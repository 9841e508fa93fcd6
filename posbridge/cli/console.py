"""The technician's console: drive, watch and diagnose a terminal link interactively.

    posbridge console --port serial:///dev/ttyACM0 [--protocol inpas] [--trace]
    posbridge console --emulate --protocol arcus2      (a built-in virtual terminal to practise on)

A prompt_toolkit prompt over the public API (:class:`~posbridge.ecr.client.EcrClient`), nothing more:
each command is one client call, one codec call or one call of the emulator's control handle
(:class:`~posbridge.testing.background.TerminalControl`), so the console cannot drift from the core.

What a technician can count on:

- the prompt stays usable while an operation runs; **Ctrl-C cancels the running operation** (asks
  the terminal to abort where the protocol can, Arcus2; else stops waiting) and never leaves the
  console: an operation whose answer was not seen is said to have an *unknown outcome*, the journal
  keeps it so, and ``recover`` resolves it. Ctrl-D or ``quit`` leave;
- at start, the journal's unresolved operations of this terminal are listed and ``recover`` offered;
- errors are sentences (``refund needs AMOUNT and RRN``), never Python's own words;
- ``trace hex|decoded|both|off``: every frame with its time, direction (``->`` to the terminal,
  ``<-`` from it), bytes and decoded fields, in colour; card numbers are masked in both;
- a bottom toolbar (port, protocol, link state, terminal id, last result), completion, a persistent
  history (``history`` lists it; card numbers are masked before a line is stored) and ``help COMMAND``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from posbridge.protocols.common.model import mask_decoded
from posbridge.protocols.common.parts import DescribedStream, Piece, joined
from posbridge.cli.formatting import format_result
from posbridge.ecr.client import EcrClient, Recovery
from posbridge.ecr.ownership import TerminalBusy
from posbridge.pump import QUIET_FLUSH, QuietTimers
from posbridge.journal import JournalError, default_journal_path
from posbridge.model import (InvalidRequest, Operation, PosbridgeError, Result, Status, format_amount,
                             mask_card_numbers, parse_amount)
from posbridge.protocols.common.errors import LinkError
from posbridge.protocols.common.model import mask_card_bytes

if TYPE_CHECKING:  # prompt_toolkit is imported when the console starts, not with the CLI
    from prompt_toolkit.history import History
    from prompt_toolkit.input import Input
    from prompt_toolkit.output import Output

    from posbridge.testing.background import TerminalControl

log = logging.getLogger("posbridge.console")

Fragments = list[tuple[str, str]]
"""Styled text as prompt_toolkit takes it: ``(style class, text)`` pairs (``FormattedText``'s shape)."""
Shown = Union[str, Fragments]
"""What the console shows: plain text or styled fragments."""

TRACE_MODES = ("hex", "decoded", "both", "off")

STYLE_RULES = {
    "time": "#888888",
    "tx": "ansicyan bold",
    "rx": "ansigreen bold",
    "hex": "",
    "decoded": "ansibrightblack italic",
    "approved": "ansigreen bold",
    "declined": "ansiyellow bold",
    "unknown": "ansired bold",
    "error": "ansired",
    "note": "ansibrightblack",
    "bottom-toolbar": "noreverse bg:#303030 #dddddd",
    "bottom-toolbar.key": "bg:#303030 #999999",
    "bottom-toolbar.busy": "bg:#303030 ansiyellow bold",
}
"""prompt_toolkit style classes of the console (``class:time``, ``class:tx`` ...)."""


@dataclass(frozen=True)
class CommandHelp:
    """One command as ``help`` shows it."""

    usage: str
    text: str
    example: str = ""


OPERATIONS: dict[str, CommandHelp] = {
    "sale": CommandHelp("sale AMOUNT", "charge AMOUNT roubles (оплата)", "sale 150.00"),
    "refund": CommandHelp("refund AMOUNT RRN [AUTH]", "return all or part of a purchase (возврат)",
                          "refund 50.00 123456789012"),
    "cancel": CommandHelp("cancel AMOUNT RRN [AUTH]", "void a sale of the open batch (отмена)",
                          "cancel 150.00 123456789012"),
    "preauth": CommandHelp("preauth AMOUNT", "hold AMOUNT roubles (предавторизация)", "preauth 500.00"),
    "completion": CommandHelp("completion AMOUNT RRN [AUTH]", "charge a hold, fully or partly (завершение)",
                              "completion 450.00 123456789012"),
    "cancel-preauth": CommandHelp("cancel-preauth AMOUNT RRN [AUTH]",
                                  "release a hold (отмена предавторизации)",
                                  "cancel-preauth 500.00 123456789012"),
    "reverse-last": CommandHelp("reverse-last", "emergency reversal of the last money operation in the journal"),
    "settlement": CommandHelp("settlement", "close the batch (сверка итогов)"),
    "short-report": CommandHelp("short-report", "short report of the open batch"),
    "full-report": CommandHelp("full-report", "full report of the open batch"),
    "slip-copy": CommandHelp("slip-copy", "copy of the last slip"),
    "test": CommandHelp("test", "test the connection to the terminal and its host"),
    "recover": CommandHelp("recover", "resolve operations whose outcome was lost (emergency reversal)"),
}
"""Commands that talk to the terminal: one runs at a time, Ctrl-C cancels it."""

TOOLS: dict[str, CommandHelp] = {
    "journal": CommandHelp("journal", "operations of this terminal whose outcome is still open"),
    "trace": CommandHelp("trace hex|decoded|both|off",
                         "show every frame on the line: time, direction (-> to the terminal, <- from it), "
                         "bytes in hex and/or decoded fields; card numbers masked", "trace both"),
    "decode": CommandHelp("decode HEX", "decode bytes as frames of this protocol", "decode 06"),
    "history": CommandHelp("history [N]", "the last N commands (20), kept across sessions"),
    "help": CommandHelp("help [COMMAND]", "the commands, or one command in detail", "help refund"),
    "quit": CommandHelp("quit", "leave the console (Ctrl-D does too; Ctrl-C only cancels an operation)"),
}

EMULATOR: dict[str, CommandHelp] = {
    "card": CommandHelp("card CARD [CARD…]", "the next card operations read these cards, in order (numbers "
                        "or test-card names: approved, insufficient_funds, over_limit, blocked…)",
                        "card insufficient_funds"),
    "decline": CommandHelp("decline [CODE] [OPERATION|any]", "the host declines the next sale (or OPERATION) "
                           "with CODE (05)", "decline 51"),
    "rule": CommandHelp("rule KEY=VALUE…", "add an outcome rule (keys: card, amount_ends, operation, nth, "
                        "outcome, code, text, card_delay, pin_delay, host_delay, dialog, fault, once)",
                        "rule amount_ends=05 code=05 once=true"),
    "delay": CommandHelp("delay card|pin|host SECONDS", "how long the card holder takes to present the card, "
                         "to enter the PIN, and the host to answer, from now on", "delay card 5"),
    "fault": CommandHelp("fault host NAME|none  or  fault line SPEC|none",
                         "a host fault (no_connection, answer_lost, request_not_sent) or byte faults on the "
                         "line (rx:corrupt@5, tx:drop@1 …)", "fault host no_connection"),
    "reset": CommandHelp("reset", "forget the emulator's rules, queued cards, delays and faults"),
    "emulator": CommandHelp("emulator", "the emulator's line and outcome rules"),
}
"""Commands for the built-in virtual terminal (``--emulate``)."""

COMMANDS = tuple(OPERATIONS) + tuple(TOOLS) + tuple(EMULATOR)

_MONEY_ARGS = {"sale": 1, "preauth": 1, "refund": 2, "cancel": 2, "completion": 2, "cancel-preauth": 2}
"""How many arguments (AMOUNT, RRN) a money command needs; a third one (AUTH) may follow an RRN."""


def plain(shown: Shown) -> str:
    """What ``shown`` says, without its styles (for tests and logs)."""
    return shown if isinstance(shown, str) else "".join(text for _, text in shown)


def mask_typed(line: str) -> str:
    """A typed command line fit for the screen and the history file: digit runs that could be card
    numbers (13-19 digits, Luhn-valid, an issuer's prefix) masked; RRNs and amounts stay."""
    return mask_card_bytes(line.encode("utf-8")).decode("utf-8")


def help_text(command: str | None = None, *, emulator: bool = True) -> str:
    """All commands (``None``) or one in detail; a sentence for an unknown one."""
    tables = [("terminal", OPERATIONS), ("console", TOOLS)] + ([("emulator (--emulate)", EMULATOR)]
                                                                 if emulator else [])
    if command is not None:
        for _, table in tables:
            if command in table:
                entry = table[command]
                return f"{entry.usage}\n  {entry.text}" + (f"\n  e.g. {entry.example}" if entry.example else "")
        if command in EMULATOR:
            return f"{command}: only with --emulate (the console's built-in virtual terminal)"
        return f"there is no command {command!r} (type help for the list)"
    lines = ["amounts are in roubles (150.00); Ctrl-C cancels a running operation; Ctrl-D or quit leaves"]
    for title, table in tables:
        lines.append(f"{title}:")
        lines += [f"  {entry.usage:<34} {entry.text}" for entry in table.values()]
    lines.append("help COMMAND says more about one command")
    return "\n".join(lines)


HELP = help_text()


class ConsoleQuit(Exception):
    """The technician asked to leave."""


def console_history(path: str | Path) -> History:
    """The console's persistent history in ``path`` (prompt_toolkit's FileHistory); a card number
    typed into a command (``card 4111…``) is masked before the line reaches the file. A file that
    cannot be written costs the history, never the console (one warning in the log)."""
    from prompt_toolkit.history import FileHistory

    class ConsoleHistory(FileHistory):
        broken = False

        def load_history_strings(self) -> Iterable[str]:
            try:
                yield from super().load_history_strings()
            except OSError as error:
                self.broken = True
                log.warning("the console's history cannot be read from %s: %s", path, error.strerror or error)

        def store_string(self, string: str) -> None:
            if self.broken:
                return
            try:
                super().store_string(mask_typed(string))
            except OSError as error:
                self.broken = True
                log.warning("the console's history cannot be written to %s: %s", path, error.strerror or error)

    return ConsoleHistory(str(path))


def default_history_path() -> Path:
    """Where the console keeps its history unless ``--history`` says otherwise: beside the default
    journal (the XDG data folder)."""
    return default_journal_path().parent / "console-history"


class _Usage(Exception):
    """A command line that cannot be run as typed; the message is the sentence to show."""


class Console:
    """Turns command lines into client calls (see the module docstring).

    ``show`` receives everything the console says outside a command's own answer (trace lines,
    progress, notes) as plain text or styled fragments; :meth:`handle` returns the answer.
    ``emulator`` is the control handle of a built-in virtual terminal (``--emulate``); ``history``
    the prompt's history (for the ``history`` command); ``clock`` stamps trace lines.
    """

    def __init__(self, client: EcrClient, show: Callable[[Shown], None] = print, *,
                 emulator: TerminalControl | None = None, history: History | None = None,
                 clock: Callable[[], datetime] = datetime.now) -> None:
        self.client = client
        self.show = show
        self.emulator = emulator
        self.history = history
        self.clock = clock
        self.trace_mode = "off"
        self._trace_streams: dict[str, DescribedStream] = {}  # per direction: whole frames, parts together
        self._quiet = QuietTimers(QUIET_FLUSH, self._flush_quiet)  # per direction: show what is held
        self.last_result = "-"
        self.terminal_id = client.terminal_id or "-"
        self._operation: asyncio.Task[Result | list[Recovery]] | None = None
        self._operation_name = ""
        self._abort_asked = False
        client.trace = self._trace
        client.on_progress = lambda progress: self.show(
            [("class:note", f"… {progress.text or 'terminal busy'}")])

    # --- state ------------------------------------------------------------------------------------
    @property
    def tracing(self) -> bool:
        """Whether frames are shown at all."""
        return self.trace_mode != "off"

    @tracing.setter
    def tracing(self, on: bool) -> None:
        self.trace_mode = "both" if on else "off"

    @property
    def busy(self) -> bool:
        """An operation is running on the terminal."""
        return self._operation is not None and not self._operation.done()

    @property
    def link_state(self) -> str:
        """``idle``, ``running OPERATION`` or ``aborting OPERATION``."""
        if not self.busy:
            return "idle"
        return f"{'aborting' if self._abort_asked else 'running'} {self._operation_name}"

    def toolbar(self) -> Fragments:
        """The bottom toolbar: port, protocol, link state, terminal id, last result."""
        port = self.client.port if isinstance(self.client.port, str) else self.client.port.url
        state = self.link_state
        return [
            ("class:bottom-toolbar.key", " port "), ("class:bottom-toolbar", port),
            ("class:bottom-toolbar.key", " │ protocol "), ("class:bottom-toolbar", self.client.protocol.name),
            ("class:bottom-toolbar.key", " │ link "),
            ("class:bottom-toolbar.busy" if state != "idle" else "class:bottom-toolbar", state),
            ("class:bottom-toolbar.key", " │ terminal "), ("class:bottom-toolbar", self.terminal_id),
            ("class:bottom-toolbar.key", " │ last "), ("class:bottom-toolbar", self.last_result + " "),
        ]

    def unresolved_report(self) -> Shown | None:
        """The journal's unresolved operations of this terminal and the offer to recover them; None
        when there are none."""
        entries = self.client.unresolved()
        if not entries:
            return None
        lines = [f"{len(entries)} operation(s) of this terminal have an unknown outcome in the journal:"]
        lines += ["  " + _describe_entry(entry) for entry in entries]
        lines.append("type recover to resolve them (emergency reversal), journal to list them again")
        return [("class:unknown", lines[0] + "\n"), ("", "\n".join(lines[1:]))]

    # --- Ctrl-C -----------------------------------------------------------------------------------
    def interrupt(self) -> Shown:
        """What Ctrl-C does: cancel the running operation. With a protocol that has an abort (Arcus2)
        the terminal is asked first; a second Ctrl-C stops waiting for its answer. Never quits."""
        if not self.busy:
            return [("class:note", "nothing is running (Ctrl-D or quit leaves the console)")]
        assert self._operation is not None
        name = self._operation_name
        if self.client.protocol.capabilities.abort and not self._abort_asked and name != "recover":
            self._abort_asked = True
            try:
                self.client.abort()
            except (PosbridgeError, LinkError) as error:
                log.warning("abort failed: %s", error)
            else:
                return [("class:note", f"asking the terminal to abort the {name}; "
                                       "Ctrl-C again stops waiting for its answer (the outcome is then unknown)")]
        self._operation.cancel()
        return [("class:note", f"cancelling the {name}…")]

    # --- commands ---------------------------------------------------------------------------------
    def runs_on_terminal(self, line: str) -> bool:
        """Whether ``line`` is a command that talks to the terminal (the prompt runs it in the
        background, so that Ctrl-C can reach it)."""
        try:
            words = shlex.split(line)
        except ValueError:
            return False
        return bool(words) and words[0].lower() in OPERATIONS

    async def handle(self, line: str) -> Shown:
        """Run one command line; every error comes back as a sentence (only ``quit`` raises)."""
        try:
            words = shlex.split(line)
        except ValueError as error:
            return _error(f"cannot read that line: {error} (a quote left open?)")
        if not words:
            return ""
        command, args = words[0].lower(), words[1:]
        try:
            if command in OPERATIONS:
                if self.busy:
                    return _error(f"the {self._operation_name} is still running: wait for it, or Ctrl-C to cancel it")
                return await self._operate(command, args)
            return self._tool(command, args)
        except ConsoleQuit:
            raise
        except _Usage as error:
            return _error(str(error))
        except (InvalidRequest, ValueError) as error:  # checks of the request and the emulator's rules
            return _error(f"{command}: {error}")
        except PosbridgeError as error:
            return _error(f"{command}: {error}")
        except Exception as error:  # a bug of ours: said in a sentence, the traceback goes to the log
            log.exception("console command %r failed", line)
            text = f"{command} failed inside posbridge ({type(error).__name__}); the log has the details"
            if command in OPERATIONS:  # it may have reached the terminal: the journal knows
                text += "; journal shows whether its outcome is left unknown (then recover resolves it)"
            return _error(text)

    async def _operate(self, command: str, args: list[str]) -> Shown:
        call = self._client_call(command, args)
        self._operation_name = command
        self._abort_asked = False
        task = asyncio.ensure_future(call())
        self._operation = task
        try:
            outcome = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the console itself is being stopped
            return self._unknown(command, "cancelled by Ctrl-C")
        except LinkError as error:
            return self._unknown(command, str(error))
        except (TerminalBusy, JournalError) as error:
            self.last_result = f"{command} not sent"
            return _error(f"{command} was not sent: {error}")
        finally:
            self._operation = None
        if isinstance(outcome, list):
            return self._recovered(outcome)
        return self._result(outcome)

    def _client_call(self, command: str, args: list[str]) -> Callable[[], Awaitable[Result | list[Recovery]]]:
        ecr = self.client
        entry = OPERATIONS[command]
        if command in _MONEY_ARGS:
            needed = _MONEY_ARGS[command]
            if len(args) < needed:
                what = "AMOUNT" if needed == 1 else "AMOUNT and RRN"
                raise _Usage(f"{command} needs {what}, e.g. {entry.example}")
            if len(args) > needed + (1 if needed == 2 else 0):
                raise _Usage(f"{command} takes {entry.usage.split(' ', 1)[1]}, not {len(args)} words")
            amount = parse_amount(args[0])
            rrn = args[1] if needed == 2 else ""
            auth = args[2] if len(args) > 2 else None
            money: dict[str, Callable[[], Awaitable[Result]]] = {
                "sale": lambda: ecr.sale(amount),
                "preauth": lambda: ecr.preauth(amount),
                "refund": lambda: ecr.refund(amount, rrn=rrn, auth_code=auth),
                "cancel": lambda: ecr.cancel(amount, rrn=rrn, auth_code=auth),
                "completion": lambda: ecr.completion(amount, rrn=rrn, auth_code=auth),
                "cancel-preauth": lambda: ecr.cancel_preauth(amount, rrn=rrn, auth_code=auth),
            }
            return money[command]
        if args:
            raise _Usage(f"{command} takes no arguments")
        plain_calls: dict[str, Callable[[], Awaitable[Result | list[Recovery]]]] = {
            "settlement": ecr.settlement, "short-report": ecr.short_report, "full-report": ecr.full_report,
            "slip-copy": ecr.slip_copy, "test": ecr.test_connection, "recover": ecr.recover,
            "reverse-last": ecr.reverse_last,
        }
        return plain_calls[command]

    def _result(self, result: Result) -> Shown:
        amount = f" {format_amount(result.amount, result.currency or 643)}" if result.amount is not None else ""
        self.last_result = f"{result.operation.value} {result.status.value.upper()}{amount}"
        if result.terminal_id:
            self.terminal_id = result.terminal_id
        text = format_result(result)
        first, _, rest = text.partition("\n")
        style = "class:approved" if result.approved else "class:declined"
        fragments: Fragments = [(style, first)]
        if rest:
            fragments.append(("", "\n" + rest))
        if result.status is Status.ABORTED:
            fragments.append(("class:note", "\n  the terminal confirmed the abort: the operation is closed in the "
                              "journal with this answer"))
        return fragments

    def _unknown(self, command: str, why: str) -> Shown:
        self.last_result = f"{command} outcome unknown"
        return [
            ("class:unknown", f"{command}: outcome unknown ({why})."),
            ("", f"\n  The journal keeps the {command} as unknown; type recover to resolve it "
                 "(emergency reversal), before or after other operations."),
        ]

    def _recovered(self, recoveries: list[Recovery]) -> Shown:
        if not recoveries:
            self.last_result = "recover: nothing to do"
            return "nothing to recover: no operation of this terminal has an unknown outcome"
        resolved = sum(r.resolved for r in recoveries)
        self.last_result = f"recover: {resolved} of {len(recoveries)} resolved"
        lines = [r.describe() for r in recoveries]
        style = "class:approved" if resolved == len(recoveries) else "class:unknown"
        return [("", "\n".join(lines) + "\n"),
                              (style, f"{resolved} of {len(recoveries)} resolved")]

    def _tool(self, command: str, args: list[str]) -> Shown:
        if command in ("quit", "exit"):
            if self.busy:
                return _error(f"the {self._operation_name} is still running: Ctrl-C cancels it, then quit")
            raise ConsoleQuit
        if command == "help":
            return help_text(args[0].lower() if args else None, emulator=self.emulator is not None)
        if command == "journal":
            entries = self.client.unresolved()
            if not entries:
                return "no unresolved operations"
            return "\n".join(_describe_entry(entry) for entry in entries)
        if command == "trace":
            mode = {"on": "both"}.get(args[0].lower(), args[0].lower()) if len(args) == 1 else ""
            if mode not in TRACE_MODES:
                return _error("trace takes one of hex, decoded, both, off (e.g. trace both)")
            self.trace_mode = mode
            return f"trace {mode}"
        if command == "decode":
            digits = "".join(args)
            if not digits:
                raise _Usage("decode needs the bytes in hex, e.g. decode 02 05 00 19 02 00 32 31 a5 c2")
            try:
                data = bytes.fromhex(digits)
            except ValueError:
                raise _Usage("decode needs hex digits in pairs (0-9, a-f), e.g. decode 06") from None
            return "\n".join(mask_decoded(item.summary()) for item in self.client.protocol.describe(data))
        if command == "history":
            return self._history(args)
        if command in EMULATOR:
            if self.emulator is None:
                return _error(f"{command} works only with --emulate (the console's built-in virtual terminal); "
                              "a real terminal takes its card and its outcome from the card holder and the bank")
            return self._emulate(command, args, self.emulator)
        return _error(f"there is no command {command!r} (type help for the list)")

    def _history(self, args: list[str]) -> Shown:
        if self.history is None:
            return "this console keeps no history"
        if len(args) > 1 or (args and not args[0].isdigit()):
            raise _Usage("history takes one number at most, e.g. history 50")
        count = int(args[0]) if args else 20
        strings = self.history.get_strings()  # oldest first; the prompt loaded them at its start
        if not strings and hasattr(self.history, "load_history_strings"):
            strings = list(reversed(list(self.history.load_history_strings())))
        recent = strings[-count:] if count else []
        first = len(strings) - len(recent) + 1
        return "\n".join(f"{first + i:>4}  {mask_typed(text)}" for i, text in enumerate(recent)) \
            or "no commands yet"

    def _emulate(self, command: str, args: list[str], control: TerminalControl) -> Shown:
        if command == "card":
            if not args:
                raise _Usage("card needs a card number or a test-card name, e.g. card insufficient_funds")
            queued = control.cards(*args)
            return f"queued {mask_card_numbers(', '.join(args))}: {queued} card(s) wait for the next card operations"
        if command == "decline":
            code = args[0] if args else "05"
            operation = args[1].lower() if len(args) > 1 else "sale"
            if len(args) > 2:
                raise _Usage("decline takes CODE and OPERATION at most, e.g. decline 51 refund")
            control.decline_next(code, operation=None if operation == "any" else operation)
            what = "operation" if operation == "any" else operation
            return f"the next {what} will be declined with code {code}"
        if command == "rule":
            if not args:
                raise _Usage(f"rule needs KEY=VALUE words, e.g. {EMULATOR['rule'].example}")
            fields = dict(_rule_field(word) for word in args)
            control.rule(**fields)
            return f"rule added: {mask_typed(' '.join(args))}"
        if command == "delay":
            if len(args) != 2 or args[0] not in ("card", "pin", "host"):
                raise _Usage("delay needs card, pin or host and the seconds, e.g. delay card 5")
            seconds = _seconds(args[1], "delay")
            control.delays(**{args[0]: seconds})
            return f"{args[0]} delay {seconds:g} s from now on"
        if command == "fault":
            if len(args) != 2 or args[0] not in ("host", "line"):
                raise _Usage("fault needs host or line and a fault, e.g. fault host no_connection, fault line none")
            value = None if args[1].lower() in ("none", "off") else args[1]
            if args[0] == "host":
                control.host_fault(value)
            else:
                control.line_faults(value)
            return f"{args[0]} fault: {value or 'none'}"
        if command == "reset":
            control.reset()
            return "the emulator forgot its rules, cards, delays and faults"
        rules = control.rules()
        port = self.client.port if isinstance(self.client.port, str) else self.client.port.url
        lines = [f"emulated terminal on {port}"]
        lines += [f"  rule {i + 1}: {rule}" for i, rule in enumerate(rules)] or ["  no outcome rules"]
        return "\n".join(lines)

    # --- the line ---------------------------------------------------------------------------------
    def _trace(self, direction: str, data: bytes) -> None:
        if self.trace_mode == "off":
            return
        # Whole frames only (a frame cut over two reads is shown once), and a split message's parts
        # together: a card number is then masked even when a read or a part boundary cuts it.
        stream = self._trace_streams.get(direction)
        if stream is None:
            stream = self._trace_streams[direction] = DescribedStream(self.client.protocol.describe)
        self._show_pieces(direction, stream.feed(data))
        # A half frame or digits ending noise are held for the next read; a line that then goes
        # quiet shows them as they are (a technician must see the last bytes the terminal sent).
        self._quiet.restart(direction, bool(stream.pending))

    def _flush_quiet(self, direction: str) -> None:
        stream = self._trace_streams.get(direction)
        if stream is not None and self.trace_mode != "off":
            self._show_pieces(direction, stream.flush())

    def _show_pieces(self, direction: str, pieces: list[Piece]) -> None:
        if not pieces:
            return
        shown, items = joined(pieces)  # bytes masked (across parts too), entries with fields masked
        stamp = self.clock().strftime("%H:%M:%S.%f")[:-3]
        arrow = "->" if direction == "tx" else "<-"
        fragments: Fragments = [("class:time", stamp + " "), (f"class:{direction}", arrow + " ")]
        summaries = [mask_decoded(item.summary()) for item in items]
        if self.trace_mode in ("hex", "both"):
            fragments.append(("class:hex", shown.hex(" ")))
        if self.trace_mode in ("decoded", "both"):
            indent = " " * (len(stamp) + 4)
            for i, summary in enumerate(summaries):
                lead = "" if i == 0 and self.trace_mode == "decoded" else "\n" + indent
                fragments.append(("class:decoded", lead + summary))
        self.show(fragments)


def _error(text: str) -> Fragments:
    return [("class:error", text)]


def _describe_entry(entry: Any) -> str:
    request = entry.request
    what = request.operation.value if isinstance(request.operation, Operation) else str(request.operation)
    amount = f" {format_amount(request.amount, request.currency or 643)}" if request.amount is not None else ""
    error = entry.error or ""
    why = f": {error}" if error else ""
    return f"#{entry.id} {what}{amount} transaction {request.transaction_id or '-'} ({entry.state}{why})"


def _seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Usage(f"{what} needs seconds as a number, e.g. 2.5, not {text!r}") from None
    if not 0 <= value <= 3600:
        raise _Usage(f"{what} takes 0 to 3600 seconds, not {text}")
    return value


def _rule_field(word: str) -> tuple[str, Any]:
    key, sep, value = word.partition("=")
    if not sep or not key:
        raise _Usage(f"rule words are KEY=VALUE, e.g. code=51; {word!r} is not")
    if key in ("card_delay", "pin_delay", "host_delay"):
        return key, _seconds(value, key)
    if key == "nth":
        if not value.isdigit():
            raise _Usage(f"nth needs a whole number, not {value!r}")
        return key, int(value)
    if key == "once":
        if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise _Usage(f"once needs true or false, not {value!r}")
        return key, value.lower() in ("true", "yes", "1")
    return key, value


def command_completer(emulator: bool) -> Any:
    """Tab completion of the commands and their fixed words (trace modes, test cards, faults);
    the emulator's commands only with ``emulator``. A prompt_toolkit NestedCompleter."""
    from prompt_toolkit.completion import NestedCompleter

    from posbridge.emulator.rules import TEST_CARD_NAMES

    names = list(OPERATIONS) + list(TOOLS) + (list(EMULATOR) if emulator else [])
    tree: dict[str, Any] = {name: None for name in names}
    tree["trace"] = {mode: None for mode in TRACE_MODES}
    tree["help"] = {name: None for name in names}
    if emulator:
        tree["card"] = {name: None for name in TEST_CARD_NAMES}
        tree["delay"] = {"card": None, "pin": None, "host": None}
        tree["fault"] = {"host": {"no_connection": None, "answer_lost": None, "request_not_sent": None,
                                  "none": None}, "line": {"none": None}}
        tree["decline"] = {"05": None, "51": None, "54": None}
    return NestedCompleter.from_nested_dict(tree)


async def run_console(client: EcrClient, *, trace: bool | str = False, input: Input | None = None,
                      output: Output | None = None, history: History | None = None,
                      emulator: TerminalControl | None = None, transcript: list[str] | None = None) -> None:
    """The interactive loop (see the module docstring) until ``quit`` or Ctrl-D.

    ``trace``: True (both), or a mode of :data:`TRACE_MODES`. ``input`` and ``output`` default to the
    terminal's (tests pass a pipe and a DummyOutput); ``history`` defaults to one in memory;
    ``emulator`` enables the emulator's commands; ``transcript`` receives the plain text of
    everything shown (tests read it).
    """
    from prompt_toolkit import PromptSession
    from prompt_toolkit.application import get_app_or_none
    from prompt_toolkit.filters import has_completions
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.patch_stdout import patch_stdout
    from prompt_toolkit.shortcuts import print_formatted_text
    from prompt_toolkit.styles import Style

    style = Style.from_dict(STYLE_RULES)
    history = history if history is not None else InMemoryHistory()

    def show(shown: Shown) -> None:
        if transcript is not None:
            transcript.append(plain(shown))
        fragments = [("", shown)] if isinstance(shown, str) else shown
        print_formatted_text(FormattedText(fragments), output=output, style=style)

    console = Console(client, show, emulator=emulator, history=history)
    if trace:
        console.trace_mode = "both" if trace is True else str(trace)
    bindings = KeyBindings()

    typed: list[str] = []

    @bindings.add("enter", filter=~has_completions)
    def _enter(event: Any) -> None:
        # The accepted line stays on the screen as typed: a card number typed for the emulator
        # (card 4111…) is shown masked; the command itself gets the digits.
        buffer = event.current_buffer
        masked = mask_typed(buffer.text)
        if masked != buffer.text:
            typed.append(buffer.text)
            buffer.text = masked
        buffer.validate_and_handle()

    @bindings.add("c-c")
    def _ctrl_c(event: Any) -> None:
        # Ctrl-C never leaves: it cancels the running operation, or clears the line being typed.
        if not console.busy:
            event.app.current_buffer.reset()
        show(console.interrupt())

    session: PromptSession[str] = PromptSession(
        completer=command_completer(emulator is not None), history=history, input=input, output=output,
        bottom_toolbar=lambda: FormattedText(console.toolbar()), key_bindings=bindings, style=style,
        refresh_interval=0.5,
        complete_while_typing=False)
    running: set[asyncio.Task[None]] = set()

    async def run_in_background(line: str) -> None:
        show(await console.handle(line))
        app = get_app_or_none()
        if app is not None:
            app.invalidate()  # the toolbar's link state and last result changed

    port = client.port if isinstance(client.port, str) else client.port.url
    show(f"posbridge console — {client.protocol.title} on {port}"
         + (" (a built-in virtual terminal)" if emulator is not None else "")
         + "\nhelp lists the commands; Ctrl-C cancels a running operation; Ctrl-D or quit leaves")
    async with client:
        report = console.unresolved_report()
        if report is not None:
            show(report)
        with patch_stdout(raw=True):
            try:
                while True:
                    try:
                        line = await session.prompt_async("posbridge> ")
                        if typed:
                            line = typed.pop()
                    except EOFError:
                        if console.busy and session.input.closed:
                            # Piped commands that ended: nothing more can be typed; let the operation finish.
                            await asyncio.gather(*running, return_exceptions=True)
                            return
                        if console.busy:
                            show(_error(f"the {console.link_state.split()[-1]} is still running: "
                                        "Ctrl-C cancels it, then Ctrl-D leaves"))
                            continue
                        return
                    except KeyboardInterrupt:  # not bound to Ctrl-C any more; kept for other inputs
                        continue
                    if console.runs_on_terminal(line) and not console.busy:
                        task = asyncio.ensure_future(run_in_background(line))
                        running.add(task)
                        task.add_done_callback(running.discard)
                        await asyncio.sleep(0)  # let it start: the toolbar says "running" at once
                        continue
                    try:
                        text = await console.handle(line)
                    except ConsoleQuit:
                        return
                    if text:
                        show(text)
            finally:
                for task in list(running):
                    task.cancel()
                if running:
                    await asyncio.gather(*running, return_exceptions=True)


# --- the `posbridge console` command ------------------------------------------------------------
def add_console_arguments(parser: argparse.ArgumentParser) -> None:
    """The console's own options (the link options are added by the CLI)."""
    parser.add_argument("--emulate", action="store_true",
                        help="start a built-in virtual terminal (no --port) and add commands to set its next "
                             "card, outcome, delays and faults")
    parser.add_argument("--history", metavar="FILE", default=None,
                        help=f"the console's command history (default {default_history_path()})")


async def run_console_command(args: argparse.Namespace, make_client: Callable[[], EcrClient]) -> int:
    """``posbridge console``: open the history, start the emulator when asked, run the loop.
    ``make_client`` builds the client from ``args`` (``args.port`` is set first under --emulate)."""
    history_path = Path(args.history) if args.history else default_history_path()
    if not args.history:
        history_path.parent.mkdir(parents=True, exist_ok=True)
    elif not history_path.parent.is_dir():
        raise ValueError(f"--history: no folder {history_path.parent} for the console's history file")
    history = console_history(history_path)
    trace = bool(getattr(args, "trace", False))
    if not getattr(args, "emulate", False):
        if not args.port:
            raise ValueError("console needs --port URL of the terminal, or --emulate for a built-in virtual terminal")
        await run_console(make_client(), trace=trace, history=history)
        return 0
    if args.port:
        raise ValueError("--emulate starts its own virtual terminal: leave out --port")
    from posbridge.testing.background import BackgroundTerminal

    terminal = await asyncio.to_thread(BackgroundTerminal(args.protocol, transport="virtual").start)
    try:
        args.port = terminal.url
        await run_console(make_client(), trace=trace, history=history, emulator=terminal.control)
    finally:
        await asyncio.to_thread(terminal.stop)
    return 0


__all__ = ["COMMANDS", "Console", "ConsoleQuit", "HELP", "STYLE_RULES", "TRACE_MODES", "add_console_arguments",
           "command_completer", "console_history", "default_history_path", "help_text", "mask_typed", "plain",
           "run_console", "run_console_command"]
