"""Gateway mode's reports: the virtual terminal's own journal stays empty (the host journals every
operation), so the lines after a report's totals -- by card scheme, and a full report's operation
list -- come from the host with its decision (PBH1 "report"). They must be the lines the same day
gives without gateway mode."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from posbridge.ecr.gateway import GatewaySettings
from posbridge.emulator.config import TerminalConfig
from posbridge.emulator.host import HostConfig
from posbridge.model import Result
from posbridge.testing import TerminalLink

from .test_gateway_e2e import TIMERS, Host, _link

NOW = datetime(2026, 12, 3, 10, 7, 30)
FULL_PAN = "4111111111111111"  # the virtual card reader's default card

SCHEME_LINES = [
    "     ПО ПЛАТЕЖНЫМ СИСТЕМАМ",
    "VISA",
    " ОПЛАТА (1)           150.00 RUB",
    " ВОЗВРАТ (1)           50.00 RUB",
    " ОТМЕНА (1)            20.00 RUB",
    " ИТОГО:               100.00 RUB",
]
OPERATION_LINES = [  # time, operation, the card's last 4 digits, amount: as a full report lists them
    "10:07 ОПЛАТА 1111         150.00",
    "10:07 ВОЗВРАТ 1111         50.00",
    "10:07 ОПЛАТА 1111          20.00",
    "10:07 ОТМЕНА 1111          20.00",
]


async def a_day(link: TerminalLink) -> None:
    sale = await link.client.sale(150_00)
    assert sale.approved, sale
    assert (await link.client.refund(50_00, rrn=sale.rrn)).approved
    other = await link.client.sale(20_00)
    assert (await link.client.cancel(20_00, rrn=other.rrn, auth_code=other.auth_code)).approved


def after_totals(report: Result) -> list[str]:
    """The customer copy's lines from the scheme totals to the response code."""
    lines = report.slips.customer.splitlines()
    return lines[lines.index(SCHEME_LINES[0]):lines.index(next(line for line in lines if line.startswith("КОД ОТВЕТА")))]


async def test_a_full_report_through_the_ecr_lists_every_operation_as_without_gateway_mode(tmp_path) -> None:
    async with Host(str(tmp_path / "host.sqlite3")) as host:
        host.service.host._clock = lambda: NOW
        async with _link(host.address) as link:
            await a_day(link)
            report = await link.client.full_report()
            assert link.terminal.journal.ledger.operations("00344224") == []  # nothing of its own
    assert report.approved and host.service.requests == 5
    assert after_totals(report) == [*SCHEME_LINES, "            ОПЕРАЦИИ", *OPERATION_LINES]
    assert FULL_PAN not in report.slips.customer + report.slips.cashier
    # The same day on a terminal that decides itself: the same lines.
    async with TerminalLink("inpas", clock=lambda: NOW, host_config=HostConfig(terminal_id="00344224"),
                            client_options={"timers": dict(TIMERS)}) as local:
        await a_day(local)
        without_gateway = await local.client.full_report()
    assert after_totals(without_gateway) == after_totals(report)


async def test_through_the_ecr_a_full_report_lists_the_latest_operations_and_a_settlement_none(tmp_path) -> None:
    async with Host(str(tmp_path / "host.sqlite3")) as host:
        host.service.host._clock = lambda: NOW
        config = TerminalConfig(host_via_ecr=host.address, timers=dict(TIMERS), report_max_lines=2)
        async with TerminalLink("inpas", config=config,
                                client_options={"timers": dict(TIMERS), "gateway": GatewaySettings(receive_wait=0.3)}) as link:
            await a_day(link)
            report = await link.client.full_report()
            settlement = await link.client.settlement()
    assert after_totals(report) == [*SCHEME_LINES, "            ОПЕРАЦИИ", "... ЕЩЕ 2 ОПЕРАЦИЙ РАНЕЕ",
                                    *OPERATION_LINES[2:]]
    assert settlement.approved and after_totals(settlement) == SCHEME_LINES  # totals by scheme, no list


def test_the_report_crosses_pbh1_unchanged_and_a_malformed_one_is_a_protocol_error() -> None:
    from posbridge.emulator.remote_host import HostProtocolError, report_from_json
    from posbridge.emulator.reports import BatchReport, ListedOperation, SchemeTotals
    from posbridge.model import Operation

    report = BatchReport((SchemeTotals("VISA", sale=(1, 150_00), refund=(1, 50_00)),),
                         (ListedOperation(NOW, Operation.SALE, "411111******1111", 150_00, 643),), 3)
    assert report_from_json(json.loads(json.dumps(report.to_json()))) == report
    for broken in ({**report.to_json(), "listed_total": 0},  # lists more than it counts
                   {**report.to_json(), "schemes": [{"scheme": "VISA", "sale": [1, -5], "refund": [0, 0],
                                                     "cancel": [0, 0]}]},
                   {**report.to_json(), "listed": [{"operation": "sale"}]},
                   ["not", "an", "object"]):
        with pytest.raises(HostProtocolError, match="^report: "):
            report_from_json(broken)
