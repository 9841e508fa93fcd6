"""``usb://VID:PID[?serial=…&interface=…&timeout=…&read_timeout=…]``: a terminal's USB bulk endpoints.

Ids are hexadecimal (``usb://0b00:0060``). Options:

- ``serial``: the device's serial number string, to pick one of several identical terminals;
- ``interface``: the bInterfaceNumber to use; by default the first interface with a bulk IN and a
  bulk OUT endpoint;
- ``timeout``: seconds a write may take before the terminal is reported not to accept data (5);
- ``read_timeout``: seconds one bulk IN transfer waits; it bounds how long ``close`` takes (0.1).

The device is found with pyusb (``usb.core.find``); a kernel driver bound to the interface is
detached (and re-attached on close), the interface claimed, and a reader thread turns bulk IN
transfers into the device's input buffer, so ``read`` is cancellation-safe like every device.
Writes go out in order through one writer thread; a write that ends on a packet boundary is
followed by a zero-length packet, as the Linux CDC-ACM driver does, so the terminal sees its end.

Terminals that are CDC-ACM (Ingenico, PAX over USB, many Verifone) are also serial ports
(``/dev/ttyACM0``, ``COM5``): ``serial:///dev/ttyACM0`` needs no libusb, no permissions on the USB
device and leaves the kernel driver alone, and is the better choice for them. ``usb://`` is for
terminals that offer vendor bulk endpoints only, or systems without the CDC-ACM driver.

``open_usb(url, backend=…)`` hands the backend to ``usb.core.find`` (tests pass
:class:`posbridge.devices.fakeusb.FakeUsbBackend`).
"""

from __future__ import annotations

import asyncio
import errno
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from ._fd import HIGH_WATER
from .base import DeviceClosed, DeviceError, _InboxDevice

__all__ = ["UsbDevice", "UsbTarget", "matching_serial_ports", "open_usb"]

DEFAULT_WRITE_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 0.1
READ_SIZE = 16384  # one bulk IN transfer asks for this much (a multiple of every packet size)
_GONE = (errno.ENODEV, errno.ENOENT, errno.ESHUTDOWN)
_STALLS_TOLERATED = 3  # consecutive bulk IN stalls cleared before the reader gives up

NO_BACKEND = (
    "no USB backend: libusb is not installed or not found (Debian/Ubuntu: apt install "
    "libusb-1.0-0; Windows: a libusb-1.0.dll next to python.exe). A CDC-ACM terminal needs no "
    "libusb: open it as a serial port (serial:///dev/ttyACM0, serial://COM5)"
)


@dataclass(frozen=True)
class UsbTarget:
    """What a ``usb://`` URL asks for."""

    url: str
    vendor_id: int
    product_id: int
    serial: str | None = None
    interface: int | None = None
    timeout: float = DEFAULT_WRITE_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT

    @property
    def ids(self) -> str:
        return f"{self.vendor_id:04x}:{self.product_id:04x}"

    @classmethod
    def parse(cls, url: str) -> UsbTarget:
        """Parse ``usb://VID:PID[?…]``; raises DeviceError with an example on bad input."""
        example = "usb://0b00:0060?serial=12345678"
        rest = url.partition("://")[2]
        ids, _, query = rest.partition("?")
        vid_text, colon, pid_text = ids.strip("/").partition(":")
        try:
            if not colon:
                raise ValueError
            vid, pid = _hex16(vid_text), _hex16(pid_text)
        except ValueError:
            raise DeviceError(
                f"{url}: expected usb://VID:PID with hexadecimal ids, e.g. {example}") from None
        options: dict[str, Any] = {}
        known = ("serial", "interface", "timeout", "read_timeout")
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key not in known:
                raise DeviceError(f"{url}: unknown parameter {key} (supported: {', '.join(known)})")
            try:
                if key == "serial":
                    options[key] = value
                elif key == "interface":
                    options[key] = int(value, 0)
                    if not 0 <= options[key] <= 255:
                        raise ValueError
                else:
                    options[key] = float(value)
                    if not 0 < options[key] < 3600:
                        raise ValueError
            except ValueError:
                raise DeviceError(f"{url}: bad value for {key}: {value!r}") from None
        return cls(url, vid, pid, **options)


def _hex16(text: str) -> int:
    text = text.strip().lower().removeprefix("0x")
    if not text or len(text) > 4:
        raise ValueError(text)
    return int(text, 16)


def matching_serial_ports(vendor_id: int, product_id: int) -> list[str]:
    """Serial ports (``/dev/ttyACM0``, ``COM5``) the OS created for a USB device with these ids."""
    try:
        from serial.tools import list_ports

        return sorted(p.device for p in list_ports.comports()
                      if p.vid == vendor_id and p.pid == product_id)
    except Exception:  # listing ports is a hint only; never let it hide the real error
        return []


def _serial_hint(target: UsbTarget) -> str:
    ports = matching_serial_ports(target.vendor_id, target.product_id)
    if not ports:
        return ""
    return (f". This terminal is a CDC-ACM serial port here ({', '.join(ports)}): open it as "
            f"serial://{ports[0]} instead")


def _describe_usb_error(exc: Exception) -> str:
    code = getattr(exc, "errno", None)
    if code == errno.EACCES:
        return ("permission denied: this user may not open the USB device (add a udev rule, e.g. "
                'SUBSYSTEM=="usb", ATTR{idVendor}=="VVVV", MODE="0666", or run as a user in the '
                "device's group)")
    if code == errno.EBUSY:
        return ("the device is busy: another program, or a kernel driver that could not be "
                "detached, holds the interface")
    if code in _GONE:
        return "the device was disconnected"
    return str(exc)


def _find(target: UsbTarget, backend: Any) -> Any:
    import usb.core

    unreadable: list[str] = []

    def match(dev: Any) -> bool:
        if target.serial is None:
            return True
        try:
            return dev.serial_number == target.serial
        except (usb.core.USBError, ValueError) as exc:
            # Reading the serial string needs the device opened: say why it could not be checked.
            unreadable.append(f"bus {dev.bus} address {dev.address}: {_describe_usb_error(exc)}")
            return False

    try:
        dev = usb.core.find(idVendor=target.vendor_id, idProduct=target.product_id,
                            backend=backend, custom_match=match)
    except usb.core.NoBackendError:
        raise DeviceError(f"cannot open {target.url}: {NO_BACKEND}") from None
    except usb.core.USBError as exc:
        raise DeviceError(f"cannot open {target.url}: {_describe_usb_error(exc)}") from exc
    if dev is not None:
        return dev
    wanted = target.ids + (f" with serial number {target.serial!r}" if target.serial else "")
    try:
        present = sorted({f"{d.idVendor:04x}:{d.idProduct:04x}"
                          for d in usb.core.find(find_all=True, backend=backend)})
    except Exception:
        present = []
    connected = f"; connected: {', '.join(present)}" if present else "; no USB devices found"
    also = f"; could not read the serial number of {'; '.join(unreadable)}" if unreadable else ""
    raise DeviceError(f"cannot open {target.url}: no USB device {wanted} is connected"
                      f"{connected}{also}{_serial_hint(target)}")


def _bulk(intf: Any, direction: int) -> Any:
    import usb.util

    return usb.util.find_descriptor(
        intf,
        custom_match=lambda e: (usb.util.endpoint_direction(e.bEndpointAddress) == direction
                                and usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK))


def _choose_interface(target: UsbTarget, cfg: Any) -> tuple[Any, Any, Any]:
    import usb.util

    seen = []
    for intf in cfg:
        seen.append(f"{intf.bInterfaceNumber} (class 0x{intf.bInterfaceClass:02x})")
        if target.interface is not None and intf.bInterfaceNumber != target.interface:
            continue
        ep_in, ep_out = _bulk(intf, usb.util.ENDPOINT_IN), _bulk(intf, usb.util.ENDPOINT_OUT)
        if ep_in is not None and ep_out is not None:
            return intf, ep_in, ep_out
    which = f"interface {target.interface}" if target.interface is not None else "no interface"
    raise DeviceError(
        f"cannot open {target.url}: {which} has a bulk IN and a bulk OUT endpoint "
        f"(interfaces: {', '.join(seen) or 'none'}){_serial_hint(target)}")


def _open_blocking(target: UsbTarget, backend: Any) -> UsbDevice:
    import usb.core
    import usb.util

    dev = _find(target, backend)
    detached: int | None = None  # the interface whose kernel driver we detached
    claimed: int | None = None
    try:
        try:
            active = dev.get_active_configuration()
        except usb.core.USBError as exc:
            if exc.errno is not None:
                raise
            active = None  # "Configuration not set": set it below
        cfg = active if active is not None else dev[0]
        intf, ep_in, ep_out = _choose_interface(target, cfg)
        number = intf.bInterfaceNumber
        try:
            if dev.is_kernel_driver_active(number):
                dev.detach_kernel_driver(number)
                detached = number
        except NotImplementedError:
            pass  # Windows/macOS backends: no kernel drivers to detach
        if active is None:
            dev.set_configuration(cfg.bConfigurationValue)
        usb.util.claim_interface(dev, number)
        claimed = number
        if intf.bAlternateSetting:
            dev.set_interface_altsetting(number, intf.bAlternateSetting)
        return UsbDevice(target, dev, number, ep_in, ep_out, detached)
    except BaseException as exc:
        _release(dev, claimed, detached)
        if isinstance(exc, DeviceError):
            raise
        if isinstance(exc, usb.core.USBError):
            hint = _serial_hint(target) if exc.errno == errno.EBUSY else ""
            raise DeviceError(f"cannot open {target.url}: {_describe_usb_error(exc)}{hint}") from exc
        raise


def _release(dev: Any, claimed: int | None, detached: int | None) -> None:
    import usb.util

    # Each step on its own: a device that went away fails them all, and that is fine on close.
    steps = []
    if claimed is not None:
        steps.append(lambda: usb.util.release_interface(dev, claimed))
    if detached is not None:
        # Give the interface back to its kernel driver (a CDC-ACM terminal's tty reappears).
        steps.append(lambda: dev.attach_kernel_driver(detached))
    steps.append(lambda: usb.util.dispose_resources(dev))
    for step in steps:
        try:
            step()
        except Exception:
            pass


async def open_usb(url: str, *, backend: Any = None) -> UsbDevice:
    """Open ``usb://VID:PID[?…]``; ``backend`` goes to ``usb.core.find`` (None: libusb)."""
    target = UsbTarget.parse(url)
    try:
        import usb.core  # noqa: F401
    except ImportError:
        raise DeviceError(f"cannot open {url}: pyusb is not installed (pip install pyusb)") from None
    loop = asyncio.get_running_loop()
    opening = loop.run_in_executor(None, _open_blocking, target, backend)
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        # The open goes on in its thread: close what it produces so the interface is not left held.
        opening.add_done_callback(
            lambda f: None if f.cancelled() or f.exception() else
            threading.Thread(target=f.result().close_blocking, daemon=True).start())
        raise


class UsbDevice(_InboxDevice):
    """A claimed USB interface's bulk endpoints as a byte stream (see the module docstring).

    ``usb_device`` is the pyusb device, ``interface`` the claimed bInterfaceNumber, ``ep_in`` and
    ``ep_out`` the bulk endpoints. Usable from any event loop.
    """

    def __init__(self, target: UsbTarget, usb_device: Any, interface: int, ep_in: Any, ep_out: Any,
                 detached: int | None) -> None:
        super().__init__(target.url)
        self.target = target
        self.usb_device = usb_device
        self.interface = interface
        self.ep_in = ep_in
        self.ep_out = ep_out
        self._detached = detached
        self._packet = max(1, int(ep_out.wMaxPacketSize) & 0x7FF)
        self._read_size = max(READ_SIZE - READ_SIZE % max(1, int(ep_in.wMaxPacketSize) & 0x7FF), 64)
        self._stopping = threading.Event()
        self._released = False
        self._release_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devices-usb-write")
        self._thread = threading.Thread(target=self._read_loop, name=f"devices-usb-read {self.url}",
                                        daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        import usb.core

        timeout_ms = max(1, int(self.target.read_timeout * 1000))
        stalls = 0
        while not self._stopping.is_set():
            if len(self._inbox) >= HIGH_WATER:
                self._stopping.wait(0.01)  # nobody reads: let the terminal's buffer fill instead
                continue
            try:
                data = self.ep_in.read(self._read_size, timeout_ms)
            except usb.core.USBTimeoutError:
                continue
            except usb.core.USBError as exc:
                if self._stopping.is_set():
                    return
                if exc.errno == errno.EPIPE and stalls < _STALLS_TOLERATED:
                    stalls += 1
                    try:
                        self.usb_device.clear_halt(self.ep_in)
                        continue
                    except Exception:
                        pass
                self._inbox.feed_eof(f"{self.url}: {_describe_usb_error(exc)}")
                return
            except Exception as exc:  # a backend bug must end the stream, not hang a reader
                if not self._stopping.is_set():
                    self._inbox.feed_eof(f"{self.url}: read failed: {exc!r}")
                return
            stalls = 0
            if len(data):
                self._inbox.feed(bytes(data))

    def _write_all(self, data: bytes) -> None:
        import usb.core

        timeout_ms = max(1, int(self.target.timeout * 1000))
        view = memoryview(data)
        try:
            while view:
                if self._stopping.is_set():
                    raise DeviceClosed(f"{self.url}: device closed")
                try:
                    n = self.ep_out.write(view, timeout_ms)
                except usb.core.USBTimeoutError:
                    raise DeviceError(f"{self.url}: the terminal did not accept data within "
                                      f"{self.target.timeout:g} s (write timeout)") from None
                view = view[n:]
            if data and len(data) % self._packet == 0:
                self.ep_out.write(b"", timeout_ms)  # zero-length packet: the transfer ends here
        except usb.core.USBError as exc:
            if exc.errno in _GONE or self._stopping.is_set():
                raise DeviceClosed(f"{self.url}: {_describe_usb_error(exc)}") from exc
            raise DeviceError(f"{self.url}: write failed: {_describe_usb_error(exc)}") from exc

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise DeviceClosed(f"{self.url}: device closed")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._write_all, bytes(data))

    def close_blocking(self) -> None:
        """Stop the threads, release the interface and give it back to its kernel driver."""
        self._closed = True
        self._stopping.set()
        self._inbox.close(f"{self.url}: device closed")
        if threading.current_thread() is not self._thread:
            self._thread.join(self.target.read_timeout + 2.0)
        self._writer.shutdown(wait=True, cancel_futures=True)
        with self._release_lock:
            if self._released:
                return
            self._released = True
        _release(self.usb_device, self.interface, self._detached)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._inbox.close(f"{self.url}: device closed")
        await asyncio.to_thread(self.close_blocking)
