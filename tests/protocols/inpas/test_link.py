"""INPAS SA link layer and sessions, sans-IO: exact bytes, timers as handed-in time, faults, multi-part
answers. What every protocol does (every operation both ways, chunking, the cashier dialog, garbage,
the every-byte fault sweep) is in the protocol kit (tests/protocols/kit)."""

from __future__ import annotations

import pytest

from posbridge.protocols.common.errors import ExchangeAborted, ExchangeTimeout, NakLimit, NoAck
from posbridge.protocols.common.model import Operation, Request, Result, Slips, Status
from posbridge.protocols.common.session import (
    Completed,
    Failed,
    Progress,
    RequestReceived,
    RequestRejected,
    ResultDelivered,
    ResultUndelivered,
)
from posbridge.protocols.inpas.constants import ACK, ENQ, EOT, NAK, SOH, STX
from posbridge.protocols.inpas.fields import Message
from posbridge.protocols.inpas.frame import encode_frame, encode_records
from posbridge.protocols.inpas.link import InpasLink, LinkTimers, MessageReceived
from posbridge.protocols.inpas.session import InpasEcrSession, InpasTerminalSession
from tests.protocols.wire import Wire

TIMERS = LinkTimers(ack_timeout=5.0, packet_timeout=45.0)
SALE = Request(Operation.SALE, 150, 643, transaction_id="7", terminal_id="00344224")
# The golden vector "sale-request" carries exactly these fields.
VECTOR_SALE = bytes.fromhex("021b00000300313530040300363433190100311b0800303033343432323432dd")


def approved(request: Request = SALE, **changes) -> Result:
    result = Result(request.operation, Status.APPROVED, response_code="00", host_code="00",
                    response_text="ОДОБРЕНО", amount=request.amount, currency=request.currency,
                    rrn="333109189729", auth_code="454583", masked_pan="411111******1111",
                    terminal_id="00344224", transaction_id=request.transaction_id,
                    slips=Slips("   ТЕСТ БАНК\nОПЛАТА\nОДОБРЕНО", "КОПИЯ КАССИРА"))
    return result.with_changes(**changes)


def ecr_session() -> InpasEcrSession:
    return InpasEcrSession(TIMERS, ecr_id=None)


def test_request_bytes_match_the_golden_vector():
    ecr = ecr_session()
    ecr.start(SALE.with_changes(transaction_id=None), 0.0)
    assert ecr.data_to_send() == VECTOR_SALE


def test_ack_then_final_response_then_ack_and_eot():
    ecr = ecr_session()
    ecr.start(SALE, 0.0)
    ecr.data_to_send()
    assert ecr.receive(bytes([ACK]), 0.1) == []
    assert ecr.next_deadline() == pytest.approx(45.1)  # WAITPACKET running
    response = encode_frame(Message({0: 150, 4: "643", 15: "001", 19: "ОДОБРЕНО", 25: 1, 39: 1,
                                     14: "333109189729", 13: "454583"}).encode_body())
    events = ecr.receive(response, 1.0)
    assert len(events) == 1 and isinstance(events[0], Completed)
    result = events[0].result
    assert (result.status, result.response_code, result.rrn, result.auth_code, result.amount) == (
        Status.APPROVED, "001", "333109189729", "454583", 150)
    assert ecr.data_to_send() == bytes([ACK, EOT])
    assert not ecr.busy and ecr.next_deadline() is None


def test_nak_resends_the_same_frame_and_three_naks_fail():
    ecr = ecr_session()
    ecr.start(SALE, 0.0)
    first = ecr.data_to_send()
    assert ecr.receive(bytes([NAK]), 0.1) == []
    assert ecr.data_to_send() == first
    assert ecr.receive(bytes([NAK]), 0.2) == []
    assert ecr.data_to_send() == first
    events = ecr.receive(bytes([NAK]), 0.3)
    assert len(events) == 1 and isinstance(events[0], Failed) and isinstance(events[0].error, NakLimit)
    assert ecr.data_to_send() == b"" and not ecr.busy


def test_three_bad_crcs_are_each_answered_nak_and_nothing_is_reported():
    terminal = InpasTerminalSession(TIMERS)
    bad = VECTOR_SALE[:-2] + b"\x32\x22"  # golden vector "bad-crc"
    for i in range(3):
        assert terminal.receive(bad, float(i)) == []
        assert terminal.data_to_send() == bytes([NAK])
    assert not terminal.busy


def test_no_ack_within_waitack_fails_without_resend_on_the_ecr_side():
    ecr = ecr_session()
    ecr.start(SALE, 0.0)
    ecr.data_to_send()
    assert ecr.poll(4.99) == []
    events = ecr.poll(5.0)
    assert isinstance(events[0], Failed) and isinstance(events[0].error, NoAck)
    assert ecr.data_to_send() == b""  # closes without EOT, like the vendor's library


def test_enq_while_waiting_for_ack_restarts_the_timer():
    ecr = ecr_session()
    ecr.start(SALE, 0.0)
    ecr.data_to_send()
    assert ecr.receive(bytes([ENQ]), 4.0) == []
    assert ecr.poll(8.9) == []  # would have expired at 5.0 without the ENQ
    assert ecr.receive(bytes([ENQ]), 8.9) == []
    assert ecr.poll(13.8) == []
    assert ecr.receive(bytes([ACK]), 13.8) == []
    assert ecr.busy


def test_lone_eot_from_the_terminal_aborts():
    ecr = ecr_session()
    ecr.start(SALE, 0.0)
    ecr.data_to_send()
    ecr.receive(bytes([ACK]), 0.1)
    events = ecr.receive(bytes([EOT]), 2.0)
    assert isinstance(events[0], Failed) and isinstance(events[0].error, ExchangeAborted)
    assert not ecr.busy


def test_wait_packets_keep_a_slow_authorization_alive_past_the_packet_timer():
    timers = LinkTimers(ack_timeout=0.5, packet_timeout=1.0)
    ecr = InpasEcrSession(timers, ecr_id=None)
    ecr.start(SALE, 0.0)
    ecr.data_to_send()
    ecr.receive(bytes([ACK]), 0.0)
    wait = encode_frame(Message({25: 21}).encode_body())
    assert wait == bytes.fromhex("0205001902003231a5c2")  # golden vector "wait"
    now = 0.0
    for _ in range(5):  # 4.5 s of authorization, 4.5 x the packet timer
        now += 0.9
        assert ecr.poll(now) == []
        assert ecr.receive(wait, now) == [Progress("")]
        assert ecr.data_to_send() == bytes([ACK])
    final = encode_frame(Message({25: 1, 39: 1, 15: "001"}).encode_body())
    assert isinstance(ecr.receive(final, now + 0.9)[0], Completed)


def test_packet_timeout_without_wait_fails():
    timers = LinkTimers(ack_timeout=0.5, packet_timeout=1.0)
    ecr = InpasEcrSession(timers, ecr_id=None)
    ecr.start(SALE, 0.0)
    ecr.data_to_send()
    ecr.receive(bytes([ACK]), 0.0)
    assert ecr.poll(0.99) == []
    events = ecr.poll(1.0)
    assert isinstance(events[0], Failed) and isinstance(events[0].error, ExchangeTimeout)


def test_unacked_final_response_is_resent_then_given_up():
    terminal = InpasTerminalSession(LinkTimers(ack_timeout=1.0, resend_on_ack_timeout=True))
    events = terminal.receive(VECTOR_SALE, 0.0)
    assert isinstance(events[0], RequestReceived)
    assert terminal.data_to_send() == bytes([ACK])
    result = approved(SALE.with_changes(transaction_id=None))
    terminal.send_result(result, 0.0)
    first = terminal.data_to_send()
    assert first[0] == STX
    assert terminal.poll(1.0) == [] and terminal.data_to_send() == first  # 2nd send
    assert terminal.poll(2.0) == [] and terminal.data_to_send() == first  # 3rd send
    events = terminal.poll(3.0)
    assert len(events) == 1 and isinstance(events[0], ResultUndelivered)
    assert events[0].result == result and isinstance(events[0].error, NoAck)
    assert terminal.data_to_send() == b"" and not terminal.busy


def test_noise_and_stray_acks_before_a_request_are_skipped():
    terminal = InpasTerminalSession(TIMERS)
    events = terminal.receive(bytes.fromhex("00ff06") + VECTOR_SALE, 0.0)  # vector noise-before-frame
    assert [type(e) for e in events] == [RequestReceived]
    assert events[0].request.amount == 150 and events[0].request.operation is Operation.SALE
    assert terminal.link.noise_bytes == 3  # 0x00 0xFF, and the ACK after them counts as noise too


def test_a_control_value_right_after_noise_is_not_taken_for_an_eot():
    ecr = ecr_session()
    ecr.start(SALE, 0.0)
    ecr.data_to_send()
    ecr.receive(bytes([ACK]), 0.1)
    # The tail of a frame whose start was lost: "...0" then tag 4 (EOT's value) then more.
    assert ecr.receive(bytes.fromhex("3135300403003634"), 0.2) == []
    assert ecr.busy
    events = ecr.receive(bytes([EOT]), 0.3)  # a lone EOT after a frame or control byte still aborts
    assert events == [] and ecr.busy  # ...but not straight after noise: it too could be frame data
    final = encode_frame(Message({25: 1, 39: 1, 15: "001"}).encode_body())
    assert isinstance(ecr.receive(final, 0.4)[0], Completed)


def test_a_resent_request_whose_ack_was_lost_is_acked_again_and_reported_once():
    terminal = InpasTerminalSession(TIMERS)
    assert len(terminal.receive(VECTOR_SALE, 0.0)) == 1
    assert terminal.receive(VECTOR_SALE, 0.5) == []
    assert terminal.data_to_send() == bytes([ACK, ACK])


def test_unknown_operation_is_rejected_with_a_reason():
    terminal = InpasTerminalSession(TIMERS)
    frame = encode_frame(Message({25: 77, 0: 100}).encode_body())
    events = terminal.receive(frame, 0.0)
    assert events == [RequestRejected("operation code 77 is not supported", "77")]


def test_non_digit_amount_is_rejected():
    terminal = InpasTerminalSession(TIMERS)
    body = encode_records([(0, b"1O0"), (25, b"1")])  # the encoder itself refuses to build this
    events = terminal.receive(encode_frame(body), 0.0)
    assert isinstance(events[0], RequestRejected) and "amount" in events[0].reason


# --- both sessions wired together -------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [0, 1, 3, 7])
def test_full_exchange_with_multipart_answer_in_any_chunking(chunk):
    ecr = ecr_session()
    terminal = InpasTerminalSession(TIMERS, part_size=64)
    wire = Wire(ecr, terminal, chunk)
    ecr.start(SALE, 0.0)
    wire.run()
    assert [type(e) for e in wire.terminal_events] == [RequestReceived]
    assert wire.terminal_events[0].request == SALE
    terminal.send_progress("", 0.0)
    wire.run()
    assert wire.ecr_events == [Progress("")]
    result = approved()
    terminal.send_result(result, 0.0)
    frames_start = terminal.link.data_to_send()
    assert frames_start[0] == SOH  # the answer is larger than 64 bytes: it goes out in parts
    ecr.receive(frames_start, 0.0)  # put the first part through by hand, then let the wire run
    wire.run()
    completed = [e for e in wire.ecr_events if isinstance(e, Completed)]
    assert len(completed) == 1
    got = completed[0].result
    assert (got.status, got.rrn, got.auth_code, got.masked_pan, got.amount) == (
        Status.APPROVED, "333109189729", "454583", "411111******1111", 150)
    assert got.slips == Slips("   ТЕСТ БАНК\nОПЛАТА\nОДОБРЕНО", "КОПИЯ КАССИРА")
    assert isinstance(wire.terminal_events[-1], ResultDelivered)
    assert not ecr.busy and not terminal.busy


def test_a_frame_arriving_instead_of_the_ack_counts_as_the_ack():
    ecr = ecr_session()
    ecr.start(SALE, 0.0)
    ecr.data_to_send()
    final = encode_frame(Message({25: 1, 39: 16, 15: "116", 19: "ОТКАЗ"}).encode_body())
    events = ecr.receive(final, 0.5)  # the ACK byte was lost on the line
    assert isinstance(events[0], Completed) and events[0].result.status is Status.DECLINED
    assert events[0].result.response_code == "116"


def test_stray_start_byte_does_not_swallow_the_next_frame_forever():
    link = InpasLink("terminal", LinkTimers(ack_timeout=1.0))
    assert link.receive(b"\x02\xff\xff", 0.0) == []  # a bogus frame header: 65535 bytes announced
    assert link.next_deadline() == 1.0
    link.poll(1.0)
    events = link.receive(VECTOR_SALE, 1.1)
    assert [type(e) for e in events] == [MessageReceived]


