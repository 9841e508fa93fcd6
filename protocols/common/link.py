"""What every protocol's scanner and link layer report: shared token and event types.

Each protocol keeps its own frame format (and its own ``FrameToken``, whose fields differ); the
tokens a scanner finds outside frames and the message-level events a link layer reports are the
same for all of them, so they are defined once here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import DecodeError, NakLimit, NoAck


# --- scanner tokens ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Control:
    """A control byte (ACK, NAK, ENQ, EOT) received outside a frame."""

    byte: int


@dataclass(frozen=True)
class Noise:
    """Bytes outside a frame that are neither a control byte nor a start byte."""

    data: bytes


@dataclass(frozen=True)
class BadFrame:
    """A complete frame that failed its check (the link answers NAK).

    ``error.offset`` counts bytes since the scanner was created (stream offset).
    """

    error: DecodeError


# --- link events ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MessageReceived:
    """A whole message arrived, was ACKed and decoded (``message`` is the protocol's Message)."""

    message: Any


@dataclass(frozen=True)
class MessageDelivered:
    """Every frame of a queued message was ACKed by the peer."""

    message: Any


@dataclass(frozen=True)
class MessageUndelivered:
    """A queued message could not be delivered: the link gave up on it (no ACK, NAKs, no turn)."""

    message: Any
    error: NoAck | NakLimit


@dataclass(frozen=True)
class PeerEndOfTransmission:
    """The peer sent a lone EOT where the protocol gives it a meaning (SA: the terminal aborts)."""


@dataclass(frozen=True)
class PacketTimeout:
    """No packet arrived within the packet/result timer while one was expected."""


@dataclass(frozen=True)
class FrameRejected:
    """A frame was answered with NAK (bad check or undecodable body); for traces and counters."""

    error: DecodeError
