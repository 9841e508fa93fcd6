"""The Arcus2-style entry of the protocol registry (entry point ``posbridge.protocols: arcus2``)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

from ..common.spec import Capabilities, ProtocolSpec

from .describe import describe
from .ops import OpsTable
from .options import Arcus2Options
from .session import Arcus2EcrSession, Arcus2TerminalSession

__all__ = ["SPEC", "ecr_session", "terminal_session", "spec_for_installation"]


def ecr_session(
    options: Arcus2Options,
    ops_table: OpsTable | None = None,
    texts: Mapping[str, str] | None = None,
) -> Arcus2EcrSession:
    """An ECR-side session.

    ``options``: :class:`Arcus2Options` -- timers, tries and ``link_version``: 2 (the default: SOH
    frames with a CRC-32; version 1 frames are refused) or 1 (legacy STX frames with an LRC, for a
    peer that speaks only version 1; both are accepted, answered in the version the peer last spoke).
    ``ops_table``: an installation's :class:`OpsTable` (``parse_ops_ini`` of its ops.ini; default:
    posbridge's table).
    ``texts``: response texts (rc_res) for results that come without ``text_message``.
    """
    return Arcus2EcrSession(options, ops_table, texts)


def terminal_session(
    options: Arcus2Options,
    part_size: int = 0,
    ops_table: OpsTable | None = None,
) -> Arcus2TerminalSession:
    """A terminal-side session (options and ops_table as for :func:`ecr_session`).

    ``part_size`` is accepted for the common factory signature and ignored: Arcus2-style frames
    carry a whole message (up to 65535 bytes of body).
    """
    return Arcus2TerminalSession(options, ops_table)


def spec_for_installation(
    ops_table: OpsTable | None = None,
    texts: Mapping[str, str] | None = None,
) -> ProtocolSpec[Arcus2Options]:
    """:data:`SPEC` bound to an installation's ops.ini (both ends) and rc_res.ini texts (ECR end).

    Assign it to ``EcrClient.protocol`` / ``VirtualTerminal.protocol`` before they open a session,
    or hand it to them in place of the name.
    """
    return dataclasses.replace(SPEC, ecr_factory=functools.partial(ecr_session, ops_table=ops_table, texts=texts),
                               terminal_factory=functools.partial(terminal_session, ops_table=ops_table))


SPEC = ProtocolSpec(
    name="arcus2",
    title="Arcus2-style link v2",
    options_type=Arcus2Options,
    ecr_factory=ecr_session,
    terminal_factory=terminal_session,
    describe=describe,
    capabilities=Capabilities(abort=True, cashier_dialog=False, gateway=False),
)
