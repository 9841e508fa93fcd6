"""Finding connected terminals: serial ports and USB devices that match a terminal profile.

    found = find_terminals()               # [FoundTerminal(...), ...]
    url, protocol = choose_auto()          # the single terminal, or DeviceError saying why not
    print(format_report())                 # what `posbridge devices` shows

Serial ports come from pyserial (``serial.tools.list_ports``), with their stable
``/dev/serial/by-id`` names when present; they match a profile by USB ids (CDC-ACM and USB-serial
adapters report them), by a vendor driver's port name (PAX ``/dev/ttyPos*``) or, at vendor level
only, by the manufacturer string. USB devices come from pyusb; a terminal that is already a serial
port is listed once, as the serial port (``serial://`` needs neither libusb nor USB permissions).
Without a USB stack the report says so and lists the serial ports alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from .base import DeviceError
from .profiles import TerminalProfile, load_profiles

__all__ = ["Discovery", "FoundTerminal", "SerialPortInfo", "UsbDeviceInfo", "choose_auto", "discover",
           "find_terminals", "format_report"]

BY_ID_DIR = "/dev/serial/by-id"
NO_USB_BACKEND = (
    "USB devices were not listed: there is no USB backend (libusb is not installed: apt install "
    "libusb-1.0-0): terminals that are serial ports (CDC-ACM) are still found, a terminal with "
    "vendor bulk endpoints only is not."
)
_CDC_CLASSES = (0x02, 0x0A)


@dataclass(frozen=True)
class SerialPortInfo:
    """A serial port the OS offers (whether or not it is a terminal)."""

    device: str
    by_id: str | None = None
    vendor_id: int | None = None
    product_id: int | None = None
    serial_number: str | None = None
    manufacturer: str | None = None
    product: str | None = None
    description: str = ""
    location: str | None = None  # USB path, e.g. "1-1.2:1.0"

    def label(self) -> str:
        ids = f" USB {self.vendor_id:04x}:{self.product_id:04x}" if self.vendor_id is not None else ""
        text = " ".join(t for t in (self.manufacturer, self.product) if t) or (
            self.description if self.description not in ("", "n/a") else "")
        return f"{self.device}{ids}" + (f" ({text})" if text else "")


@dataclass(frozen=True)
class UsbDeviceInfo:
    """A USB device pyusb sees."""

    vendor_id: int
    product_id: int
    bus: int | None = None
    address: int | None = None
    port_path: str | None = None  # "1-1.2", comparable with a serial port's location
    serial_number: str | None = None
    cdc: bool = False  # has a CDC-ACM interface (the OS can make it a serial port)
    bulk: bool = False  # has an interface with a bulk IN and a bulk OUT endpoint

    def label(self) -> str:
        where = f" bus {self.bus} address {self.address}" if self.bus is not None else ""
        return f"USB {self.vendor_id:04x}:{self.product_id:04x}{where}"


@dataclass(frozen=True)
class FoundTerminal:
    """A connected terminal: how to open it and what it probably is.

    ``profiles`` are the models it may be (models sharing USB ids all match: IPP320 and IPP350);
    ``exact`` is False when only the vendor is known (manufacturer string, vendor-wide ids).
    """

    url: str
    kind: Literal["serial", "usb"]
    where: str
    profiles: tuple[TerminalProfile, ...]
    matched_by: str
    exact: bool = True
    vendor_id: int | None = None
    product_id: int | None = None
    serial_number: str | None = None

    @property
    def vendor(self) -> str:
        return self.profiles[0].vendor

    @property
    def model(self) -> str:
        if not self.exact:
            return "unknown model"
        return " / ".join(dict.fromkeys(p.model for p in self.profiles))

    @property
    def protocol(self) -> str:
        """The default protocol (the first matching profile's when models disagree)."""
        return self.profiles[0].protocol

    @property
    def baud_rate(self) -> int:
        return self.profiles[0].baud_rate

    @property
    def name(self) -> str:
        return f"{self.vendor} {self.model}"

    def describe(self) -> str:
        """One line: model, protocol, URL, how it was recognised."""
        protocols = sorted({p.protocol for p in self.profiles})
        proto = self.protocol if len(protocols) == 1 else f"{self.protocol} (models differ: {', '.join(protocols)})"
        return f"{self.name} — protocol {proto} — {self.url} ({self.where}; matched by {self.matched_by})"


@dataclass
class Discovery:
    """Everything one look at the machine found; ``notes`` say what could not be looked at."""

    terminals: list[FoundTerminal] = field(default_factory=list)
    serial_ports: list[SerialPortInfo] = field(default_factory=list)
    usb_devices: list[UsbDeviceInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- serial ports ---------------------------------------------------------------------------------
def _by_id_names(by_id_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Map a port's real path to its /dev/serial/by-id name."""
    names: dict[str, str] = {}
    try:
        entries = sorted(Path(by_id_dir).iterdir())
    except OSError:
        return names
    for entry in entries:
        try:
            names.setdefault(os.path.realpath(entry), str(entry))
        except OSError:
            continue
    return names


def list_serial_ports(
    comports: Callable[[], Iterable[Any]] | None = None,
    by_id_dir: str | os.PathLike[str] = BY_ID_DIR,
) -> list[SerialPortInfo]:
    """Serial ports from pyserial (``comports`` overrides it, for tests), with by-id names."""
    if comports is None:
        from serial.tools import list_ports

        comports = list_ports.comports
    by_id = _by_id_names(by_id_dir)
    ports = []
    for p in comports():
        device = str(p.device)
        ports.append(SerialPortInfo(
            device=device,
            by_id=by_id.get(os.path.realpath(device)) or by_id.get(device),
            vendor_id=getattr(p, "vid", None),
            product_id=getattr(p, "pid", None),
            serial_number=getattr(p, "serial_number", None) or None,
            manufacturer=getattr(p, "manufacturer", None) or None,
            product=getattr(p, "product", None) or None,
            description=str(getattr(p, "description", "") or ""),
            location=getattr(p, "location", None) or None,
        ))
    return sorted(ports, key=lambda p: p.device)


def _vendor_mentioned(profiles: Sequence[TerminalProfile], *texts: str | None) -> list[TerminalProfile]:
    text = " ".join(t for t in texts if t).casefold()
    if not text:
        return []
    for vendor in dict.fromkeys(p.vendor for p in profiles):
        if re.search(rf"\b{re.escape(vendor.casefold())}\b", text):
            return [p for p in profiles if p.vendor == vendor]
    return []


def _serial_url(port: SerialPortInfo, profile: TerminalProfile) -> str:
    return f"serial://{port.by_id or port.device}?baudrate={profile.baud_rate}"


def _match_port(port: SerialPortInfo, profiles: Sequence[TerminalProfile]) -> FoundTerminal | None:
    ids = ""
    if port.vendor_id is not None:
        ids = f"{port.vendor_id:04x}:{port.product_id or 0:04x}"
    exact_ids = [p for p in profiles if p.usb_product_ids and p.matches_usb(port.vendor_id, port.product_id)]
    vendor_ids = [p for p in profiles if not p.usb_product_ids and p.matches_usb(port.vendor_id, port.product_id)]
    by_name = [p for p in profiles if p.matches_port(port.device) or (port.by_id and p.matches_port(port.by_id))]
    if exact_ids:
        matched, how, exact = exact_ids, f"USB ids {ids}", True
    elif vendor_ids:
        matched, how, exact = vendor_ids, f"USB vendor id {port.vendor_id:04x}", len(vendor_ids) == 1
    elif by_name:
        matched, how, exact = by_name, f"port name {by_name[0].port_pattern}", len(by_name) == 1
    else:
        matched = _vendor_mentioned(profiles, port.manufacturer, port.product)
        how, exact = f"manufacturer {(port.manufacturer or port.product or '')!r}", len(matched) == 1
    if not matched:
        return None
    where = port.device + (f", {port.by_id}" if port.by_id else "") + (f", USB {ids}" if ids else "")
    if port.serial_number:
        where += f", serial {port.serial_number}"
    return FoundTerminal(url=_serial_url(port, matched[0]), kind="serial", where=where,
                         profiles=tuple(matched), matched_by=how, exact=exact,
                         vendor_id=port.vendor_id, product_id=port.product_id,
                         serial_number=port.serial_number)


# --- USB devices ----------------------------------------------------------------------------------
def _usb_info(dev: Any, read_serial: bool) -> UsbDeviceInfo:
    import usb.util

    cdc = bulk = False
    try:
        for cfg in dev:
            for intf in cfg:
                cdc = cdc or intf.bInterfaceClass in _CDC_CLASSES
                directions = {usb.util.endpoint_direction(e.bEndpointAddress) for e in intf
                              if usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK}
                bulk = bulk or len(directions) == 2
    except Exception:
        pass  # descriptors unreadable: report what the device descriptor says
    serial = None
    if read_serial:
        try:
            serial = dev.serial_number  # opens the device: only for candidates, and may be refused
        except Exception:
            serial = None
    ports = getattr(dev, "port_numbers", None)
    port_path = f"{dev.bus}-{'.'.join(map(str, ports))}" if dev.bus is not None and ports else None
    return UsbDeviceInfo(int(dev.idVendor), int(dev.idProduct), dev.bus, dev.address, port_path,
                         serial, cdc, bulk)


def list_usb_devices(usb_backend: Any = None, profiles: Sequence[TerminalProfile] = ()) -> tuple[list[UsbDeviceInfo], list[str]]:
    """USB devices pyusb sees, and notes on what stopped it from looking (no backend...)."""
    try:
        import usb.core
    except ImportError:
        return [], ["USB devices were not listed: pyusb is not installed (pip install pyusb)"]
    try:
        found = list(usb.core.find(find_all=True, backend=usb_backend))
    except usb.core.NoBackendError:
        return [], [NO_USB_BACKEND]
    except Exception as exc:
        return [], [f"USB devices were not listed: {exc}"]
    devices = []
    for dev in found:
        candidate = any(p.matches_usb(dev.idVendor, dev.idProduct) for p in profiles)
        devices.append(_usb_info(dev, read_serial=candidate))
    return sorted(devices, key=lambda d: (d.bus or 0, d.address or 0)), []


def _same_device(usb_dev: UsbDeviceInfo, port: SerialPortInfo) -> bool:
    if usb_dev.port_path and port.location:
        return port.location.split(":")[0] == usb_dev.port_path
    if (port.vendor_id, port.product_id) != (usb_dev.vendor_id, usb_dev.product_id):
        return False
    return not (usb_dev.serial_number and port.serial_number) or usb_dev.serial_number == port.serial_number


def _match_usb(dev: UsbDeviceInfo, profiles: Sequence[TerminalProfile]) -> FoundTerminal | None:
    exact = [p for p in profiles if p.usb_product_ids and p.matches_usb(dev.vendor_id, dev.product_id)]
    vendor_wide = [p for p in profiles if not p.usb_product_ids and p.matches_usb(dev.vendor_id, dev.product_id)]
    matched = exact or vendor_wide
    if not matched:
        return None
    ids = f"{dev.vendor_id:04x}:{dev.product_id:04x}"
    url = f"usb://{ids}" + (f"?serial={quote(dev.serial_number, safe='')}" if dev.serial_number else "")
    where = dev.label() + (f", serial {dev.serial_number}" if dev.serial_number else "")
    if dev.cdc:
        where += ", CDC-ACM without a serial port (is the cdc_acm driver loaded?)"
    elif not dev.bulk:
        where += ", no bulk endpoint pair found"
    return FoundTerminal(url=url, kind="usb", where=where, profiles=tuple(matched),
                         matched_by=f"USB ids {ids}" if exact else f"USB vendor id {dev.vendor_id:04x}",
                         exact=bool(exact) or len(vendor_wide) == 1, vendor_id=dev.vendor_id,
                         product_id=dev.product_id, serial_number=dev.serial_number)


# --- the public functions -------------------------------------------------------------------------
def discover(
    usb_backend: Any = None,
    *,
    profiles: Sequence[TerminalProfile] | None = None,
    comports: Callable[[], Iterable[Any]] | None = None,
    by_id_dir: str | os.PathLike[str] = BY_ID_DIR,
    usb: bool = True,
) -> Discovery:
    """Look at the serial ports and USB devices and match them against the terminal profiles.

    ``usb_backend`` goes to pyusb (None: libusb); ``profiles`` defaults to :func:`load_profiles`;
    ``comports`` and ``by_id_dir`` replace pyserial's port listing and ``/dev/serial/by-id`` (tests).
    """
    profiles = list(load_profiles() if profiles is None else profiles)
    result = Discovery()
    try:
        result.serial_ports = list_serial_ports(comports, by_id_dir)
    except Exception as exc:  # listing is best effort: say what failed, go on with USB
        result.notes.append(f"serial ports were not listed: {exc}")
    for port in result.serial_ports:
        found = _match_port(port, profiles)
        if found is not None:
            result.terminals.append(found)
    if usb:
        result.usb_devices, notes = list_usb_devices(usb_backend, profiles)
        result.notes += notes
        for dev in result.usb_devices:
            if any(_same_device(dev, port) for port in result.serial_ports):
                continue  # already listed as its serial port
            found = _match_usb(dev, profiles)
            if found is not None:
                result.terminals.append(found)
    return result


def find_terminals(usb_backend: Any = None, **options: Any) -> list[FoundTerminal]:
    """The connected terminals (see :func:`discover` for the options)."""
    return discover(usb_backend, **options).terminals


def _seen(discovery: Discovery) -> str:
    parts = []
    others = [p.label() for p in discovery.serial_ports]
    parts.append(f"serial ports: {', '.join(others)}" if others else "no serial ports")
    if discovery.usb_devices:
        parts.append(f"USB devices: {', '.join(d.label() for d in discovery.usb_devices)}")
    return "; ".join(parts)


def choose_auto(discovery: Discovery | None = None, *, usb_backend: Any = None) -> tuple[str, str]:
    """``--port auto``: the URL and default protocol of the single connected terminal.

    Raises DeviceError with a sentence that says why there is no single choice: nothing matched
    (with what was seen and how to add a profile), or several matched (listed, to pick with --port).
    """
    discovery = discovery if discovery is not None else discover(usb_backend)
    found = discovery.terminals
    if len(found) == 1:
        return found[0].url, found[0].protocol
    notes = "".join(f" {note}" for note in discovery.notes)
    if not found:
        raise DeviceError(
            f"--port auto found no terminal ({_seen(discovery)}).{notes} Connect the terminal, name "
            "its port with --port (e.g. serial:///dev/ttyACM0?baudrate=115200), or add its USB ids "
            "to ~/.config/posbridge/profiles.toml.")
    listed = "; ".join(f"{i}) {t.name} at {t.url}" for i, t in enumerate(found, 1))
    raise DeviceError(f"--port auto found {len(found)} terminals: {listed}. Choose one with --port URL.")


def format_report(discovery: Discovery | None = None, *, usb_backend: Any = None) -> str:
    """A text report of the terminals found, the other ports seen and the notes (``posbridge devices``)."""
    discovery = discovery if discovery is not None else discover(usb_backend)
    lines: list[str] = []
    found = discovery.terminals
    lines.append(f"Terminals found: {len(found)}" if found else "No terminal found.")
    for t in found:
        protocols = sorted({p.protocol for p in t.profiles})
        lines.append(f"  {t.name}")
        lines.append(f"    url:      {t.url}")
        lines.append(f"    protocol: {t.protocol}" + (
            f" (the possible models differ: {', '.join(protocols)})" if len(protocols) > 1 else ""))
        lines.append(f"    at:       {t.where}")
        lines.append(f"    matched:  {t.matched_by}" + ("" if t.exact else
                     f" (models of this vendor: {', '.join(dict.fromkeys(p.model for p in t.profiles))})"))
    terminal_ports = {t.where.split(",")[0] for t in found if t.kind == "serial"}
    others = [p for p in discovery.serial_ports if p.device not in terminal_ports]
    if others:
        lines.append("Other serial ports:")
        lines += [f"  {p.label()}" + (f" [{p.by_id}]" if p.by_id else "") for p in others]
    if discovery.usb_devices:
        lines.append("USB devices:")
        lines += [f"  {d.label()}" + (" CDC-ACM" if d.cdc else "") for d in discovery.usb_devices]
    lines += [f"Note: {note}" for note in discovery.notes]
    return "\n".join(lines)
