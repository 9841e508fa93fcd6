"""A fake pyusb backend: terminals whose bulk endpoints are the other end of a ``virtual://`` pair.

There is no USB stack on CI machines (nor libusb here), so ``usb://`` is tested through this
backend, passed where libusb would be found (``usb.core.find(backend=…)``,
``open_device(url, usb_backend=…)``)::

    backend = FakeUsbBackend([FakeUsbTerminal(0x0B00, 0x0060, virtual_name="t1")])
    terminal_end = await open_device("virtual://t1")            # a VirtualTerminal serves here
    ecr_end = await open_device("usb://0b00:0060", usb_backend=backend)

Bytes written to the bulk OUT endpoint arrive at ``virtual://NAME``; bytes written there come back
from the bulk IN endpoint. It implements the :class:`usb.backend.IBackend` methods pyusb 1.3
calls (descriptors, open/close, configuration, claim/release, kernel driver, bulk transfers,
control transfers for string descriptors and CDC class requests) and fails as libusb does: a bulk
read that times out raises ``usb.core.USBTimeoutError``; a claimed or driver-bound interface
``USBError`` with errno EBUSY; an unplugged terminal ENODEV.
"""

from __future__ import annotations

import array
import asyncio
import errno
import itertools
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

from .base import DeviceClosed
from .virtual import VirtualDevice, open_virtual

__all__ = ["FakeUsbBackend", "FakeUsbTerminal"]

EP_IN, EP_OUT, EP_NOTIFY = 0x81, 0x01, 0x82
CLASS_CDC, CLASS_CDC_DATA, CLASS_VENDOR = 0x02, 0x0A, 0xFF
_LANGID_EN_US = 0x0409
_addresses = itertools.count(2)


def _error(text: str, code: int, err: int) -> usb.core.USBError:
    return usb.core.USBError(text, code, err)  # libusb's words and codes, as pyusb raises them


def _busy() -> usb.core.USBError:
    return _error("Resource busy", -6, errno.EBUSY)


def _gone() -> usb.core.USBError:
    return _error("No such device (it may have been disconnected)", -4, errno.ENODEV)


@dataclass(eq=False)
class FakeUsbTerminal:
    """One fake terminal on the bus.

    ``virtual_name`` names the ``virtual://`` pair its bulk endpoints are joined to (the fake takes
    the end that is free when the interface is first claimed, and keeps it until :meth:`unplug` or
    the backend's :meth:`FakeUsbBackend.close`, as a real terminal stays powered between opens).
    ``cdc_acm`` gives it the CDC-ACM layout (communication interface 0 with an interrupt endpoint,
    data interface 1 with the bulk pair) instead of one vendor-specific bulk interface.
    ``kernel_driver`` says a kernel driver is bound to the bulk interface (claiming then needs a
    detach); ``held_by_other`` that another program has it claimed (EBUSY).
    """

    vendor_id: int
    product_id: int
    virtual_name: str = ""
    serial_number: str | None = "FAKE0001"
    manufacturer: str = "posbridge"
    product: str = "fake USB terminal"
    cdc_acm: bool = False
    kernel_driver: bool = False
    held_by_other: bool = False
    max_packet_size: int = 64
    configured: bool = True  # the OS already selected configuration 1 at enumeration
    bus: int = 1
    address: int = field(default_factory=lambda: next(_addresses))
    # What happened, for assertions: ("claim", 0), ("detach", 1), ("ctrl", 0x21, 0x22, 1, 0)...
    events: list[tuple[Any, ...]] = field(default_factory=list)
    plugged: bool = True
    _end: VirtualDevice | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def bulk_interface(self) -> int:
        return 1 if self.cdc_acm else 0

    def unplug(self) -> None:
        """Pull the cable: the device leaves the bus and pending transfers fail with ENODEV."""
        self.plugged = False
        _close_end(self)

    # --- descriptors --------------------------------------------------------------------------
    def strings(self) -> dict[int, str]:
        return {i: s for i, s in ((1, self.manufacturer), (2, self.product), (3, self.serial_number))
                if s}

    def interfaces(self) -> list[SimpleNamespace]:
        bulk = [_endpoint(EP_IN, 2, self.max_packet_size), _endpoint(EP_OUT, 2, self.max_packet_size)]
        if not self.cdc_acm:
            return [_interface(0, CLASS_VENDOR, 0xFF, 0xFF, bulk)]
        return [_interface(0, CLASS_CDC, 0x02, 0x01, [_endpoint(EP_NOTIFY, 3, 16, interval=16)]),
                _interface(1, CLASS_CDC_DATA, 0x00, 0x00, bulk)]


def _endpoint(address: int, kind: int, size: int, interval: int = 0) -> SimpleNamespace:
    return SimpleNamespace(bLength=7, bDescriptorType=5, bEndpointAddress=address, bmAttributes=kind,
                           wMaxPacketSize=size, bInterval=interval, bRefresh=0, bSynchAddress=0,
                           extra_descriptors=[])


def _interface(number: int, cls: int, sub: int, proto: int, endpoints: list) -> SimpleNamespace:
    return SimpleNamespace(bLength=9, bDescriptorType=4, bInterfaceNumber=number, bAlternateSetting=0,
                           bNumEndpoints=len(endpoints), bInterfaceClass=cls, bInterfaceSubClass=sub,
                           bInterfaceProtocol=proto, iInterface=0, extra_descriptors=[],
                           endpoints=endpoints)


class _Handle:
    def __init__(self, terminal: FakeUsbTerminal) -> None:
        self.terminal = terminal
        self.open = True
        self.claimed: set[int] = set()


def _close_end(terminal: FakeUsbTerminal) -> None:
    with terminal._lock:
        end, terminal._end = terminal._end, None
    if end is not None:
        _run(end.close(), None)


# One event loop thread for every fake: bulk transfers are blocking calls made from device
# threads, and a virtual:// end is read with asyncio (cancellation-safe, from any loop).
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _fake_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="devices-fakeusb", daemon=True).start()
        return _loop


def _run(coro: Any, timeout: float | None) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, _fake_loop()).result(timeout)


async def _read_within(end: VirtualDevice, size: int, timeout: float | None) -> bytes | None:
    try:
        return await asyncio.wait_for(end.read(size), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        return None  # the read is cancellation-safe: nothing was taken


class FakeUsbBackend(usb.backend.IBackend):
    """A pyusb backend with :class:`FakeUsbTerminal` devices on its bus (module docstring)."""

    def __init__(self, terminals: list[FakeUsbTerminal] | None = None) -> None:
        super().__init__()
        self.terminals: list[FakeUsbTerminal] = list(terminals or [])

    def plug(self, terminal: FakeUsbTerminal) -> FakeUsbTerminal:
        """Put another terminal on the bus."""
        terminal.plugged = True
        self.terminals.append(terminal)
        return terminal

    def close(self) -> None:
        """Release every terminal's ``virtual://`` end."""
        for terminal in self.terminals:
            _close_end(terminal)

    # --- enumeration and descriptors ------------------------------------------------------------
    def enumerate_devices(self) -> list[FakeUsbTerminal]:
        return [t for t in self.terminals if t.plugged]

    def get_parent(self, dev: FakeUsbTerminal) -> None:
        return None

    def get_device_descriptor(self, dev: FakeUsbTerminal) -> SimpleNamespace:
        strings = dev.strings()
        return SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200,
            bDeviceClass=0xEF if dev.cdc_acm else 0x00, bDeviceSubClass=0x02 if dev.cdc_acm else 0,
            bDeviceProtocol=0x01 if dev.cdc_acm else 0, bMaxPacketSize0=64,
            idVendor=dev.vendor_id, idProduct=dev.product_id, bcdDevice=0x0100,
            iManufacturer=1 if 1 in strings else 0, iProduct=2 if 2 in strings else 0,
            iSerialNumber=3 if 3 in strings else 0, bNumConfigurations=1,
            address=dev.address, bus=dev.bus, port_number=1, port_numbers=(1,), speed=3,
        )

    def get_configuration_descriptor(self, dev: FakeUsbTerminal, config: int) -> SimpleNamespace:
        if config != 0:
            raise IndexError(f"configuration index {config} out of range")
        interfaces = dev.interfaces()
        return SimpleNamespace(
            bLength=9, bDescriptorType=2,
            wTotalLength=9 + sum(9 + 7 * i.bNumEndpoints for i in interfaces),
            bNumInterfaces=len(interfaces), bConfigurationValue=1, iConfiguration=0,
            bmAttributes=0x80, bMaxPower=50, extra_descriptors=[],
        )

    def get_interface_descriptor(self, dev: FakeUsbTerminal, intf: int, alt: int, config: int) -> SimpleNamespace:
        interfaces = dev.interfaces()
        if config != 0 or alt != 0 or not 0 <= intf < len(interfaces):
            raise IndexError("no such interface or alternate setting")  # ends pyusb's iteration
        return interfaces[intf]

    def get_endpoint_descriptor(self, dev: FakeUsbTerminal, ep: int, intf: int, alt: int,
                                config: int) -> SimpleNamespace:
        endpoints = self.get_interface_descriptor(dev, intf, alt, config).endpoints
        if not 0 <= ep < len(endpoints):
            raise IndexError("no such endpoint")
        return endpoints[ep]

    # --- handles ----------------------------------------------------------------------------------
    def _live(self, handle: _Handle) -> FakeUsbTerminal:
        if not handle.open:
            raise _error("Invalid parameter", -2, errno.EINVAL)
        if not handle.terminal.plugged:
            raise _gone()
        return handle.terminal

    def open_device(self, dev: FakeUsbTerminal) -> _Handle:
        if not dev.plugged:
            raise _gone()
        dev.events.append(("open",))
        return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        dev_handle.open = False
        dev_handle.claimed.clear()
        dev_handle.terminal.events.append(("close",))

    def get_configuration(self, dev_handle: _Handle) -> int:
        return 1 if self._live(dev_handle).configured else 0

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        terminal = self._live(dev_handle)
        if terminal.kernel_driver or terminal.held_by_other:
            raise _busy()  # libusb refuses while any interface is in use
        if config_value not in (0, 1):
            raise _error("Entity not found", -5, errno.ENOENT)
        terminal.configured = config_value == 1
        terminal.events.append(("set_configuration", config_value))

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self._live(dev_handle)
        if altsetting != 0:
            raise _error("Entity not found", -5, errno.ENOENT)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        terminal = self._live(dev_handle)
        if not 0 <= intf < len(terminal.interfaces()):
            raise _error("Entity not found", -5, errno.ENOENT)
        if intf == terminal.bulk_interface and (terminal.kernel_driver or terminal.held_by_other):
            raise _busy()
        dev_handle.claimed.add(intf)
        terminal.events.append(("claim", intf))

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        self._live(dev_handle)
        dev_handle.claimed.discard(intf)
        dev_handle.terminal.events.append(("release", intf))

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        terminal = self._live(dev_handle)
        return intf == terminal.bulk_interface and terminal.kernel_driver

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        terminal = self._live(dev_handle)
        if not (intf == terminal.bulk_interface and terminal.kernel_driver):
            raise _error("Entity not found", -5, errno.ENOENT)
        terminal.kernel_driver = False
        terminal.events.append(("detach", intf))

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        terminal = self._live(dev_handle)
        terminal.kernel_driver = True
        terminal.events.append(("attach", intf))

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self._live(dev_handle).events.append(("clear_halt", ep))

    def reset_device(self, dev_handle: _Handle) -> None:
        self._live(dev_handle).events.append(("reset",))

    # --- transfers --------------------------------------------------------------------------------
    def ctrl_transfer(self, dev_handle: _Handle, bmRequestType: int, bRequest: int, wValue: int,
                      wIndex: int, data: array.array, timeout: int) -> Any:
        terminal = self._live(dev_handle)
        if bmRequestType == 0x80 and bRequest == 0x06 and wValue >> 8 == 3:  # GET_DESCRIPTOR string
            index = wValue & 0xFF
            if index == 0:
                payload = _LANGID_EN_US.to_bytes(2, "little")
            else:
                text = terminal.strings().get(index)
                if text is None:
                    raise _error("Pipe error", -9, errno.EPIPE)  # the device stalls
                payload = text.encode("utf-16-le")
            blob = bytes([2 + len(payload), 3]) + payload
            n = min(len(blob), len(data))
            data[:n] = array.array("B", blob[:n])
            return n
        if bmRequestType == 0x21 and bRequest in (0x20, 0x22):  # CDC SET_LINE_CODING, SET_CONTROL_LINE_STATE
            terminal.events.append(("ctrl", bmRequestType, bRequest, wValue, wIndex))
            return len(data)
        raise _error("Pipe error", -9, errno.EPIPE)  # anything else: a STALL, as real devices do

    def _end(self, dev_handle: _Handle, ep: int, intf: int, expected: int) -> VirtualDevice:
        terminal = self._live(dev_handle)
        if ep != expected or intf != terminal.bulk_interface:
            raise _error("Invalid parameter", -2, errno.EINVAL)
        if intf not in dev_handle.claimed:
            raise _error("Entity not found", -5, errno.ENOENT)  # libusb: interface not claimed
        with terminal._lock:
            if terminal._end is None:
                if not terminal.virtual_name:
                    raise _gone()
                try:
                    terminal._end = open_virtual(terminal.virtual_name)
                except Exception as exc:
                    raise _error(f"Input/Output Error ({exc})", -1, errno.EIO) from exc
            return terminal._end

    def bulk_write(self, dev_handle: _Handle, ep: int, intf: int, data: array.array, timeout: int) -> int:
        end = self._end(dev_handle, ep, intf, EP_OUT)
        payload = bytes(data)
        try:
            _run(end.write(payload), None)
        except DeviceClosed:
            raise _gone() from None  # the terminal behind the cable is gone
        return len(payload)

    def bulk_read(self, dev_handle: _Handle, ep: int, intf: int, buff: array.array, timeout: int) -> int:
        end = self._end(dev_handle, ep, intf, EP_IN)
        seconds = timeout / 1000 if timeout else None  # libusb: 0 means wait forever
        try:
            data = _run(_read_within(end, len(buff), seconds), None)
        except DeviceClosed:
            raise _gone() from None
        if data is None:
            raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)
        buff[:len(data)] = array.array("B", data)
        return len(data)

    def intr_read(self, dev_handle: _Handle, ep: int, intf: int, buff: array.array, timeout: int) -> int:
        self._live(dev_handle)  # the CDC notification endpoint never has anything to say
        raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)
