"""Conformance: every operation end to end, ECR client <-> virtual terminal, for every protocol and
over every transport (in-memory ``virtual://`` and a real pseudo-terminal opened with pyserial)."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from posbridge import protocols
from posbridge.emulator.cards import TEST_CARDS, Card
from posbridge.emulator.host import HostConfig
from posbridge.model import InvalidRequest, Operation, Request, Status
from posbridge.testing import TerminalLink
from posbridge.emulator.terminal import TerminalConfig
from posbridge.protocols.common.errors import ExchangeTimeout

FIXED_NOW = datetime(2026, 11, 22, 12, 30, 0)
PARAMS = [(p, t) for p in protocols.names() for t in ("virtual", "pty", "tcp", "usb")]
FAST_TIMERS = {"ack_timeout": 1.0, "packet_timeout": 2.0}


@pytest.fixture(params=PARAMS, ids=[f"{p}-{t}" for p, t in PARAMS])
def link_args(request):
    protocol, transport = request.param
    return {"protocol": protocol, "transport": transport}


def make_link(link_args, *, client_timers=None, config=None, host=None, **kwargs) -> TerminalLink:
    return TerminalLink(
        link_args["protocol"], transport=link_args["transport"],
        client_options={"timers": client_timers or FAST_TIMERS, "clock": lambda: FIXED_NOW},
        config=config or TerminalConfig(timers=FAST_TIMERS), host_config=host, clock=lambda: FIXED_NOW,
        **kwargs)


async def test_sale_refund_and_settlement(link_args):
    async with make_link(link_args) as link:
        ecr = link.client
        sale = await ecr.sale(150_00)
        assert sale.approved and sale.status is Status.APPROVED
        assert sale.amount == 150_00 and sale.currency == 643
        assert len(sale.rrn) == 12 and sale.rrn.isdigit() and len(sale.auth_code) == 6
        assert sale.masked_pan in ("411111******1111", "************1111")
        assert sale.terminal_id == "00344224"
        assert "ОДОБРЕНО" in sale.slips.customer and "КОПИЯ КЛИЕНТА" in sale.slips.customer
        assert "КОПИЯ КАССИРА" in sale.slips.cashier and "150.00 RUB" in sale.slips.customer
        refund = await ecr.refund(50_00, rrn=sale.rrn)
        assert refund.approved and refund.amount == 50_00
        settlement = await ecr.settlement()
        assert settlement.approved
        totals = settlement.totals
        assert (totals.sale_count, totals.sale_amount, totals.refund_count, totals.refund_amount) == (
            1, 150_00, 1, 50_00)
        assert "СВЕРКА ИТОГОВ" in settlement.slips.customer


async def test_refund_is_capped_at_the_charged_sum(link_args):
    async with make_link(link_args) as link:
        sale = await link.client.sale(100_00)
        assert (await link.client.refund(60_00, rrn=sale.rrn)).approved
        over = await link.client.refund(40_01, rrn=sale.rrn)
        assert over.status is Status.DECLINED and over.host_code == "110"
        assert (await link.client.refund(40_00, rrn=sale.rrn)).approved
        assert link.terminal.host.totals().refund_amount == 100_00


async def test_cancel_in_batch_and_refused_after_settlement(link_args):
    async with make_link(link_args) as link:
        ecr = link.client
        first = await ecr.sale(200_00)
        cancel = await ecr.cancel(200_00, rrn=first.rrn, auth_code=first.auth_code)
        assert cancel.approved
        second = await ecr.sale(300_00)
        settlement = await ecr.settlement()
        assert settlement.totals.sale_count == 1 and settlement.totals.sale_amount == 300_00
        assert settlement.totals.cancel_count == 1 and settlement.totals.cancel_amount == 200_00
        late = await ecr.cancel(300_00, rrn=second.rrn, auth_code=second.auth_code)
        assert late.status is Status.DECLINED and not late.approved
        assert (await ecr.refund(300_00, rrn=second.rrn)).approved  # only a refund is possible now


async def test_preauth_partial_completion_and_cancel_of_a_hold(link_args):
    async with make_link(link_args) as link:
        ecr = link.client
        hold = await ecr.preauth(1000_00)
        assert hold.approved
        over = await ecr.completion(1000_01, rrn=hold.rrn, auth_code=hold.auth_code)
        assert over.status is Status.DECLINED
        done = await ecr.completion(750_00, rrn=hold.rrn, auth_code=hold.auth_code)
        assert done.approved and done.amount == 750_00
        other = await ecr.preauth(500_00)
        released = await ecr.cancel_preauth(500_00, rrn=other.rrn, auth_code=other.auth_code)
        assert released.approved
        totals = (await ecr.settlement()).totals
        assert totals.sale_amount == 750_00 and totals.sale_count == 1


DECLINING_CARDS = [rule for rule in TEST_CARDS.values() if not rule.approved]


@pytest.mark.parametrize("rule", DECLINING_CARDS, ids=[r.pan for r in DECLINING_CARDS])
async def test_declined_test_cards_give_their_codes(link_args, rule):
    async with make_link(link_args) as link:
        link.terminal.cards.present(Card(rule.pan, "3012"))
        result = await link.client.sale(10_00)
        assert result.status is Status.DECLINED and not result.approved
        assert result.host_code == rule.code
        assert rule.pan not in repr(result) and rule.pan not in result.slips.customer
        assert link.terminal.host.totals().sale_count == 0


async def test_repeated_stan_is_not_charged_twice(link_args):
    async with make_link(link_args) as link:
        first = await link.client.execute(Request(Operation.SALE, 70_00, transaction_id="4242"))
        again = await link.client.execute(Request(Operation.SALE, 70_00, transaction_id="4242"))
        assert first.approved and again.approved
        assert (again.rrn, again.auth_code) == (first.rrn, first.auth_code)
        totals = link.terminal.host.totals()
        assert (totals.sale_count, totals.sale_amount) == (1, 70_00)


async def test_emergency_reversal_of_an_approved_sale_and_of_an_unseen_one(link_args):
    async with make_link(link_args) as link:
        ecr = link.client
        request = Request(Operation.SALE, 55_00, transaction_id="9001")
        assert (await ecr.execute(request)).approved
        reversal = await ecr.emergency_reversal(request)
        assert reversal.approved
        assert link.terminal.host.totals().sale_amount == 0
        unseen = await ecr.emergency_reversal(Request(Operation.SALE, 12_00, transaction_id="9002"))
        assert unseen.approved
        assert link.terminal.host.totals().sale_amount == 0


async def test_reports_slip_copy_and_test_connection(link_args):
    async with make_link(link_args) as link:
        ecr = link.client
        assert (await ecr.test_connection()).approved
        sale = await ecr.sale(42_00)
        copy = await ecr.slip_copy()
        assert copy.approved and "КОПИЯ" in copy.slips.customer and sale.rrn in copy.slips.customer
        short = await ecr.short_report()
        assert short.approved and short.totals.sale_count == 1
        full = await ecr.full_report()
        assert full.approved and full.totals.sale_amount == 42_00
        assert (await ecr.settlement()).totals.sale_amount == 42_00  # reports do not close the batch


async def test_slow_host_is_kept_alive_by_wait_packets(link_args):
    config = TerminalConfig(timers=FAST_TIMERS, progress_interval=0.1)
    host = HostConfig(latency=1.0)
    progress = []
    async with make_link(link_args, client_timers={"ack_timeout": 1.0, "packet_timeout": 0.4},
                         config=config, host=host) as link:
        link.client.on_progress = progress.append
        result = await link.client.sale(10_00)  # 1 s of host time, 0.4 s packet timer
        assert result.approved
        assert len(progress) >= 5


async def test_cashier_dialog_asks_for_the_last_four_digits(link_args):
    if not protocols.get(link_args["protocol"]).capabilities.cashier_dialog:
        pytest.skip("the protocol has no cashier dialog")
    config = TerminalConfig(timers=FAST_TIMERS, ask_last_digits=True, dialog_timeout=5)
    prompts = []

    def right(prompt):
        prompts.append(prompt.prompt)
        return "1111", True

    async with make_link(link_args, config=config) as link:
        link.client.on_prompt = right
        assert (await link.client.sale(10_00)).approved
        assert prompts == ["ВВЕДИТЕ ПОСЛЕДНИЕ 4 ЦИФРЫ КАРТЫ"]
        link.client.on_prompt = lambda prompt: ("9999", True)
        wrong = await link.client.sale(10_00)
        assert wrong.status is Status.DECLINED and wrong.host_code == "71015"
        assert link.terminal.host.totals().sale_count == 1


async def test_host_answer_lost_is_reversed_by_the_terminal(link_args):
    async with make_link(link_args, host=HostConfig(fault="answer_lost")) as link:
        result = await link.client.sale(10_00)
        assert not result.approved and result.host_code == "151019"
        assert "ОТВЕТ НЕ ПОЛУЧЕН" in result.slips.customer
        assert "ОПЕРАЦИЯ АВТОМАТИЧЕСКИ ОТМЕНЕНА" in result.slips.customer
        assert link.terminal.host.totals().sale_amount == 0


async def test_no_connection_to_host(link_args):
    async with make_link(link_args, host=HostConfig(fault="no_connection")) as link:
        result = await link.client.sale(10_00)
        assert result.status is Status.NO_CONNECTION


async def test_lost_outcome_is_journaled_and_recovered_by_emergency_reversal(link_args):
    # The terminal is slower than the ECR's packet timer and sends no WAIT: the ECR gives up.
    config = TerminalConfig(timers=FAST_TIMERS, progress_interval=10.0)
    async with make_link(link_args, client_timers={"ack_timeout": 1.0, "packet_timeout": 0.3},
                         config=config, host=HostConfig(latency=0.6)) as link:
        with pytest.raises(ExchangeTimeout):
            await link.client.sale(80_00)
        unresolved = link.client.journal.ecr.unresolved(link.client.journal_key)
        assert [e.request.amount for e in unresolved] == [80_00]
        await asyncio.sleep(0.6)  # the terminal finishes: the host did charge
        assert link.terminal.host.totals().sale_amount == 80_00
        link.terminal.host_config.latency = 0.0
        recovered = await link.client.recover()
        assert [r.outcome for r in recovered] == ["reversed"]
        assert recovered[0].result.approved and recovered[0].result.host_code == "400"
        assert link.terminal.host.totals().sale_amount == 0
        assert link.client.journal.ecr.unresolved(link.client.journal_key) == []


async def test_bad_input_is_refused_before_anything_is_sent(link_args):
    async with make_link(link_args) as link:
        for bad in (0, -5, 10**12, 1.5):
            with pytest.raises(InvalidRequest):
                await link.client.sale(bad)
        with pytest.raises(InvalidRequest):
            await link.client.execute(Request(Operation.SALE, 100, currency=999_1))
        with pytest.raises(InvalidRequest):
            await link.client.execute(Request(Operation.SALE, 100, currency=1))
        assert link.client.journal.ecr.unresolved() == []
        assert link.terminal.host.totals().sale_count == 0
