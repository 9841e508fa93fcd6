"""Attacks on INPAS gateway mode (posbridge/ecr/gateway.py, protocols/inpas/session.py gateway
commands, posbridge/emulator/remote_host.py PBH1): faults of the line, the host and the relay. A test
that found a real bug is said so in its docstring (all fixed: a second identical "receive" after a lost
ACK was dropped as a resend; a full 65,535-byte receive overflowed the answer frame); the others
document behaviour that held."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest

from posbridge import protocols
from posbridge.model import Operation, Request, Status
from posbridge.protocols.common.session import GatewayAnswered, GatewayCommand, RequestReceived

from tests.protocols.inpas.test_gateway import SALE, Line

ACK = b"\x06"


def step(line: Line, drop_ack_to_ecr: bool = False) -> None:
    """One round of bytes both ways; optionally the terminal's lone ACK to the ECR is lost."""
    line.now += 0.01
    out = line.ecr.data_to_send()
    line.terminal_events += line.terminal.receive(out, line.now) + line.terminal.poll(line.now)
    back = line.terminal.data_to_send()
    if drop_ack_to_ecr and back == ACK:
        back = b""
    line.ecr_events += line.ecr.receive(back, line.now) + line.ecr.poll(line.now)


def test_a_second_receive_after_a_lost_ack_is_relayed_not_dropped_as_a_resend() -> None:
    two_receives(lose_ack=True)


def test_two_receives_in_a_row_on_a_clean_line_are_both_relayed() -> None:
    two_receives(lose_ack=False)


def two_receives(lose_ack: bool) -> None:
    line = Line()
    line.ecr.start(SALE, line.now)
    line.run()
    line.take(RequestReceived, "terminal")
    line.terminal.send_gateway("receive", b"", line.now)
    line.run()
    [first] = line.take(GatewayCommand)
    assert first.action == "receive"
    line.ecr.answer_gateway(True, b"\x00\x00\x00\x10first half", line.now)
    # The answer reaches the terminal; its ACK is lost on the way back.
    for _ in range(3):
        step(line, drop_ack_to_ecr=lose_ack)
        if line.take(GatewayAnswered, "terminal"):
            break
    else:
        raise AssertionError("the terminal never had the first answer")
    # The PBH1 message is not whole yet: the terminal asks again at once (identical packet).
    line.terminal.send_gateway("receive", b"", line.now)
    commands: list[GatewayCommand] = []
    answers: list[GatewayAnswered] = []
    for _ in range(600):  # 6 s of virtual time: every ACK and packet timer of the link runs out
        step(line)
        commands += line.take(GatewayCommand)
        answers += line.take(GatewayAnswered, "terminal")
        if commands and not answers:
            line.ecr.answer_gateway(True, b"second half", line.now)
            commands.clear()
            commands.append(GatewayCommand("receive", b""))  # answered; keep the count
        if answers:
            break
    assert answers, "the terminal's second receive was never answered"
    [answer] = answers
    assert (answer.ok, answer.data) == (True, b"second half"), \
        f"the terminal got {answer.ok}, {answer.data!r} for its second receive"


# --- a host that answers with a whole tag 70 ------------------------------------------------------------
async def test_a_host_flooding_the_relay_gets_the_terminal_an_answer_not_an_exception() -> None:
    from posbridge.ecr.gateway import GatewayRelay, GatewaySettings

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\xAA" * 100_000)  # a host gone mad (or a huge answer) — more than one tag 70 holds
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(flood, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = GatewayRelay(GatewaySettings(receive_wait=1.0), max_data=protocols.get("inpas").capabilities.gateway_data)
    line = Line()
    line.ecr.start(SALE, line.now)
    line.run()
    line.take(RequestReceived, "terminal")
    try:
        assert (await relay.handle(GatewayCommand("open", f"127.0.0.1;{port}".encode()))) == (True, b"")
        await asyncio.sleep(0.2)  # every byte of the flood has arrived
        ok, data = await relay.handle(GatewayCommand("receive", b""))
        assert ok and 0 < len(data) <= relay.max_data  # one tag 70's worth: the terminal asks again
        line.terminal.send_gateway("receive", b"", line.now)
        line.run()
        [command] = line.take(GatewayCommand)
        line.ecr.answer_gateway(ok, data, line.now)  # the client does exactly this with the relay's answer
        line.run()
        [answered] = line.take(GatewayAnswered, "terminal")
        assert answered.data == data[:len(answered.data)] and answered.ok
    finally:
        await relay.close()
        server.close()
        await server.wait_closed()


# --- PBH1 against garbage and odd pieces ----------------------------------------------------------------
def test_a_length_header_over_the_limit_is_refused_before_any_body_is_buffered() -> None:
    from posbridge.emulator.remote_host import HostProtocolError, MessageReader

    reader = MessageReader()
    with pytest.raises(HostProtocolError, match="over the"):
        reader.feed(struct.pack(">I", 0xFFFF_FFFF))


def test_a_pbh1_answer_fed_byte_by_byte_gives_exactly_one_message_at_its_last_byte() -> None:
    from posbridge.emulator.remote_host import MessageReader, encode_message

    wire = encode_message({"v": 1, "decision": {"status": "approved"}}) + encode_message({"v": 1, "error": "x"})
    reader = MessageReader()
    got = [(i, reader.feed(wire[i:i + 1])) for i in range(len(wire))]
    found = [(i, m) for i, m in got if m is not None]
    first_end = len(encode_message({"v": 1, "decision": {"status": "approved"}})) - 1
    assert found == [(first_end, {"v": 1, "decision": {"status": "approved"}}), (len(wire) - 1, {"v": 1, "error": "x"})]


async def _host_exchange(service: object, pieces: list[bytes], timeout: float = 3.0) -> bytes:
    from posbridge.emulator.remote_host import start_host_service

    server = await start_host_service(service, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        header = await asyncio.wait_for(reader.readexactly(4), timeout)
        body = await asyncio.wait_for(reader.readexactly(struct.unpack(">I", header)[0]), timeout)
        writer.close()
        return body
    finally:
        server.close()
        await server.wait_closed()


def _service(tmp_path: object) -> object:
    from posbridge.emulator.host import BankHost, HostConfig
    from posbridge.emulator.remote_host import HostService
    from posbridge.journal import Journal

    return HostService(BankHost(Journal(), HostConfig(terminal_id="00344224")))


async def test_a_pbh1_request_split_in_odd_pieces_is_decided_once(tmp_path: object) -> None:
    from posbridge.emulator.cards import Card
    from posbridge.emulator.remote_host import process_request

    service = _service(tmp_path)
    wire = process_request(Request(Operation.SALE, 10_00, 643, transaction_id="5"), Card("4111111111111111", "3012"),
                           None)
    pieces = [wire[:1], wire[1:3], wire[3:4], wire[4:5], wire[5:77], wire[77:-1], wire[-1:]]
    answer = json.loads(await _host_exchange(service, pieces))
    assert answer["decision"]["status"] == "approved" and answer["decision"]["amount"] == 10_00
    assert service.requests == 1  # type: ignore[attr-defined]


async def test_a_sale_with_a_wrong_typed_amount_is_declined_110_and_charges_nothing(tmp_path: object) -> None:
    from posbridge.emulator.remote_host import encode_message

    service = _service(tmp_path)
    bad = encode_message({"v": 1, "kind": "process", "card": None, "forced": None,
                          "request": {"operation": "sale", "amount": "abc", "currency": 643,
                                      "transaction_id": "7"}})
    body = json.loads(await _host_exchange(service, [bad]))
    assert (body["decision"]["status"], body["decision"]["code"]) == ("declined", "110")
    assert service.host.totals().sale_count == 0  # type: ignore[attr-defined]


# --- the ECR's deadline expires mid-relay ---------------------------------------------------------------
async def test_the_ecr_deadline_expiring_while_a_slow_host_holds_the_charge_ends_reversed(tmp_path: object) -> None:
    from tests.gateway.test_gateway_e2e import Host, _link

    async with Host(str(tmp_path) + "/host.sqlite3") as host, _link(host.address, deadline=1.5) as link:  # type: ignore[operator]
        host.service.latency = 2.5  # the host decides (charges) at once, answers 2.5 s later
        with pytest.raises(Exception):
            await link.client.sale(33_00)
        [entry] = link.client.unresolved()
        assert entry.state == "unknown"
        host.service.latency = 0
        for _ in range(5):  # the terminal may still be busy with the lost sale's relay
            reports = await link.client.recover()
            if not link.client.unresolved():
                break
            await asyncio.sleep(0.5)
        assert not link.client.unresolved(), [r.describe() for r in reports]
        rows = host.journal.ledger.operations("00344224")
        assert [(r.operation, r.status) for r in rows] == \
            [(Operation.SALE, Status.APPROVED), (Operation.EMERGENCY_REVERSAL, Status.APPROVED)]
        assert host.service.host.totals().sale_count == 0


def test_a_send_packet_resent_after_the_ecrs_ack_was_lost_is_relayed_to_the_host_once() -> None:
    line = Line()
    line.ecr.start(SALE, line.now)
    line.run()
    line.take(RequestReceived, "terminal")
    line.terminal.send_gateway("send", b"\x00\x00\x00\x05hello", line.now)
    dropped = False
    commands: list[GatewayCommand] = []
    for _ in range(300):  # 3 s of virtual time: the terminal's ACK timer runs out and it resends
        line.now += 0.01
        out = line.ecr.data_to_send()
        if out.startswith(ACK) and not dropped:
            out, dropped = out[1:], True  # the ECR's ACK of the send packet is lost
        line.terminal_events += line.terminal.receive(out, line.now) + line.terminal.poll(line.now)
        line.ecr_events += line.ecr.receive(line.terminal.data_to_send(), line.now) + line.ecr.poll(line.now)
        commands += line.take(GatewayCommand)
    assert dropped
    assert [(c.action, c.data) for c in commands] == [("send", b"\x00\x00\x00\x05hello")]
    line.ecr.answer_gateway(True, b"", line.now)
    line.run()
    [answered] = line.take(GatewayAnswered, "terminal")
    assert (answered.action, answered.ok) == ("send", True)
