"""Cancelled reads never lose bytes, on every kind of device.

Drivers call ``await asyncio.wait_for(device.read(), timeout)``; a timeout that fires while data
is arriving must leave that data in the device for the next read.
"""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest

from posbridge.devices import Device, open_device, open_pair

from ._util import echo_server

Send = Callable[[bytes], Awaitable[None]]

KINDS = ["virtual", "pty", "serial-tty", "loop", "socket", "tcp", "tcp-listen"]


@pytest.fixture(params=KINDS)
async def device_and_sender(request, tmp_path) -> AsyncIterator[tuple[Device, Send]]:
    """The device under test, and a coroutine that makes bytes arrive at it."""
    kind = request.param
    async with AsyncExitStack() as stack:
        if kind == "virtual":
            dev, other = await open_pair()
            stack.push_async_callback(other.close)
            send: Send = other.write
        elif kind == "pty":
            dev = await open_device(f"pty://{tmp_path}/tty")
            fd = os.open(dev.slave_name, os.O_RDWR | os.O_NOCTTY)
            stack.callback(os.close, fd)

            async def send(data: bytes) -> None:
                os.write(fd, data)
        elif kind == "serial-tty":
            master, slave = os.openpty()
            tty.setraw(master)
            name = os.ttyname(slave)
            os.close(slave)
            stack.callback(os.close, master)
            dev = await open_device(f"serial://{name}?baudrate=115200")

            async def send(data: bytes) -> None:
                os.write(master, data)
        elif kind == "loop":
            dev = await open_device("loop://")
            send = dev.write
        elif kind in ("socket", "tcp"):
            server, port, writers = await echo_server()
            stack.push_async_callback(server.wait_closed)
            stack.callback(server.close)
            scheme = "socket" if kind == "socket" else "tcp"
            dev = await open_device(f"{scheme}://127.0.0.1:{port}")
            send = dev.write  # echoed back by the server
        else:
            dev = await open_device("tcp-listen://127.0.0.1:0")
            _, writer = await asyncio.open_connection("127.0.0.1", dev.port)
            stack.callback(writer.close)

            async def send(data: bytes) -> None:
                writer.write(data)
                await writer.drain()

        stack.push_async_callback(dev.close)
        yield dev, send


async def test_timeouts_while_idle_then_data_arrives(device_and_sender) -> None:
    dev, send = device_and_sender
    for _ in range(30):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(dev.read(), 0.001)
    await send(b"\x02after the timeouts\x03")
    got = b""
    while len(got) < 20:
        got += await asyncio.wait_for(dev.read(), 2)
    assert got == b"\x02after the timeouts\x03"


async def test_tiny_timeouts_racing_a_producer_lose_nothing(device_and_sender) -> None:
    dev, send = device_and_sender
    payload = bytes(range(256)) * 12

    async def produce() -> None:
        for i in range(0, len(payload), 61):
            await send(payload[i : i + 61])
            await asyncio.sleep(0.0003 if i % 3 else 0)

    producer = asyncio.create_task(produce())
    got = bytearray()
    timeouts = 0
    deadline = asyncio.get_running_loop().time() + 10
    while len(got) < len(payload):
        assert asyncio.get_running_loop().time() < deadline, f"only {len(got)} bytes arrived"
        try:
            got += await asyncio.wait_for(dev.read(17), 0.0002 if timeouts % 2 else 0)
        except asyncio.TimeoutError:
            timeouts += 1
    await producer
    assert bytes(got) == payload
    assert timeouts > 0  # the race was actually exercised


async def test_read_woken_then_cancelled_before_it_runs_keeps_the_bytes(device_and_sender) -> None:
    dev, send = device_and_sender
    reader = asyncio.create_task(dev.read())
    await asyncio.sleep(0.01)  # parked, waiting
    await send(b"abc")
    # Let the data reach the device (loop/sockets need a moment), then cancel the woken read.
    for _ in range(100):
        await asyncio.sleep(0.001)
        if reader.done():
            break
    if reader.done():
        first = reader.result()  # it won the race: it took the bytes, it returns them
    else:
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        first = b""
    got = first
    while len(got) < 3:
        got += await asyncio.wait_for(dev.read(), 2)
    assert got == b"abc"


async def test_cancel_between_wakeup_and_resume() -> None:
    # Deterministic on the virtual pair: the write wakes the reader synchronously, the cancel
    # lands before the reader task runs again.
    a, b = await open_pair()
    reader = asyncio.create_task(b.read())
    await asyncio.sleep(0)
    await a.write(b"xyz")
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert await b.read() == b"xyz"
    await a.close()
    await b.close()
