"""The INPAS SA entry of the protocol registry."""

from __future__ import annotations

from collections.abc import Mapping

from .. import ProtocolSpec

from .describe import describe
from .link import LinkTimers
from .session import InpasEcrSession, InpasTerminalSession


def ecr_session(timers: Mapping[str, float] | None = None) -> InpasEcrSession:
    """An ECR-side session; ``timers``: ack_timeout, packet_timeout, tries (see LinkTimers)."""
    return InpasEcrSession(LinkTimers(**(timers or {})))


def terminal_session(timers: Mapping[str, float] | None = None, part_size: int = 1024) -> InpasTerminalSession:
    """A terminal-side session: like real terminals it resends an un-ACKed frame (3 sends in all)."""
    settings = {"resend_on_ack_timeout": True, **(timers or {})}
    return InpasTerminalSession(LinkTimers(**settings), part_size=part_size)


SPEC = ProtocolSpec(
    name="inpas",
    title="INPAS SmartSale SA",
    ecr_session=ecr_session,
    terminal_session=terminal_session,
    describe=describe,
)
