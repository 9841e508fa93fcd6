"""Every scenario in examples/scenarios/ loads and does what its comments say (in-process terminal,
posbridge's EcrClient over virtual://)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from posbridge.emulator.scenario import Scenario, load_scenario
from posbridge.model import Operation, Status
from posbridge.testing import TerminalLink

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
TESTED = {"decline_by_card", "decline_by_amount", "slow_host", "lost_answer", "flaky_line", "cashier_dialog",
          "settlement_day"}


def _link(scenario: Scenario, **client_options: Any) -> TerminalLink:
    link = TerminalLink("inpas", config=scenario.terminal, host_config=scenario.host,
                        terminal_faults=scenario.faults, client_options=client_options)
    link.terminal.rules.add(*scenario.rules)
    link.terminal.cards.present(*scenario.cards)
    return link


def _load(name: str) -> Scenario:
    return load_scenario(EXAMPLES / f"{name}.toml")


def test_every_example_loads_and_is_tested_here():
    names = {p.stem for p in EXAMPLES.glob("*.toml")}
    assert names == TESTED
    for name in names:
        text = (EXAMPLES / f"{name}.toml").read_text(encoding="utf-8")
        assert text.startswith("# "), f"{name}: the file starts with the comment saying what it does"
        _load(name)


async def test_decline_by_card():
    async with _link(_load("decline_by_card")) as link:
        first = await link.client.sale(100_00)
        assert (first.status, first.response_code, first.response_text) == \
            (Status.DECLINED, "51", "ОТКАЗ: НЕДОСТАТОЧНО СРЕДСТВ")
        assert (await link.client.sale(100_00)).approved


async def test_decline_by_amount():
    async with _link(_load("decline_by_amount")) as link:
        for amount, code in ((10_05, "05"), (10_51, "51"), (10_54, "54")):
            result = await link.client.sale(amount)
            assert (result.status, result.response_code) == (Status.DECLINED, code), amount
        for amount in (10_00, 11_50, 10_50):
            assert (await link.client.sale(amount)).approved, amount


async def test_slow_host():
    waits = []
    async with _link(_load("slow_host"), on_progress=waits.append) as link:
        start = time.monotonic()
        assert (await link.client.sale(10_00)).approved
        assert time.monotonic() - start >= 1.5
        assert len(waits) >= 3


async def test_lost_answer():
    async with _link(_load("lost_answer")) as link:
        assert (await link.client.sale(10_00)).approved
        lost = await link.client.sale(20_00)
        assert (lost.status, lost.response_code) == (Status.REVERSED, "151019")
        assert (await link.client.sale(30_00)).approved
        totals = (await link.client.settlement()).totals
        assert totals is not None and (totals.sale_count, totals.sale_amount) == (2, 40_00)


async def test_flaky_line():
    async with _link(_load("flaky_line")) as link:
        assert (await link.client.sale(10_00)).approved
        assert link.terminal_device is not None and link.terminal_device.injected


@pytest.mark.parametrize(("amount", "answer", "dialogs", "code"), [
    (10_77, "1111", 1, None), (10_77, "0000", 1, "71015"), (10_00, "1111", 0, None)])
async def test_cashier_dialog(amount, answer, dialogs, code):
    asked = []

    def on_prompt(prompt):
        asked.append(prompt.prompt)
        return answer, True

    async with _link(_load("cashier_dialog"), on_prompt=on_prompt) as link:
        result = await link.client.sale(amount)
        assert result.approved if code is None else (result.status, result.response_code) == (Status.DECLINED, code)
        assert len(asked) == dialogs


async def test_settlement_day():
    async with _link(_load("settlement_day")) as link:
        first = await link.client.sale(500_00)
        assert first.approved
        declined = await link.client.sale(120_05)
        assert (declined.status, declined.response_code) == (Status.DECLINED, "05")
        assert (await link.client.sale(120_05)).approved
        assert (await link.client.refund(20_00, rrn=first.rrn)).approved
        totals = (await link.client.settlement()).totals
        assert totals is not None
        assert (totals.sale_count, totals.sale_amount, totals.refund_count, totals.refund_amount) == \
            (2, 620_05, 1, 20_00)
        rows = [r for r in link.terminal.journal.ledger.operations() if r.operation is Operation.SALE]
        assert [r.status for r in rows] == [Status.APPROVED, Status.DECLINED, Status.APPROVED]
