"""Arcus2-style options: link timers, tries and the link version of one side (arcus2.md, "Timers")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..common.options import OptionsError, ProtocolOptions

from .constants import DEFAULT_LINK_VERSION, LINK_VERSIONS

__all__ = ["Arcus2Options"]


@dataclass(frozen=True)
class Arcus2Options(ProtocolOptions):
    """Link settings: timers in seconds, tries, and the link version. Tests run timers in milliseconds.

    ``ack_timeout`` is T1 (answer to an ENQ or a frame); ``packet_timeout`` is the ECR's result
    timer (restarted by every ``I``); ``enq_interval`` the pause after a failed ENQ try; ``tries``
    the ENQ tries per turn and sends per frame; ``turn_timeout`` ends a peer turn gone silent
    (None: 3 x T1). ``link_version`` (2 by default) is the frame format this side sends: 2 accepts
    only version 2 frames (a version 1 frame is answered NAK), 1 accepts both and answers in the
    version its peer last spoke -- for a peer that speaks only the legacy version 1.
    """

    protocol: ClassVar[str] = "arcus2"

    ack_timeout: float = 2.0  # T1
    packet_timeout: float = 120.0  # the ECR's result timer
    tries: int = 3
    enq_interval: float = 0.5
    turn_timeout: float | None = None
    link_version: int = DEFAULT_LINK_VERSION

    def __post_init__(self) -> None:
        super().__post_init__()
        version = self.link_version
        if isinstance(version, bool) or not isinstance(version, (int, float)) or version not in LINK_VERSIONS:
            raise OptionsError(f"arcus2 option link_version: expected one of "
                               f"{', '.join(map(str, LINK_VERSIONS))}, got {version!r}")
        object.__setattr__(self, "link_version", int(version))  # 2.0 from a JSON file is 2
        for name in ("enq_interval", "turn_timeout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not value >= 0):
                raise OptionsError(f"arcus2 option {name}: expected seconds >= 0, got {value!r}")

    @property
    def peer_turn_limit(self) -> float:
        """Seconds a peer turn may stay silent before it is taken as over."""
        return self.turn_timeout if self.turn_timeout is not None else 3 * self.ack_timeout

    @property
    def accepted_versions(self) -> tuple[int, ...]:
        """Link versions of the frames this side takes: both on a version 1 side (a legacy peer may
        be upgraded first), only version 2 on a version 2 side."""
        return LINK_VERSIONS if self.link_version == 1 else (self.link_version,)
