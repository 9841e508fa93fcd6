"""The native API in process: idempotent command ids, queues, declines, reversals, recovery, the
command log, auth, and the OpenAPI document against the routes the application serves."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from posbridge.emulator.cards import TEST_CARDS
from posbridge.emulator.config import TerminalConfig
from posbridge.http.config import ConfigError, ServiceConfig, TerminalSettings
from posbridge.http.app import make_app
from posbridge.http.openapi import openapi_document
from posbridge.http.service import Service

from tests.http.support import in_process

DECLINED_PAN = "5432543254325430"  # host-rules test card: declined 116, insufficient funds


async def test_pay_then_the_same_command_id_returns_the_first_outcome_and_charges_once():
    async with in_process() as s:
        status, first = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "c1", "amount": 15000})
        assert status == 200 and first["status"] == "approved"
        assert first["amount"] == 15000 and first["rrn"] and first["auth_code"]
        assert first["card"] == "411111******1111" and "4111111111111111" not in json.dumps(first)
        assert first["universal_id"] == f"CN:411111******1111;RN:;RRN:{first['rrn']};AC:{first['auth_code']}"
        assert "[cut]" in first["slip"] and "КОПИЯ КЛИЕНТА" in first["slip"] and "КОПИЯ КАССИРА" in first["slip"]
        assert not any(ord(ch) < 32 and ch != "\n" for ch in first["slip"])
        status, again = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "c1", "amount": 15000})
        assert status == 200 and again == first
        status, conflict = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "c1", "amount": 15001})
        assert status == 409 and conflict["field"] == "command_id"
        status, read = await s.get("/v1/commands/c1")
        assert status == 200 and read == first
        _, settlement = await s.post("/v1/terminals/kassa1/Settlement", {"command_id": "day1"})
        assert settlement["totals"]["sale_count"] == 1 and settlement["totals"]["sale_amount"] == 15000


async def test_wait_zero_answers_running_then_the_command_tells_the_outcome():
    async with in_process(terminal_options={"config": TerminalConfig(card_delay=0.3)}) as s:
        status, body = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "a1", "amount": 100, "wait": 0})
        assert status == 202 and body["status"] == "running"
        _, terminals = await s.get("/v1/terminals")
        assert terminals["terminals"][0]["state"] in ("busy", "idle")
        for _ in range(100):
            status, body = await s.get("/v1/commands/a1")
            if body["status"] != "running":
                break
            await asyncio.sleep(0.05)
        assert status == 200 and body["status"] == "approved" and body["journal_state"] == "done"


async def test_two_concurrent_pays_on_one_terminal_both_complete_one_after_the_other():
    async with in_process(terminal_options={"config": TerminalConfig(card_delay=0.3)}) as s:
        first = asyncio.ensure_future(s.post("/v1/terminals/kassa1/Pay", {"command_id": "q1", "amount": 100}))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(s.post("/v1/terminals/kassa1/Pay", {"command_id": "q2", "amount": 200}))
        await asyncio.sleep(0.1)
        _, state = await s.get("/v1/terminals")
        terminal = state["terminals"][0]
        assert terminal["state"] == "busy" and terminal["command_id"] == "q1" and terminal["queued"] == 1
        _, waiting = await s.get("/v1/commands/q2")
        assert waiting["status"] == "running" and waiting["queued"] is True and waiting["position"] == 1
        (status1, one), (status2, two) = await asyncio.gather(first, second)
        assert status1 == status2 == 200 and one["status"] == two["status"] == "approved"
        assert one["finished_at"] <= two["finished_at"]
        assert int(one["transaction_id"]) < int(two["transaction_id"])


async def test_a_full_queue_is_503_and_nothing_is_stored():
    async with in_process(queue_limit=1, terminal_options={"config": TerminalConfig(card_delay=0.4)}) as s:
        await s.post("/v1/terminals/kassa1/Pay", {"command_id": "f1", "amount": 100, "wait": 0})
        await asyncio.sleep(0.05)  # f1 is running, the queue is empty
        status, _ = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "f2", "amount": 100, "wait": 0})
        assert status == 202
        response = await s.client.post("/v1/terminals/kassa1/Pay", json={"command_id": "f3", "amount": 100})
        body = await response.json()
        assert response.status == 503 and body["field"] == "terminal" and "waiting" in body["error"]
        assert response.headers["Retry-After"]
        status, _ = await s.get("/v1/commands/f3")
        assert status == 404  # not accepted: the same id may be sent again later
        for command in ("f1", "f2"):
            for _ in range(100):
                _, body = await s.get(f"/v1/commands/{command}")
                if body["status"] != "running":
                    break
                await asyncio.sleep(0.05)
            assert body["status"] == "approved"


async def test_a_full_queue_is_kkm_status_2_with_http_200_and_nothing_is_stored():
    async with in_process(queue_limit=1, terminal_options={"config": TerminalConfig(card_delay=1.0)}) as s:  # margin: g3 must come while g1 runs
        for command_id in ("g1", "g2"):  # one running, one queued
            status, body = await s.post("/Execute", {"Command": "PayByPaymentCard", "IdCommand": command_id,
                                                     "Amount": 1, "Timeout": 1})
            assert status == 200 and body["Status"] in (1, 4), body
            await asyncio.sleep(0.05)
        response = await s.client.post("/Execute", json={"Command": "PayByPaymentCard", "IdCommand": "g3",
                                                         "Amount": 1})
        body = await response.json()
        assert (response.status, body["Status"], body["IdCommand"]) == (200, 2, "g3"), body
        assert "waiting" in body["Error"] and response.headers["Retry-After"]
        assert s.service.store.get("g3") is None  # not accepted: the same IdCommand may be sent again later
        for command_id in ("g1", "g2"):
            _, body = await s.get_rezult(command_id)
            assert body["Status"] == 0, body


async def test_a_declined_test_card_is_declined_with_the_host_code_and_a_decline_slip():
    rule = TEST_CARDS[DECLINED_PAN]
    async with in_process() as s:
        s.terminals["kassa1"].cards.present(DECLINED_PAN)
        status, body = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "d1", "amount": 2500})
        assert status == 200 and body["status"] == "declined"
        assert rule.code in (body["host_code"], body["response_code"])
        assert body["response_text"] == rule.text
        assert "ОТКАЗ" in body["slip"] and rule.code in body["slip"] and "543254******5430" in body["slip"]
        assert DECLINED_PAN not in json.dumps(body)
        assert body["universal_id"] is None  # nothing to return or cancel


async def test_emergency_reversal_without_a_reference_reverses_the_last_and_with_one_that_one():
    async with in_process() as s:
        _, first = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "e1", "amount": 1000})
        _, second = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "e2", "amount": 2000})
        status, last = await s.post("/v1/terminals/kassa1/EmergencyReversal", {"command_id": "e3"})
        assert status == 200 and last["status"] == "approved" and last["amount"] == 2000
        status, named = await s.post("/v1/terminals/kassa1/EmergencyReversal",
                                     {"command_id": "e4", "universal_id": first["universal_id"]})
        assert status == 200 and named["status"] == "approved" and named["amount"] == 1000
        status, wrong = await s.post("/v1/terminals/kassa1/EmergencyReversal", {"command_id": "e5", "rrn": "1"})
        assert status == 422 and wrong["field"] == "rrn"
        # 1C asks again with a new command id: the payment was reversed already, nothing runs.
        status, again = await s.post("/v1/terminals/kassa1/EmergencyReversal",
                                     {"command_id": "e6", "universal_id": first["universal_id"]})
        assert status == 409 and "already reversed" in again["error"], again
        status, again = await s.post("/v1/terminals/kassa1/EmergencyReversal", {"command_id": "e7"})
        assert status == 409 and "already reversed" in again["error"], again
        assert s.service.store.get("e6") is None and s.service.store.get("e7") is None
        _, settlement = await s.post("/v1/terminals/kassa1/Settlement", {})
        assert settlement["totals"]["sale_count"] == 0  # both reversed


async def test_local_operations_and_reports():
    async with in_process() as s:
        await s.post("/v1/terminals/kassa1/Pay", {"command_id": "l1", "amount": 1000, "receipt_number": "26"})
        status, table = await s.post("/v1/terminals/kassa1/GetOperationByCards", {})
        assert status == 200 and [row["TypeOperation"] for row in table["operations"]] == ["Pay"]
        assert table["operations"][0]["universal_id"].split(";")[1] == "RN:26"
        status, parameters = await s.post("/v1/terminals/kassa1/TerminalParameters", {})
        assert status == 200 and parameters["print_slip_on_terminal"] is False
        assert parameters["partial_cancellation"] is False
        status, report = await s.post("/v1/terminals/kassa1/TerminalReport", {"detailed": True})
        assert status == 200 and report["status"] == "approved" and "ПОЛНЫЙ ОТЧЕТ" in report["slip"]
        status, test = await s.post("/v1/terminals/kassa1/TestConnection", {})
        assert status == 200 and test["status"] == "approved"
        status, copy = await s.post("/v1/terminals/kassa1/SlipCopy", {})
        assert status == 200 and copy["status"] == "approved" and "КОПИЯ" in copy["slip"]
        await s.post("/v1/terminals/kassa1/Settlement", {})
        await s.post("/v1/terminals/kassa1/Pay", {"command_id": "l2", "amount": 2000})
        _, table = await s.post("/v1/terminals/kassa1/GetOperationByCards", {})
        assert [(row["command_id"], row["Amount"]) for row in table["operations"]] == [("l2", 2000)]


async def test_a_lost_outcome_is_unknown_until_recovery_resolves_it(tmp_path):
    # The deadline (0.5 s) ends the exchange while the card holder is still slow (0.8 s): the
    # outcome is lost. The service recovers at once; the terminal may still be busy, so the
    # command may stay unknown until the recovery before the next sale.
    options = {"config": TerminalConfig(card_delay=0.8)}
    async with in_process(terminal_options=options) as s:
        worker = s.service.workers["kassa1"]
        worker.client.deadline = 0.5
        status, body = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "u1", "amount": 700})
        assert body["status"] in ("unknown", "error")
        if body["status"] == "unknown":
            assert "unknown" in body["error"]
            await asyncio.sleep(1.5)  # the terminal finishes its sale meanwhile
            worker.client.deadline = 30.0
            s.terminals["kassa1"].config.card_delay = 0.0
            _, other = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "u2", "amount": 800})
            assert other["status"] == "approved"
            _, body = await s.get("/v1/commands/u1")
        assert body["status"] == "error" and body["journal_state"] == "resolved"
        assert body["recovery"]["outcome"] in ("reversed", "not_charged", "reversal_approved")
        worker.client.deadline = 30.0
        s.terminals["kassa1"].config.card_delay = 0.0
        _, settlement = await s.post("/v1/terminals/kassa1/Settlement", {})
        assert settlement["totals"]["sale_amount"] in (0, 800)
        assert 700 not in (settlement["totals"]["sale_amount"], settlement["totals"]["sale_amount"] - 800)


async def test_commands_survive_a_restart_of_the_service(tmp_path):
    journal = str(tmp_path / "ecr.sqlite3")
    async with in_process(journal=journal) as s:
        _, first = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "r1", "amount": 1500})
    assert (tmp_path / "ecr.commands.sqlite3").exists()
    async with in_process(journal=journal) as s:
        status, again = await s.get("/v1/commands/r1")
        assert status == 200 and again["status"] == "approved" and again["rrn"] == first["rrn"]
        assert again["slip"] == first["slip"]
        status, retry = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "r1", "amount": 1500})
        assert status == 200 and retry["rrn"] == first["rrn"]  # ran nothing: the new terminal saw no sale
        assert s.terminals["kassa1"].last_result is None


async def test_one_log_line_per_command_and_never_a_full_card_number(tmp_path):
    log_file = tmp_path / "serve.log"
    async with in_process(log_file=str(log_file)) as s:
        s.terminals["kassa1"].cards.present("5100000000000008")
        await s.post("/v1/terminals/kassa1/Pay", {"command_id": "g1", "amount": 990})
        await s.post("/v1/terminals/kassa1/Pay", {"command_id": "g1", "amount": 990})  # a retry runs nothing
        refused, body = await s.post("/v1/terminals/kassa1/Settlement", {"command_id": "4111111111111111"})
        assert (refused, body["field"]) == (422, "command_id") and "4111111111111111" not in str(body)
        await s.post("/v1/terminals/kassa1/Settlement", {"command_id": "day-1"})
    lines = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert [line["operation"] for line in lines] == ["Pay", "Settlement"]
    pay = lines[0]
    assert pay["command_id"] == "g1" and pay["terminal"] == "kassa1" and pay["amount"] == 990
    assert pay["status"] == "approved" and pay["card"] == "510000******0008" and pay["duration_ms"] >= 0
    text = log_file.read_text(encoding="utf-8")
    assert "5100000000000008" not in text and "4111111111111111" not in text
    assert lines[1]["command_id"] == "day-1"


async def test_basic_auth_guards_everything_but_health():
    async with in_process(auth=("kassa", "s3cret")) as s:
        status, body = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "x1", "amount": 100})
        assert status == 401 and body["field"] == "authorization"
        # /Execute answers refusals with HTTP 200 as KKM Server does, but not this one: no command is read.
        status, body = await s.post("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "x0", "Amount": 1})
        assert status == 401 and body["field"] == "authorization" and "Status" not in body
        assert s.service.store.get("x0") is None
        status, _ = await s.get("/health")
        assert status == 200
        wrong = "Basic " + base64.b64encode(b"kassa:guess").decode()
        status, _ = await s.get("/v1/terminals", Authorization=wrong)
        assert status == 401
        right = "Basic " + base64.b64encode(b"kassa:s3cret").decode()
        status, body = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "x1", "amount": 100}, Authorization=right)
        assert status == 200 and body["status"] == "approved"
        status, _ = await s.post("/Execute", {"Command": "GetRezult", "IdCommand": "x1"}, Authorization=right)
        assert status == 200


def test_another_address_than_loopback_needs_authentication():
    terminal = (TerminalSettings("kassa1", "virtual://x"),)
    with pytest.raises(ConfigError, match="refusing to listen on 0.0.0.0: anything but 127.0.0.1 needs authentication"):
        ServiceConfig(terminals=terminal, journal=":memory:", host="0.0.0.0")
    assert ServiceConfig(terminals=terminal, journal=":memory:", host="0.0.0.0", auth=("a", "b")).host == "0.0.0.0"
    assert "b" not in repr(ServiceConfig(terminals=terminal, journal=":memory:", host="::1", auth=("a", "b")))


def test_the_openapi_document_has_every_route_the_application_serves_and_no_other():
    service = Service(ServiceConfig(terminals=(TerminalSettings("kassa1", "virtual://x"),), journal=":memory:"))
    app = make_app(service)
    served = {(route.resource.canonical, route.method.lower()) for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None}
    document = openapi_document()
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == documented
    assert document["openapi"].startswith("3.1")
    post = document["paths"]["/v1/terminals/{name}/{operation}"]["post"]
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert {"Pay", "ReturnPayment", "CancelPayment", "EmergencyReversal"} <= set(examples)
    json.dumps(document)  # serialisable as served


async def test_openapi_is_served():
    async with in_process() as s:
        status, document = await s.get("/openapi.json")
        assert status == 200 and "/Execute" in document["paths"]


async def test_an_unreachable_terminal_is_an_error_that_says_why_and_nothing_is_sent(tmp_path):
    config = ServiceConfig(terminals=(TerminalSettings("kassa1", f"serial://{tmp_path}/no-such-tty", lock_wait=1.0),),
                           journal=":memory:")
    service = Service(config)
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(make_app(service))) as client:
        response = await client.get("/v1/terminals")
        for _ in range(50):
            terminal = (await response.json())["terminals"][0]
            if terminal["state"] == "idle":
                break
            await asyncio.sleep(0.02)
            response = await client.get("/v1/terminals")
        assert terminal["connected"] is False and "cannot open the terminal" in terminal["last_error"]
        response = await client.post("/v1/terminals/kassa1/Pay", json={"command_id": "n1", "amount": 100})
        body = await response.json()
        assert response.status == 200 and body["status"] == "error" and "no-such-tty" in body["error"]
        assert "nothing was sent" in body["error"] and body["journal_state"] == "resolved"
