"""Byte transports: async byte streams opened from URLs.

    async with await open_device("serial:///dev/ttyACM0?baudrate=115200") as dev:
        await dev.write(frame)
        reply = await asyncio.wait_for(dev.read(), 1.0)   # cancellation-safe

Schemes: ``virtual://NAME`` (in-memory pair), ``serial://PATH?…`` and pyserial URLs
(``socket://``, ``loop://``, ``rfc2217://``…), ``pty:///path/link``, ``tcp://host:port``,
``tcp-listen://127.0.0.1:PORT``, ``usb://VID:PID[?serial=…]``. Devices know nothing of protocols.

Also here: a deterministic fault layer any device can be put in (:mod:`posbridge.devices.faults`), terminal
model profiles as data (:mod:`posbridge.devices.profiles`) and finding connected terminals
(:mod:`posbridge.devices.discovery`).
"""

from .base import Device, DeviceClosed, DeviceError
from .discovery import (
    FoundTerminal,
    choose_auto,
    discover,
    find_terminals,
    format_report,
)
from .faults import FaultPlan, FaultSpecError, FaultyDevice
from .pair import open_pair
from .profiles import ProfileError, TerminalProfile, load_profiles
from .url import open_device, supported_schemes

__all__ = [
    "Device",
    "DeviceClosed",
    "DeviceError",
    "FaultPlan",
    "FaultSpecError",
    "FaultyDevice",
    "FoundTerminal",
    "ProfileError",
    "TerminalProfile",
    "choose_auto",
    "discover",
    "find_terminals",
    "format_report",
    "load_profiles",
    "open_device",
    "open_pair",
    "supported_schemes",
]
