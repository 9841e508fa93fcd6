"""The technician's console: commands over the client, and the prompt_toolkit loop itself (driven
through prompt_toolkit's pipe input, against the console's own built-in virtual terminal)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from posbridge.devices import open_device
from posbridge.cli.console import Console, ConsoleQuit, console_history, plain, run_console
from posbridge.ecr.client import EcrClient
from posbridge.emulator.cards import Card
from posbridge.journal import Journal
from posbridge.testing import TerminalLink
from posbridge.testing.background import BackgroundTerminal

ROOT = Path(__file__).resolve().parents[2]
STAMP = r"\d\d:\d\d:\d\d\.\d{3}"
PROTOCOLS = ["inpas", "arcus2"]
PYTHON_WORDS = ("Traceback", "Error:", "list index", "object has no", "NoneType", "invalid literal")


def collector() -> tuple[list[str], Callable[[object], None]]:
    shown: list[str] = []
    return shown, lambda item: shown.append(plain(item))  # type: ignore[arg-type]


async def test_commands_run_operations_and_show_results():
    async with TerminalLink("inpas") as link:
        console = Console(link.client, lambda _: None)
        sale = plain(await console.handle("sale 150.00"))
        assert sale.startswith("sale: APPROVED") and "150.00 RUB" in sale
        rrn = next(line.split()[-1] for line in sale.splitlines() if line.strip().startswith("rrn:"))
        assert plain(await console.handle(f"refund 50 {rrn}")).startswith("refund: APPROVED")
        assert console.last_result == "refund APPROVED 50.00 RUB"
        link.terminal.cards.present(Card("5432543254325430"))
        declined = plain(await console.handle("sale 1.00"))
        assert "DECLINED" in declined and "5432543254325430" not in declined
        assert "totals: sales 1 / 150.00 RUB" in plain(await console.handle("settlement"))
        assert plain(await console.handle("journal")) == "no unresolved operations"
        assert plain(await console.handle("recover")) == \
            "nothing to recover: no operation of this terminal has an unknown outcome"


async def test_trace_modes_show_time_direction_hex_and_decoded_fields():
    async with TerminalLink("inpas") as link:
        shown, show = collector()
        console = Console(link.client, show)
        assert plain(await console.handle("trace both")) == "trace both"
        await console.handle("test")
        request = next(line for line in shown if re.match(rf"{STAMP} -> 02 ", line))
        assert "operation_code=26" in request.splitlines()[1]  # decoded below its bytes
        assert any(re.fullmatch(rf"{STAMP} <- 06\n +ACK", line) for line in shown)

        shown.clear()
        await console.handle("trace decoded")
        await console.handle("test")
        assert any(re.fullmatch(rf"{STAMP} <- ACK", line) for line in shown)
        assert not any(re.search(r"-> 02 [0-9a-f]{2} ", line) for line in shown)  # no hex

        shown.clear()
        await console.handle("trace hex")
        await console.handle("test")
        assert any(re.fullmatch(rf"{STAMP} <- 06", line) for line in shown)
        assert not any("operation_code" in line for line in shown)

        shown.clear()
        assert plain(await console.handle("trace off")) == "trace off"
        await console.handle("test")
        assert shown == []


async def test_trace_lines_are_coloured_by_direction():
    async with TerminalLink("arcus2") as link:
        fragments: list[object] = []
        console = Console(link.client, fragments.append)
        await console.handle("trace both")
        await console.handle("test")
        styles = {style for item in fragments if isinstance(item, list) for style, _ in item}
        assert {"class:time", "class:tx", "class:rx", "class:hex", "class:decoded"} <= styles
        answer = await console.handle("test")
        assert isinstance(answer, list) and answer[0][0] == "class:approved"


async def test_trace_decodes_arcus2_frames_and_the_sale_completes():
    """The Arcus2 trace once raised inside the pump's callback (a describer entry without INPAS's
    shape) and the sale never ended: one description schema for every protocol."""
    async with TerminalLink("arcus2") as link:
        shown, show = collector()
        console = Console(link.client, show)
        await console.handle("trace on")
        sale = plain(await console.handle("sale 2.00"))
        assert sale.startswith("sale: APPROVED"), sale
        decoded = [part.strip() for line in shown for part in line.splitlines()[1:]]
        assert "ENQ" in decoded and "ACK" in decoded and "EOT" in decoded
        assert any(line.startswith("SOH v2 length") and "request(Q): operation=1, amount=200" in line
                   for line in decoded)
        assert any("result(R)" in line and "response_code=000" in line for line in decoded)
        assert "4111111111111111" not in "\n".join(shown)


def test_posbridge_console_arcus2_with_trace_completes_a_sale(tmp_path: Path) -> None:
    """The command as a technician types it, against ``posbridge emulate`` in its own process;
    commands piped in (quit while the sale runs is refused; the end of input waits for it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "POSBRIDGE_LOCK_DIR": str(tmp_path)}
    emulator = subprocess.Popen(
        [sys.executable, "-m", "posbridge", "emulate", "--protocol", "arcus2", "--port", "tcp-listen://127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", cwd=ROOT, env=env)
    try:
        assert emulator.stdout is not None
        found = re.search(r"listening on tcp-listen://127\.0\.0\.1:(\d+)", emulator.stdout.readline())
        assert found, "the emulator did not start"
        console = subprocess.run(
            [sys.executable, "-m", "posbridge", "console", "--protocol", "arcus2", "--trace",
             "--port", f"tcp://127.0.0.1:{found.group(1)}", "--journal", str(tmp_path / "ecr.sqlite"),
             "--history", str(tmp_path / "history")],
            input="sale 1.00\nquit\n", capture_output=True, text=True, encoding="utf-8", cwd=ROOT, env=env,
            timeout=60)
    finally:
        emulator.terminate()
        emulator.communicate(timeout=10)
    out = console.stdout
    assert console.returncode == 0, console.stderr
    assert "sale: APPROVED" in out and "1.00 RUB" in out
    assert re.search(rf"^{STAMP} -> 01 00 [0-9a-f ]+$", out, re.M)  # the request frame, in hex
    assert "request(Q): operation=1, amount=100" in out and "result(R): operation=1, response_code=000" in out
    assert "trace callback failed" not in console.stderr + out
    assert "4111111111111111" not in out + console.stderr


async def test_bad_input_is_answered_in_sentences():
    async with TerminalLink("inpas") as link:
        console = Console(link.client, lambda _: None)
        answers = {line: plain(await console.handle(line)) for line in (
            "sale", "sale 0", "sale abc", "sale 1 2", "refund", "refund 5", "cancel 5", 'sale "150', "fly",
            "trace maybe", "decode", "decode zz", "history", "card 4111111111111111", "delay card 5")}
        assert answers["sale"] == "sale needs AMOUNT, e.g. sale 150.00"
        assert answers["refund"] == "refund needs AMOUNT and RRN, e.g. refund 50.00 123456789012"
        assert answers["refund 5"] == answers["refund"]
        assert answers["cancel 5"] == "cancel needs AMOUNT and RRN, e.g. cancel 150.00 123456789012"
        assert answers["sale 1 2"] == "sale takes AMOUNT, not 2 words"
        assert answers["sale abc"] == "sale: not an amount: 'abc' (expected e.g. 150.00)"
        assert answers["sale 0"].startswith("sale: ")
        assert answers['sale "150'].startswith("cannot read that line:")
        assert answers["fly"] == "there is no command 'fly' (type help for the list)"
        assert answers["trace maybe"] == "trace takes one of hex, decoded, both, off (e.g. trace both)"
        assert answers["decode zz"] == "decode needs hex digits in pairs (0-9, a-f), e.g. decode 06"
        assert answers["decode"].startswith("decode needs the bytes in hex")
        assert answers["history"] == "this console keeps no history"
        assert answers["card 4111111111111111"].startswith("card works only with --emulate")
        for line, answer in answers.items():
            assert not any(word in answer for word in PYTHON_WORDS), (line, answer)
        assert "4111111111111111" not in "\n".join(answers.values())
        assert plain(await console.handle("decode 0205001902003231a5c2")) == \
            "STX length 5 crc ok: 25:operation_code=21"
        assert link.client.unresolved() == [] and link.terminal.host.totals().sale_count == 0  # nothing sent
        with pytest.raises(ConsoleQuit):
            await console.handle("quit")


async def test_a_bug_of_ours_is_said_in_a_sentence_and_logged(monkeypatch, caplog):
    async with TerminalLink("inpas") as link:
        console = Console(link.client, lambda _: None)

        async def broken(amount: int) -> None:
            raise IndexError("list index out of range")
        monkeypatch.setattr(link.client, "sale", broken)
        answer = plain(await console.handle("sale 1.00"))
        assert answer == ("sale failed inside posbridge (IndexError); the log has the details; journal shows "
                          "whether its outcome is left unknown (then recover resolves it)")
        assert "list index out of range" in caplog.text  # the details, for the bug report
        assert plain(await console.handle("test")).startswith("test_connection: APPROVED")  # and it goes on


def test_completion_offers_commands_and_their_words():
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from posbridge.cli.console import command_completer

    def offered(text: str, emulator: bool = True) -> list[str]:
        return [c.text for c in command_completer(emulator).get_completions(Document(text), CompleteEvent())]

    assert offered("tr") == ["trace"]
    assert offered("trace ") == ["hex", "decoded", "both", "off"]
    assert offered("help ref") == ["refund"]
    assert "insufficient_funds" in offered("card ")
    assert offered("fault host n") == ["no_connection", "none"]
    assert offered("ca") == ["cancel", "cancel-preauth", "card"]
    assert offered("ca", emulator=False) == ["cancel", "cancel-preauth"]


async def test_help_lists_commands_and_explains_one():
    async with TerminalLink("inpas") as link:
        console = Console(link.client, lambda _: None)
        everything = plain(await console.handle("help"))
        assert "sale AMOUNT" in everything and "trace hex|decoded|both|off" in everything
        assert "card CARD" not in everything  # the emulator's commands only with --emulate
        assert plain(await console.handle("help refund")) == (
            "refund AMOUNT RRN [AUTH]\n  return all or part of a purchase (возврат)\n"
            "  e.g. refund 50.00 123456789012")
        assert plain(await console.handle("help card")) == \
            "card: only with --emulate (the console's built-in virtual terminal)"
        assert plain(await console.handle("help fly")) == "there is no command 'fly' (type help for the list)"


# --- the prompt loop, through prompt_toolkit's pipe input ---------------------------------------------
class Session:
    """One run_console over a pipe, against a built-in (background) virtual terminal."""

    def __init__(self, client: EcrClient, terminal: BackgroundTerminal, history_path: Path) -> None:
        self.client, self.terminal = client, terminal
        self.transcript: list[str] = []
        self.history_path = history_path
        self.task: asyncio.Task[None] | None = None

    def send(self, text: str) -> None:
        self.pipe.send_text(text)

    async def until(self, needle: str, timeout: float = 20.0) -> str:
        """The first shown text holding ``needle`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            for text in self.transcript:
                if needle in text:
                    return text
            assert self.task is not None
            if self.task.done():
                self.task.result()
                raise AssertionError(f"the console ended before showing {needle!r}: {self.transcript}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not shown within {timeout} s: {self.transcript}")
            await asyncio.sleep(0.02)

    @contextlib.asynccontextmanager
    async def running(self, trace: bool = False) -> AsyncIterator[Session]:
        with create_pipe_input() as self.pipe:
            history = console_history(self.history_path)
            self.task = asyncio.ensure_future(run_console(
                self.client, trace=trace, input=self.pipe, output=DummyOutput(), history=history,
                emulator=self.terminal.control, transcript=self.transcript))
            try:
                yield self
                await asyncio.wait_for(self.task, 20)
            finally:
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.task


@pytest.fixture
def emulated(tmp_path: Path) -> Callable[[str], contextlib.AbstractContextManager[BackgroundTerminal]]:
    @contextlib.contextmanager
    def start(protocol: str):  # type: ignore[no-untyped-def]
        with BackgroundTerminal(protocol, transport="virtual") as terminal:
            yield terminal
    return start


def terminal_state(terminal: BackgroundTerminal) -> str:
    return str(terminal.call(lambda: terminal.terminal.state))


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_prompt_runs_operations_with_trace_and_steers_the_emulator(protocol, emulated, tmp_path):
    with emulated(protocol) as terminal, Journal(tmp_path / "ecr.sqlite") as journal:
        client = EcrClient(terminal.url, protocol, journal=journal)
        session = Session(client, terminal, tmp_path / "history")
        async with session.running(trace=True):
            await session.until("help lists the commands")
            session.send("sale 1.50\n")
            sale = await session.until("sale: APPROVED")
            assert "1.50 RUB" in sale and "411111******1111" in sale
            frames = [t for t in session.transcript if re.match(rf"{STAMP} (->|<-) [0-9a-f]{{2}}", t)]
            assert any(" -> " in t for t in frames) and any(" <- " in t for t in frames)
            assert all(len(t.splitlines()) >= 2 for t in frames)  # hex, then the decoded fields
            assert "4111111111111111" not in "\n".join(session.transcript)

            session.send("card insufficient_funds\nsale 1.00\n")
            assert "DECLINED" in await session.until("sale: DECLINED")
            session.send("decline 51\nsale 3.00\n")
            await session.until("the next sale will be declined with code 51")
            await wait_until(lambda: len([t for t in session.transcript if t.startswith("sale: DECLINED")]) == 2)
            declined = [t for t in session.transcript if t.startswith("sale: DECLINED")]
            assert re.match(r"sale: DECLINED \(code (51|051, host 51)\)", declined[1]) and "3.00 RUB" in declined[1]
            session.send("trace off\nhistory 3\n")
            assert await session.until("  sale 3.00\n") == "   5  sale 3.00\n   6  trace off\n   7  history 3"
            session.send("quit\n")
        sales = [(op.operation.value, op.amount, op.code) for op in terminal.operations()]
        assert [(name, amount) for name, amount, _ in sales] == [("sale", 150), ("sale", 100), ("sale", 300)]
        assert sales[2][2] == "51"
        assert journal.ecr.unresolved() == []


async def test_the_toolbar_shows_port_protocol_link_terminal_and_last_result(emulated, tmp_path):
    with emulated("inpas") as terminal, Journal(tmp_path / "ecr.sqlite") as journal:
        client = EcrClient(terminal.url, "inpas", journal=journal)
        console = Console(client, lambda _: None, emulator=terminal.control)
        toolbar = plain(console.toolbar())
        assert toolbar == f" port {terminal.url} │ protocol inpas │ link idle │ terminal - │ last - "
        async with client:
            await console.handle("delay card 1")
            sale = asyncio.ensure_future(console.handle("sale 2.00"))
            await wait_until(lambda: console.busy)
            assert "│ link running sale │" in plain(console.toolbar())
            await sale
        assert plain(console.toolbar()).endswith("│ link idle │ terminal 00344224 │ last sale APPROVED 2.00 RUB ")


async def test_ctrl_c_cancels_a_slow_sale_the_console_stays_and_recover_resolves_it(emulated, tmp_path):
    """INPAS SA has no ECR-side abort: Ctrl-C stops waiting, the outcome is unknown and journaled so;
    the console goes on; the next session reports the open operation and `recover` resolves it."""
    with emulated("inpas") as terminal, Journal(tmp_path / "ecr.sqlite") as journal:
        line = await open_device(terminal.url)  # one line for both sessions (a virtual pair is opened once)
        client = EcrClient(line, "inpas", journal=journal)
        session = Session(client, terminal, tmp_path / "history")
        async with session.running():
            session.send("delay card 3\nsale 2.00\n")
            await wait_until(lambda: terminal_state(terminal) == "waiting_for_card")
            session.send("quit\n")  # neither quit nor Ctrl-D leaves a running sale behind
            await session.until("the sale is still running: Ctrl-C cancels it, then quit")
            session.send("\x04")
            await session.until("the sale is still running: Ctrl-C cancels it, then Ctrl-D leaves")
            session.send("sale 1.00\n")  # one operation at a time
            await session.until("the sale is still running: wait for it, or Ctrl-C to cancel it")
            session.send("\x03")
            unknown = await session.until("outcome unknown")
            assert unknown.startswith("sale: outcome unknown (cancelled by Ctrl-C).")
            assert "type recover to resolve it" in unknown
            assert not session.task.done()  # still in the console
            [entry] = client.unresolved()
            assert entry.state == "unknown" and entry.request.amount == 200
            session.send("\x03")  # at an empty prompt: a hint, not an exit
            await session.until("nothing is running (Ctrl-D or quit leaves the console)")
            session.send("delay card 0\ntest\n")
            await session.until("test_connection: APPROVED")
            session.send("\x04")  # Ctrl-D leaves
        # A new session reports the open operation first and offers recover.
        session = Session(EcrClient(line, "inpas", journal=journal), terminal, tmp_path / "history")
        async with session.running():
            report = await session.until("unknown outcome in the journal")
            assert report.startswith("1 operation(s) of this terminal have an unknown outcome in the journal:")
            listed = f"#{entry.id} sale 2.00 RUB transaction {entry.request.transaction_id} (unknown: "
            assert listed + "interrupted before its answer came)" in report
            assert "type recover to resolve them" in report
            session.send("recover\n")
            recovered = await session.until(" resolved", timeout=30)
            assert recovered == (f"#{entry.id} sale 2.00 RUB transaction {entry.request.transaction_id}: reversed "
                                 "(host 400: reversal processed)\n1 of 1 resolved")
            session.send("quit\n")
        await line.close()
        assert journal.ecr.unresolved() == []


async def test_ctrl_c_asks_an_arcus2_terminal_to_abort_and_a_second_one_stops_waiting(emulated, tmp_path):
    """Arcus2 has an abort: the first Ctrl-C sends it; the terminal's answer (998) closes the sale.
    While the host is authorising the terminal does not abort; a second Ctrl-C stops waiting, the
    outcome is unknown and recover resolves it."""
    with emulated("arcus2") as terminal, Journal(tmp_path / "ecr.sqlite") as journal:
        client = EcrClient(terminal.url, "arcus2", journal=journal)
        session = Session(client, terminal, tmp_path / "history")
        async with session.running():
            session.send("delay card 3\nsale 2.00\n")
            await wait_until(lambda: terminal_state(terminal) == "waiting_for_card")
            session.send("\x03")
            await session.until("asking the terminal to abort the sale")
            aborted = await session.until("sale: ABORTED")
            assert "(code 998)" in aborted and "the terminal confirmed the abort" in aborted
            assert client.unresolved() == []

            session.send("delay card 0\ndelay host 3\nsale 4.00\n")
            await wait_until(lambda: terminal_state(terminal) == "authorizing")  # past the card: no abort now
            session.send("\x03")
            await wait_until(lambda: sum("asking the terminal to abort" in t for t in session.transcript) == 2)
            session.send("\x03")
            assert (await session.until("outcome unknown")).startswith("sale: outcome unknown (cancelled by Ctrl-C)")
            [entry] = client.unresolved()
            session.send("delay host 0\nrecover\n")
            assert (await session.until(" resolved", timeout=30)).endswith("1 of 1 resolved")
            session.send("quit\n")
        assert journal.ecr.unresolved() == []


async def test_history_persists_across_sessions_with_card_numbers_masked(emulated, tmp_path):
    with emulated("inpas") as terminal, Journal(tmp_path / "ecr.sqlite") as journal:
        line = await open_device(terminal.url)
        session = Session(EcrClient(line, "inpas", journal=journal), terminal, tmp_path / "history")
        async with session.running():
            session.send("card 4111111111111111\ntest\n")
            await session.until("test_connection: APPROVED")
            session.send("quit\n")
        session = Session(EcrClient(line, "inpas", journal=journal), terminal, tmp_path / "history")
        async with session.running():
            session.send("history\nquit\n")
        await line.close()
        assert "   1  card 411111******1111\n   2  test\n   3  quit\n   4  history" in session.transcript
        stored = (tmp_path / "history").read_text(encoding="utf-8")
        assert "card 411111******1111" in stored and "4111111111111111" not in stored


async def test_a_history_file_that_cannot_be_written_costs_the_history_not_the_console(emulated, tmp_path):
    (tmp_path / "a-folder").mkdir()
    with emulated("inpas") as terminal, Journal(tmp_path / "ecr.sqlite") as journal:
        session = Session(EcrClient(terminal.url, "inpas", journal=journal), terminal, tmp_path / "a-folder")
        async with session.running():
            session.send("test\n")
            await session.until("test_connection: APPROVED")
            session.send("quit\n")


def test_posbridge_console_needs_a_port_or_emulate(tmp_path: Path) -> None:
    env = {**os.environ, "POSBRIDGE_LOCK_DIR": str(tmp_path)}
    for extra, message in (([], "console needs --port URL of the terminal, or --emulate"),
                           (["--emulate", "--port", "tcp://127.0.0.1:1"], "--emulate starts its own virtual terminal"),
                           (["--emulate", "--history", str(tmp_path / "none" / "h")], "--history: no folder")):
        history = [] if "--history" in extra else ["--history", str(tmp_path / "h")]
        run = subprocess.run([sys.executable, "-m", "posbridge", "console", "--journal", str(tmp_path / "j.sqlite"),
                              *history, *extra], capture_output=True, text=True,
                             cwd=ROOT, env=env, timeout=30, stdin=subprocess.DEVNULL)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr


async def test_emulator_commands_set_faults_rules_and_reset_in_sentences(emulated, tmp_path):
    with emulated("inpas") as terminal, Journal(tmp_path / "ecr.sqlite") as journal:
        client = EcrClient(terminal.url, "inpas", journal=journal)
        console = Console(client, lambda _: None, emulator=terminal.control)

        async def say(line: str) -> str:
            return plain(await console.handle(line))

        async with client:
            assert "card CARD" in await say("help")  # the emulator's commands are listed with --emulate
            assert await say("fault host no_connection") == "host fault: no_connection"
            assert (await say("sale 1.00")).startswith("sale: NO_CONNECTION")
            assert await say("fault host none") == "host fault: none"
            assert await say("rule amount_ends=05 code=05 once=true") == "rule added: amount_ends=05 code=05 once=true"
            assert "amount_ends" in await say("emulator")
            assert (await say("sale 1.05")).startswith("sale: DECLINED (code 05")
            assert (await say("sale 1.05")).startswith("sale: APPROVED")  # once
            assert await say("fault line rx:corrupt@5,seed=1") == "line fault: rx:corrupt@5,seed=1"
            assert (await say("sale 2.00")).startswith("sale: APPROVED")  # a NAK and a resend
            assert await say("fault line off") == "line fault: none"
            assert await say("delay host 0.2") == "host delay 0.2 s from now on"
            assert await say("reset") == "the emulator forgot its rules, cards, delays and faults"
            assert "no outcome rules" in await say("emulator")
            bad = {line: await say(line) for line in ("delay card x", "delay card", "delay wait 1", "fault host bogus",
                                                      "fault", "rule foo=1", "rule code", "card", "card nonsense",
                                                      "decline 5x", "rule nth=two")}
        assert bad["delay card x"] == "delay needs seconds as a number, e.g. 2.5, not 'x'"
        assert bad["delay card"] == bad["delay wait 1"] == \
            "delay needs card, pin or host and the seconds, e.g. delay card 5"
        assert bad["fault host bogus"].startswith("fault: host fault must be one of no_connection")
        assert bad["rule foo=1"].startswith("rule: foo is not a rule key")
        assert bad["rule code"] == "rule words are KEY=VALUE, e.g. code=51; 'code' is not"
        assert bad["card"] == "card needs a card number or a test-card name, e.g. card insufficient_funds"
        assert bad["card nonsense"].startswith("card: ")
        assert bad["decline 5x"].startswith("decline: code must be a response code")
        assert bad["rule nth=two"] == "nth needs a whole number, not 'two'"
        for line, answer in bad.items():
            assert not any(word in answer for word in PYTHON_WORDS), (line, answer)


async def test_the_trace_masks_a_card_number_cut_by_a_part_or_a_read() -> None:
    """A terminal's split answer whose slip holds a full card number across a part boundary, each
    part's frame itself cut over two reads: the trace shows no full number, in hex or decoded, and
    the frames once each, whole."""
    from posbridge.cli.console import Console, plain
    from posbridge.testing import TerminalLink
    from tests.protocols.inpas.split_answers import FULL_PAN, split_answer_writes, straddling_offsets

    async with TerminalLink("inpas") as link:
        for offset in straddling_offsets()[:4]:
            lines: list[str] = []
            console = Console(link.client, lambda text: lines.append(plain(text)))
            console.trace_mode = "both"
            for write in split_answer_writes(offset):
                console._trace("rx", write[: len(write) // 2])
                console._trace("rx", write[len(write) // 2:])
            shown = "\n".join(lines)
            assert lines and FULL_PAN not in shown and FULL_PAN.encode().hex(" ") not in shown, offset
            assert "incomplete" not in shown.lower(), shown


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_trace_shows_a_half_frame_once_the_line_goes_quiet(protocol, monkeypatch) -> None:
    # The trace holds a frame cut over reads until its end comes; a terminal that sends half a
    # frame and falls silent must still be seen (as the monitor shows it), once.
    from posbridge.cli import console as console_module

    monkeypatch.setattr(console_module, "QUIET_FLUSH", 0.05)
    async with TerminalLink(protocol) as link:
        lines: list[str] = []
        console = Console(link.client, lambda text: lines.append(plain(text)))
        console.trace_mode = "both"
        half = {"inpas": bytes.fromhex("02 0f 00 00 01 31"), "arcus2": bytes.fromhex("01 00 0d 51 6f 70")}[protocol]
        console._trace("rx", half)
        assert lines == []  # held: the frame's end may be in the next read
        await asyncio.sleep(0.3)
        [shown] = lines
        assert half.hex(" ") in shown and "incomplete" in shown.lower(), shown
        await asyncio.sleep(0.2)
        assert len(lines) == 1  # once
