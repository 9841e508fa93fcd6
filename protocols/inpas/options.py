"""INPAS SA options: the link timers, tries and resend habit of one side (inpas-sa.md, "Timers")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..common.options import OptionsError, ProtocolOptions

__all__ = ["InpasOptions"]


@dataclass(frozen=True)
class InpasOptions(ProtocolOptions):
    """Link timers in seconds and the number of sends per frame. Tests run them in milliseconds.

    ``ack_timeout`` is WAITACK, ``packet_timeout`` WAITPACKET, ``tries`` the sends of one frame in
    all (first send + resends). ``resend_on_ack_timeout``: resend a frame that got no ACK (terminals
    do; DualConnector does not). None means the side's habit: a terminal session resends, an ECR
    session and a bare link do not.
    """

    protocol: ClassVar[str] = "inpas"

    ack_timeout: float = 5.0  # WAITACK
    packet_timeout: float = 45.0  # WAITPACKET
    tries: int = 3
    resend_on_ack_timeout: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resend_on_ack_timeout not in (None, True, False):
            raise OptionsError(f"inpas option resend_on_ack_timeout: expected true or false, "
                               f"got {self.resend_on_ack_timeout!r}")
