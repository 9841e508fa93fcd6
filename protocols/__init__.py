"""Wire protocols, sans-IO: bytes in -> events out, messages in -> bytes out.

``posbridge.protocols.get("inpas")`` returns a :class:`ProtocolSpec`, the one thing code above this
layer needs to speak a protocol: typed options, session factories for both sides, a frame describer
for tools and the protocol's capabilities.

Protocols are found through the entry-point group ``posbridge.protocols`` (``name = "module:SPEC"``,
declared in a distribution's metadata: posbridge's own in its pyproject.toml), and a protocol's
module is imported only when that protocol is asked for. A third protocol is one new package plus
one entry point, in posbridge or in any installed distribution; nothing here changes.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from .common.describe import FrameDescription
from .common.options import OptionsError, ProtocolOptions
from .common.spec import Capabilities, OptionsLike, ProtocolSpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "Capabilities",
    "FrameDescription",
    "OptionsError",
    "OptionsLike",
    "ProtocolOptions",
    "ProtocolSpec",
    "UnknownProtocol",
    "get",
    "names",
]

ENTRY_POINT_GROUP = "posbridge.protocols"

_loaded: dict[str, ProtocolSpec] = {}  # by entry-point name: a protocol's module is imported once


class UnknownProtocol(ValueError):
    """No protocol is registered under the name asked for (or its entry point is broken)."""


def _entry_points() -> dict[str, EntryPoint]:
    """The group's entry points by lower-case name, looked up afresh (a distribution may have been
    installed, or put on ``sys.path``, since the last call)."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(point.name.strip().lower(), point)  # the first on sys.path wins, as imports do
    return found


def names() -> list[str]:
    """Names of the registered protocols, sorted."""
    return sorted(_entry_points())


def get(name: str) -> ProtocolSpec:
    """The protocol registered as ``name`` (case-insensitive).

    Raises :class:`UnknownProtocol` (a ValueError), one line naming the choices, if there is none,
    or saying what is wrong with its entry point.
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    spec = _loaded.get(key)
    if spec is not None:
        return spec
    points = _entry_points()
    point = points.get(key)
    if point is None:
        choices = ", ".join(sorted(points)) or "none (is posbridge installed? pip install -e .)"
        raise UnknownProtocol(f"unknown protocol {name!r}; choose one of: {choices}")
    try:
        loaded = point.load()
    except Exception as error:  # a broken third-party entry point: say which, in one line
        raise UnknownProtocol(f"protocol {key!r} ({point.value}) cannot be loaded: "
                              f"{type(error).__name__}: {error}") from error
    if not isinstance(loaded, ProtocolSpec):
        raise UnknownProtocol(f"protocol {key!r} ({point.value}) is a {type(loaded).__name__}, not a ProtocolSpec")
    _loaded[key] = loaded
    return loaded
