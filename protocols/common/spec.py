"""What a protocol offers the layers above it: :class:`ProtocolSpec`, one per protocol.

A protocol package exposes one ``SPEC`` and registers it under the entry-point group
``posbridge.protocols`` (``inpas = "posbridge.protocols.inpas.spec:SPEC"``);
:func:`posbridge.protocols.get` finds it there. Everything the application needs of a protocol is
here: typed options, session factories for both sides, a frame describer for tools, and what the
protocol can do (:class:`Capabilities`), so the application never branches on a protocol's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .describe import FrameDescription
from .options import OptionsError, ProtocolOptions
from .session import EcrSession, TerminalSession

__all__ = ["Capabilities", "OptionsLike", "ProtocolSpec"]

OptionsT = TypeVar("OptionsT", bound=ProtocolOptions)

OptionsLike = ProtocolOptions | Mapping[str, object] | None
"""Options as a caller may give them: the protocol's own class, a mapping of names, or None (defaults)."""


@dataclass(frozen=True)
class Capabilities:
    """What a protocol can do beyond a request and its result, as data the application reads.

    ``abort``: the ECR can ask the terminal to abort the operation in progress
    (:meth:`~posbridge.protocols.common.session.EcrSession.abort`; Arcus ``A``).
    ``cashier_dialog``: the terminal can ask the cashier a question through the ECR
    (:class:`~posbridge.protocols.common.session.CashierPrompt`; INPAS dialog packets).
    ``gateway``: the ECR can relay the terminal's host traffic
    (:class:`~posbridge.protocols.common.session.GatewayCommand`; INPAS operation 63);
    ``gateway_data``: then the most bytes one gateway answer carries to the terminal (what the ECR
    reads from the host at a time; the terminal asks again for the rest), 0 without gateway.
    """

    abort: bool = False
    cashier_dialog: bool = False
    gateway: bool = False
    gateway_data: int = 0

    def __post_init__(self) -> None:
        if self.gateway != (self.gateway_data > 0):
            raise ValueError(f"gateway={self.gateway} needs gateway_data > 0 exactly when gateway is offered, "
                             f"not {self.gateway_data}")


@dataclass(frozen=True)
class ProtocolSpec(Generic[OptionsT]):
    """One protocol, as the application sees it (see the module docstring).

    ``ecr_factory(options)`` and ``terminal_factory(options, part_size)`` build the sessions from the
    protocol's own options class ``options_type``; callers use :meth:`ecr_session` /
    :meth:`terminal_session`, which also take a mapping. ``describe`` turns any bytes into
    :class:`~posbridge.protocols.common.describe.FrameDescription` entries, never raising.
    """

    name: str
    title: str
    options_type: type[OptionsT]
    ecr_factory: Callable[[OptionsT], EcrSession]
    terminal_factory: Callable[[OptionsT, int], TerminalSession]
    describe: Callable[[bytes], list[FrameDescription]]
    capabilities: Capabilities = field(default_factory=Capabilities)

    def options(self, values: OptionsLike = None) -> OptionsT:
        """``values`` as this protocol's options class; OptionsError (one line) for unknown keys, bad
        values, or another protocol's options class."""
        if values is None:
            return self.options_type()
        if isinstance(values, self.options_type):
            return values
        if isinstance(values, ProtocolOptions):
            raise OptionsError(f"{self.name} takes {self.options_type.__name__}, not {type(values).__name__}")
        return self.options_type.from_mapping(values)

    def ecr_session(self, options: OptionsLike = None, *, timers: OptionsLike = None) -> EcrSession:
        """A new ECR-side session. ``timers`` is the same as ``options`` under its former name."""
        return self.ecr_factory(self.options(_one_of(options, timers)))

    def terminal_session(self, options: OptionsLike = None, *, timers: OptionsLike = None,
                         part_size: int = 1024) -> TerminalSession:
        """A new terminal-side session; ``part_size`` bounds a frame's body where the protocol splits
        long messages (INPAS SOH parts), others ignore it."""
        return self.terminal_factory(self.options(_one_of(options, timers)), part_size)


def _one_of(options: OptionsLike, timers: OptionsLike) -> OptionsLike:
    if options is not None and timers is not None:
        raise OptionsError("give the options once: as options or as timers, not both")
    return options if options is not None else timers
