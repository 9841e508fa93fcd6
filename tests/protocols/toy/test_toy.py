"""The toy protocol is one folder plus one entry point: the registry lists it, and the application
(ECR client, virtual terminal, their host and journals) speaks it with nothing above
``posbridge.protocols`` knowing it exists."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import uuid
from pathlib import Path

from posbridge import protocols
from posbridge.devices import open_device
from posbridge.ecr import EcrClient
from posbridge.emulator import VirtualTerminal
from posbridge.journal import Journal
from posbridge.protocols.common.model import Operation, Status
from tests.protocols.toy.toyline.spec import SPEC

ROOT = Path(__file__).resolve().parents[3]


def test_the_entry_point_registers_the_toy_beside_the_built_in_protocols(toy_registered: str) -> None:
    points = {point.name: point.value for point in importlib.metadata.entry_points(group=protocols.ENTRY_POINT_GROUP)}
    assert points["toy"] == "tests.protocols.toy.toyline.spec:SPEC"
    assert {"inpas", "arcus2", "toy"} <= set(protocols.names())
    assert protocols.get("toy") is SPEC and protocols.get("TOY") is SPEC


def test_nothing_outside_the_tests_names_the_toy() -> None:
    # The application found the toy through its entry point only: no registry line, no branch.
    for folder in ("posbridge", "protocols", "devices"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "toyline" not in path.read_text(encoding="utf-8"), path
    assert "toyline" not in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


async def test_the_ecr_client_and_the_virtual_terminal_complete_a_sale(toy_registered: str) -> None:
    url = f"virtual://toy-{uuid.uuid4().hex}"
    terminal = VirtualTerminal(toy_registered)
    device = await open_device(url)
    serving = asyncio.get_running_loop().create_task(terminal.serve(device, keep_open=True))
    client = EcrClient(url, toy_registered, journal=Journal())
    try:
        await client.open()
        sale = await client.sale(150_00)
        assert (sale.operation, sale.status, sale.amount, sale.currency) == (Operation.SALE, Status.APPROVED, 150_00, 643)
        assert sale.rrn and sale.auth_code and sale.masked_pan and "*" in sale.masked_pan
        assert sale.slips.customer and sale.slips.cashier
        settlement = await client.settlement()
        assert settlement.approved and settlement.totals is not None
        assert (settlement.totals.sale_count, settlement.totals.sale_amount) == (1, 150_00)
        assert terminal.host.totals().sale_count == 0  # the batch was closed by the settlement
        assert client.journal.ecr.unresolved(client.journal_key) == []
    finally:
        await client.close()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await device.close()
        client.journal.close()
        terminal.journal.close()
