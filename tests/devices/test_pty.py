"""pty://: an outside program (pyserial) opens the link and talks to the master side."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
import serial

from posbridge.devices import DeviceClosed, DeviceError, open_device
from posbridge.devices.pty import PtyDevice

from ._util import ALL_BYTES, read_exactly

# Bytes a cooked terminal would translate, swallow or act on.
SPECIAL = b"\r\n\r\x03\x04\x11\x13\x7f\x1a\x1c\x15\x17\x12\x16\x0f\x00\xff\n"


def client_read(port: serial.Serial, n: int) -> bytes:
    data = port.read(n)
    assert len(data) == n, f"client got {len(data)} of {n} bytes"
    return data


@pytest.fixture
async def pty_dev(tmp_path: Path):
    link = tmp_path / "ttyPOS"
    dev = await open_device(f"pty://{link}")
    assert isinstance(dev, PtyDevice)
    yield dev
    await dev.close()


async def test_link_points_at_the_slave(pty_dev: PtyDevice, tmp_path: Path) -> None:
    assert pty_dev.link_path == str(tmp_path / "ttyPOS")
    assert os.path.islink(pty_dev.link_path)
    assert os.readlink(pty_dev.link_path) == pty_dev.slave_name
    assert pty_dev.slave_name.startswith("/dev/pts/")
    assert stat.S_ISCHR(os.stat(pty_dev.link_path).st_mode)


async def test_pyserial_client_all_byte_values_both_ways(pty_dev: PtyDevice) -> None:
    client = serial.Serial(pty_dev.link_path, 115200, timeout=3)
    try:
        payload = ALL_BYTES + SPECIAL + ALL_BYTES[::-1]
        await pty_dev.write(payload)
        assert await asyncio.to_thread(client_read, client, len(payload)) == payload
        client.write(payload)
        assert await read_exactly(pty_dev, len(payload)) == payload
    finally:
        client.close()


async def test_plain_open_of_the_link_is_raw_too(pty_dev: PtyDevice) -> None:
    # No pyserial: nobody but the device configured the terminal, so this checks its raw mode.
    fd = os.open(pty_dev.link_path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, ALL_BYTES + SPECIAL)
        assert await read_exactly(pty_dev, 256 + len(SPECIAL)) == ALL_BYTES + SPECIAL
        await pty_dev.write(SPECIAL + ALL_BYTES)
        got = b""
        while len(got) < 256 + len(SPECIAL):
            got += await asyncio.to_thread(os.read, fd, 4096)
        assert got == SPECIAL + ALL_BYTES  # no echo came back either
        assert pty_dev.discard_input() == 0
    finally:
        os.close(fd)


async def test_large_exchange_both_ways(pty_dev: PtyDevice) -> None:
    client = serial.Serial(pty_dev.link_path, 115200, timeout=5)
    try:
        payload = os.urandom(64 * 1024)
        # The pty queue is a few KiB: the write must wait for the client to read.
        reader = asyncio.create_task(asyncio.to_thread(client_read, client, len(payload)))
        await asyncio.wait_for(pty_dev.write(payload), 5)
        assert await reader == payload
        writer = asyncio.create_task(asyncio.to_thread(client.write, payload))
        assert await read_exactly(pty_dev, len(payload)) == payload
        await writer
    finally:
        client.close()


async def test_client_can_close_and_reopen(pty_dev: PtyDevice) -> None:
    for round_ in range(3):
        client = serial.Serial(pty_dev.link_path, 115200, timeout=3)
        try:
            msg = f"round {round_}\r\n".encode() + ALL_BYTES
            client.write(msg)
            assert await read_exactly(pty_dev, len(msg)) == msg
            await pty_dev.write(msg[::-1])
            assert await asyncio.to_thread(client_read, client, len(msg)) == msg[::-1]
        finally:
            client.close()
        # With the client gone the master must not see EOF/EIO.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pty_dev.read(), 0.05)


async def test_discard_input_drops_what_the_client_sent(pty_dev: PtyDevice) -> None:
    client = serial.Serial(pty_dev.link_path, 115200, timeout=3)
    try:
        client.write(b"stale junk")
        client.flush()
        await asyncio.sleep(0.02)
        assert pty_dev.discard_input() == 10
        client.write(b"fresh")
        assert await read_exactly(pty_dev, 5) == b"fresh"
    finally:
        client.close()


async def test_symlink_removed_on_close(tmp_path: Path) -> None:
    link = tmp_path / "ttyX"
    dev = await open_device(f"pty://{link}")
    assert link.is_symlink()
    await dev.close()
    assert not link.exists() and not link.is_symlink()
    await dev.close()  # idempotent
    with pytest.raises(DeviceClosed):
        await dev.read()
    with pytest.raises(DeviceClosed):
        await dev.write(b"x")


async def test_stale_symlink_is_replaced(tmp_path: Path) -> None:
    link = tmp_path / "ttyX"
    link.symlink_to("/dev/pts/does-not-exist")
    async with await open_device(f"pty://{link}") as dev:
        assert os.readlink(link) == dev.slave_name
    assert not link.is_symlink()


async def test_regular_file_and_directory_are_refused(tmp_path: Path) -> None:
    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    with pytest.raises(DeviceError, match="refusing to replace"):
        await open_device(f"pty://{regular}")
    assert regular.read_text() == "keep me"
    folder = tmp_path / "dir"
    folder.mkdir()
    with pytest.raises(DeviceError, match="not a symlink"):
        await open_device(f"pty://{folder}")
    assert folder.is_dir()


async def test_missing_directory_gives_a_readable_error(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"cannot create link .*No such file or directory"):
        await open_device(f"pty://{tmp_path}/missing/ttyX")
    assert list(tmp_path.iterdir()) == []


async def test_a_link_held_by_a_live_device_is_refused_and_never_taken_over(tmp_path: Path) -> None:
    # Issue 9: a second emulator used to take the live one's link over (and delete it on exit).
    link = tmp_path / "ttyX"
    old = await open_device(f"pty://{link}")
    with pytest.raises(DeviceError, match=r"ttyX is in use by another running emulator \(pid \d+\)"):
        await open_device(f"pty://{link}")
    assert os.readlink(link) == old.slave_name
    await old.close()
    assert not link.is_symlink() and not (tmp_path / "ttyX.lock").exists()
    new = await open_device(f"pty://{link}")  # free again once its owner closed it
    await new.close()


async def test_closing_an_old_device_keeps_a_link_someone_else_placed(tmp_path: Path) -> None:
    link = tmp_path / "ttyX"
    old = await open_device(f"pty://{link}")
    other = tmp_path / "other-target"
    os.unlink(link)
    link.symlink_to(other)  # another program re-pointed the path meanwhile
    await old.close()
    assert os.readlink(link) == str(other)


def test_a_link_held_by_another_live_process_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    link = tmp_path / "ttyX"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import asyncio, sys
        from posbridge.devices import open_device
        async def main():
            dev = await open_device("pty://{link}")
            print("ready", flush=True)
            sys.stdin.readline()
            await dev.close()
        asyncio.run(main())
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        target = os.readlink(link)

        async def second() -> None:
            with pytest.raises(DeviceError, match=f"in use by another running emulator \\(pid {holder.pid}\\)"):
                await open_device(f"pty://{link}")

        asyncio.run(second())
        assert os.readlink(link) == target  # untouched
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)
    assert not link.is_symlink()


async def test_without_a_link_the_slave_name_is_enough() -> None:
    async with await open_device("pty://") as dev:
        assert dev.link_path is None
        with serial.Serial(dev.slave_name, 9600, timeout=3) as client:
            client.write(b"hi")
            assert await read_exactly(dev, 2) == b"hi"


async def test_using_the_device_from_another_loop_is_a_clear_error(pty_dev: PtyDevice) -> None:
    async def other_loop() -> None:
        await pty_dev.read()

    with pytest.raises(DeviceError, match="other than the one that opened it"):
        await asyncio.to_thread(asyncio.run, other_loop())


async def test_close_from_another_thread_runs_on_the_owning_loop(tmp_path: Path) -> None:
    dev = await open_device(f"pty://{tmp_path}/ttyX")
    await asyncio.to_thread(asyncio.run, dev.close())
    assert dev.closed and not (tmp_path / "ttyX").is_symlink()
    with pytest.raises(DeviceClosed):
        await dev.read()


def test_close_after_the_opening_loop_is_gone(tmp_path: Path) -> None:
    dev = asyncio.run(open_device(f"pty://{tmp_path}/ttyX"))
    asyncio.run(dev.close())
    assert dev.closed and not (tmp_path / "ttyX").is_symlink()
