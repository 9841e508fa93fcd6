"""The toyline entry of the protocol registry: ``posbridge.protocols: toy = tests.protocols.toy.toyline.spec:SPEC``."""

from __future__ import annotations

from posbridge.protocols.common.spec import Capabilities, ProtocolSpec

from .describe import describe
from .options import ToyOptions
from .session import ToyEcrSession, ToyTerminalSession


def ecr_session(options: ToyOptions) -> ToyEcrSession:
    """An ECR-side session."""
    return ToyEcrSession(options)


def terminal_session(options: ToyOptions, part_size: int) -> ToyTerminalSession:
    """A terminal-side session (``part_size`` does not apply: a frame carries a whole message)."""
    return ToyTerminalSession(options)


SPEC = ProtocolSpec(
    name="toy",
    title="Toyline (a test protocol: text lines, 1-byte checksum, ACK/NAK)",
    options_type=ToyOptions,
    ecr_factory=ecr_session,
    terminal_factory=terminal_session,
    describe=describe,
    capabilities=Capabilities(abort=False, cashier_dialog=False, gateway=False),
)
