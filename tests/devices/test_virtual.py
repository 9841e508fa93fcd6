"""virtual:// pairs: exact bytes, ordering, close semantics, names, threads and loops."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid

import pytest

from posbridge.devices import DeviceClosed, DeviceError, open_device, open_pair
from posbridge.devices.virtual import VirtualDevice

from ._util import ALL_BYTES, read_exactly


def unique() -> str:
    return f"test-{uuid.uuid4().hex}"


async def test_first_opener_is_a_second_is_b_and_bytes_flow_both_ways() -> None:
    url = f"virtual://{unique()}"
    a = await open_device(url)
    b = await open_device(url)
    assert isinstance(a, VirtualDevice) and isinstance(b, VirtualDevice)
    assert (a.side, b.side) == ("A", "B")
    assert a.url == b.url == url
    await a.write(ALL_BYTES)
    assert await read_exactly(b, 256) == ALL_BYTES
    await b.write(b"\x02reply\x03")
    assert await read_exactly(a, 7) == b"\x02reply\x03"
    await a.close()
    await b.close()


async def test_large_write_and_many_small_writes_keep_order() -> None:
    a, b = await open_pair()
    big = os.urandom(1 << 20)
    await a.write(big)
    for i in range(1000):
        await a.write(i.to_bytes(2, "big"))
    assert await read_exactly(b, len(big)) == big
    tail = await read_exactly(b, 2000)
    assert [int.from_bytes(tail[i : i + 2], "big") for i in range(0, 2000, 2)] == list(range(1000))
    await a.close()
    await b.close()


async def test_read_respects_max_bytes_and_rejects_zero() -> None:
    a, b = await open_pair()
    await a.write(b"abcdef")
    assert await b.read(4) == b"abcd"
    assert await b.read(4) == b"ef"
    with pytest.raises(ValueError):
        await b.read(0)
    await a.close()
    await b.close()


async def test_accepts_bytearray_and_memoryview_and_copies_them() -> None:
    a, b = await open_pair()
    buf = bytearray(b"xyz")
    await a.write(buf)
    buf[:] = b"___"
    await a.write(memoryview(b"123"))
    assert await read_exactly(b, 6) == b"xyz123"
    await a.close()
    await b.close()


async def test_third_opener_is_refused_with_a_clear_message() -> None:
    name = unique()
    a = await open_device(f"virtual://{name}")
    b = await open_device(f"virtual://{name}")
    with pytest.raises(DeviceError, match="already has two ends open"):
        await open_device(f"virtual://{name}")
    await a.close()
    # One end still open: the name is still taken.
    with pytest.raises(DeviceError):
        await open_device(f"virtual://{name}")
    await b.close()


async def test_close_delivers_buffered_bytes_then_device_closed() -> None:
    a, b = await open_pair()
    await a.write(b"last words")
    await a.close()
    assert await read_exactly(b, 10) == b"last words"
    with pytest.raises(DeviceClosed, match="other end closed"):
        await b.read()
    with pytest.raises(DeviceClosed):  # stays closed
        await b.read()
    with pytest.raises(DeviceClosed):
        await b.write(b"anyone?")
    with pytest.raises(DeviceClosed):
        await a.read()
    with pytest.raises(DeviceClosed):
        await a.write(b"x")
    await a.close()  # idempotent
    await b.close()
    await b.close()
    assert a.closed and b.closed


async def test_close_wakes_pending_readers_on_both_ends() -> None:
    a, b = await open_pair()
    ra = asyncio.create_task(a.read())
    rb = asyncio.create_task(b.read())
    await asyncio.sleep(0.01)
    await a.close()
    with pytest.raises(DeviceClosed):
        await asyncio.wait_for(ra, 1)
    with pytest.raises(DeviceClosed):
        await asyncio.wait_for(rb, 1)
    await b.close()


async def test_name_is_free_again_after_both_ends_close() -> None:
    name = unique()
    a, b = await open_pair(name)
    await a.write(b"stale")
    await b.close()
    await a.close()
    a2 = await open_device(f"virtual://{name}")
    b2 = await open_device(f"virtual://{name}")
    assert (a2.side, b2.side) == ("A", "B")
    await a2.write(b"fresh")
    assert await read_exactly(b2, 5) == b"fresh"
    assert b2.discard_input() == 0 and a2.discard_input() == 0
    await a2.close()
    await b2.close()


async def test_bytes_written_before_the_second_end_opens_are_kept() -> None:
    name = unique()
    a = await open_device(f"virtual://{name}")
    await a.write(b"early")
    b = await open_device(f"virtual://{name}")
    assert await read_exactly(b, 5) == b"early"
    await a.close()
    await b.close()


async def test_a_lone_end_closing_frees_the_name() -> None:
    name = unique()
    a = await open_device(f"virtual://{name}")
    await a.close()
    again = await open_device(f"virtual://{name}")
    assert again.side == "A"
    await again.close()


async def test_discard_input_drops_received_bytes_and_counts_them() -> None:
    a, b = await open_pair()
    await a.write(b"stale bytes")
    assert b.discard_input() == 11
    assert b.discard_input() == 0
    await a.write(b"new")
    assert await read_exactly(b, 3) == b"new"
    await a.close()
    await b.close()


async def test_async_context_manager_closes() -> None:
    a, b = await open_pair()
    async with a, b:
        await a.write(b"x")
        assert await b.read() == b"x"
    assert a.closed and b.closed


async def test_open_pair_refuses_a_name_in_use() -> None:
    name = unique()
    a = await open_device(f"virtual://{name}")
    with pytest.raises(DeviceError, match="in use"):
        await open_pair(name)
    await a.close()
    a, b = await open_pair(name)
    assert (a.side, b.side) == ("A", "B")
    await a.close()
    await b.close()


def _run_in_thread_loop(coro_factory, *args) -> threading.Thread:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro_factory(*args))
        except BaseException as exc:  # surfaced by the test through .errors
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


async def _echo_until_closed(url: str, ready: threading.Event) -> None:
    dev = await open_device(url)
    ready.set()
    try:
        while True:
            data = await dev.read()
            await dev.write(data)
    except DeviceClosed:
        pass
    finally:
        await dev.close()


async def test_ends_in_different_threads_and_event_loops() -> None:
    name = unique()
    a = await open_device(f"virtual://{name}")
    ready = threading.Event()
    thread = _run_in_thread_loop(_echo_until_closed, f"virtual://{name}", ready)
    assert await asyncio.to_thread(ready.wait, 5)
    payload = os.urandom(200_000)
    for i in range(0, len(payload), 1000):
        await a.write(payload[i : i + 1000])
    assert await read_exactly(a, len(payload)) == payload
    # Many small round trips: each wake-up crosses threads.
    for i in range(200):
        await a.write(bytes([i % 256]))
        assert await read_exactly(a, 1) == bytes([i % 256])
    await a.close()
    await asyncio.to_thread(thread.join, 5)
    assert not thread.is_alive() and not thread.errors


def test_both_ends_in_threads_none_in_the_main_loop() -> None:
    name = unique()
    ready = threading.Event()
    echo = _run_in_thread_loop(_echo_until_closed, f"virtual://{name}", ready)
    assert ready.wait(5)
    result: list[bytes] = []

    async def client() -> None:
        dev = await open_device(f"virtual://{name}")
        await dev.write(ALL_BYTES * 10)
        result.append(await read_exactly(dev, 2560))
        await dev.close()

    client_thread = _run_in_thread_loop(client)
    client_thread.join(5)
    echo.join(5)
    assert not client_thread.errors and not echo.errors
    assert result == [ALL_BYTES * 10]


async def test_reader_in_a_thread_woken_by_writes_from_this_loop() -> None:
    a, b = await open_pair()
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await read_exactly(b, 3, timeout=5))

    thread = _run_in_thread_loop(reader)
    await asyncio.sleep(0.05)  # let it park on its own loop
    await a.write(b"abc")
    await asyncio.to_thread(thread.join, 5)
    assert got == [b"abc"] and not thread.errors
    await a.close()
    await b.close()
