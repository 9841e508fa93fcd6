"""Transports by URL scheme through the entry-point group ``posbridge.devices``, imported lazily: a
module that cannot load here costs only its own scheme, never ``import posbridge.devices``."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from posbridge.devices import DeviceError, open_device, supported_schemes
from posbridge.devices import url as device_url

OWN = ("virtual", "serial", "pty", "tcp", "tcp-listen", "usb")


def test_every_scheme_is_an_entry_point() -> None:
    points = {p.name: p.value for p in importlib.metadata.entry_points(group="posbridge.devices")}
    assert set(OWN) | {"socket", "loop", "rfc2217"} <= set(points)
    assert points["pty"] == "posbridge.devices.pty:open_pty"
    assert points["tcp-listen"] == "posbridge.devices.tcp:open_tcp_listen"
    assert supported_schemes()[: len(OWN)] == list(OWN)


def test_importing_devices_imports_no_transport_until_its_scheme_is_opened() -> None:
    """Off POSIX there is no termios: the package still imports, virtual:// works, pty:// says why."""
    script = textwrap.dedent("""
        import asyncio, sys
        sys.modules["termios"] = None  # as on Windows: ``import termios`` fails
        import posbridge.devices as devices
        loaded = sorted(m for m in sys.modules if m.startswith("posbridge.devices."))
        assert not {"posbridge.devices.pty", "posbridge.devices.tcp", "posbridge.devices.usb",
                    "posbridge.devices.serialport"} & set(loaded), loaded
        assert "serial" not in sys.modules and "usb" not in sys.modules

        async def main():
            a = await devices.open_device("virtual://registry-lazy")
            b = await devices.open_device("virtual://registry-lazy")
            await a.write(b"ok")
            assert await b.read() == b"ok"
            await a.close(); await b.close()
            try:
                await devices.open_device("pty:///tmp/registry-lazy-link")
            except devices.DeviceError as error:
                print(error)
        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith("pty:// is not available here (posbridge.devices.pty:open_pty): ")
    assert "termios" in line


async def test_an_unknown_scheme_is_one_line_naming_the_supported_ones() -> None:
    with pytest.raises(DeviceError) as caught:
        await open_device("carrier-pigeon://coop/1")
    message = str(caught.value)
    assert "\n" not in message and "unknown device scheme 'carrier-pigeon'" in message
    assert "virtual, serial, pty, tcp, tcp-listen, usb" in message


async def test_a_scheme_registered_at_run_time_opens_through_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "posbridge_test_devices-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: posbridge-test-devices\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[posbridge.devices]\nechoes = posbridge_test_echoes:open_echoes\n")
    (tmp_path / "posbridge_test_echoes.py").write_text(textwrap.dedent("""
        from posbridge.devices.virtual import open_virtual

        async def open_echoes(url):
            return open_virtual("echoes-" + url.partition("://")[2])
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(device_url, "_openers", {})
    assert "echoes" in supported_schemes()
    end = await open_device("echoes://one")
    peer = await open_device("virtual://echoes-one")
    try:
        await peer.write(b"hello")
        assert await end.read() == b"hello"
    finally:
        await end.close()
        await peer.close()
