"""Wire protocols, sans-IO: bytes in -> events out, messages in -> bytes out.

``posbridge.protocols.get("inpas")`` returns a :class:`ProtocolSpec`, the one thing code above this layer
needs to speak a protocol: session factories for both sides and a frame describer for tools.
A third protocol is one new package plus one line in ``_REGISTRY``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from .common.session import EcrSession, TerminalSession


@dataclass(frozen=True)
class ProtocolSpec:
    """What a protocol offers the layers above it."""

    name: str
    title: str
    # ecr_session(timers=None) and terminal_session(timers=None, part_size=...): ``timers`` maps
    # names to seconds. Every protocol understands the neutral names "ack_timeout" (how long a frame
    # or turn waits for its ACK: SA WAITACK, Arcus T1) and "packet_timeout" (how long the ECR waits
    # for the terminal's next packet: SA WAITPACKET, Arcus result timer); others are its own.
    ecr_session: Callable[..., EcrSession]
    terminal_session: Callable[..., TerminalSession]
    describe: Callable[[bytes], list[dict[str, Any]]]
    cashier_dialog: bool = True  # the terminal can ask the cashier a question through the ECR


_REGISTRY = {
    "inpas": "posbridge.protocols.inpas.spec",
    "arcus2": "posbridge.protocols.arcus2.spec",
}


def names() -> list[str]:
    """Names of the registered protocols."""
    return sorted(_REGISTRY)


def get(name: str) -> ProtocolSpec:
    """The protocol registered as ``name`` (case-insensitive); ValueError naming the choices if none."""
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown protocol {name!r}; choose one of: {', '.join(names())}")
    return importlib.import_module(_REGISTRY[key]).SPEC
