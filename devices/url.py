"""``open_device(url)``: the transport is configuration, chosen by the URL's scheme."""

from __future__ import annotations

import importlib.util
import pkgutil
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import serial
import serial.urlhandler

from .base import Device, DeviceError
from .faults import FaultPlan, with_faults
from .pty import open_pty
from .serialport import open_serial
from .tcp import open_tcp, open_tcp_listen
from .usb import open_usb
from .virtual import open_virtual

__all__ = ["open_device", "supported_schemes"]


async def _virtual(url: str) -> Device:
    name, sep, query = url.partition("://")[2].partition("?")
    if sep:
        raise DeviceError(f"{url}: virtual:// takes no parameters (got {query!r})")
    return open_virtual(name)


_OPENERS: dict[str, Callable[[str], Awaitable[Device]]] = {
    "virtual": _virtual,
    "serial": open_serial,
    "pty": open_pty,
    "tcp": open_tcp,
    "tcp-listen": open_tcp_listen,
    "usb": open_usb,
}


def _pyserial_schemes() -> list[str]:
    prefix = "protocol_"
    return sorted(
        m.name[len(prefix):]
        for m in pkgutil.iter_modules(serial.urlhandler.__path__)
        if m.name.startswith(prefix)
    )


def _is_pyserial_scheme(scheme: str) -> bool:
    # Also honours handler packages a user appended to serial.protocol_handler_packages.
    for package in serial.protocol_handler_packages:
        try:
            if importlib.util.find_spec(f"{package}.protocol_{scheme}") is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def supported_schemes() -> list[str]:
    """Our schemes followed by the pyserial URL schemes passed through to pyserial."""
    return list(_OPENERS) + [s for s in _pyserial_schemes() if s not in _OPENERS]


def _take_faults(url: str) -> tuple[str, str | None]:
    """Split a ``faults=SPEC`` query parameter off ``url`` (any scheme); returns (url, spec)."""
    base, sep, query = url.partition("?")
    if not sep or "faults=" not in query:
        return url, None
    kept: list[str] = []
    spec: str | None = None
    for segment in query.split("&"):
        key, _, value = segment.partition("=")
        if key == "faults":
            if spec is not None:
                raise DeviceError(f"{url}: faults= given twice")
            spec = unquote(value)  # not unquote_plus: a spec has no spaces to encode
        else:
            kept.append(segment)
    return base + (f"?{'&'.join(kept)}" if kept else ""), spec


async def open_device(
    url: str,
    *,
    faults: FaultPlan | str | None = None,
    usb_backend: Any = None,
) -> Device:
    """Open the device named by ``url``.

    ``virtual://NAME``, ``serial://PATH?baudrate=…``, ``pty:///path/link``, ``tcp://host:port``,
    ``tcp-listen://127.0.0.1:PORT``, ``usb://VID:PID[?serial=…]``, or any pyserial URL
    (``socket://``, ``loop://``, ``rfc2217://``, ``spy://``, ``alt://``…). Raises DeviceError
    with a readable reason.

    ``faults`` (a :class:`~posbridge.devices.faults.FaultPlan` or its textual spec), or a ``faults=SPEC``
    parameter in any URL, puts the device in a :class:`~posbridge.devices.faults.FaultyDevice`.
    ``usb_backend`` is handed to ``usb.core.find`` for ``usb://`` (tests pass a
    :class:`~posbridge.devices.fakeusb.FakeUsbBackend`); None means libusb.
    """
    if not isinstance(url, str):
        raise DeviceError(f"a device URL must be a string, not {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        hint = f" (did you mean serial://{url}?)" if url.startswith("/") or url[:3].upper() == "COM" else ""
        raise DeviceError(
            f"not a device URL: {url!r}{hint}; expected scheme://…, "
            f"schemes: {', '.join(supported_schemes())}"
        )
    scheme = scheme.lower()
    url, url_faults = _take_faults(url)
    if url_faults is not None and faults is not None:
        raise DeviceError(f"{url}: faults given both in the URL and as an argument; give one")
    plan = FaultPlan.coerce(faults if faults is not None else url_faults)  # bad specs fail before opening
    if scheme == "usb":
        return with_faults(await open_usb(url, backend=usb_backend), plan)
    opener = _OPENERS.get(scheme)
    if opener is None and scheme.replace("-", "").isalnum() and _is_pyserial_scheme(scheme):
        opener = open_serial
    if opener is None:
        raise DeviceError(
            f"unknown device scheme {scheme!r} in {url!r}; supported: {', '.join(supported_schemes())}"
        )
    return with_faults(await opener(url), plan)
