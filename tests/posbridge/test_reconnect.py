"""After the terminal hangs up a TCP connection mid-operation, the client's next exchange (recovery's
reversal) goes out on a new connection at once: the quiet-line wait after a failed exchange (1.2 x
the ACK timer, 6 s for INPAS) lets an old answer's resends die out on a line that outlives its
openings, and a new TCP connection carries none of them."""

from __future__ import annotations

import asyncio
import time

import pytest

from posbridge.ecr.client import EcrClient
from posbridge.journal import Journal
from posbridge.model import Operation, Status
from posbridge.protocols.common.errors import LinkError
from posbridge.testing.background import BackgroundTerminal


@pytest.mark.parametrize("protocol", ["inpas", "arcus2"])
async def test_recovery_after_a_hang_up_starts_at_once_on_the_new_connection(protocol: str) -> None:
    with BackgroundTerminal(protocol, transport="tcp") as terminal:
        client = EcrClient(terminal.url, protocol, journal=Journal())
        settle = client.protocol.ecr_session().settle_time
        assert settle >= 2.4  # the wait this test shows skipped (INPAS 6 s, Arcus2 2.4 s by default)
        async with client:
            terminal.control.delays(host=1.0)
            sale = asyncio.ensure_future(client.sale(70_00))
            while terminal.call(lambda: terminal.terminal.state) != "authorizing":
                await asyncio.sleep(0.01)
            assert terminal.call(lambda: terminal.terminal.line.drop_peer("hung up mid-operation"))
            with pytest.raises(LinkError):
                await sale
            terminal.control.delays(host=0)
            started = time.monotonic()
            [recovery] = await client.recover()
            took = time.monotonic() - started
        assert recovery.outcome == "reversed", recovery
        assert took < settle * 0.75, f"recovery took {took:.2f} s (the quiet-line wait is {settle:g} s)"
        ops = [(o.operation, o.status) for o in terminal.operations()]
        assert ops == [(Operation.SALE, Status.APPROVED), (Operation.EMERGENCY_REVERSAL, Status.APPROVED)]
