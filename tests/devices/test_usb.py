"""usb://VID:PID through the fake pyusb backend (this machine has no USB stack, CI neither)."""

from __future__ import annotations

import asyncio
import errno
import time
import uuid

import pytest
import usb.core
import usb.util

from posbridge.devices import DeviceClosed, DeviceError, open_device
from posbridge.devices.fakeusb import EP_IN, FakeUsbBackend, FakeUsbTerminal
from posbridge.devices.usb import UsbDevice, UsbTarget

from ._util import ALL_BYTES, read_exactly


def fake(**kwargs) -> tuple[FakeUsbBackend, FakeUsbTerminal]:
    kwargs.setdefault("virtual_name", f"usb-test-{uuid.uuid4().hex}")
    terminal = FakeUsbTerminal(kwargs.pop("vendor_id", 0x0B00), kwargs.pop("product_id", 0x0060), **kwargs)
    return FakeUsbBackend([terminal]), terminal


# --- the fake behaves as pyusb expects -------------------------------------------------------------
def test_pyusb_sees_the_fake_device_with_strings_and_endpoints() -> None:
    backend, _ = fake(serial_number="SN42", cdc_acm=True)
    dev = usb.core.find(idVendor=0x0B00, idProduct=0x0060, backend=backend)
    assert dev is not None
    assert (dev.serial_number, dev.manufacturer, dev.product) == ("SN42", "posbridge", "fake USB terminal")
    cfg = dev.get_active_configuration()
    assert [i.bInterfaceClass for i in cfg] == [0x02, 0x0A]
    data = cfg[(1, 0)]
    assert sorted(e.bEndpointAddress for e in data) == [0x01, 0x81]
    assert "INTERFACE 1" in str(dev)  # pyusb's full descriptor dump walks every field
    usb.util.dispose_resources(dev)


def test_a_bulk_read_with_nothing_to_read_times_out_like_libusb() -> None:
    backend, _ = fake()
    dev = usb.core.find(backend=backend)
    start = time.monotonic()
    with pytest.raises(usb.core.USBTimeoutError) as info:
        dev.read(EP_IN, 64, 50)
    assert info.value.errno == errno.ETIMEDOUT and 0.04 < time.monotonic() - start < 1
    usb.util.dispose_resources(dev)
    backend.close()


# --- opening -------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, message", [
    ("usb://", "expected usb://VID:PID with hexadecimal ids"),
    ("usb://0b00", "expected usb://VID:PID"),
    ("usb://0b00:xyz", "expected usb://VID:PID"),
    ("usb://10000:1", "expected usb://VID:PID"),
    ("usb://0b00:0060?speed=1", "unknown parameter speed (supported: serial, interface, timeout"),
    ("usb://0b00:0060?interface=x", "bad value for interface"),
    ("usb://0b00:0060?timeout=0", "bad value for timeout"),
])
async def test_bad_usb_urls_are_explained(url: str, message: str) -> None:
    backend, _ = fake()
    with pytest.raises(DeviceError) as info:
        await open_device(url, usb_backend=backend)
    assert message in str(info.value)


def test_usb_url_options_are_parsed() -> None:
    target = UsbTarget.parse("usb://0x0B00:0x0060?serial=A%20B&interface=1&timeout=2.5&read_timeout=0.05")
    assert (target.vendor_id, target.product_id, target.serial, target.interface) == (0x0B00, 0x60, "A B", 1)
    assert (target.timeout, target.read_timeout, target.ids) == (2.5, 0.05, "0b00:0060")


async def test_no_libusb_says_so_and_points_to_the_serial_port(monkeypatch) -> None:
    def no_backend(*args, **kwargs):
        raise usb.core.NoBackendError("No backend available")

    monkeypatch.setattr(usb.core, "find", no_backend)
    with pytest.raises(DeviceError) as info:
        await open_device("usb://0b00:0060")
    text = str(info.value)
    assert "no USB backend" in text and "libusb" in text and "serial:///dev/ttyACM0" in text


async def test_an_absent_device_lists_what_is_connected_and_a_matching_tty(monkeypatch) -> None:
    backend, _ = fake(vendor_id=0x1234, product_id=0x0001)
    monkeypatch.setattr("posbridge.devices.usb.matching_serial_ports", lambda vid, pid: ["/dev/ttyACM3"])
    with pytest.raises(DeviceError) as info:
        await open_device("usb://0b00:0060?serial=X1", usb_backend=backend)
    text = str(info.value)
    assert "no USB device 0b00:0060 with serial number 'X1' is connected" in text
    assert "connected: 1234:0001" in text
    assert "CDC-ACM serial port here (/dev/ttyACM3)" in text and "serial:///dev/ttyACM3" in text


async def test_the_serial_number_picks_one_of_two_identical_terminals() -> None:
    backend, first = fake(serial_number="AAA")
    second = backend.plug(FakeUsbTerminal(0x0B00, 0x0060, virtual_name=f"usb-test-{uuid.uuid4().hex}",
                                          serial_number="BBB"))
    peer = await open_device(f"virtual://{second.virtual_name}")
    dev = await open_device("usb://0b00:0060?serial=BBB", usb_backend=backend)
    try:
        await dev.write(b"to B")
        assert await read_exactly(peer, 4) == b"to B"
        assert ("claim", 0) in second.events and ("claim", 0) not in first.events
    finally:
        await dev.close()
        await peer.close()
        backend.close()


async def test_a_busy_interface_is_reported_as_busy() -> None:
    backend, _ = fake(held_by_other=True)
    with pytest.raises(DeviceError, match="the device is busy: another program"):
        await open_device("usb://0b00:0060", usb_backend=backend)


async def test_permission_denied_suggests_a_udev_rule() -> None:
    class Denied(FakeUsbBackend):
        def open_device(self, dev):
            raise usb.core.USBError("Access denied (insufficient permissions)", -3, errno.EACCES)

    backend, _ = fake()
    backend.__class__ = Denied
    with pytest.raises(DeviceError, match="permission denied.*udev rule"):
        await open_device("usb://0b00:0060", usb_backend=backend)


async def test_the_kernel_driver_is_detached_and_given_back_on_close() -> None:
    backend, terminal = fake(kernel_driver=True)
    dev = await open_device("usb://0b00:0060", usb_backend=backend)
    assert terminal.events[:3] == [("open",), ("detach", 0), ("claim", 0)]
    await dev.close()
    assert terminal.events[-3:] == [("release", 0), ("attach", 0), ("close",)]
    assert terminal.kernel_driver


async def test_an_unconfigured_device_is_configured() -> None:
    backend, terminal = fake(configured=False)
    dev = await open_device("usb://0b00:0060", usb_backend=backend)
    assert ("set_configuration", 1) in terminal.events
    await dev.close()
    backend.close()


async def test_the_cdc_layout_uses_the_data_interface_and_a_wrong_interface_is_explained() -> None:
    backend, _ = fake(cdc_acm=True)
    dev = await open_device("usb://0b00:0060", usb_backend=backend)
    assert isinstance(dev, UsbDevice) and dev.interface == 1
    await dev.close()
    with pytest.raises(DeviceError, match=r"interface 0 has a bulk IN and a bulk OUT endpoint.*interfaces: "
                                          r"0 \(class 0x02\), 1 \(class 0x0a\)"):
        await open_device("usb://0b00:0060?interface=0", usb_backend=backend)
    backend.close()


# --- moving bytes --------------------------------------------------------------------------------
async def test_bytes_flow_both_ways_through_the_bulk_endpoints() -> None:
    backend, terminal = fake()
    peer = await open_device(f"virtual://{terminal.virtual_name}")
    dev = await open_device("usb://0b00:0060", usb_backend=backend)
    try:
        await dev.write(ALL_BYTES)
        assert await read_exactly(peer, 256) == ALL_BYTES
        await peer.write(ALL_BYTES[::-1])
        assert await read_exactly(dev, 256) == ALL_BYTES[::-1]
        big = bytes(range(256)) * 400
        await asyncio.gather(dev.write(big), peer.write(big))
        got_peer, got_dev = await asyncio.gather(read_exactly(peer, len(big)), read_exactly(dev, len(big)))
        assert got_peer == big and got_dev == big
    finally:
        await dev.close()
        await peer.close()
        backend.close()


async def test_a_write_ending_on_a_packet_boundary_is_followed_by_a_zero_length_packet() -> None:
    sizes: list[int] = []

    class Spy(FakeUsbBackend):
        def bulk_write(self, dev_handle, ep, intf, data, timeout):
            sizes.append(len(data))
            return super().bulk_write(dev_handle, ep, intf, data, timeout)

    backend, terminal = fake(max_packet_size=64)
    backend.__class__ = Spy
    peer = await open_device(f"virtual://{terminal.virtual_name}")
    dev = await open_device("usb://0b00:0060", usb_backend=backend)
    await dev.write(bytes(128))
    await dev.write(bytes(100))
    assert sizes == [128, 0, 100]
    await dev.close()
    await peer.close()
    backend.close()


async def test_reads_are_cancellation_safe() -> None:
    backend, terminal = fake()
    peer = await open_device(f"virtual://{terminal.virtual_name}")
    dev = await open_device("usb://0b00:0060", usb_backend=backend)
    try:
        for _ in range(20):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(dev.read(), 0.001)
        await peer.write(b"still here")
        assert await read_exactly(dev, 10) == b"still here"
        await peer.write(b"queued")
        await asyncio.sleep(0.05)
        assert dev.discard_input() == 6
    finally:
        await dev.close()
        await peer.close()
        backend.close()


async def test_unplugging_ends_the_stream_with_device_closed() -> None:
    backend, terminal = fake()
    peer = await open_device(f"virtual://{terminal.virtual_name}")
    dev = await open_device("usb://0b00:0060", usb_backend=backend)
    await peer.write(b"last")
    assert await read_exactly(dev, 4) == b"last"
    terminal.unplug()
    with pytest.raises(DeviceClosed, match="disconnected"):
        await asyncio.wait_for(dev.read(), 2)
    with pytest.raises(DeviceClosed):
        await dev.write(b"x")
    await dev.close()
    await peer.close()


async def test_a_write_the_device_does_not_take_times_out_with_a_sentence() -> None:
    class Stuck(FakeUsbBackend):
        def bulk_write(self, dev_handle, ep, intf, data, timeout):
            raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)

    backend, _ = fake()
    backend.__class__ = Stuck
    dev = await open_device("usb://0b00:0060?timeout=0.1", usb_backend=backend)
    with pytest.raises(DeviceError, match="did not accept data within 0.1 s"):
        await dev.write(b"x")
    await dev.close()


async def test_close_is_quick_idempotent_and_final() -> None:
    backend, _ = fake()
    dev = await open_device("usb://0b00:0060?read_timeout=0.05", usb_backend=backend)
    pending = asyncio.ensure_future(dev.read())
    await asyncio.sleep(0.01)
    start = time.monotonic()
    await dev.close()
    await dev.close()
    assert time.monotonic() - start < 1.0
    with pytest.raises(DeviceClosed):
        await pending
    with pytest.raises(DeviceClosed):
        await dev.read()
    with pytest.raises(DeviceClosed):
        await dev.write(b"x")
    # The interface was released: it can be opened again.
    again = await open_device("usb://0b00:0060", usb_backend=backend)
    await again.close()
    backend.close()


async def test_usb_devices_can_carry_faults() -> None:
    backend, terminal = fake()
    peer = await open_device(f"virtual://{terminal.virtual_name}")
    dev = await open_device("usb://0b00:0060?faults=tx:drop@0", usb_backend=backend)
    await dev.write(b"ab")
    assert await read_exactly(peer, 1) == b"b"
    await dev.close()
    await peer.close()
    backend.close()
