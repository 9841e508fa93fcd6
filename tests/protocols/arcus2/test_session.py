"""Arcus2-style sessions, sans-IO: exact bytes, result timer, abort, EOT, faults, link versions, both sides
back to back. What every protocol does (every operation both ways, chunking, garbage, the every-byte
fault sweep) is in the protocol kit (tests/protocols/kit)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posbridge.protocols.arcus2.constants import ACK, ENQ, EOT, NAK
from posbridge.protocols.arcus2.fields import Message
from posbridge.protocols.arcus2.frame import FrameScanner, FrameToken, encode_frame
from posbridge.protocols.arcus2.link import LinkTimers
from posbridge.protocols.arcus2.ops import parse_ops_ini
from posbridge.protocols.arcus2.session import Arcus2EcrSession, Arcus2TerminalSession
from posbridge.protocols.common.errors import AnswerMismatch, ExchangeTimeout, LinkError, NakLimit, NoAck
from posbridge.protocols.common.model import Operation, Request, Result, Slips, Status
from posbridge.protocols.common.session import (
    AbortRequested,
    Completed,
    Failed,
    Progress,
    RequestReceived,
    RequestRejected,
    ResultUndelivered,
)
from tests.protocols.wire import Wire

TIMERS = LinkTimers(ack_timeout=2.0, packet_timeout=120.0)
SALE = Request(Operation.SALE, 15000, 643, transaction_id="7", terminal_id="00344224")
SALE_FRAME = bytes.fromhex(  # tests/vectors/arcus2.txt "v2-sale-request": link version 2, the default
    "01004c516f7065726174696f6e3d311c616d6f756e743d31353030301c63757272656e63793d3634331c7472616e73"
    "616374696f6e5f69643d371c7465726d696e616c5f69643d3030333434323234032e53e5e5")
SALE_FRAME_V1 = bytes.fromhex(  # tests/vectors/arcus2.txt "v1-sale-request"
    "02004c516f7065726174696f6e3d311c616d6f756e743d31353030301c63757272656e63793d3634331c7472616e73"
    "616374696f6e5f69643d371c7465726d696e616c5f69643d30303334343232340339")
NOW = datetime(2026, 11, 22, 12, 30, 0)


def approved(request: Request = SALE, **changes) -> Result:
    result = Result(request.operation, Status.APPROVED, response_code="00", host_code="00",
                    response_text="ОДОБРЕНО", amount=request.amount, currency=request.currency,
                    rrn="333109189729", auth_code="454583", masked_pan="411111******1111", card_scheme="VISA",
                    terminal_id="00344224", transaction_id=request.transaction_id, host_datetime=NOW,
                    slips=Slips("   ТЕСТ БАНК\nОПЛАТА\nОДОБРЕНО", "КОПИЯ КАССИРА"))
    return result.with_changes(**changes)


def frame(message_class: str, fields: dict) -> bytes:
    return encode_frame(Message(message_class, fields).encode_body())


def byte(value: int) -> bytes:
    return bytes([value])


def started_ecr(request: Request = SALE, timers: LinkTimers = TIMERS) -> Arcus2EcrSession:
    """An ECR whose Q has been delivered: ENQ, ACK, Q, ACK, EOT."""
    ecr = Arcus2EcrSession(timers)
    ecr.start(request, 0.0)
    assert ecr.data_to_send() == byte(ENQ)
    ecr.receive(byte(ACK), 0.0)
    ecr.data_to_send()
    ecr.receive(byte(ACK), 0.0)
    assert ecr.data_to_send() == byte(EOT)
    return ecr


def terminal_turn(session, body: bytes, now: float) -> list:
    """Play a terminal turn (ENQ, frame, EOT) into an ECR session; returns its events."""
    events = session.receive(byte(ENQ), now)
    assert session.data_to_send() == byte(ACK)
    events += session.receive(body, now)
    assert session.data_to_send() == byte(ACK)
    events += session.receive(byte(EOT), now)
    return events


# --- ECR side ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("timers", "golden"), [(TIMERS, SALE_FRAME), (LinkTimers(link_version=1), SALE_FRAME_V1)],
                         ids=["v2", "v1"])
def test_request_bytes_match_the_golden_vector(timers, golden):
    ecr = Arcus2EcrSession(timers)
    ecr.start(SALE, 0.0)
    assert ecr.data_to_send() == byte(ENQ)
    assert ecr.receive(byte(ACK), 0.05) == []
    assert ecr.data_to_send() == golden


def test_sale_with_progress_then_result():
    ecr = started_ecr()
    assert ecr.next_deadline() == pytest.approx(120.0)  # the result timer runs
    events = terminal_turn(ecr, frame("I", {"text_message": "ВСТАВЬТЕ КАРТУ"}), 1.0)
    assert events == [Progress("ВСТАВЬТЕ КАРТУ")]
    result_frame = frame("R", {"operation": "1", "response_code": "000", "host_code": "00",
                               "text_message": "ОДОБРЕНО", "result_amount": "15000", "currency": "643",
                               "transaction_id": "7", "rrn": "333109189729", "auth_code": "454583",
                               "pan": "411111******1111", "card_type": "VISA", "date": "261122", "time": "123000"})
    events = terminal_turn(ecr, result_frame, 2.0)
    assert len(events) == 1 and isinstance(events[0], Completed)
    result = events[0].result
    assert (result.status, result.response_code, result.host_code, result.amount, result.rrn) == (
        Status.APPROVED, "000", "00", 15000, "333109189729")
    assert (result.masked_pan, result.card_scheme, result.host_datetime) == ("411111******1111", "VISA", NOW)
    assert not ecr.busy and ecr.next_deadline() is None


def test_intermediates_restart_the_result_timer():
    timers = LinkTimers(ack_timeout=0.5, packet_timeout=1.0)
    ecr = started_ecr(timers=timers)
    now = 0.0
    for _ in range(5):  # 4.5 s of authorization, 4.5 x the result timer
        now += 0.9
        assert ecr.poll(now) == []
        assert terminal_turn(ecr, frame("I", {"text_message": "СОЕДИНЕНИЕ С БАНКОМ"}), now) == [
            Progress("СОЕДИНЕНИЕ С БАНКОМ")]
        assert ecr.next_deadline() == pytest.approx(now + 1.0)
    events = terminal_turn(ecr, frame("R", {"operation": "1", "response_code": "116", "host_code": "116"}), now + 0.9)
    assert isinstance(events[0], Completed) and events[0].result.status is Status.DECLINED


def test_result_timeout_without_intermediates_fails():
    ecr = started_ecr(timers=LinkTimers(ack_timeout=0.5, packet_timeout=1.0))
    assert ecr.poll(0.99) == []
    events = ecr.poll(1.0)
    assert len(events) == 1 and isinstance(events[0], Failed) and isinstance(events[0].error, ExchangeTimeout)
    assert not ecr.busy


def test_terminal_that_never_answers_enq_is_no_ack_the_999_case():
    ecr = Arcus2EcrSession(LinkTimers(ack_timeout=1.0))
    ecr.start(SALE, 0.0)
    events: list = []
    now = 0.0
    while not events:
        now = ecr.next_deadline()
        events = ecr.poll(now)
    assert now == pytest.approx(4.0)  # 3 tries of 1 s, 500 ms apart
    assert len(events) == 1 and isinstance(events[0], Failed) and isinstance(events[0].error, NoAck)
    assert events[0].error.reason == "no_ack" and not ecr.busy


def test_busy_terminal_is_retried():
    ecr = Arcus2EcrSession(TIMERS)
    ecr.start(SALE, 0.0)
    ecr.data_to_send()
    assert ecr.receive(byte(NAK), 0.1) == []  # busy
    assert ecr.poll(0.6) == [] and ecr.data_to_send() == byte(ENQ)
    ecr.receive(byte(ACK), 0.7)
    assert ecr.data_to_send() == SALE_FRAME


def test_three_naks_to_the_request_frame_fail():
    ecr = Arcus2EcrSession(TIMERS)
    ecr.start(SALE, 0.0)
    ecr.data_to_send()
    ecr.receive(byte(ACK), 0.0)
    events: list = []
    for now in (0.1, 0.2, 0.3):
        ecr.data_to_send()
        events += ecr.receive(byte(NAK), now)
    assert len(events) == 1 and isinstance(events[0].error, NakLimit)
    assert ecr.data_to_send() == byte(EOT) and not ecr.busy


def test_next_request_does_not_wait_for_the_eot_of_the_last_result():
    ecr = started_ecr()
    ecr.receive(byte(ENQ), 1.0)
    ecr.receive(frame("R", {"operation": "1", "response_code": "000", "transaction_id": "7"}), 1.0)
    ecr.data_to_send()
    # the terminal's EOT was discarded with stale input: the next exchange starts at once anyway
    ecr.start(SALE.with_changes(transaction_id="8"), 1.1)
    assert ecr.data_to_send() == byte(ENQ)


def test_a_new_exchange_forgets_a_half_frame_and_settles_for_one_ack_timer():
    ecr = Arcus2EcrSession(LinkTimers(ack_timeout=1.0))
    assert ecr.settle_time == pytest.approx(1.2)
    ecr.receive(b"\x02\x00\x40R", 0.0)  # the rest of this frame was lost on the line
    ecr.start(SALE, 0.1)
    ecr.data_to_send()
    ecr.receive(byte(ACK), 0.2)
    assert ecr.data_to_send() == SALE_FRAME  # the ACK was not swallowed as frame data


def test_a_late_result_of_an_earlier_exchange_is_ignored():
    ecr = started_ecr(SALE.with_changes(transaction_id="8"))
    stale = frame("R", {"operation": "1", "response_code": "000", "transaction_id": "7"})
    assert terminal_turn(ecr, stale, 1.0) == []
    other_operation = frame("R", {"operation": "2", "response_code": "000", "transaction_id": "8"})
    assert terminal_turn(ecr, other_operation, 1.1) == []
    assert ecr.busy
    ours = frame("R", {"operation": "1", "response_code": "000", "transaction_id": "8"})
    assert isinstance(terminal_turn(ecr, ours, 1.2)[0], Completed)


def test_abort_sends_a_in_its_own_turn():
    ecr = started_ecr()
    ecr.abort(1.0)
    assert ecr.data_to_send() == byte(ENQ)
    ecr.receive(byte(ACK), 1.0)
    assert ecr.data_to_send() == frame("A", {"transaction_id": "7"})
    ecr.receive(byte(ACK), 1.0)
    assert ecr.data_to_send() == byte(EOT)
    events = terminal_turn(ecr, frame("R", {"operation": "1", "response_code": "998", "host_code": "998",
                                            "text_message": "ОПЕРАЦИЯ ПРЕРВАНА"}), 2.0)
    result = events[0].result
    assert (result.status, result.response_code, result.host_code) == (Status.ABORTED, "998", "998")


def test_abort_when_idle_does_nothing_and_there_is_no_cashier_dialog():
    ecr = Arcus2EcrSession(TIMERS)
    ecr.abort(0.0)
    assert ecr.data_to_send() == b""
    with pytest.raises(NotImplementedError):
        ecr.answer_prompt("1111", True, 0.0)
    with pytest.raises(NotImplementedError):
        Arcus2TerminalSession(TIMERS).send_prompt("?", 10, 0.0)
    ecr.start(SALE, 0.0)
    with pytest.raises(RuntimeError):
        ecr.start(SALE, 0.0)


# --- terminal side ------------------------------------------------------------------------------
def delivered_request(terminal: Arcus2TerminalSession, data: bytes = SALE_FRAME) -> list:
    events = terminal.receive(byte(ENQ), 0.0)
    events += terminal.receive(data, 0.0)
    events += terminal.receive(byte(EOT), 0.0)
    assert terminal.data_to_send() == bytes([ACK, ACK])
    return events


def test_terminal_reports_the_request_and_ignores_a_second_one():
    terminal = Arcus2TerminalSession(TIMERS)
    events = delivered_request(terminal)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    assert events[0].request == SALE
    assert delivered_request(terminal) == []  # a resent Q while busy


def test_unknown_operation_and_bad_numbers_are_rejected_with_a_reason():
    terminal = Arcus2TerminalSession(TIMERS)
    events = delivered_request(terminal, frame("Q", {"operation": "77", "amount": "100"}))
    assert events == [RequestRejected("operation code '77' is not in posbridge default ops table", "77")]
    terminal.send_result(Result(Operation.TEST_CONNECTION, Status.DECLINED, "913", host_code="913"), 0.0)
    assert terminal.data_to_send() == byte(ENQ)
    terminal.receive(byte(ACK), 0.0)
    assert Message.decode_body(terminal.data_to_send()[3:-5]).fields == {
        "operation": "77", "response_code": "913", "host_code": "913"}
    terminal = Arcus2TerminalSession(TIMERS)
    body = b"Qoperation=1\x1camount=1O0"  # the encoder itself refuses to build this
    events = delivered_request(terminal, encode_frame(body))
    assert isinstance(events[0], RequestRejected) and "amount" in events[0].reason


def test_terminal_abort_only_while_processing_and_for_its_own_operation():
    terminal = Arcus2TerminalSession(TIMERS)
    assert delivered_request(terminal, frame("A", {})) == []  # nothing to abort
    delivered_request(terminal)
    assert delivered_request(terminal, frame("A", {"transaction_id": "6"})) == []
    assert delivered_request(terminal, frame("A", {"transaction_id": "7"})) == [AbortRequested()]
    assert delivered_request(terminal, frame("A", {})) == [AbortRequested()]


def test_progress_is_coalesced_while_one_is_in_flight():
    terminal = Arcus2TerminalSession(TIMERS)
    terminal.send_progress("", 0.0)
    assert terminal.data_to_send() == b""  # no request: nothing to report
    delivered_request(terminal)
    terminal.send_progress("", 0.0)
    terminal.send_progress("ВВЕДИТЕ ПИН", 0.0)
    assert terminal.data_to_send() == byte(ENQ)
    terminal.receive(byte(ACK), 0.0)
    assert terminal.data_to_send() == frame("I", {"text_message": "ПОДОЖДИТЕ..."})


def test_unacked_result_is_resent_then_undelivered():
    terminal = Arcus2TerminalSession(LinkTimers(ack_timeout=1.0))
    delivered_request(terminal)
    result = approved()
    terminal.send_result(result, 0.0)
    terminal.data_to_send()
    terminal.receive(byte(ACK), 0.0)
    first = terminal.data_to_send()
    assert terminal.poll(1.0) == [] and terminal.data_to_send() == first
    assert terminal.poll(2.0) == [] and terminal.data_to_send() == first
    events = terminal.poll(3.0)
    assert events == [ResultUndelivered(result, events[0].error)] and isinstance(events[0].error, NoAck)
    assert not terminal.busy


def test_undelivered_progress_is_a_failure():
    terminal = Arcus2TerminalSession(LinkTimers(ack_timeout=1.0))
    delivered_request(terminal)
    terminal.send_progress("", 0.0)
    events: list = []
    while not events:
        events = terminal.poll(terminal.next_deadline())
    assert isinstance(events[0], Failed) and isinstance(events[0].error, NoAck)


def test_send_result_needs_a_request():
    with pytest.raises(RuntimeError):
        Arcus2TerminalSession(TIMERS).send_result(approved(), 0.0)


# --- both sessions wired together -------------------------------------------------------------------
def test_abort_back_to_back():
    ecr, terminal = Arcus2EcrSession(TIMERS), Arcus2TerminalSession(TIMERS)
    wire = Wire(ecr, terminal)
    ecr.start(SALE, 0.0)
    wire.run()
    terminal.send_progress("ВСТАВЬТЕ КАРТУ", 0.0)
    ecr.abort(0.0)  # both want a turn at once: the terminal's I goes first, then the ECR's A
    wire.run()
    assert wire.terminal_events[-1] == AbortRequested()
    terminal.send_result(Result(Operation.SALE, Status.ABORTED, "998", "ОПЕРАЦИЯ ПРЕРВАНА", host_code="998"), 0.0)
    wire.run()
    result = wire.ecr_events[-1].result
    assert result.status is Status.ABORTED and result.response_code == "998"


def test_auto_reversal_never_reads_as_approved():
    ecr, terminal = Arcus2EcrSession(TIMERS), Arcus2TerminalSession(TIMERS)
    wire = Wire(ecr, terminal)
    ecr.start(SALE, 0.0)
    wire.run()
    slips = Slips("ОТВЕТ НЕ ПОЛУЧЕН\nОПЕРАЦИЯ АВТОМАТИЧЕСКИ ОТМЕНЕНА", "КОПИЯ КАССИРА")
    terminal.send_result(Result(Operation.SALE, Status.REVERSED, "151019", "ОПЕРАЦИЯ ОТМЕНЕНА: НЕТ ОТВЕТА БАНКА",
                                host_code="151019", slips=slips), 0.0)
    wire.run()
    result = wire.ecr_events[-1].result
    assert (result.status, result.response_code, result.host_code) == (Status.REVERSED, "956", "151019")
    assert result.slips == slips and not result.approved


def test_remapped_ops_table_on_both_ends():
    table = parse_ops_ini("101 = 1, 1, PAYMENT\n#1 = 1, 1, PAYMENT\n7 = 2, 7, SETTLEMENT\n")
    ecr, terminal = Arcus2EcrSession(TIMERS, table), Arcus2TerminalSession(TIMERS, table)
    wire = Wire(ecr, terminal)
    ecr.start(SALE, 0.0)
    wire.run()
    assert wire.terminal_events[0].request == SALE
    default_terminal = Arcus2TerminalSession(TIMERS)
    wire = Wire(Arcus2EcrSession(TIMERS, table), default_terminal)
    wire.ecr.start(SALE, 0.0)
    wire.run()
    assert isinstance(wire.terminal_events[0], RequestRejected)
    assert wire.terminal_events[0].operation_code == "101"


def test_a_new_request_while_the_result_is_in_flight_is_served_after_it():
    terminal = Arcus2TerminalSession(LinkTimers(ack_timeout=1.0))
    delivered_request(terminal)
    result = approved()
    terminal.send_result(result, 0.0)
    terminal.data_to_send()
    # The ECR gave up on the sale and sends its emergency reversal (another transaction id).
    reversal = frame("Q", {"operation": "2", "amount": "15000", "currency": "643", "transaction_id": "8"})
    resent_sale = SALE_FRAME
    assert terminal.receive(byte(ENQ) + resent_sale + reversal + byte(EOT), 0.1) == []
    events: list = []
    for _ in range(20):
        if any(isinstance(e, RequestReceived) for e in events):
            break
        terminal.data_to_send()
        events += terminal.poll(terminal.next_deadline())
    assert isinstance(events[0], ResultUndelivered) and events[0].result == result
    received = [e for e in events if isinstance(e, RequestReceived)]
    assert len(received) == 1 and received[0].request.operation is Operation.EMERGENCY_REVERSAL
    assert received[0].request.transaction_id == "8" and terminal.busy


# --- link versions through the sessions ---------------------------------------------------------------
def test_the_registry_passes_link_version_through_the_timers_option():
    from posbridge import protocols
    spec = protocols.get("arcus2")
    assert spec.ecr_session().link.version == 2 and spec.terminal_session().link.version == 2
    assert spec.ecr_session(timers={"link_version": 1}).link.version == 1
    assert spec.terminal_session(timers={"ack_timeout": 0.2, "link_version": 1}).link.version == 1
    with pytest.raises(ValueError):
        spec.ecr_session(timers={"link_version": 3})


class RecordingWire(Wire):
    """A Wire that keeps every byte it carried, per direction."""

    def __init__(self, ecr, terminal, chunk: int = 0) -> None:
        super().__init__(ecr, terminal, chunk)
        self.carried: dict[str, bytearray] = {"ecr": bytearray(), "terminal": bytearray()}

    def _deliver(self, data: bytes, to, sink: list) -> None:
        self.carried["ecr" if to is self.terminal else "terminal"] += data
        super()._deliver(data, to, sink)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("chunk", [0, 1])
def test_full_exchange_in_either_link_version(version, chunk):
    timers = LinkTimers(link_version=version)
    ecr, terminal = Arcus2EcrSession(timers), Arcus2TerminalSession(timers)
    wire = RecordingWire(ecr, terminal, chunk)
    ecr.start(SALE, 0.0)
    wire.run()
    assert [type(e) for e in wire.terminal_events] == [RequestReceived]
    terminal.send_result(approved(), 0.0)
    wire.run()
    assert [type(e) for e in wire.ecr_events] == [Completed] and wire.ecr_events[0].result.approved
    for side in ("ecr", "terminal"):
        frames = [t for t in FrameScanner().feed(bytes(wire.carried[side])) if isinstance(t, FrameToken)]
        assert frames and {t.version for t in frames} == {version}


def test_mixed_link_versions_fail_typed_and_the_terminal_never_sees_the_request():
    ecr = Arcus2EcrSession(LinkTimers(link_version=1))
    terminal = Arcus2TerminalSession(TIMERS)
    wire = Wire(ecr, terminal)
    ecr.start(SALE, 0.0)
    wire.run()
    assert wire.terminal_events == []  # every send of the version 1 Q was refused
    [failed] = wire.ecr_events
    assert isinstance(failed, Failed) and isinstance(failed.error, NakLimit) and not ecr.busy


def test_a_request_with_the_same_bit_flipped_in_two_bytes():
    """The 8.13 sale that became an 8.57 charge: a version 1 terminal takes the damaged Q as good;
    a version 2 terminal answers NAK and takes the resend."""
    sale = SALE.with_changes(amount=813)
    for version in (1, 2):
        timers = LinkTimers(link_version=version)
        ecr, terminal = Arcus2EcrSession(timers), Arcus2TerminalSession(timers)
        ecr.start(sale, 0.0)
        ecr.data_to_send()
        ecr.receive(byte(ACK), 0.0)
        sent = ecr.data_to_send()
        damaged = sent.replace(b"amount=813", b"amount=857")
        assert [a ^ b for a, b in zip(sent, damaged) if a != b] == [0x04, 0x04]
        events = terminal.receive(byte(ENQ) + damaged, 0.0)
        if version == 1:
            assert [e.request.amount for e in events] == [857]  # charged 8.57 for an 8.13 sale
            assert terminal.data_to_send() == bytes([ACK, ACK])
            continue
        assert events == [] and terminal.data_to_send() == bytes([ACK, NAK])
        assert ecr.receive(byte(NAK), 0.1) == [] and ecr.data_to_send() == sent  # resent at once
        events = terminal.receive(sent, 0.1)
        assert [e.request.amount for e in events] == [813]


# --- hostile numbers and unreadable answers, through the sessions ----------------------------------------------
HUGE = "9" * 5000  # more digits than Python's int() takes from text


def lenient_frame(message_class: str, fields: dict, version: int = 2) -> bytes:
    """A frame the encoder would refuse (5,000-digit numbers): built by hand."""
    body = message_class + "\x1c".join(f"{k}={v}" for k, v in fields.items())
    return encode_frame(body.encode("cp1251"), version)


@pytest.mark.parametrize("key", ["amount", "currency", "transaction_id", "operation", "original_operation",
                                 "original_amount"])
def test_terminal_rejects_a_request_with_a_5000_digit_number(key):
    terminal = Arcus2TerminalSession(TIMERS)
    fields = {"operation": "4", "amount": "15000", "currency": "643", "transaction_id": "7", "rrn": "1", key: HUGE}
    events = delivered_request(terminal, lenient_frame("Q", fields))
    assert [type(e) for e in events] == [RequestRejected]
    assert "5000" in events[0].reason and len(events[0].reason) < 200
    # the terminal can answer it (913) without echoing what it could not read
    terminal.send_result(Result(Operation.SALE, Status.DECLINED, "913", host_code="913"), 0.0)
    assert terminal.data_to_send() == byte(ENQ)
    terminal.receive(byte(ACK), 0.0)
    answer = Message.decode_body(terminal.data_to_send()[3:-5])
    assert answer["response_code"] == "913" and HUGE not in answer.fields.values()


@pytest.mark.parametrize(("request_", "fields"), [
    (SALE, {"operation": "1", "response_code": "000", "result_amount": HUGE, "currency": HUGE, "transaction_id": "7"}),
    (Request(Operation.SETTLEMENT, transaction_id="7"),
     {"operation": "7", "response_code": "000", "sale_count": HUGE, "sale_amount": HUGE, "transaction_id": "7"}),
], ids=["amount-and-currency", "totals"])
def test_ecr_reports_5000_digit_numbers_in_a_result_as_an_answer_mismatch(request_, fields):
    ecr = started_ecr(request_)
    [event] = terminal_turn(ecr, lenient_frame("R", fields), 1.0)
    assert isinstance(event, Failed) and isinstance(event.error, AnswerMismatch) and not ecr.busy
    assert all("5000 digits" in problem for problem in event.error.problems)
    answer = event.error.answer  # best effort: what could not be read is None, never a guess
    assert (answer.amount, answer.currency, answer.totals) == (None, None, None)
    assert answer.status is Status.APPROVED  # the response code itself was readable


def test_ecr_takes_a_result_with_a_5000_digit_transaction_id_for_someone_else_s():
    ecr = started_ecr(timers=LinkTimers(ack_timeout=0.5, packet_timeout=1.0))
    fields = {"operation": "1", "response_code": "000", "result_amount": "15000", "transaction_id": HUGE}
    assert terminal_turn(ecr, lenient_frame("R", fields), 0.5) == []  # ACKed, not ours
    events = ecr.poll(1.0)
    assert len(events) == 1 and isinstance(events[0], Failed) and isinstance(events[0].error, ExchangeTimeout)


@pytest.mark.parametrize("code", [None, "", "5", HUGE])
def test_a_result_without_a_readable_response_code_is_an_answer_mismatch(code):
    ecr = started_ecr()
    fields = {"operation": "1", "result_amount": "15000", "currency": "643", "transaction_id": "7",
              "pan": "4111111111111111"}
    if code is not None:
        fields["response_code"] = code
    events = ecr.receive(byte(ENQ), 1.0)
    assert ecr.data_to_send() == byte(ACK)
    events += ecr.receive(lenient_frame("R", fields), 1.0)
    assert ecr.data_to_send() == byte(ACK)  # the link part completes as usual: the line stays clean
    events += ecr.receive(byte(EOT), 1.0)
    assert len(events) == 1 and isinstance(events[0], Failed)
    error = events[0].error
    assert isinstance(error, AnswerMismatch) and error.reason == "mismatch" and error.problems
    assert "response_code" in error.problems[0]
    answer = error.answer
    assert isinstance(answer, Result) and answer.status is Status.UNDEFINED and answer.amount == 15000
    assert answer.masked_pan == "411111******1111"
    assert not ecr.busy and ecr.next_deadline() is None and ecr.data_to_send() == b""
    ecr.start(SALE.with_changes(transaction_id="8"), 2.0)  # the next exchange starts at once
    assert ecr.data_to_send() == byte(ENQ)


def hostile_frames():
    """Frames of either version carrying a key of thousands of digits, plus any bytes around them."""
    keys = st.sampled_from(["amount", "currency", "transaction_id", "operation", "original_operation",
                            "result_amount", "sale_count", "response_code", "cancel_amount"])
    return st.builds(
        lambda message_class, key, n, version, before, after: before + byte(ENQ) + lenient_frame(
            message_class, {"operation": "1", "response_code": "000", "transaction_id": "7", key: "7" * n},
            version) + after,
        st.sampled_from(["Q", "R", "I", "A"]), keys, st.integers(4000, 6000), st.sampled_from([1, 2]),
        st.binary(max_size=20), st.binary(max_size=20))


@settings(max_examples=60, deadline=None)
@given(hostile_frames(), st.integers(min_value=1, max_value=4096))
def test_long_digit_runs_never_raise_in_either_session(data, chunk):
    for session in (Arcus2EcrSession(LinkTimers(link_version=1)), Arcus2TerminalSession(LinkTimers(link_version=1))):
        if isinstance(session, Arcus2EcrSession):
            session.start(SALE, 0.0)
            session.receive(byte(ACK), 0.0)
            session.receive(byte(ACK), 0.0)
        for i in range(0, len(data), chunk):
            for event in session.receive(data[i : i + chunk], 0.01):
                if isinstance(event, Failed):
                    assert isinstance(event.error, LinkError)
            session.poll(0.01)
        session.poll(1000.0)
        session.data_to_send()
