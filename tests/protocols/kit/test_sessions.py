"""The kit, sessions: an ECR session and a terminal session of every registered protocol, joined by
the kit's null modem on a virtual clock, carry every operation of the domain model both ways, in any
chunking; garbage never raises in either session; a silent peer ends in a typed failure, not a hang;
a capability the protocol lacks is refused with NotSupported, one it has works end to end."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posbridge.protocols import ProtocolSpec
from posbridge.protocols.common.errors import LinkError, NotSupported
from posbridge.protocols.common.model import Operation, Request, Result, Status
from posbridge.protocols.common.session import (
    AbortRequested,
    CashierPrompt,
    Completed,
    Failed,
    Progress,
    PromptAnswered,
    RequestReceived,
    ResultDelivered,
    ResultUndelivered,
)
from tests.protocols.kit.adapter import KitAdapter
from tests.protocols.kit.modem import ExchangeRun, NullModem, TerminalApp, check_invariants
from tests.protocols.kit.operations import REQUESTS, SALE, aborted, approved, declined
from tests.protocols.kit.test_codec import KIT

#: What every protocol carries of a request, whatever its wire format (a protocol may carry more:
#: its own tests say what). The transaction id (the host's idempotency key) travels with money.
REQUEST_FIELDS = ("operation", "amount", "currency", "rrn", "auth_code", "terminal_id")
#: What every protocol carries of a result. Response codes are each protocol's own (INPAS statuses,
#: Arcus's three characters): the status is what the kit compares.
RESULT_FIELDS = ("operation", "status", "response_text", "amount", "rrn", "auth_code", "masked_pan",
                 "card_scheme", "terminal_id", "slips", "totals")


def sessions(spec: ProtocolSpec, adapter: KitAdapter) -> tuple[Any, Any]:
    return spec.ecr_session(dict(adapter.options)), spec.terminal_session(dict(adapter.options))


def exchange(spec: ProtocolSpec, adapter: KitAdapter, request: Request, app: TerminalApp, **options: Any) -> ExchangeRun:
    ecr, terminal = sessions(spec, adapter)
    run = NullModem(ecr, terminal, app, **options).exchange(request)
    assert check_invariants(run) == [], run.events
    return run


def fields(value: object, names: tuple[str, ...]) -> dict[str, object]:
    return {name: getattr(value, name) for name in names}


def completed(run: ExchangeRun) -> Result:
    assert isinstance(run.ecr_outcome, Completed), run.ecr_outcome
    return run.ecr_outcome.result


@pytest.mark.parametrize("operation", list(Operation), ids=[o.value for o in Operation])
def test_every_operation_travels_both_ways(spec: ProtocolSpec, adapter: KitAdapter, operation: Operation) -> None:
    request = REQUESTS[operation]
    run = exchange(spec, adapter, request, TerminalApp(approved))
    (received,) = run.of("terminal", RequestReceived)
    assert fields(received.request, REQUEST_FIELDS) == fields(request, REQUEST_FIELDS)  # type: ignore[attr-defined]
    if operation.moves_money:
        assert received.request.transaction_id == request.transaction_id  # type: ignore[attr-defined]
    sent = approved(request)
    got = completed(run)
    assert fields(got, RESULT_FIELDS) == fields(sent, RESULT_FIELDS)
    if operation.moves_money:
        assert (got.currency, got.transaction_id) == (request.currency, request.transaction_id)
    assert [type(event) for event in run.of("ecr", Progress)] == [Progress]
    assert [type(e) for e in run.terminal_outcomes()] == [ResultDelivered]


@pytest.mark.parametrize("answer", [declined, aborted], ids=["declined", "aborted"])
def test_a_refusal_keeps_its_status(spec: ProtocolSpec, adapter: KitAdapter, answer: Any) -> None:
    got = completed(exchange(spec, adapter, SALE, TerminalApp(answer)))
    sent = answer(SALE)
    assert (got.status, got.approved, got.response_text) == (sent.status, False, sent.response_text)


@pytest.mark.parametrize("chunk", [0, -1, 1, 3], ids=["whole", "halves", "byte-by-byte", "threes"])
def test_an_exchange_is_the_same_however_the_line_cuts_the_bytes(spec: ProtocolSpec, adapter: KitAdapter,
                                                                  chunk: int) -> None:
    whole = completed(exchange(spec, adapter, SALE, TerminalApp(approved)))
    report = REQUESTS[Operation.FULL_REPORT]  # a long answer: several frames where the protocol splits
    assert completed(exchange(spec, adapter, SALE, TerminalApp(approved), chunk=chunk)) == whole
    assert completed(exchange(spec, adapter, report, TerminalApp(approved), chunk=chunk)).slips == \
        approved(report).slips


def test_exchanges_follow_one_another_on_the_same_sessions(spec: ProtocolSpec, adapter: KitAdapter) -> None:
    ecr, terminal = sessions(spec, adapter)
    modem = NullModem(ecr, terminal, TerminalApp(approved))
    for operation in (Operation.SALE, Operation.REFUND, Operation.SETTLEMENT, Operation.SALE):
        run = modem.exchange(REQUESTS[operation])
        assert check_invariants(run) == []
        assert completed(run).operation is operation


def test_a_silent_terminal_ends_the_exchange_in_a_typed_failure(spec: ProtocolSpec, adapter: KitAdapter) -> None:
    ecr, _ = sessions(spec, adapter)
    ecr.start(SALE, 0.0)
    now, events = 0.0, []
    for _ in range(100):
        ecr.data_to_send()  # into the void
        deadline = ecr.next_deadline()
        if deadline is None:
            break
        now = deadline
        events += ecr.poll(now)
    assert not ecr.busy and ecr.next_deadline() is None
    assert [type(e) for e in events] == [Failed] and isinstance(events[0].error, LinkError)
    assert now <= 600.0


def test_a_result_nobody_acknowledges_is_undelivered(spec: ProtocolSpec, adapter: KitAdapter) -> None:
    ecr, terminal = sessions(spec, adapter)
    ecr.start(SALE, 0.0)
    now = 0.0
    for _ in range(100):  # let the request through, then cut the line back to the ECR
        terminal.receive(ecr.data_to_send(), now)
        ecr.receive(terminal.data_to_send(), now)
        if terminal.current_exchange is not None:
            break
        now = min(d for d in (ecr.next_deadline(), terminal.next_deadline()) if d is not None)
        ecr.poll(now)
        terminal.poll(now)
    assert terminal.current_exchange is not None
    terminal.send_result(approved(SALE), now)
    events: list[object] = []
    for _ in range(100):
        terminal.data_to_send()  # into the void
        deadline = terminal.next_deadline()
        if deadline is None:
            break
        now = deadline
        events += terminal.poll(now)
    assert [type(e) for e in events] == [ResultUndelivered]
    assert not terminal.busy and terminal.current_exchange is None and now <= 600.0


@settings(KIT, max_examples=100)
@given(garbage=st.binary(max_size=300), chunk=st.integers(1, 17))
def test_garbage_never_raises_in_either_session(spec: ProtocolSpec, adapter: KitAdapter, garbage: bytes,
                                                chunk: int) -> None:
    ecr, terminal = sessions(spec, adapter)
    ecr.start(SALE, 0.0)
    for session in (ecr, terminal):
        now = 0.0
        for i in range(0, len(garbage), chunk):
            now += 0.01
            session.receive(garbage[i: i + chunk], now)
            session.poll(now)
        session.poll(now + 1000.0)
        session.data_to_send()
        session.poll(now + 2000.0)


def test_the_cashier_dialog_works_or_is_refused(spec: ProtocolSpec, adapter: KitAdapter) -> None:
    if not spec.capabilities.cashier_dialog:
        ecr, terminal = sessions(spec, adapter)
        with pytest.raises(NotSupported):
            ecr.answer_prompt("1111", True, 0.0)
        with pytest.raises(NotSupported):
            terminal.send_prompt("ПОСЛЕДНИЕ 4 ЦИФРЫ КАРТЫ", 30.0, 0.0)
        return
    run = exchange(spec, adapter, SALE, TerminalApp(approved, prompt="ПОСЛЕДНИЕ 4 ЦИФРЫ КАРТЫ"))
    (prompt,) = run.of("ecr", CashierPrompt)
    assert (prompt.prompt, prompt.timeout) == ("ПОСЛЕДНИЕ 4 ЦИФРЫ КАРТЫ", 30.0)  # type: ignore[attr-defined]
    assert run.of("terminal", PromptAnswered) == [PromptAnswered("1111", True)]
    assert completed(run).approved


def test_an_abort_works_or_is_refused(spec: ProtocolSpec, adapter: KitAdapter) -> None:
    if not spec.capabilities.abort:
        ecr, _ = sessions(spec, adapter)
        ecr.start(SALE, 0.0)
        with pytest.raises(NotSupported):
            ecr.abort(0.0)
        return
    ecr, terminal = sessions(spec, adapter)
    app = TerminalApp(approved, work=5.0, abort_result=aborted)
    run = NullModem(ecr, terminal, app).exchange(SALE, abort_at=1.0)
    assert check_invariants(run) == [], run.events
    assert len(run.of("terminal", AbortRequested)) == 1
    assert completed(run).status is Status.ABORTED
