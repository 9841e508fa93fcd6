"""Small helpers shared by the device tests."""

from __future__ import annotations

import asyncio

from posbridge.devices import Device

ALL_BYTES = bytes(range(256))


async def read_exactly(dev: Device, n: int, timeout: float = 5.0) -> bytes:
    """Read until ``n`` bytes arrived (fails the test on timeout)."""
    got = bytearray()

    async def collect() -> None:
        while len(got) < n:
            got.extend(await dev.read(n - len(got)))

    await asyncio.wait_for(collect(), timeout)
    return bytes(got)


async def echo_server() -> tuple[asyncio.base_events.Server, int, list[asyncio.StreamWriter]]:
    """An asyncio echo server on 127.0.0.1; returns (server, port, writers of accepted clients)."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], writers
