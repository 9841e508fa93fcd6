"""Arcus2-style link layer, sans-IO: turns, ENQ tries, frame ACK/NAK, collisions, timers as handed-in time."""

from __future__ import annotations

import pytest

from posbridge.protocols.arcus2.constants import ACK, ENQ, EOT, NAK
from posbridge.protocols.arcus2.fields import Message
from posbridge.protocols.arcus2.frame import encode_frame
from posbridge.protocols.arcus2.link import (
    Arcus2Link,
    FrameRejected,
    LinkTimers,
    MessageDelivered,
    MessageReceived,
    MessageUndelivered,
    PacketTimeout,
    Phase,
)
from posbridge.protocols.common.errors import NakLimit, NoAck

TIMERS = LinkTimers()  # T1 2.0 s, ENQ tries 500 ms apart, 3 tries
Q = Message("Q", {"operation": "1", "amount": "100", "currency": "643", "transaction_id": "7"})
I = Message("I", {"text_message": "ВСТАВЬТЕ КАРТУ"})
Q_FRAME = encode_frame(Q.encode_body())
I_FRAME = encode_frame(I.encode_body())


def ecr_link(**timers) -> Arcus2Link:
    return Arcus2Link("ecr", LinkTimers(**timers) if timers else TIMERS)


def terminal_link(**timers) -> Arcus2Link:
    return Arcus2Link("terminal", LinkTimers(**timers) if timers else TIMERS)


def byte(value: int) -> bytes:
    return bytes([value])


def test_defaults_are_the_spec_values():
    assert (TIMERS.ack_timeout, TIMERS.packet_timeout, TIMERS.enq_interval, TIMERS.tries) == (2.0, 120.0, 0.5, 3)
    assert TIMERS.peer_turn_limit == 6.0
    with pytest.raises(ValueError):
        LinkTimers(tries=0)
    with pytest.raises(ValueError):
        Arcus2Link("host")  # type: ignore[arg-type]


def test_a_turn_enq_ack_frame_ack_eot():
    link = ecr_link()
    link.send(Q, 0.0)
    assert link.data_to_send() == byte(ENQ) and link.phase is Phase.ENQ_SENT
    assert link.next_deadline() == 2.0
    assert link.receive(byte(ACK), 0.1) == []
    assert link.data_to_send() == Q_FRAME and link.phase is Phase.SENDING
    assert link.receive(byte(ACK), 0.2) == [MessageDelivered(Q)]
    assert link.data_to_send() == byte(EOT)
    assert link.phase is Phase.IDLE and link.next_deadline() is None and not link.sending


def test_several_messages_share_one_turn():
    link = terminal_link()
    link.send(I, 0.0)
    link.send(I, 0.0)  # queued behind: no second ENQ
    assert link.data_to_send() == byte(ENQ)
    link.receive(byte(ACK), 0.0)
    assert link.data_to_send() == I_FRAME
    assert link.receive(byte(ACK), 0.0) == [MessageDelivered(I)]
    assert link.data_to_send() == I_FRAME
    assert link.receive(byte(ACK), 0.0) == [MessageDelivered(I)]
    assert link.data_to_send() == byte(EOT)


def test_nak_to_enq_is_busy_and_is_retried_500_ms_later_then_no_connection():
    link = ecr_link()
    link.send(Q, 0.0)
    link.data_to_send()
    for try_number in (1, 2):
        now = try_number * 1.0
        assert link.receive(byte(NAK), now) == []
        assert link.phase is Phase.ENQ_PAUSE and link.next_deadline() == now + 0.5
        assert link.poll(now + 0.49) == [] and link.data_to_send() == b""
        assert link.poll(now + 0.5) == [] and link.data_to_send() == byte(ENQ)
    events = link.receive(byte(NAK), 3.0)
    assert len(events) == 1 and isinstance(events[0], MessageUndelivered)
    assert isinstance(events[0].error, NoAck) and "busy" in str(events[0].error)
    assert link.phase is Phase.IDLE and link.data_to_send() == b""


def test_silence_after_three_enq_tries_is_no_connection():
    """The "999" case: nobody answers ENQ within T1, three times, 500 ms apart."""
    link = ecr_link()
    link.send(Q, 0.0)
    sent_at = [0.0]
    assert link.data_to_send() == byte(ENQ)
    now = 0.0
    while True:
        deadline = link.next_deadline()
        assert deadline is not None
        now = deadline
        events = link.poll(now)
        if events:
            break
        if link.data_to_send() == byte(ENQ):
            sent_at.append(now)
    assert sent_at == [0.0, 2.5, 5.0]
    assert now == pytest.approx(7.0)
    assert [type(e) for e in events] == [MessageUndelivered]
    assert isinstance(events[0].error, NoAck) and "no connection" in str(events[0].error)
    assert not link.sending and link.next_deadline() is None


def test_frame_nak_is_resent_at_once_three_sends_in_all():
    link = ecr_link()
    link.send(Q, 0.0)
    link.data_to_send()
    link.receive(byte(ACK), 0.0)
    assert link.data_to_send() == Q_FRAME
    for now in (0.1, 0.2):
        assert link.receive(byte(NAK), now) == []
        assert link.data_to_send() == Q_FRAME
    events = link.receive(byte(NAK), 0.3)
    assert len(events) == 1 and isinstance(events[0].error, NakLimit)
    assert link.data_to_send() == byte(EOT)  # the turn ends
    assert link.phase is Phase.IDLE


def test_frame_without_ack_is_resent_after_t1_then_given_up():
    link = terminal_link(ack_timeout=1.0)
    link.send(I, 0.0)
    link.data_to_send()
    link.receive(byte(ACK), 0.0)
    assert link.data_to_send() == I_FRAME
    assert link.poll(0.99) == [] and link.data_to_send() == b""
    assert link.poll(1.0) == [] and link.data_to_send() == I_FRAME
    assert link.poll(2.0) == [] and link.data_to_send() == I_FRAME
    events = link.poll(3.0)
    assert len(events) == 1 and isinstance(events[0].error, NoAck)
    assert link.data_to_send() == byte(EOT)


def test_receiving_a_turn():
    link = terminal_link()
    assert link.receive(byte(ENQ), 0.0) == []
    assert link.data_to_send() == byte(ACK) and link.phase is Phase.RECEIVING
    assert link.receive(Q_FRAME, 0.1) == [MessageReceived(Q)]
    assert link.data_to_send() == byte(ACK)
    assert link.receive(byte(EOT), 0.2) == []
    assert link.phase is Phase.IDLE and link.next_deadline() is None


def test_bad_frame_is_answered_nak_and_the_resend_ack():
    link = terminal_link()
    link.receive(byte(ENQ), 0.0)
    link.data_to_send()
    damaged = Q_FRAME[:-1] + bytes([Q_FRAME[-1] ^ 0x20])
    events = link.receive(damaged, 0.1)
    assert [type(e) for e in events] == [FrameRejected] and events[0].error.reason == "crc"
    assert link.data_to_send() == byte(NAK) and link.frames_rejected == 1
    undecodable = encode_frame(b"Qoperation")
    events = link.receive(undecodable, 0.2)
    assert events[0].error.reason == "field" and link.data_to_send() == byte(NAK)
    assert link.receive(Q_FRAME, 0.3) == [MessageReceived(Q)]
    assert link.data_to_send() == byte(ACK)


def test_enq_collision_the_terminal_wins():
    ecr, terminal = ecr_link(), terminal_link()
    ecr.send(Message("A"), 0.0)
    terminal.send(I, 0.0)
    ecr_enq, terminal_enq = ecr.data_to_send(), terminal.data_to_send()
    assert ecr_enq == terminal_enq == byte(ENQ)
    # both ENQs cross on the line
    assert ecr.receive(terminal_enq, 0.01) == []
    assert ecr.data_to_send() == byte(ACK) and ecr.phase is Phase.RECEIVING  # the ECR yields
    assert terminal.receive(ecr_enq, 0.01) == []
    assert terminal.data_to_send() == byte(NAK) and terminal.phase is Phase.ENQ_SENT  # busy
    assert ecr.receive(byte(NAK), 0.02) == []  # the NAK to its ENQ changes nothing now
    assert terminal.receive(byte(ACK), 0.02) == []
    assert terminal.data_to_send() == I_FRAME
    assert ecr.receive(I_FRAME, 0.03) == [MessageReceived(I)]
    assert terminal.receive(ecr.data_to_send(), 0.03) == [MessageDelivered(I)]
    assert terminal.data_to_send() == byte(EOT)
    assert ecr.receive(byte(EOT), 0.04) == []
    assert ecr.data_to_send() == byte(ENQ) and ecr.phase is Phase.ENQ_SENT  # the ECR retries its turn


def test_enq_during_our_own_turn_is_answered_busy():
    link = ecr_link()
    link.send(Q, 0.0)
    link.receive(byte(ACK), 0.0)
    link.data_to_send()
    assert link.receive(byte(ENQ), 0.1) == []
    assert link.data_to_send() == byte(NAK) and link.phase is Phase.SENDING


def test_messages_wait_for_the_peers_turn_to_end():
    link = terminal_link()
    link.receive(byte(ENQ), 0.0)
    link.receive(Q_FRAME, 0.0)
    link.data_to_send()
    link.send(I, 0.1)
    assert link.data_to_send() == b""  # the ECR's turn is not over
    link.receive(byte(EOT), 0.2)
    assert link.data_to_send() == byte(ENQ)


def test_a_silent_peer_turn_ends_after_the_turn_timeout():
    link = terminal_link(ack_timeout=1.0)
    link.receive(byte(ENQ), 0.0)
    link.receive(Q_FRAME, 0.5)  # restarts the silence timer
    link.data_to_send()
    link.send(I, 0.6)
    assert link.next_deadline() == 3.5
    assert link.poll(3.49) == [] and link.data_to_send() == b""
    assert link.poll(3.5) == [] and link.data_to_send() == byte(ENQ)


def test_a_repeated_enq_in_the_peers_turn_is_acked_again():
    link = terminal_link()
    link.receive(byte(ENQ), 0.0)
    link.receive(byte(ENQ), 2.6)  # our ACK was lost: the ECR tried again
    assert link.data_to_send() == bytes([ACK, ACK]) and link.phase is Phase.RECEIVING


def test_a_frame_without_enq_is_still_acked():
    link = terminal_link()
    assert link.receive(b"\x00\xff" + Q_FRAME, 0.0) == [MessageReceived(Q)]
    assert link.data_to_send() == byte(ACK)
    assert link.noise_bytes == 2 and link.phase is Phase.RECEIVING


def test_stray_acks_naks_and_eots_are_ignored_when_idle():
    link = ecr_link()
    assert link.receive(bytes([ACK, NAK, EOT, ACK]), 0.0) == []
    assert link.data_to_send() == b"" and link.phase is Phase.IDLE


def test_stray_stx_does_not_swallow_the_next_frame_forever():
    link = terminal_link(ack_timeout=1.0)
    assert link.receive(b"\x02\xff\xff", 0.0) == []  # announces a 65535-byte body
    assert link.next_deadline() == 1.0
    link.poll(1.0)
    assert link.receive(Q_FRAME, 1.1) == [MessageReceived(Q)]
    assert link.noise_bytes == 3


def test_result_timer():
    link = ecr_link(packet_timeout=10.0)
    link.expect_packet(0.0)
    assert link.next_deadline() == 10.0
    link.expect_packet(4.0)  # restarted
    assert link.poll(13.9) == []
    assert link.poll(14.0) == [PacketTimeout()]
    assert link.next_deadline() is None
    link.expect_packet(20.0)
    link.stop_packet_timer()
    assert link.next_deadline() is None


def test_discard_outgoing_closes_a_turn_we_asked_for():
    link = ecr_link()
    link.send(Q, 0.0)
    link.data_to_send()
    link.discard_outgoing()
    assert link.data_to_send() == byte(EOT) and link.phase is Phase.IDLE and not link.sending
    assert link.receive(byte(ACK), 0.1) == [] and link.data_to_send() == b""  # a late ACK: nothing to send


def test_end_peer_turn_starts_a_waiting_turn():
    link = ecr_link()
    link.receive(byte(ENQ), 0.0)
    link.send(Q, 0.1)
    link.data_to_send()
    link.end_peer_turn(0.2)
    assert link.data_to_send() == byte(ENQ) and link.phase is Phase.ENQ_SENT


def test_reset_forgets_everything():
    link = ecr_link()
    link.send(Q, 0.0)
    link.receive(Q_FRAME[:5], 0.0)
    link.expect_packet(0.0)
    link.reset()
    assert link.phase is Phase.IDLE and link.next_deadline() is None and link.data_to_send() == b""
    assert not link.sending


# --- link versions ------------------------------------------------------------------------------------
def test_link_version_2_is_the_default_and_is_checked():
    assert TIMERS.link_version == 2 and ecr_link().version == 2
    assert Q_FRAME[0] == 0x01 and Q_FRAME == encode_frame(Q.encode_body(), 2)  # SOH: version 2
    assert LinkTimers(link_version=1).link_version == 1
    assert LinkTimers(link_version=2.0).link_version == 2  # as a TOML scenario's timers give it
    for bad in (0, 3, "2", True, 1.5, None):
        with pytest.raises(ValueError):
            LinkTimers(link_version=bad)


@pytest.mark.parametrize("version", [1, 2])
def test_a_side_sends_frames_of_its_own_version(version):
    link = ecr_link(link_version=version)
    link.send(Q, 0.0)
    link.receive(byte(ACK), 0.0)
    assert link.data_to_send() == byte(ENQ) + encode_frame(Q.encode_body(), version)


def test_a_version_2_side_answers_a_version_1_frame_nak():
    link = terminal_link()
    link.receive(byte(ENQ), 0.0)
    link.data_to_send()
    events = link.receive(encode_frame(Q.encode_body(), 1), 0.1)
    assert [type(e) for e in events] == [FrameRejected] and events[0].error.reason == "version"
    assert link.data_to_send() == byte(NAK)
    assert link.receive(Q_FRAME, 0.2) == [MessageReceived(Q)] and link.data_to_send() == byte(ACK)


def test_a_version_1_side_accepts_both_versions():
    link = terminal_link(link_version=1)
    link.receive(byte(ENQ), 0.0)
    link.data_to_send()
    for version in (1, 2):
        assert link.receive(encode_frame(Q.encode_body(), version), 0.1) == [MessageReceived(Q)]
        assert link.data_to_send() == byte(ACK)


def _talk(a: Arcus2Link, b: Arcus2Link) -> tuple[list, list, list[bytes]]:
    """Carry bytes both ways until the line is quiet; (a's events, b's events, what b sent)."""
    a_events: list = []
    b_events: list = []
    b_wrote: list[bytes] = []
    for _ in range(50):
        out_a = a.data_to_send()
        if out_a:
            b_events += b.receive(out_a, 0.0)
        out_b = b.data_to_send()
        if out_b:
            b_wrote.append(out_b)
            a_events += a.receive(out_b, 0.0)
        if not out_a and not out_b:
            break
    return a_events, b_events, b_wrote


@pytest.mark.parametrize("ecr_version", [1, 2])
def test_a_version_1_terminal_answers_in_the_version_its_ecr_speaks(ecr_version: int):
    # Before: a version 1 terminal took a version 2 ECR's request and answered in version 1, which
    # the ECR refuses — the sale done, its answer lost, and the recovery's reversal lost the same way.
    ecr, terminal = ecr_link(link_version=ecr_version), terminal_link(link_version=1)
    ecr.send(Q, 0.0)
    _, terminal_events, _ = _talk(ecr, terminal)
    assert terminal_events == [MessageReceived(Q)]
    terminal.send(I, 0.0)
    ecr_events, _, terminal_wrote = _talk(ecr, terminal)
    assert ecr_events == [MessageReceived(I)]
    assert encode_frame(I.encode_body(), ecr_version) in terminal_wrote


def test_a_version_1_sender_facing_a_version_2_receiver_fails_typed_after_three_sends():
    sender, receiver = ecr_link(link_version=1), terminal_link()
    sender.send(Q, 0.0)
    events: list = []
    for _ in range(10):
        out = sender.data_to_send()
        if not out:
            break
        receiver.receive(out, 0.0)
        events += sender.receive(receiver.data_to_send(), 0.0)
    assert len(events) == 1 and isinstance(events[0], MessageUndelivered)
    assert isinstance(events[0].error, NakLimit) and receiver.frames_rejected == 3


def test_the_same_bit_flipped_in_two_bytes_of_a_version_2_frame_is_answered_nak():
    """amount=813 read as 857 ('1' -> '5', '3' -> '7': bit 2 flips in both bytes): a version 1 side
    takes the damaged frame as good, a version 2 side answers NAK and takes the resend."""
    sale = Message("Q", {"operation": "1", "amount": "813", "currency": "643", "transaction_id": "7"})
    for version in (1, 2):
        frame = encode_frame(sale.encode_body(), version)
        damaged = frame.replace(b"amount=813", b"amount=857")
        assert [a ^ b for a, b in zip(frame, damaged) if a != b] == [0x04, 0x04]
        link = terminal_link(link_version=version)
        link.receive(byte(ENQ), 0.0)
        link.data_to_send()
        events = link.receive(damaged, 0.1)
        if version == 1:
            assert [e.message["amount"] for e in events] == ["857"]  # the LRC cannot see it
            assert link.data_to_send() == byte(ACK)
        else:
            assert [type(e) for e in events] == [FrameRejected] and events[0].error.reason == "crc"
            assert link.data_to_send() == byte(NAK)
            assert link.receive(frame, 0.2) == [MessageReceived(sale)]


def test_a_damaged_frame_never_changes_the_version_a_version_1_side_answers_in():
    # Between a version 1 ECR's request and the terminal's answer the line delivers damage that
    # looks like version 2: a version 2 frame with a bit flipped, a version 1 frame whose STX came
    # in as SOH. Each is NAKed; the answer still goes in version 1, the version its ECR speaks
    # (only a good frame says which version the peer speaks).
    ecr, terminal = ecr_link(link_version=1), terminal_link(link_version=1)
    ecr.send(Q, 0.0)
    _talk(ecr, terminal)
    flipped = bytearray(encode_frame(Q.encode_body(), 2))
    flipped[5] ^= 0x04
    as_soh = b"\x01" + encode_frame(Q.encode_body(), 1)[1:]
    for damage in (bytes(flipped), as_soh):
        terminal.reset_receiver()
        events = terminal.receive(damage, 0.1) + terminal.poll(0.1 + TIMERS.ack_timeout)
        assert MessageReceived(Q) not in events and terminal.version == 1
        terminal.data_to_send()
    terminal.reset_receiver()
    terminal.end_peer_turn(5.0)
    terminal.send(I, 5.0)
    ecr_events, _, terminal_wrote = _talk(ecr, terminal)
    assert ecr_events == [MessageReceived(I)]
    assert encode_frame(I.encode_body(), 1) in terminal_wrote
