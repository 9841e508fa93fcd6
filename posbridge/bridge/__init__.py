"""The protocol bridge: a register speaking one protocol, a terminal speaking another.

posbridge plays the terminal's side of the register's protocol and drives the real terminal through
its own :class:`~posbridge.ecr.EcrClient` (write-ahead journal, recovery), translating through the
domain model. See :mod:`posbridge.bridge.bridge`.
"""

from posbridge.bridge.bridge import (
    CODE_BAD_REQUEST,
    CODE_BUSY,
    CODE_OUTCOME_UNKNOWN,
    CODE_TERMINAL_UNREACHABLE,
    CODE_UNDONE,
    Bridge,
    BridgeOutcome,
)

__all__ = ["CODE_BAD_REQUEST", "CODE_BUSY", "CODE_OUTCOME_UNKNOWN", "CODE_TERMINAL_UNREACHABLE", "CODE_UNDONE",
           "Bridge", "BridgeOutcome"]
