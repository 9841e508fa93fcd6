"""Helpers for the virtual terminal's tests: a terminal on a real TCP listener, cash registers
that speak the protocol without posbridge's client (no lock, no journal, any bytes), and the
ordinary client for "the next legitimate sale"."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

from posbridge import protocols
from posbridge.devices import Device, open_device
from posbridge.devices.faults import with_faults
from posbridge.ecr.client import EcrClient
from posbridge.journal import Journal
from posbridge.model import Operation, Request, Result
from posbridge.pump import LinkClosed, SessionPump
from posbridge.emulator.terminal import VirtualTerminal
from posbridge.protocols.common.errors import Disconnected, LinkError
from posbridge.protocols.common.link import MessageReceived
from posbridge.protocols.common.session import Completed, Failed, Progress

TERMINAL_ID = "00344224"
BOUND = 8.0  # seconds within which the next legitimate sale must succeed after any hostile case
PROTOCOLS = ("inpas", "arcus2")


@contextlib.asynccontextmanager
async def serving(terminal: VirtualTerminal, faults: str | None = None) -> AsyncIterator[int]:
    """Run ``terminal`` on ``tcp-listen://127.0.0.1:0`` (in a fault layer if asked); yields the port."""
    listener = await open_device("tcp-listen://127.0.0.1:0")
    port = listener.port  # type: ignore[attr-defined]
    device = with_faults(listener, faults)
    task = asyncio.get_running_loop().create_task(terminal.serve(device, keep_open=True))
    try:
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await device.close()
        assert not task.done() or task.cancelled() or task.exception() is None


async def legitimate_sale(port: int, protocol: str, amount: int = 10_00, bound: float = BOUND) -> Result:
    """posbridge's own client, on a fresh connection: one sale, which must be approved in time."""
    client = EcrClient(f"tcp://127.0.0.1:{port}", protocol, journal=Journal(), lock_wait=1.0)
    async with client:
        result = await asyncio.wait_for(client.sale(amount), bound)
    assert result.approved and result.amount == amount, result
    return result


class Register:
    """A cash register on a connection of its own: the protocol's ECR session over ``tcp://``.

    Unlike :class:`EcrClient` it takes no lock and keeps no journal, so two of them can share one
    terminal at the same time, and :meth:`give_up` lets it walk away from an exchange.
    """

    def __init__(self, protocol: str, port: int, timers: dict[str, float] | None = None) -> None:
        self.protocol = protocols.get(protocol)
        self.port = port
        self.timers = timers or {}
        self.device: Device | None = None
        self.pump: SessionPump | None = None
        self.progress = 0

    async def open(self) -> Register:
        self.device = await open_device(f"tcp://127.0.0.1:{self.port}")
        self.pump = SessionPump(self.device, self.protocol.ecr_session(timers=self.timers))
        self.pump.start()
        return self

    async def __aenter__(self) -> Register:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.pump is not None:
            await self.pump.stop()
        if self.device is not None:
            await self.device.close()

    def send(self, request: Request) -> None:
        pump = self.pump
        assert pump is not None
        pump.act(lambda now: pump.session.start(request, now))

    def give_up(self) -> None:
        """Forget the exchange in hand (as a register whose own timer ran out does)."""
        assert self.pump is not None
        self.pump.session.reset()

    async def wait_progress(self, timeout: float = 5.0) -> None:
        """Until the terminal says it works (a WAIT / intermediate packet)."""
        assert self.pump is not None
        while True:
            event = await asyncio.wait_for(self.pump.next_event(), timeout)
            if isinstance(event, Progress):
                self.progress += 1
                return
            if isinstance(event, (Completed, Failed, LinkClosed)):
                raise AssertionError(f"no progress but {event!r}")

    async def outcome(self, timeout: float = 10.0) -> Result | LinkError:
        """The result of the exchange in hand, or the typed link error it ended with."""
        assert self.pump is not None
        while True:
            event = await asyncio.wait_for(self.pump.next_event(), timeout)
            if isinstance(event, Completed):
                return event.result
            if isinstance(event, Failed):
                return event.error
            if isinstance(event, LinkClosed):
                return Disconnected("the terminal hung up")
            if isinstance(event, Progress):
                self.progress += 1


class RawBody:
    """A message body given as bytes, for a link's ``send``: anything, however hostile."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def encode_body(self) -> bytes:
        return self.body


class RawLink:
    """The ECR's *link* layer only, over ``tcp://``: sends any body, reports the terminal's messages."""

    def __init__(self, protocol: str, port: int) -> None:
        self.protocol = protocol
        self.port = port
        self.pump: SessionPump | None = None
        self.device: Device | None = None

    async def __aenter__(self) -> RawLink:
        if self.protocol == "inpas":
            from posbridge.protocols.inpas.link import InpasLink, LinkTimers as InpasTimers

            link: Any = InpasLink("ecr", InpasTimers(ack_timeout=2.0))
        else:
            from posbridge.protocols.arcus2.link import Arcus2Link, LinkTimers as ArcusTimers

            link = Arcus2Link("ecr", ArcusTimers(ack_timeout=1.0))
        self.device = await open_device(f"tcp://127.0.0.1:{self.port}")
        self.pump = SessionPump(self.device, link)
        self.pump.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.pump is not None and self.device is not None
        await self.pump.stop()
        await self.device.close()

    def send(self, body: bytes) -> None:
        pump = self.pump
        assert pump is not None
        pump.act(lambda now: pump.session.send(RawBody(body), now))

    async def final_answer(self, timeout: float = 10.0) -> Any:
        """The terminal's first message that is not WAIT / intermediate (INPAS: then ACK, EOT)."""
        assert self.pump is not None
        while True:
            event = await asyncio.wait_for(self.pump.next_event(), timeout)
            if isinstance(event, MessageReceived):
                message = event.message
                if self.protocol == "inpas":
                    if message.fields.get(25) == "21":
                        continue
                    self.pump.act(lambda now: self.pump.session.send_control(0x04))  # type: ignore[union-attr]
                    return message
                if message.message_class == "I":
                    continue
                return message
            if isinstance(event, LinkClosed):
                raise AssertionError("the terminal hung up instead of answering")


def inpas_body(fields: dict[int, str]) -> bytes:
    from posbridge.protocols.inpas.frame import encode_records

    return encode_records([(tag, value.encode("cp1251")) for tag, value in sorted(fields.items())])


def arcus_body(message_class: str, fields: dict[str, str]) -> bytes:
    return (message_class + "\x1c".join(f"{k}={v}" for k, v in fields.items())).encode("cp1251")


def sale_body(protocol: str, amount: str = "1000", stan: str = "5") -> bytes:
    if protocol == "inpas":
        return inpas_body({0: amount, 4: "643", 25: "1", 26: stan, 27: TERMINAL_ID})
    return arcus_body("Q", {"operation": "1", "amount": amount, "currency": "643", "transaction_id": stan,
                            "terminal_id": TERMINAL_ID})


def request(operation: Operation, amount: int | None, stan: str, **changes: Any) -> Request:
    return Request(operation, amount, 643, transaction_id=stan, terminal_id=TERMINAL_ID, **changes)


def garbage(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def raw_connect(port: int) -> socket.socket:
    """A blocking socket to the terminal (for connections that do nothing useful)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
