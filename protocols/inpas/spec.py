"""The INPAS SA entry of the protocol registry."""

from __future__ import annotations

from protocols import ProtocolSpec

from .describe import describe
from .link import LinkTimers
from .session import InpasEcrSession, InpasTerminalSession

SPEC = ProtocolSpec(
    name="inpas",
    title="INPAS SmartSale SA",
    ecr_session=InpasEcrSession,
    terminal_session=InpasTerminalSession,
    describe=describe,
    timers=LinkTimers,
)
