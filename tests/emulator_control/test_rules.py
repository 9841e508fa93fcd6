"""Outcome rules (posbridge.emulator.rules): validation and what the terminal does with them."""

from __future__ import annotations

import time

import pytest

from posbridge.emulator.rules import RuleBook, RuleError, rule_from_dict
from posbridge.emulator.scenario import ScenarioError, scenario_from_dict
from posbridge.model import Operation, Status
from posbridge.testing import TerminalLink


@pytest.mark.parametrize(("data", "key"), [
    ({"outcome": "maybe"}, "outcome"),
    ({"code": "x5"}, "code"),
    ({"amount_ends": 5, "outcome": "declined"}, "amount_ends"),
    ({"operation": "sail", "outcome": "declined"}, "operation"),
    ({"nth": 0, "outcome": "declined"}, "nth"),
    ({"card": "12", "outcome": "declined"}, "card"),
    ({"host_delay": -1}, "host_delay"),
    ({"fault": "fire"}, "fault"),
    ({"fault": "answer_lost", "outcome": "declined"}, "fault"),
    ({"colour": "red"}, "colour"),
    ({"card": "approved"}, "outcome"),  # no effect
])
def test_a_bad_rule_is_one_line_naming_its_key(data, key):
    with pytest.raises(RuleError) as error:
        rule_from_dict(data, "rules[1].")
    assert error.value.key == "rules[1]." + key
    assert "\n" not in str(error.value) and str(error.value).startswith("rules[1].")


def test_scenario_errors_name_the_rule_key():
    with pytest.raises(ScenarioError, match=r"rules\[0\]\.code"):
        scenario_from_dict({"rules": [{"code": "abc"}]})
    with pytest.raises(ScenarioError, match=r"cards\[0\]\.name"):
        scenario_from_dict({"cards": [{"name": "no_such_card"}]})


def test_nth_counts_matching_operations_and_once_is_used_up():
    book = RuleBook([rule_from_dict({"operation": "sale", "nth": 2, "outcome": "declined"}),
                     rule_from_dict({"amount_ends": "7", "code": "51", "once": True})])
    assert book.choose(Operation.SALE, 100, None) is None
    assert book.choose(Operation.SALE, 100, None).code == "05"
    assert book.choose(Operation.SALE, 100, None) is None
    assert book.choose(Operation.REFUND, 107, None).code == "51"
    assert book.choose(Operation.REFUND, 107, None) is None and book.rules() == []


def test_card_shown_masked():
    rule = rule_from_dict({"card": "5432 5432 5432 5430", "outcome": "declined"})
    assert rule.card == "5432543254325430"
    assert "5432543254325430" not in str(rule.to_dict())
    quoted = rule_from_dict({"code": "05", "text": "NO 4111111111111111"})
    assert "4111111111111111" not in str(quoted.to_dict())


async def test_forced_decline_is_journaled_and_totals_follow_the_journal():
    async with TerminalLink("inpas") as link:
        link.terminal.rules.add(rule_from_dict({"operation": "sale", "code": "05", "text": "ОТКАЗ", "once": True}))
        declined = await link.client.sale(10_00)
        assert declined.status is Status.DECLINED and declined.response_code == "05"
        approved = await link.client.sale(20_00)
        assert approved.approved
        settled = await link.client.settlement()
        assert settled.totals is not None and settled.totals.sale_amount == 20_00
        rows = link.terminal.journal.ledger.operations()
        assert [(r.status, r.code) for r in rows if r.operation is Operation.SALE] == \
            [(Status.DECLINED, "05"), (Status.APPROVED, "00")]


async def test_approved_rule_passes_a_declining_test_card_and_card_rule_matches_by_name():
    async with TerminalLink("inpas") as link:
        link.terminal.rules.add(rule_from_dict({"card": "insufficient_funds", "outcome": "approved", "once": True}))
        link.terminal.cards.present("5432543254325430", "5432543254325430")
        assert (await link.client.sale(1_00)).approved
        second = await link.client.sale(1_00)
        assert second.response_code == "116"


async def test_host_fault_and_host_delay_by_rule():
    async with TerminalLink("inpas") as link:
        link.terminal.rules.add(rule_from_dict({"amount_ends": "13", "fault": "request_not_sent"}),
                                rule_from_dict({"amount_ends": "99", "host_delay": 0.4}))
        assert (await link.client.sale(1_13)).response_code == "151018"
        start = time.monotonic()
        assert (await link.client.sale(1_99)).approved
        assert time.monotonic() - start >= 0.4
        assert (await link.client.sale(1_00)).approved
