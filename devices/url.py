"""``open_device(url)``: the transport is configuration, chosen by the URL's scheme.

Transports are found through the entry-point group ``posbridge.devices``: one entry per URL scheme,
naming an async ``opener(url) -> Device`` (posbridge's own are declared in its pyproject.toml;
another distribution may add schemes the same way). A transport's module is imported only when its
scheme is opened, so a module that cannot load here (``pty`` off POSIX, ``usb`` without pyusb)
costs only its own scheme, with a one-line :class:`DeviceError`. A scheme no entry names is tried
as a pyserial URL handler (``serial.protocol_handler_packages``, user packages included).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any
from urllib.parse import unquote

from .base import Device, DeviceError
from .faults import FaultPlan, with_faults

__all__ = ["ENTRY_POINT_GROUP", "Opener", "open_device", "supported_schemes"]

ENTRY_POINT_GROUP = "posbridge.devices"

Opener = Callable[..., Awaitable[Device]]
"""``await opener(url)`` opens the device; ``usb`` openers also take ``backend=``."""

_PYSERIAL_OPENER = "posbridge.devices.serialport:open_serial"
_openers: dict[str, Opener] = {}  # loaded openers by scheme: each module is imported once


def _entry_points() -> dict[str, EntryPoint]:
    """The group's entry points by lower-case scheme, looked up afresh."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(point.name.strip().lower(), point)
    return found


def supported_schemes() -> list[str]:
    """The registered URL schemes: posbridge's own first, then pyserial's and any added ones."""
    own = ("virtual", "serial", "pty", "tcp", "tcp-listen", "usb")
    registered = _entry_points()
    return [s for s in own if s in registered] + sorted(s for s in registered if s not in own)


def _is_pyserial_scheme(scheme: str) -> bool:
    """A pyserial URL handler exists for ``scheme`` (also in packages a user appended to
    ``serial.protocol_handler_packages``)."""
    try:
        import serial
    except ImportError:
        return False
    for package in serial.protocol_handler_packages:
        try:
            if importlib.util.find_spec(f"{package}.protocol_{scheme}") is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def _load(point: EntryPoint, scheme: str) -> Opener:
    try:
        opener: Opener = point.load()
    except Exception as error:  # e.g. pty's termios off POSIX: this scheme only is unavailable
        raise DeviceError(f"{scheme}:// is not available here ({point.value}): "
                          f"{type(error).__name__}: {error}") from error
    if not callable(opener):
        raise DeviceError(f"{scheme}:// is registered as {point.value}, which is not an opener")
    return opener


def opener_for(scheme: str, url: str = "") -> Opener:
    """The opener of ``scheme`` (lower case), importing its module on first use; DeviceError naming
    the supported schemes if there is none."""
    opener = _openers.get(scheme)
    if opener is not None:
        return opener
    points = _entry_points()
    point = points.get(scheme)
    if point is None and scheme.replace("-", "").isalnum() and _is_pyserial_scheme(scheme):
        point = EntryPoint(scheme, _PYSERIAL_OPENER, ENTRY_POINT_GROUP)
    if point is None:
        raise DeviceError(
            f"unknown device scheme {scheme!r}{f' in {url!r}' if url else ''}; "
            f"supported: {', '.join(supported_schemes()) or 'none (is posbridge installed? pip install -e .)'}"
        )
    opener = _openers[scheme] = _load(point, scheme)
    return opener


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
    opener = opener_for(scheme, url)
    device = await (opener(url, backend=usb_backend) if scheme == "usb" else opener(url))
    return with_faults(device, plan)
