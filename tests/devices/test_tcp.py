"""tcp:// (connect) and tcp-listen:// (one peer at a time)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from posbridge.devices import DeviceClosed, DeviceError, open_device
from posbridge.devices.tcp import TcpDevice, TcpListenDevice

from ._util import ALL_BYTES, echo_server, read_exactly


async def test_tcp_connect_exchanges_bytes_with_nodelay() -> None:
    server, port, writers = await echo_server()
    async with server:
        dev = await open_device(f"tcp://127.0.0.1:{port}")
        try:
            assert isinstance(dev, TcpDevice)
            assert dev.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            await dev.write(ALL_BYTES)
            assert await read_exactly(dev, 256) == ALL_BYTES
            big = os.urandom(2 << 20)  # larger than the socket buffers: exercises write backpressure
            writer = asyncio.create_task(dev.write(big))
            assert await read_exactly(dev, len(big)) == big
            await writer
        finally:
            await dev.close()


async def test_tcp_peer_close_gives_buffered_bytes_then_device_closed() -> None:
    server, port, writers = await echo_server()
    async with server:
        async with await open_device(f"tcp://localhost:{port}") as dev:
            await dev.write(b"ping")
            assert await read_exactly(dev, 4) == b"ping"
            writers[0].write(b"bye")
            writers[0].close()
            assert await read_exactly(dev, 3) == b"bye"
            with pytest.raises(DeviceClosed, match="closed by the peer"):
                await asyncio.wait_for(dev.read(), 2)
            with pytest.raises(DeviceClosed):
                await dev.read()


async def test_tcp_refused_connection_is_readable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        with pytest.raises(DeviceError, match=rf"cannot connect to 127.0.0.1:{port}: .*Connection refused"):
            await open_device(f"tcp://127.0.0.1:{port}")


async def test_listen_port_zero_binds_loopback_and_reports_the_port() -> None:
    async with await open_device("tcp-listen://:0") as dev:
        assert isinstance(dev, TcpListenDevice)
        assert dev.port != 0
        assert dev.host == "127.0.0.1"
        assert dev.url == f"tcp-listen://127.0.0.1:{dev.port}"
        assert dev._listener.getsockname() == ("127.0.0.1", dev.port)
    async with await open_device("tcp-listen://127.0.0.1:0") as dev:
        assert dev.url == f"tcp-listen://127.0.0.1:{dev.port}"


async def test_listen_serves_a_peer_then_reports_its_disconnect_once_then_serves_the_next() -> None:
    async with await open_device("tcp-listen://127.0.0.1:0") as dev:
        with pytest.raises(DeviceClosed, match="no peer"):
            await dev.write(b"nobody there")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(dev.read(), 0.05)  # waits for a peer

        for round_ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", dev.port)
            msg = f"hello {round_}".encode() + ALL_BYTES
            writer.write(msg)
            assert await read_exactly(dev, len(msg)) == msg
            assert dev.peer is not None and dev.peer[0] == "127.0.0.1"
            await dev.write(msg[::-1])
            assert await reader.readexactly(len(msg)) == msg[::-1]
            writer.write(b"last")
            writer.close()
            await writer.wait_closed()
            assert await read_exactly(dev, 4) == b"last"
            with pytest.raises(DeviceClosed):
                await asyncio.wait_for(dev.read(), 2)
            assert dev.peer is None
            with pytest.raises(DeviceClosed):
                await dev.write(b"gone")
            # Reported once: the next read waits for the next peer.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(dev.read(), 0.05)


async def test_listen_second_peer_waits_until_the_first_is_done() -> None:
    async with await open_device("tcp-listen://127.0.0.1:0") as dev:
        r1, w1 = await asyncio.open_connection("127.0.0.1", dev.port)
        w1.write(b"one")
        assert await read_exactly(dev, 3) == b"one"
        r2, w2 = await asyncio.open_connection("127.0.0.1", dev.port)  # sits in the backlog
        w2.write(b"two")
        await dev.write(b"to-one")
        assert await r1.readexactly(6) == b"to-one"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(dev.read(), 0.05)
        w1.close()
        with pytest.raises(DeviceClosed):
            await asyncio.wait_for(dev.read(), 2)
        assert await read_exactly(dev, 3) == b"two"
        await dev.write(b"to-two")
        assert await r2.readexactly(6) == b"to-two"
        w2.close()


async def test_listen_peer_reset_is_a_disconnect() -> None:
    async with await open_device("tcp-listen://127.0.0.1:0") as dev:
        sock = socket.create_connection(("127.0.0.1", dev.port))
        sock.sendall(b"x")
        assert await read_exactly(dev, 1) == b"x"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST
        with pytest.raises(DeviceClosed):
            await asyncio.wait_for(dev.read(), 2)


async def test_listen_close_wakes_a_pending_read_and_frees_the_port() -> None:
    dev = await open_device("tcp-listen://127.0.0.1:0")
    port = dev.port
    pending = asyncio.create_task(dev.read())
    await asyncio.sleep(0.01)
    await dev.close()
    with pytest.raises(DeviceClosed, match="device closed"):
        await asyncio.wait_for(pending, 1)
    with pytest.raises(DeviceClosed):
        await dev.read()
    again = await open_device(f"tcp-listen://127.0.0.1:{port}")
    await again.close()


async def test_listen_on_a_busy_port_is_readable() -> None:
    async with await open_device("tcp-listen://127.0.0.1:0") as dev:
        with pytest.raises(DeviceError, match=rf"cannot listen on 127.0.0.1:{dev.port}: .*in use"):
            await open_device(f"tcp-listen://127.0.0.1:{dev.port}")


async def test_unread_input_is_bounded_and_reading_resumes(monkeypatch) -> None:
    import posbridge.devices._fd as fd_module

    monkeypatch.setattr(fd_module, "HIGH_WATER", 64 * 1024)
    async with await open_device("tcp-listen://127.0.0.1:0") as dev:
        reader, writer = await asyncio.open_connection("127.0.0.1", dev.port)
        payload = os.urandom(4 << 20)
        writer.write(payload)
        await asyncio.sleep(0.1)  # the device buffers up to the mark, then leaves it to TCP
        assert len(dev._inbox) <= 64 * 1024 + fd_module.CHUNK
        assert writer.transport.get_write_buffer_size() > 0  # the sender feels the backpressure
        assert await read_exactly(dev, len(payload)) == payload
        writer.close()


async def test_listener_reports_each_empty_peer_once_and_serves_the_next() -> None:
    """Issue 9: connections that close without a byte (probes, churn) are each reported once."""
    async with await open_device("tcp-listen://127.0.0.1:0") as dev:
        assert dev.reconnects
        for _ in range(5):
            _, writer = await asyncio.open_connection("127.0.0.1", dev.port)
            writer.close()
        for _ in range(5):
            with pytest.raises(DeviceClosed):
                await asyncio.wait_for(dev.read(), 2)
        reader, writer = await asyncio.open_connection("127.0.0.1", dev.port)
        writer.write(b"real")
        assert await asyncio.wait_for(read_exactly(dev, 4), 2) == b"real"
        writer.close()


async def test_listener_sees_a_waiting_peer_and_can_drop_the_current_one() -> None:
    async with await open_device("tcp-listen://127.0.0.1:0") as dev:
        _, holder = await asyncio.open_connection("127.0.0.1", dev.port)
        holder.write(b"x")
        assert await asyncio.wait_for(dev.read(), 2) == b"x"
        assert dev.connected and dev.peer_since is not None and not dev.waiting_peers
        waiting_reader, waiting = await asyncio.open_connection("127.0.0.1", dev.port)
        waiting.write(b"next")
        for _ in range(100):
            if dev.waiting_peers:
                break
            await asyncio.sleep(0.01)
        assert dev.waiting_peers
        assert dev.drop_peer("idle") and not dev.connected
        with pytest.raises(DeviceClosed, match="idle"):
            await asyncio.wait_for(dev.read(), 2)
        assert await asyncio.wait_for(read_exactly(dev, 4), 2) == b"next"
        assert dev.drop_peer("done") and not dev.drop_peer("again")  # nobody left to drop
        holder.close()
        waiting.close()
