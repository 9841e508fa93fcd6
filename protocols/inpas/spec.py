"""The INPAS SA entry of the protocol registry (entry point ``posbridge.protocols: inpas``)."""

from __future__ import annotations

from ..common.spec import Capabilities, ProtocolSpec

from .describe import describe
from .mapping import MAX_GATEWAY_DATA
from .options import InpasOptions
from .session import InpasEcrSession, InpasTerminalSession

__all__ = ["SPEC", "ecr_session", "terminal_session"]


def ecr_session(options: InpasOptions) -> InpasEcrSession:
    """An ECR-side session (it does not resend an un-ACKed frame unless ``options`` say so)."""
    return InpasEcrSession(options)


def terminal_session(options: InpasOptions, part_size: int = 1024) -> InpasTerminalSession:
    """A terminal-side session: like real terminals it resends an un-ACKed frame (3 sends in all)."""
    return InpasTerminalSession(options, part_size=part_size)


SPEC = ProtocolSpec(
    name="inpas",
    title="INPAS SmartSale SA",
    options_type=InpasOptions,
    ecr_factory=ecr_session,
    terminal_factory=terminal_session,
    describe=describe,
    capabilities=Capabilities(abort=False, cashier_dialog=True, gateway=True, gateway_data=MAX_GATEWAY_DATA),
)
