"""The virtual terminal never dies (issue 9): whatever a connection does, the next legitimate sale
(posbridge's own client, on a fresh connection) succeeds within BOUND seconds.

Both protocols, over TCP: empty connections, churn, a silent holder, a half-frame holder, a flood
of garbage, 5,000-digit numeric fields, a pulled cable; over a pty: the cases that apply to a
line that has no "next connection" (half frames, garbage, a program that opens and closes it)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

import pytest
import serial

from posbridge.devices import open_device
from posbridge.ecr.client import EcrClient
from posbridge.journal import Journal
from posbridge.model import Status
from posbridge.emulator.terminal import TerminalConfig, VirtualTerminal

from .terminal_support import (
    BOUND,
    PROTOCOLS,
    TERMINAL_ID,
    RawLink,
    arcus_body,
    garbage,
    inpas_body,
    legitimate_sale,
    raw_connect,
    sale_body,
    serving,
)

HUGE = "9" * 5000  # more digits than int() takes from text (4,300)



def terminal(protocol: str) -> VirtualTerminal:
    return VirtualTerminal(protocol, config=TerminalConfig(idle_timeout=0.3, progress_interval=0.2),
                           journal=Journal())


def half_frame(protocol: str) -> bytes:
    # A start byte and a length that promises far more than ever comes.
    return b"\x02\xff\x7f" + b"\x19\x01\x00" if protocol == "inpas" else b"\x05\x02\xff\x7fQoperation=1"


async def sale_then_check(port: int, protocol: str, started: float) -> None:
    await legitimate_sale(port, protocol)
    assert time.monotonic() - started < BOUND


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_empty_connections_then_a_sale(protocol: str) -> None:
    term = terminal(protocol)

    def probes(port: int) -> None:  # another program: port probes, health checks, killed registers
        for _ in range(30):
            raw_connect(port).close()
        rst = raw_connect(port)  # and one that resets instead of closing
        rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rst.close()

    async with serving(term) as port:
        await asyncio.to_thread(probes, port)
        await sale_then_check(port, protocol, time.monotonic())
        await sale_then_check(port, protocol, time.monotonic())  # and it stays that way


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_connection_churn_then_a_sale(protocol: str) -> None:
    term = terminal(protocol)
    async with serving(term) as port:
        pieces = [b"", b"\x06", b"\x05", b"\x04", half_frame(protocol), sale_body(protocol)[:7], garbage(64, 1)]

        def churn() -> None:
            for i in range(60):
                sock = raw_connect(port)
                with contextlib.suppress(OSError):
                    sock.sendall(pieces[i % len(pieces)])
                sock.close()

        await asyncio.to_thread(churn)
        await sale_then_check(port, protocol, time.monotonic())


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_silent_holder_is_hung_up_on_when_a_register_waits(protocol: str) -> None:
    term = terminal(protocol)
    async with serving(term) as port:
        holder = raw_connect(port)
        try:
            await asyncio.sleep(0.1)  # it got the line first
            await sale_then_check(port, protocol, time.monotonic())
            holder.settimeout(2)
            assert holder.recv(1) == b""  # it was hung up on
        finally:
            holder.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_half_frame_holder_is_hung_up_on_when_a_register_waits(protocol: str) -> None:
    term = terminal(protocol)
    async with serving(term) as port:
        holder = raw_connect(port)
        try:
            holder.sendall(half_frame(protocol))
            await asyncio.sleep(0.1)
            await sale_then_check(port, protocol, time.monotonic())
        finally:
            holder.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_flood_of_garbage_then_a_sale(protocol: str) -> None:
    term = terminal(protocol)
    async with serving(term) as port:
        flooder = raw_connect(port)
        stop = threading.Event()
        sent = [0]

        def flood() -> None:
            chunk_seed = 0
            try:
                while not stop.is_set():
                    chunk = garbage(16_384, chunk_seed)
                    flooder.sendall(chunk)
                    sent[0] += len(chunk)
                    chunk_seed += 1
            except OSError:
                pass  # hung up on

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        try:
            while sent[0] < 1_000_000:
                await asyncio.sleep(0.02)
            await sale_then_check(port, protocol, time.monotonic())
        finally:
            stop.set()
            flooder.close()
            thread.join(5)
        assert term.undelivered == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("field", ["amount", "operation", "transaction", "currency"])
async def test_a_5000_digit_field_is_refused_with_913_and_the_terminal_serves_on(protocol: str, field: str) -> None:
    term = terminal(protocol)
    if protocol == "inpas":
        fields = {0: "1000", 4: "643", 25: "1", 26: "5", 27: TERMINAL_ID}
        fields[{"amount": 0, "operation": 25, "transaction": 26, "currency": 4}[field]] = HUGE
        body = inpas_body(fields)
    else:
        keys = {"operation": "1", "amount": "1000", "currency": "643", "transaction_id": "5",
                "terminal_id": TERMINAL_ID}
        keys[{"amount": "amount", "operation": "operation", "transaction": "transaction_id",
              "currency": "currency"}[field]] = HUGE
        body = arcus_body("Q", keys)
    async with serving(term) as port:
        async with RawLink(protocol, port) as ecr:
            ecr.send(body)
            answer = await ecr.final_answer()
        if protocol == "inpas":
            assert answer.fields.get(39) == "16" and answer.fields.get(15) in ("913", "110"), answer
        else:
            assert answer.fields.get("response_code") in ("913", "110"), answer
        await sale_then_check(port, protocol, time.monotonic())
    assert term.host.totals().sale_amount == 10_00  # nothing charged for the hostile request
    refused = [op for op in term.journal.ledger.operations(TERMINAL_ID) if op.status is Status.DECLINED]
    assert len(refused) == 1 and refused[0].result_delivered is True


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_pulled_cable_on_the_listener_and_serving_resumes(protocol: str) -> None:
    """``--fault disconnect@N`` on tcp-listen used to stop listening for good, silently."""
    term = terminal(protocol)
    async with serving(term, faults="rx:disconnect@4") as port:
        client = EcrClient(f"tcp://127.0.0.1:{port}", protocol, journal=Journal(), lock_wait=1.0,
                           timers={"ack_timeout": 1.0})
        async with client:
            with pytest.raises(Exception) as failed:
                await asyncio.wait_for(client.sale(5_00), BOUND)
        assert type(failed.value).__name__ in ("Disconnected", "NoAck", "ExchangeTimeout", "LinkError"), failed.value
        await sale_then_check(port, protocol, time.monotonic())
        await sale_then_check(port, protocol, time.monotonic())


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_crashing_callback_and_a_broken_slip_printer_do_not_stop_the_terminal(protocol: str) -> None:
    term = terminal(protocol)
    calls: list[str] = []

    def crash(request, result):  # type: ignore[no-untyped-def]
        calls.append(result.status.value)
        raise RuntimeError("the ECR integration's callback is broken")

    term.on_operation = crash
    original = term.printer.render
    broken = [True]

    def render(result, **kwargs):  # type: ignore[no-untyped-def]
        if broken[0]:
            broken[0] = False
            raise ValueError("a slip template bug")
        return original(result, **kwargs)

    term.printer.render = render  # type: ignore[method-assign]
    async with serving(term) as port:
        await sale_then_check(port, protocol, time.monotonic())  # answered with a minimal slip
        await sale_then_check(port, protocol, time.monotonic())
    assert calls == ["approved", "approved"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_session_that_raises_costs_one_exchange_not_the_terminal(protocol: str) -> None:
    """Whatever raises inside the session (here: a bug planted in it) becomes a typed failure."""
    term = terminal(protocol)
    planted = [True]
    original = term.new_session

    def new_session():  # type: ignore[no-untyped-def]
        session = original()
        receive = session.receive

        def buggy(data: bytes, now: float) -> list:
            if planted[0] and data:
                planted[0] = False
                raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")
            return receive(data, now)

        session.receive = buggy
        return session

    term.new_session = new_session  # type: ignore[method-assign]
    async with serving(term) as port:
        sock = raw_connect(port)
        sock.sendall(sale_body(protocol))
        sock.close()
        await sale_then_check(port, protocol, time.monotonic())


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_over_a_pty_half_frames_garbage_and_reopening_then_a_sale(protocol: str) -> None:
    term = VirtualTerminal(protocol, config=TerminalConfig(timers={"ack_timeout": 0.3}), journal=Journal())
    with tempfile.TemporaryDirectory(prefix="posbridge-") as folder:
        link = Path(folder) / "ttyPOS"
        device = await open_device(f"pty://{link}")
        task = asyncio.get_running_loop().create_task(term.serve(device, keep_open=True))
        try:
            def hostile_program() -> None:
                for _ in range(10):  # a program that opens the port and closes it again
                    serial.Serial(str(link), 115200).close()
                with serial.Serial(str(link), 115200, write_timeout=5) as port:
                    port.write(half_frame(protocol))
                    port.write(garbage(50_000, 3))
                    port.write(inpas_body({25: HUGE}) if protocol == "inpas" else b"\x05")
                    port.flush()

            await asyncio.to_thread(hostile_program)
            await asyncio.sleep(0.5)  # the half frames' timers run out
            client = EcrClient(f"serial://{link}?baudrate=115200", protocol, journal=Journal(), lock_wait=1.0)
            async with client:
                started = time.monotonic()
                result = await asyncio.wait_for(client.sale(10_00), BOUND)
            assert result.approved and time.monotonic() - started < BOUND
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await device.close()
