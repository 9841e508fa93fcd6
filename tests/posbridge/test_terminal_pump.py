"""The pump under the virtual terminal never goes deaf (issue 9): a session that raises costs one
exchange, a device that fails to read is retried, a dead reader is reported and restarted, and the
session's output (the link's ACK) is handed to the writer before the application hears the event."""

from __future__ import annotations

import asyncio
import uuid

from typing import Any

import pytest

from posbridge.devices import DeviceError, open_device
from posbridge.emulator.config import TerminalConfig
from posbridge.testing import TerminalLink
from posbridge.pump import PumpError, ReaderStopped, SessionPump
from posbridge.protocols.common.session import Failed, Session


class EchoSession(Session[Any]):
    """A toy session: ACKs every chunk; raises on b"boom"; reports chunks as events (bytes, which no
    real session reports: the pump passes events on whatever they are)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.resets = 0
        self.exchange: int | None = 7

    @property
    def busy(self) -> bool:
        return True

    @property
    def current_exchange(self) -> int | None:
        return self.exchange

    def receive(self, data: bytes, now: float) -> list[Any]:
        if b"boom" in data:
            raise ValueError("Exceeds the limit (4300 digits) for integer string conversion: " + "9" * 5000)
        self.out += b"\x06"
        return [data]

    def poll(self, now: float) -> list[Any]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def data_to_send(self) -> bytes:
        out, self.out = bytes(self.out), bytearray()
        return out

    def reset(self) -> None:
        self.resets += 1
        self.exchange = None


async def pair():  # type: ignore[no-untyped-def]
    name = f"virtual://pump-{uuid.uuid4().hex}"
    return await open_device(name), await open_device(name)


async def test_a_session_that_raises_is_one_typed_failure_and_reading_goes_on() -> None:
    end, peer = await pair()
    session = EchoSession()
    pump = SessionPump(end, session, keep_open=True)
    pump.start()
    try:
        await peer.write(b"boom")
        event = await asyncio.wait_for(pump.next_event(), 2)
        assert isinstance(event, Failed) and isinstance(event.error, PumpError) and event.exchange == 7
        assert session.resets == 1 and len(str(event.error)) < 300  # a hostile value is not copied whole
        await peer.write(b"hello")
        assert await asyncio.wait_for(pump.next_event(), 2) == b"hello"
        assert pump.reading
    finally:
        await pump.stop()
        await end.close()
        await peer.close()


async def test_the_ack_is_on_the_line_before_the_application_hears_the_request() -> None:
    end, peer = await pair()
    pump = SessionPump(end, EchoSession())
    pump.start()
    try:
        await peer.write(b"request")
        await asyncio.wait_for(pump.next_event(), 2)
        assert len(peer._inbox) == 1  # type: ignore[attr-defined]  # the ACK already written
    finally:
        await pump.stop()
        await end.close()
        await peer.close()


class FlakyDevice:
    """Fails to read twice (a driver hiccup), then delivers."""

    url = "flaky://1"
    closed = False
    reconnects = False

    def __init__(self) -> None:
        self.fails = 2
        self.written: list[bytes] = []

    async def read(self, max_bytes: int = 4096) -> bytes:
        if self.fails:
            self.fails -= 1
            raise DeviceError("read failed: [Errno 5] Input/output error")
        await asyncio.sleep(0.01)
        return b"data"

    async def write(self, data: bytes) -> None:
        self.written.append(data)


async def test_a_device_that_fails_to_read_is_retried_not_abandoned() -> None:
    device = FlakyDevice()
    pump = SessionPump(device, EchoSession(), keep_open=True)  # type: ignore[arg-type]
    pump.start()
    try:
        events = []
        while b"data" not in events:
            events.append(await asyncio.wait_for(pump.next_event(), 3))
        assert pump.reading
    finally:
        await pump.stop()


async def test_a_reader_that_dies_anyway_is_reported_and_restarted_by_itself() -> None:
    end, peer = await pair()
    pump = SessionPump(end, EchoSession(), keep_open=True)
    pump.start()
    try:
        original = pump._read_loop

        async def dying() -> None:
            raise RuntimeError("a bug nobody foresaw")

        pump._read_loop = dying  # type: ignore[method-assign]
        pump._reader.cancel()  # type: ignore[union-attr]
        await asyncio.sleep(0)
        pump._reader = None
        pump._start_reader()
        event = await asyncio.wait_for(pump.next_event(), 2)
        assert isinstance(event, Failed) and isinstance(event.error, ReaderStopped) and event.exchange == 7
        assert isinstance(event.error.error, RuntimeError) and "a bug nobody foresaw" in str(event.error)
        pump._read_loop = original  # type: ignore[method-assign]
        await peer.write(b"again")  # read once the pump has started a new reader by itself
        later = [await asyncio.wait_for(pump.next_event(), 2)]
        while later[-1] != b"again":  # the dying loop may have been restarted (and died) meanwhile
            later.append(await asyncio.wait_for(pump.next_event(), 2))
        assert all(isinstance(e, Failed) and isinstance(e.error, ReaderStopped) for e in later[:-1])
        assert pump.reading
    finally:
        await pump.stop()
        await end.close()
        await peer.close()


# --- callbacks and a dead reader, on a whole sale ---------------------------------------------------
@pytest.mark.parametrize("protocol", ["inpas", "arcus2"])
async def test_raising_callbacks_leave_the_sale_completing(protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    """A trace on both ends and a progress callback that all raise: logged, and the sale ends approved."""
    calls: list[str] = []

    def trace(direction: str, data: bytes) -> None:
        calls.append(direction)
        raise RuntimeError("the console cannot print")

    def progress(event: object) -> None:
        calls.append("progress")
        raise RuntimeError("the display is gone")

    config = TerminalConfig(card_delay=0.3, progress_interval=0.05)
    async with TerminalLink(protocol, trace=trace, config=config,
                            client_options={"trace": trace, "on_progress": progress}) as link:
        result = await asyncio.wait_for(link.client.sale(1_00), 20)
        assert result.approved
        assert (await asyncio.wait_for(link.client.sale(2_00), 20)).approved  # and the link serves on
    assert {"rx", "tx", "progress"} <= set(calls)
    assert "the trace callback failed" in caplog.text and "the progress callback failed" in caplog.text


class Fatal(BaseException):
    """What no ``except Exception`` catches: the reader task dies of it."""


@pytest.mark.parametrize("protocol", ["inpas", "arcus2"])
async def test_a_reader_that_dies_mid_exchange_fails_it_typed_never_hangs(protocol: str) -> None:
    fast = {"ack_timeout": 0.3}  # the next sale waits for a quiet line: a few ACK timers
    async with TerminalLink(protocol, config=TerminalConfig(timers=dict(fast)), client_options={"timers": fast}) as link:
        client = link.client
        await client.open()
        assert client._pump is not None
        session = client._pump.session

        def dying(data: bytes, now: float) -> list[Any]:
            raise Fatal("the interpreter is going down")

        session.receive = dying  # type: ignore[method-assign]
        started = asyncio.get_running_loop().time()
        with pytest.raises(ReaderStopped) as caught:
            await asyncio.wait_for(client.sale(3_00), 20)
        assert asyncio.get_running_loop().time() - started < 5  # the exchange heard it at once
        assert isinstance(caught.value.error, Fatal) and caught.value.reason == "reader_stopped"
        [entry] = client.unresolved()  # journaled as unknown, for recovery
        assert entry.state == "unknown" and "reader_stopped" in (entry.error or "")
        del session.receive  # the session's own method again
        assert (await asyncio.wait_for(client.sale(4_00), 20)).approved  # the pump's new reader serves on
