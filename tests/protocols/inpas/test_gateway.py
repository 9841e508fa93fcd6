"""INPAS gateway mode, sans-IO: the terminal asks its ECR to carry the bank-host connection with
operation 63, sub-commands 16 (open/close) and 17 (send/receive); the ECR answers
{25: 63, 65: mode, 67: 0|1[, 70: data]} (inpas-sa.md, Exchange)."""

from __future__ import annotations

import pytest

from posbridge.model import Operation, Request, Result, Status
from posbridge.protocols.common.session import (
    Completed, GatewayAnswered, GatewayCommand, RequestReceived, ResultDelivered,
)
from posbridge.protocols.inpas.fields import Message
from posbridge.protocols.inpas.frame import decode_frame, encode_frame
from posbridge.protocols.inpas.session import InpasEcrSession, InpasTerminalSession

SALE = Request(Operation.SALE, amount=150_00, currency=643, transaction_id="17")
APPROVED = Result(Operation.SALE, Status.APPROVED, "00", amount=150_00, currency=643, rrn="123456789012",
                  auth_code="A1", transaction_id="17")


class Line:
    """An ECR session and a terminal session joined in memory, on a virtual clock."""

    def __init__(self) -> None:
        self.ecr = InpasEcrSession()
        self.terminal = InpasTerminalSession()
        self.now = 0.0
        self.ecr_events: list[object] = []
        self.terminal_events: list[object] = []
        self.to_terminal: list[bytes] = []  # every chunk the ECR sent, for byte-level assertions
        self.to_ecr: list[bytes] = []

    def run(self, steps: int = 20) -> None:
        for _ in range(steps):
            self.now += 0.01
            out = self.ecr.data_to_send()
            if out:
                self.to_terminal.append(out)
            self.terminal_events += self.terminal.receive(out, self.now) + self.terminal.poll(self.now)
            back = self.terminal.data_to_send()
            if back:
                self.to_ecr.append(back)
            self.ecr_events += self.ecr.receive(back, self.now) + self.ecr.poll(self.now)

    def take(self, kind: type, side: str = "ecr") -> list:
        events = self.ecr_events if side == "ecr" else self.terminal_events
        found = [e for e in events if isinstance(e, kind)]
        events[:] = [e for e in events if not isinstance(e, kind)]
        return found


def _fields(frame_bytes: bytes) -> dict[int, object]:
    return dict(Message.decode_body(decode_frame(frame_bytes).body).fields)


def test_open_send_receive_close_then_the_result() -> None:
    line = Line()
    line.ecr.start(SALE, line.now)
    line.run()
    [received] = line.take(RequestReceived, "terminal")
    assert received.request.amount == 150_00
    script = [("open", b"10.0.0.1;7100;10.0.0.2;7100", True, b""), ("send", b"\x00\x10host request", True, b""),
              ("receive", b"", True, b"\x00\x0bhost answer"), ("close", b"", True, b"")]
    for action, data, ok, reply in script:
        line.terminal.send_gateway(action, data, line.now)
        line.run()
        [command] = line.take(GatewayCommand)
        assert (command.action, command.data) == (action, data)
        line.ecr.answer_gateway(ok, reply, line.now)
        line.run()
        [answered] = line.take(GatewayAnswered, "terminal")
        assert (answered.action, answered.ok, answered.data) == (action, ok, reply)
        assert answered.exchange == received.exchange
    line.terminal.send_result(APPROVED, line.now)
    line.run()
    [completed] = line.take(Completed)
    assert completed.result.approved and line.take(ResultDelivered, "terminal")
    assert not line.ecr.busy and not line.terminal.busy


@pytest.mark.parametrize(("action", "sub", "mode"), [("open", "16", "1"), ("close", "16", "0"),
                                                      ("send", "17", "0"), ("receive", "17", "1")])
def test_the_bytes_of_each_command_and_answer(action: str, sub: str, mode: str) -> None:
    line = Line()
    line.ecr.start(SALE, line.now)
    line.run()
    line.to_ecr.clear()
    line.to_terminal.clear()
    line.terminal.send_gateway(action, b"\x01\x02" if action == "send" else b"", line.now)
    line.run(3)
    command = _fields(line.to_ecr[0])
    expected = {25: "63", 64: mode, 65: sub}
    if action == "send":
        expected[70] = b"\x01\x02"
    assert command == expected
    line.ecr.answer_gateway(action != "close", b"\xff" if action == "receive" else b"", line.now)
    line.run(3)
    answer = _fields(next(chunk for chunk in line.to_terminal if chunk[:1] == b"\x02"))
    expected_answer = {25: "63", 65: sub, 67: "0" if action != "close" else "1"}
    if action == "receive":
        expected_answer[70] = b"\xff"
    assert answer == expected_answer


def test_a_resent_command_is_not_carried_out_twice() -> None:
    """The ECR's ACK of a 'send' is lost: the terminal resends the packet; the host must not get the
    bytes twice."""
    line = Line()
    line.ecr.start(SALE, line.now)
    line.run()
    line.terminal.send_gateway("send", b"pay 150", line.now)
    line.now += 0.01
    frame = line.terminal.data_to_send()
    assert line.ecr.receive(frame, line.now) == [GatewayCommand("send", b"pay 150")]
    line.ecr.data_to_send()  # our ACK, lost on the line
    line.now += 6.0  # WAITACK: the terminal resends
    line.terminal.poll(line.now)
    resent = line.terminal.data_to_send()
    assert resent == frame
    assert line.ecr.receive(resent, line.now) == []


def test_an_ecr_that_never_answers_gives_the_terminal_a_refusal_after_waitpacket() -> None:
    line = Line()
    line.ecr.start(SALE, line.now)
    line.run()
    line.terminal.send_gateway("open", b"10.0.0.1;7100", line.now)
    line.run()
    assert line.take(GatewayCommand)
    line.now += 46.0
    events = line.terminal.poll(line.now)
    assert [(e.action, e.ok) for e in events if isinstance(e, GatewayAnswered)] == [("open", False)]
    line.terminal.send_result(APPROVED.with_changes(status=Status.NO_CONNECTION, response_code="34"), line.now)


def test_bad_calls_are_refused() -> None:
    terminal, ecr = InpasTerminalSession(), InpasEcrSession()
    with pytest.raises(RuntimeError):
        terminal.send_gateway("open", b"", 0.0)  # no request in progress
    with pytest.raises(RuntimeError):
        ecr.answer_gateway(True, b"", 0.0)  # nothing to answer
    line = Line()
    line.ecr.start(SALE, line.now)
    line.run()
    with pytest.raises(ValueError, match="gateway action"):
        line.terminal.send_gateway("teleport", b"", line.now)
    with pytest.raises(ValueError, match="does not fit"):
        line.terminal.send_gateway("send", b"x" * 65_536, line.now)


def test_an_unknown_mode_is_refused_by_the_ecr_without_an_event() -> None:
    line = Line()
    line.ecr.start(SALE, line.now)
    line.run()
    odd = encode_frame(Message({25: 63, 65: 17, 64: 7}).encode_body())
    line.ecr_events += line.ecr.receive(odd, line.now)
    assert not line.take(GatewayCommand)
    answer = line.ecr.data_to_send()
    assert _fields(answer[1:]) == {25: "63", 65: "17", 67: "1"}  # after our ACK of the packet


def test_gateway_commands_are_masked_in_repr() -> None:
    assert "4111" not in repr(GatewayCommand("send", b"4111111111111111"))
    assert "16 bytes" in repr(GatewayAnswered("receive", True, b"4111111111111111"))
