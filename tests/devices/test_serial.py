"""serial:// on a real tty (a pty slave made here), loop://, socket://, spy:// and parameters."""

from __future__ import annotations

import asyncio
import os
import socket
import tty
from pathlib import Path

import pytest

from posbridge.devices import DeviceClosed, DeviceError, open_device
from posbridge.devices.serialport import SerialDevice, ThreadedSerialDevice

from ._util import ALL_BYTES, echo_server, read_exactly


@pytest.fixture
def pty_pair():
    """(master fd, slave path): the test plays the far end on the master."""
    master, slave = os.openpty()
    tty.setraw(master)
    name = os.ttyname(slave)
    os.close(slave)  # the device opens it by name, like a real port
    yield master, name
    try:
        os.close(master)
    except OSError:
        pass


async def read_master(master: int, n: int) -> bytes:
    got = b""
    while len(got) < n:
        got += await asyncio.to_thread(os.read, master, n - len(got))
    return got


async def test_serial_on_a_real_tty_exchanges_every_byte(pty_pair) -> None:
    master, name = pty_pair
    dev = await open_device(f"serial://{name}?baudrate=9600&bytesize=8&parity=N&stopbits=1")
    try:
        assert isinstance(dev, SerialDevice)
        assert dev.serial.baudrate == 9600 and dev.serial.parity == "N"
        os.write(master, ALL_BYTES)
        assert await read_exactly(dev, 256) == ALL_BYTES
        await dev.write(ALL_BYTES[::-1])
        assert await read_master(master, 256) == ALL_BYTES[::-1]
    finally:
        await dev.close()
    assert not dev.serial.is_open


async def test_serial_reports_closed_when_the_far_end_goes_away(pty_pair) -> None:
    master, name = pty_pair
    dev = await open_device(f"serial://{name}")
    try:
        os.write(master, b"bye")
        assert await read_exactly(dev, 3) == b"bye"
        os.close(master)
        with pytest.raises(DeviceClosed):
            await asyncio.wait_for(dev.read(), 2)
    finally:
        await dev.close()


async def test_serial_discard_input(pty_pair) -> None:
    master, name = pty_pair
    async with await open_device(f"serial://{name}?baudrate=115200") as dev:
        os.write(master, b"stale")
        await asyncio.sleep(0.02)
        assert dev.discard_input() == 5
        os.write(master, b"new")
        assert await read_exactly(dev, 3) == b"new"


async def test_spy_url_is_passed_to_pyserial(pty_pair, tmp_path: Path) -> None:
    master, name = pty_pair
    log = tmp_path / "spy.txt"
    async with await open_device(f"spy://{name}?file={log}&baudrate=19200") as dev:
        assert dev.serial.baudrate == 19200
        await dev.write(b"\x02PING\x03")
        assert await read_master(master, 6) == b"\x02PING\x03"
        os.write(master, b"PONG")
        assert await read_exactly(dev, 4) == b"PONG"
    text = log.read_text()
    assert "TX" in text and "RX" in text


async def test_loop_url_echoes_through_a_reader_thread() -> None:
    async with await open_device("loop://?baudrate=9600") as dev:
        assert isinstance(dev, ThreadedSerialDevice)
        assert dev.serial.baudrate == 9600
        await dev.write(ALL_BYTES)
        assert await read_exactly(dev, 256) == ALL_BYTES
        await dev.write(b"stale")
        await asyncio.sleep(0.1)
        assert dev.discard_input() == 5
        await dev.write(b"ok")
        assert await read_exactly(dev, 2) == b"ok"
    with pytest.raises(DeviceClosed):
        await dev.read()
    with pytest.raises(DeviceClosed):
        await dev.write(b"x")


async def test_socket_url_against_an_asyncio_server() -> None:
    server, port, writers = await echo_server()
    async with server:
        dev = await open_device(f"socket://127.0.0.1:{port}")
        try:
            assert isinstance(dev, SerialDevice)
            sock = dev.serial._socket
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            payload = os.urandom(100_000)
            writer = asyncio.create_task(dev.write(payload))
            assert await read_exactly(dev, len(payload)) == payload
            await writer
            # The server hangs up: pending bytes first, then DeviceClosed.
            writers[0].write(b"tail")
            writers[0].close()
            assert await read_exactly(dev, 4) == b"tail"
            with pytest.raises(DeviceClosed):
                await asyncio.wait_for(dev.read(), 2)
        finally:
            await dev.close()


async def test_missing_port_gives_the_os_reason() -> None:
    with pytest.raises(DeviceError) as info:
        await open_device("serial:///dev/ttyNOPE9?baudrate=115200")
    assert str(info.value) == "cannot open /dev/ttyNOPE9: [Errno 2] No such file or directory"


async def test_unknown_parameters_are_named() -> None:
    with pytest.raises(DeviceError, match=r"unknown parameters bogus, speed"):
        await open_device("serial:///dev/ttyS0?baudrate=9600&bogus=1&speed=9")


@pytest.mark.parametrize(
    "url, message",
    [
        ("serial:///dev/ttyS0?baudrate=fast", "bad value for baudrate: 'fast'"),
        ("serial:///dev/ttyS0?rtscts=maybe", "bad value for rtscts"),
        ("serial://?baudrate=9600", "no port given"),
        ("loop://?nonsense=1", "cannot open loop://?nonsense=1: unknown option: 'nonsense'"),
        ("socket://127.0.0.1:1", "cannot open socket://127.0.0.1:1: [Errno 111] Connection refused"),
    ],
)
async def test_bad_serial_urls(url: str, message: str) -> None:
    with pytest.raises(DeviceError) as info:
        await open_device(url)
    assert message in str(info.value)


async def test_invalid_setting_is_a_device_error(pty_pair) -> None:
    _, name = pty_pair
    with pytest.raises(DeviceError, match="cannot open"):
        await open_device(f"serial://{name}?bytesize=3")
