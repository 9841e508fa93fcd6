"""Arcus2-style link versions end to end: an ECR and a virtual terminal configured for different
versions (docs/protocols/arcus2.md 1.3). A version 1 side answers in the version its peer speaks;
a version 2 side refuses version 1 frames, so a version 1 ECR facing it fails before anything is
done."""

from __future__ import annotations

import pytest

from posbridge.emulator.config import TerminalConfig
from posbridge.model import Operation, Status
from posbridge.protocols.common.errors import LinkError
from posbridge.testing import TerminalLink

FAST = {"ack_timeout": 0.3}


@pytest.mark.parametrize(("ecr_version", "terminal_version"), [(2, 1), (1, 1), (2, 2)])
async def test_a_sale_and_its_refund_complete_when_the_terminal_speaks_version_1_or_both_speak_the_same(
        ecr_version: int, terminal_version: int) -> None:
    async with TerminalLink("arcus2", config=TerminalConfig(timers={**FAST, "link_version": terminal_version}),
                            client_options={"timers": {**FAST, "link_version": ecr_version}}) as link:
        sale = await link.client.sale(150_00)
        refund = await link.client.refund(50_00, sale.rrn or "")
        assert (sale.status, refund.status) == (Status.APPROVED, Status.APPROVED)
        assert [(op.operation, op.status) for op in link.terminal.journal.ledger.operations()] == \
            [(Operation.SALE, Status.APPROVED), (Operation.REFUND, Status.APPROVED)]
        assert link.client.journal.ecr.counts_by_state() == {"done": 2}
        assert link.client.unresolved() == []


async def test_a_version_1_ecr_facing_a_version_2_terminal_fails_and_the_terminal_did_nothing() -> None:
    async with TerminalLink("arcus2", config=TerminalConfig(timers=dict(FAST)),
                            client_options={"timers": {**FAST, "link_version": 1}}) as link:
        with pytest.raises(LinkError, match=r"NAKed 3 times \(a version 2 peer refuses version 1 frames"):
            await link.client.sale(150_00)
        assert link.terminal.journal.ledger.operations() == []
        assert link.terminal.last_result is None
        # A NAK may be a damaged ACK: the client keeps the sale unknown, never "not sent".
        assert [e.state for e in link.client.unresolved()] == ["unknown"]
