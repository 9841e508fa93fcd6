"""Toyline options: the neutral link settings, with this protocol's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from posbridge.protocols.common.options import ProtocolOptions

__all__ = ["ToyOptions"]


@dataclass(frozen=True)
class ToyOptions(ProtocolOptions):
    """``ack_timeout``: how long a frame waits for its ACK (then it is resent); ``packet_timeout``:
    how long the ECR waits for the terminal's next message; ``tries``: sends of one frame in all."""

    protocol: ClassVar[str] = "toy"

    ack_timeout: float = 1.0
    packet_timeout: float = 30.0
    tries: int = 3
