"""open_device: scheme dispatch and readable errors for bad URLs."""

from __future__ import annotations

import pytest

from posbridge import devices
from posbridge.devices import Device, DeviceClosed, DeviceError, open_device, supported_schemes


def test_public_api() -> None:
    assert issubclass(DeviceClosed, DeviceError)
    assert set(devices.__all__) >= {"Device", "DeviceError", "DeviceClosed", "open_device", "open_pair"}
    for name in ("read", "write", "discard_input", "close", "__aenter__", "__aexit__"):
        assert hasattr(Device, name)


def test_supported_schemes_include_ours_and_pyserials() -> None:
    schemes = supported_schemes()
    for scheme in ("virtual", "serial", "pty", "tcp", "tcp-listen", "socket", "loop", "rfc2217", "spy"):
        assert scheme in schemes


@pytest.mark.parametrize(
    "url, message",
    [
        ("bogus://x", "unknown device scheme 'bogus'"),
        ("bogus://x", "supported: virtual, serial, pty, tcp, tcp-listen"),
        ("/dev/ttyUSB0", "did you mean serial:///dev/ttyUSB0?"),
        ("COM3", "did you mean serial://COM3?"),
        ("", "not a device URL"),
        ("://nothing", "not a device URL"),
        ("virtual://", "virtual:// needs a name"),
        ("virtual://x?mode=1", "takes no parameters"),
        ("tcp://127.0.0.1", "expected tcp://host:port"),
        ("tcp://:5000", "expected tcp://host:port"),
        ("tcp://127.0.0.1:http", "bad port"),
        ("tcp://127.0.0.1:70000", "bad port"),
        ("tcp://127.0.0.1:5000/path", "expected tcp://host:port"),
        ("tcp-listen://127.0.0.1:5000?x=1", "expected tcp-listen://host:port"),
        ("tcp://host.invalid:5000", "cannot connect to host.invalid:5000"),
        ("tcp-listen://192.0.2.1:0", "cannot listen on 192.0.2.1:0"),
        ("pty:///tmp/x?mode=1", "takes no parameters"),
        ("serial:///dev/ttyS0?flux=1", "unknown parameter flux"),
    ],
)
async def test_bad_urls_give_readable_device_errors(url: str, message: str) -> None:
    with pytest.raises(DeviceError) as info:
        await open_device(url)
    assert message in str(info.value)


async def test_non_string_url() -> None:
    with pytest.raises(DeviceError, match="must be a string"):
        await open_device(None)  # type: ignore[arg-type]


async def test_scheme_is_case_insensitive() -> None:
    dev = await open_device("VIRTUAL://case-test")
    other = await open_device("virtual://case-test")
    await dev.write(b"x")
    assert await other.read() == b"x"
    await dev.close()
    await other.close()
