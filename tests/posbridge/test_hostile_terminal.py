"""A terminal that lies, both protocols: the ECR client must never take a wrong answer for its own.

Every test runs posbridge's real :class:`~posbridge.ecr.client.EcrClient` against
:class:`tests.posbridge.hostile.HostileTerminal` (the protocol's own terminal session over a
``virtual://`` pair, answering by a plan; see that module). For each lie the client must give the
right outcome or a typed :class:`~posbridge.protocols.common.errors.LinkError` within its ``deadline``, and the
journal must hold the operation as ``unknown`` (a mismatched answer kept beside it, masked PAN only).
Recovery must not resolve what the terminal's answer did not prove.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from posbridge.devices import open_device
from posbridge.ecr.answers import answer_problems
from posbridge.ecr.client import BlockingEcrClient, EcrClient
from posbridge.journal import EcrEntry, Journal
from posbridge.model import Operation, Request, Result, Status, Totals
from posbridge.emulator.terminal import TerminalConfig, VirtualTerminal
from posbridge import protocols
from posbridge.protocols.common.errors import AnswerMismatch, ExchangeTimeout, LinkError
from posbridge.protocols.common.session import Completed, Failed, RequestReceived

from .hostile import (
    FAST,
    FULL_PAN,
    HUGE,
    NOW,
    TERMINAL_ID,
    Answer,
    DialogThen,
    Endless,
    HostileTerminal,
    Plan,
    Silence,
    arm_tampering,
    honest,
    set_fields,
)

PROTOCOLS = ("inpas", "arcus2")
CLIENT_TIMERS = {"ack_timeout": 0.2, "packet_timeout": 0.5}  # WAIT packets come every 0.1 s
DEADLINE = 3.0  # the client's deadline for modes that end by themselves
SHORT_DEADLINE = 0.8  # for modes only the deadline can end (endless WAIT)
SLACK = 0.75  # journaling, the quiet-line wait, scheduling
_names = itertools.count()



def _name(protocol: str, what: str) -> str:
    return f"hostile-{protocol}-{what}-{next(_names)}"


def _client(url: str, protocol: str, journal: Journal, *, deadline: float = DEADLINE,
            terminal_id: str | None = None, **options: Any) -> EcrClient:
    return EcrClient(url, protocol, journal=journal, timers=dict(CLIENT_TIMERS), clock=lambda: NOW,
                     deadline=deadline, terminal_id=terminal_id, **options)


def _digits(text: str | None) -> int:
    return sum(ch.isdigit() for ch in text or "")


# --- the modes ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mode:
    """One lie. ``plan(protocol)`` answers the first request; ``expect`` is ``mismatch`` (an
    AnswerMismatch), ``timeout`` (an ExchangeTimeout at the deadline) or ``link_error`` (any LinkError)."""

    name: str
    plan: Callable[[str], Plan]
    expect: str
    operation: Operation = Operation.SALE
    terminal_id: str | None = None
    deadline: float = DEADLINE
    line_survives: bool = False  # then the same client runs an honest operation on the same line


def _lie(**changes: Any) -> Callable[[str], Plan]:
    return lambda protocol: lambda request: Answer(honest(request, pan=FULL_PAN, **{
        key: (value(request) if callable(value) else value) for key, value in changes.items()}))


def _wire(**fields: Any) -> Callable[[str], Plan]:
    def plan(protocol: str) -> Plan:
        def answer(request: Request) -> Answer:
            values = {k: (v(request) if callable(v) else v) for k, v in fields.items()}
            return Answer(honest(request, pan=FULL_PAN), set_fields(protocol, **values))
        return answer
    return plan


def _other_transaction(request: Request) -> str:
    return str(int(request.transaction_id or "0") + 1)


MODES = [
    Mode("wrong_amount", _lie(amount=lambda r: r.amount * 10), "mismatch"),
    Mode("wrong_currency", _lie(currency=840), "mismatch"),
    # Answered for another STAN: the sessions take it for a stale answer and keep waiting.
    Mode("wrong_transaction", _wire(transaction_id=_other_transaction), "link_error"),
    Mode("no_transaction_number", _wire(transaction_id=None), "mismatch"),
    Mode("approval_without_amount", _lie(amount=None), "mismatch"),
    Mode("settlement_without_totals", _lie(totals=None), "mismatch", Operation.SETTLEMENT),
    Mode("other_terminal", _lie(terminal_id="99999999"), "mismatch", terminal_id=TERMINAL_ID),
    # INPAS: no tag 39 (status); Arcus: no response_code. Neither declined nor approved.
    Mode("no_status", _wire(status=None), "mismatch"),
    Mode("endless_wait", lambda protocol: lambda request: Endless(), "timeout", deadline=SHORT_DEADLINE),
    # 5,000-digit numbers: more than Python's int() takes from text.
    # The bad answer must fail one exchange, not kill the link's reader: the next one still works.
    Mode("huge_amount", _wire(amount=HUGE), "link_error", line_survives=True),
    Mode("huge_transaction_number", _wire(transaction_id=HUGE), "link_error", line_survives=True),
    Mode("huge_totals", _wire(sale_amount=HUGE, sale_count=HUGE), "link_error", Operation.SETTLEMENT,
         line_survives=True),
]
EXPECTED_ERROR = {"mismatch": AnswerMismatch, "timeout": ExchangeTimeout, "link_error": LinkError}


def _request(mode: Mode) -> Request:
    if mode.operation is Operation.SETTLEMENT:
        return Request(Operation.SETTLEMENT)
    return Request(Operation.SALE, 10_00)


def _check_unknown(entry: EcrEntry | None, error: LinkError, expect: str, sent: list[Request]) -> None:
    """The journal holds the operation as unknown; a mismatched answer is kept, masked."""
    assert entry is not None and entry.state == "unknown", entry
    assert entry.error and str(error.reason) in entry.error
    assert [r.transaction_id for r in sent] == [entry.request.transaction_id]  # the one request, journaled
    if expect == "mismatch":
        assert isinstance(error, AnswerMismatch) and error.problems
        assert entry.answer is not None, "a mismatched answer must be kept beside the entry"
        text = json.dumps(entry.answer, ensure_ascii=False)
        assert FULL_PAN not in text
        if entry.answer.get("masked_pan"):
            assert _digits(entry.answer["masked_pan"]) <= 10


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", MODES, ids=[m.name for m in MODES])
async def test_a_lying_terminal_gives_a_typed_error_within_the_deadline_and_an_unknown_entry(
        protocol: str, mode: Mode) -> None:
    lie = mode.plan(protocol)
    plan = lambda request: lie(request) if not terminal.requests[:-1] else Answer(honest(request))  # noqa: E731
    async with HostileTerminal(protocol, _name(protocol, mode.name), plan) as terminal:
        journal = Journal()
        async with _client(terminal.url, protocol, journal, deadline=mode.deadline,
                           terminal_id=mode.terminal_id) as client:
            started = time.monotonic()
            try:
                result = await client.execute(_request(mode))
            except LinkError as error:
                outcome: Any = error
            except Exception as error:  # noqa: BLE001 - anything untyped is the failure under test
                pytest.fail(f"{mode.name}: untyped {type(error).__name__}: {error}")
            else:
                pytest.fail(f"{mode.name}: the lie was taken as an answer: {result.status.value}, "
                            f"amount {result.amount}, transaction {result.transaction_id}")
            elapsed = time.monotonic() - started
            entry = journal.ecr.last(client.journal_key)
            sent = list(terminal.requests)
            if mode.line_survives:
                again = time.monotonic()
                try:
                    second = await client.execute(_request(mode))
                except Exception as error:  # noqa: BLE001
                    pytest.fail(f"after {mode.name} the line is dead: the next operation failed with "
                                f"{type(error).__name__}: {error}")
                assert second.approved and time.monotonic() - again < DEADLINE
    assert isinstance(outcome, EXPECTED_ERROR[mode.expect]), repr(outcome)
    assert not isinstance(outcome, ValueError)
    assert elapsed < mode.deadline + SLACK, f"{elapsed:.2f} s for a deadline of {mode.deadline} s"
    if mode.expect == "timeout":
        assert elapsed >= mode.deadline - 0.05  # only the deadline ends an endless WAIT
    _check_unknown(entry, outcome, mode.expect, sent)
    assert [e.state for e in client.unresolved()] == ["unknown"]


def _converse(protocol: str, tamper_fields: dict[str, str | None], request: Request) -> list[Any]:
    """Both sessions of ``protocol``, sans-IO, bytes moved by hand: the ECR's events for ``request``
    answered honestly, then tampered with on the wire. Any exception the ECR session raises escapes."""
    spec = protocols.get(protocol)
    ecr, terminal = spec.ecr_session(timers=dict(FAST)), spec.terminal_session(timers=dict(FAST))
    arm_tampering(terminal)(set_fields(protocol, **tamper_fields))
    now, events = 0.0, []
    ecr.start(request, now)
    for _ in range(500):
        moved = False
        data = ecr.data_to_send()
        if data:
            moved = True
            for event in terminal.receive(data, now):
                if isinstance(event, RequestReceived):
                    terminal.send_result(honest(event.request), now)
        data = terminal.data_to_send()
        if data:
            moved = True
            events += ecr.receive(data, now)
        if any(isinstance(e, (Completed, Failed)) for e in events):
            return events
        if not moved:
            now += 0.05
            events += ecr.poll(now)
            terminal.poll(now)
    raise AssertionError(f"no end of the exchange: {events}")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("field", ["amount", "sale_amount", "currency"])
def test_the_ecr_session_turns_a_5000_digit_field_into_an_event_not_an_exception(protocol: str, field: str) -> None:
    """Below the pump: decoding never trusts input (DESIGN.md), so the session itself must report a
    garbage answer as an event (a Failed LinkError, or a result the client then finds wrong)."""
    operation = Operation.SETTLEMENT if field == "sale_amount" else Operation.SALE
    request = Request(operation, None if operation is Operation.SETTLEMENT else 10_00, transaction_id="77",
                      ecr_datetime=NOW)
    try:
        events = _converse(protocol, {field: HUGE}, request)
    except Exception as error:  # noqa: BLE001 - the failure under test
        pytest.fail(f"the {protocol} ECR session raised {type(error).__name__}: {str(error)[:120]}")
    final = events[-1]
    assert isinstance(final, (Completed, Failed)), events
    if isinstance(final, Failed):
        assert isinstance(final.error, LinkError)
    else:
        assert answer_problems(request, final.result), "a 5,000-digit field read as a plausible answer"


# --- INPAS: a cashier dialog with a 400-digit timeout -------------------------------------------------------
@pytest.mark.parametrize("digits", [400, 5000])
async def test_a_cashier_dialog_with_an_absurd_timeout_does_not_hang_the_client(digits: int) -> None:
    prompts: list[Any] = []

    def on_prompt(prompt: Any) -> tuple[str, bool]:
        prompts.append(prompt)
        return "1111", True

    plan = lambda request: DialogThen("9" * digits, Answer(honest(request)))  # noqa: E731
    async with HostileTerminal("inpas", _name("inpas", "dialog"), plan) as terminal:
        async with _client(terminal.url, "inpas", Journal(), on_prompt=on_prompt) as client:
            started = time.monotonic()
            result = await client.sale(10_00)
            assert time.monotonic() - started < DEADLINE
    assert result.approved and len(prompts) == 1


async def test_a_cashier_dialog_with_an_absurd_timeout_and_no_answer_ends_by_the_deadline() -> None:
    plan = lambda request: DialogThen("9" * 400, None)  # noqa: E731
    journal = Journal()
    async with HostileTerminal("inpas", _name("inpas", "dialog-silent"), plan) as terminal:
        async with _client(terminal.url, "inpas", journal, deadline=SHORT_DEADLINE) as client:
            started = time.monotonic()
            with pytest.raises(LinkError) as caught:
                await client.sale(10_00)
            elapsed = time.monotonic() - started
    assert not isinstance(caught.value, ValueError)
    assert elapsed < SHORT_DEADLINE + SLACK
    assert [e.state for e in journal.ecr.unresolved()] == ["unknown"]


# --- a full card number from the terminal ---------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_full_card_number_from_the_terminal_reaches_neither_the_caller_nor_the_journal(
        protocol: str) -> None:
    plan = lambda request: Answer(honest(request, pan=FULL_PAN))  # noqa: E731
    journal = Journal()
    async with HostileTerminal(protocol, _name(protocol, "pan"), plan) as terminal:
        async with _client(terminal.url, protocol, journal) as client:
            result = await client.sale(10_00)
    entry = journal.ecr.last(client.journal_key)
    assert entry is not None and entry.result is not None
    assert _digits(entry.result.masked_pan) <= 10
    assert _digits(result.masked_pan) <= 10, f"the client handed the caller {result.masked_pan!r}"


# --- the blocking facade ------------------------------------------------------------------------------------
BLOCKING_MODES = [m for m in MODES if m.name in ("wrong_amount", "no_status", "endless_wait")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", BLOCKING_MODES, ids=[m.name for m in BLOCKING_MODES])
async def test_the_blocking_client_returns_or_raises_within_its_bound(protocol: str, mode: Mode) -> None:
    journal = Journal()

    def run(url: str) -> tuple[Any, float, float]:
        with BlockingEcrClient(url, protocol, journal=journal, timers=dict(CLIENT_TIMERS), clock=lambda: NOW,
                               deadline=mode.deadline, lock_wait=1.0) as ecr:
            bound = ecr._bound()
            started = time.monotonic()
            try:
                outcome: Any = ecr.execute(_request(mode))
            except Exception as error:  # noqa: BLE001 - judged below
                outcome = error
            return outcome, time.monotonic() - started, bound

    async with HostileTerminal(protocol, _name(protocol, f"blocking-{mode.name}"), mode.plan(protocol)) as terminal:
        outcome, elapsed, bound = await asyncio.wait_for(asyncio.to_thread(run, terminal.url), 60)
    assert elapsed < bound
    assert elapsed < mode.deadline + SLACK
    assert isinstance(outcome, EXPECTED_ERROR[mode.expect]), repr(outcome)
    [entry] = journal.ecr.unresolved()
    assert entry.state == "unknown"


# --- recovery resolves only what an answer proves ---------------------------------------------------------------
def _reversal_modes(protocol: str) -> dict[str, tuple[Callable[[Request], Any], str]]:
    """How the hostile terminal answers the emergency reversal, and a word the note must hold."""
    return {
        "mismatch": (lambda r: Answer(honest(r, amount=r.amount * 10, host_code="400", pan=FULL_PAN)), "mismatch"),
        "declined": (lambda r: Answer(honest(r, status=Status.DECLINED, response_code="116", host_code="116")),
                     "declined"),
        "no_connection": (lambda r: Answer(honest(r, status=Status.NO_CONNECTION, response_code="",
                                                  host_code=None)), "no_connection"),
        "silence": (lambda r: Silence(), "timeout"),
        # "Reversal processed", but not said of this transaction: proves nothing.
        "approved_without_transaction_number": (
            lambda r: Answer(honest(r, host_code="400"), set_fields(protocol, transaction_id=None)), "transaction"),
        "approved_without_status": (
            lambda r: Answer(honest(r, host_code="400"), set_fields(protocol, status=None)), ""),
    }


REVERSAL_MODES = list(_reversal_modes("inpas"))


class Scripted:
    """A plan: the sale gets a wrong amount (its outcome is then unknown), a reversal what ``reversal`` says."""

    def __init__(self, reversal: Callable[[Request], Any] | None = None) -> None:
        self.reversal = reversal

    def __call__(self, request: Request) -> Any:
        if request.operation is Operation.EMERGENCY_REVERSAL:
            assert self.reversal is not None
            return self.reversal(request)
        return Answer(honest(request, amount=(request.amount or 0) * 10, pan=FULL_PAN))


async def _lost_sale(terminal: HostileTerminal, client: EcrClient) -> EcrEntry:
    with pytest.raises(AnswerMismatch):
        await client.sale(25_00)
    [entry] = client.unresolved()
    return entry


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("how", REVERSAL_MODES)
async def test_recovery_does_not_resolve_what_the_reversal_did_not_prove(protocol: str, how: str) -> None:
    reversal, word = _reversal_modes(protocol)[how]
    plan = Scripted(reversal)
    async with HostileTerminal(protocol, _name(protocol, f"recover-{how}"), plan) as terminal:
        async with _client(terminal.url, protocol, Journal()) as client:
            sale = await _lost_sale(terminal, client)
            started = time.monotonic()
            report = await client.recover()
            elapsed = time.monotonic() - started
            open_ids = [e.id for e in client.unresolved()]
    assert elapsed < DEADLINE + SLACK
    assert [r.entry.id for r in report] == [sale.id]
    [recovery] = report
    assert recovery.outcome == "open" and not recovery.resolved, recovery.describe()
    assert recovery.note, "recovery must say why the entry stays open"
    assert word.lower() in recovery.note.lower(), recovery.note
    assert sale.id in open_ids
    entry = client.journal.ecr.entry(sale.id)
    assert entry is not None and entry.state == "unknown" and "recovery" in (entry.error or "")
    reversals = [r for r in terminal.requests if r.operation is Operation.EMERGENCY_REVERSAL]
    assert [(r.transaction_id, r.amount) for r in reversals] == [(sale.request.transaction_id, 25_00)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_correct_reversal_with_host_code_400_resolves_after_failed_tries(protocol: str) -> None:
    modes = _reversal_modes(protocol)
    plan = Scripted(modes["declined"][0])
    async with HostileTerminal(protocol, _name(protocol, "recover-400"), plan) as terminal:
        async with _client(terminal.url, protocol, Journal()) as client:
            sale = await _lost_sale(terminal, client)
            for how in ("declined", "mismatch"):
                plan.reversal = modes[how][0]
                [failed] = await client.recover()
                assert failed.outcome == "open"
            plan.reversal = lambda r: Answer(honest(r, host_code="400"))
            [recovery] = await client.recover()
            assert client.unresolved() == []
    assert (recovery.entry.id, recovery.outcome, recovery.resolved) == (sale.id, "reversed", True)
    assert recovery.result is not None and recovery.result.host_code == "400"
    entry = client.journal.ecr.entry(sale.id)
    assert entry is not None and (entry.state, entry.how) == ("resolved", "reversed")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_real_virtual_terminal_on_a_fresh_pair_resolves_what_the_hostile_one_left_open(
        protocol: str) -> None:
    name = _name(protocol, "recover-honest")
    journal = Journal()
    plan = Scripted(_reversal_modes(protocol)["silence"][0])
    async with HostileTerminal(protocol, name, plan) as terminal:
        async with _client(terminal.url, protocol, journal) as client:
            sale = await _lost_sale(terminal, client)
            [failed] = await client.recover()
            assert failed.outcome == "open"
    # Both ends closed: the name is free again, and the same port now leads to an honest terminal.
    honest_terminal = VirtualTerminal(protocol, clock=lambda: NOW, config=TerminalConfig(timers=dict(FAST)))
    device = await open_device(f"virtual://{name}")
    task = asyncio.get_running_loop().create_task(honest_terminal.serve(device, keep_open=True))
    try:
        async with _client(f"virtual://{name}", protocol, journal) as client:
            assert [e.id for e in client.unresolved()][0] == sale.id
            report = await client.recover()
            assert client.unresolved() == []
    finally:
        task.cancel()
        await device.close()
    [recovery] = report
    # That terminal's host never saw the sale: its reversal proves nothing was charged (9020).
    assert (recovery.entry.id, recovery.outcome, recovery.resolved) == (sale.id, "not_charged", True)
    assert recovery.result is not None and recovery.result.host_code == "9020"


# --- answer_problems, check by check -----------------------------------------------------------------------------
SALE = Request(Operation.SALE, 10_00, 643, transaction_id="123", terminal_id="00344224")
GOOD = Result(Operation.SALE, Status.APPROVED, "00", amount=10_00, currency=643, transaction_id="123",
              terminal_id="00344224", masked_pan="411111******1111")
SETTLE = Request(Operation.SETTLEMENT, transaction_id="124")
SETTLED = Result(Operation.SETTLEMENT, Status.APPROVED, "00", transaction_id="124", totals=Totals())

PROBLEM_TABLE = [
    ("clean", SALE, GOOD, None),
    ("leading zeros of the transaction number", SALE, GOOD.with_changes(transaction_id="000123"), None),
    ("declined without an amount", SALE, GOOD.with_changes(status=Status.DECLINED, amount=None), None),
    ("no terminal id in the answer", SALE, GOOD.with_changes(terminal_id=None), None),
    ("test connection needs no transaction number",
     Request(Operation.TEST_CONNECTION, transaction_id="9"),
     Result(Operation.TEST_CONNECTION, Status.APPROVED), None),
    ("clean settlement", SETTLE, SETTLED, None),
    ("another operation", SALE, GOOD.with_changes(operation=Operation.REFUND), r"answer is for refund"),
    ("no transaction number", SALE, GOOD.with_changes(transaction_id=None), r"no transaction number"),
    ("another transaction", SALE, GOOD.with_changes(transaction_id="124"), r"transaction 124"),
    ("approval without amount", SALE, GOOD.with_changes(amount=None), r"carries no amount"),
    ("approved offline without amount", SALE, GOOD.with_changes(status=Status.APPROVED_OFFLINE, amount=None),
     r"carries no amount"),
    ("another amount", SALE, GOOD.with_changes(amount=100_00), r"amount 10000 differs"),
    ("a decline for another amount", SALE, GOOD.with_changes(status=Status.DECLINED, amount=1), r"amount 1 differs"),
    ("another currency", SALE, GOOD.with_changes(currency=840), r"currency 840 differs"),
    ("another terminal", SALE, GOOD.with_changes(terminal_id="99999999"), r"terminal 99999999"),
    ("settlement without totals", SETTLE, SETTLED.with_changes(totals=None), r"no totals"),
]


@pytest.mark.parametrize("request_, result, problem", [row[1:] for row in PROBLEM_TABLE],
                         ids=[row[0] for row in PROBLEM_TABLE])
def test_answer_problems(request_: Request, result: Result, problem: str | None) -> None:
    problems = answer_problems(request_, result)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and re.search(problem, problems[0]), problems


def test_answer_problems_lists_every_problem_at_once() -> None:
    lie = GOOD.with_changes(operation=Operation.REFUND, transaction_id="7", amount=1, currency=840,
                            terminal_id="99999999")
    assert len(answer_problems(SALE, lie)) == 5
