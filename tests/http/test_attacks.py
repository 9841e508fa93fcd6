"""The service attacked the way a real cash register and a real network would: ambiguous JSON,
retries that land on another terminal, a card number where none belongs, clients that hang up or
dribble, a store write that fails. Each test is one finding of that attack (in process, fast)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest

from posbridge.emulator.config import TerminalConfig
from posbridge.http import app, native
from posbridge.http.config import ServiceConfig, TerminalSettings
from posbridge.journal import JournalFault

from tests.http.support import InProcess, in_process

PAN = "4111111111111111"


def _nothing_stored(s: InProcess, *command_ids: str) -> None:
    for command_id in command_ids:
        assert s.service.store.get(command_id) is None, f"{command_id} was stored"
    for name, terminal in s.terminals.items():
        assert terminal.last_result is None, f"{name} was sent something"


@pytest.mark.parametrize(("path", "raw", "field"), [
    ("/v1/terminals/kassa1/Pay", b'{"command_id": "d1", "amount": 100, "amount": 1000000}', "amount"),
    ("/v1/terminals/kassa1/Pay", b'{"command_id": "d1", "command_id": "d2", "amount": 100}', "command_id"),
    ("/Execute", b'{"Command": "PayByPaymentCard", "IdCommand": "d1", "Amount": 1, "Amount": 10000}', "Amount"),
], ids=["native amount", "native command_id", "kkm Amount"])
async def test_a_key_given_twice_is_refused_naming_it(path, raw, field):
    # json.loads keeps the last value: 10,000.00 RUB charged where a proxy or a log saw 1.00.
    async with in_process() as s:
        status, body = await s.post(path, raw=raw)
        assert status == (200 if path == "/Execute" else 400), body
        assert body.get("field", body.get("Field")) == field
        _nothing_stored(s, "d1", "d2")


async def test_json_nested_too_deep_is_400_not_a_500():
    async with in_process() as s:
        status, body = await s.post("/v1/terminals/kassa1/Pay", raw=b'{"command_id": ' + b"[" * 60_000)
        assert (status, body["field"]) == (400, "body"), body
        _nothing_stored(s)


@pytest.mark.parametrize(("path", "raw", "field"), [
    ("/v1/terminals/kassa1/Pay", b'{"command_id": "s\\ud800", "amount": 100}', "command_id"),
    ("/v1/terminals/kassa1/Pay", b'{"command_id": "s1", "amount": 100, "receipt_number": "\\udfff"}',
     "receipt_number"),
    ("/Execute", b'{"Command": "PayByPaymentCard", "IdCommand": "s\\ud800", "Amount": 1}', "IdCommand"),
], ids=["command_id", "receipt_number", "IdCommand"])
async def test_a_lone_surrogate_is_400_naming_the_field_not_a_500(path, raw, field):
    async with in_process() as s:
        status, body = await s.post(path, raw=raw)
        assert status == (200 if path == "/Execute" else 400), body
        assert body.get("field", body.get("Field")) == field
        _nothing_stored(s, "s1")


async def test_a_kkm_retry_with_num_device_0_while_its_terminal_is_busy_gets_the_first_outcome():
    # NumDevice 0 means "the first idle terminal": the retry of a payment still running on kassa1
    # would pick kassa2 and be told 409 (another request) — a register then asks for the card again.
    options = {"config": TerminalConfig(card_delay=0.3)}
    async with in_process(("kassa1", "kassa2"), terminal_options=options) as s:
        body = {"Command": "PayByPaymentCard", "IdCommand": "nd1", "Amount": 12.5, "NumDevice": 0}
        first = asyncio.ensure_future(s.post("/Execute", body))
        await asyncio.sleep(0.1)
        status, retry = await s.post("/Execute", body)
        status_first, answer = await first
        assert (status_first, answer["Status"]) == (200, 0), answer
        assert (status, retry["Status"]) == (200, 0), retry
        assert retry["RRNCode"] == answer["RRNCode"] and retry["NumDevice"] == answer["NumDevice"] == 1
        assert s.terminals["kassa2"].last_result is None  # charged once, on kassa1


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v1/terminals/kassa1/Pay", {"command_id": "p1", "amount": 100, PAN: 1}),
    ("POST", f"/v1/terminals/{PAN}/Pay", {"command_id": "p1", "amount": 100}),
    ("GET", f"/v1/commands/{PAN}x", None),
    ("GET", f"/v1/{PAN}", None),
    ("POST", "/Execute", {"Command": "PayByPaymentCard", "IdCommand": "p1", "Amount": PAN + "x"}),
    ("POST", "/Execute", {"Command": PAN, "IdCommand": "p1"}),
    ("POST", "/Execute", {"Command": "PayByPaymentCard", "IdCommand": "4111 1111 1111 1111", "Amount": 1}),
], ids=["unknown field", "terminal", "command id", "path", "Amount", "Command", "IdCommand"])
async def test_an_error_answer_never_echoes_a_full_card_number(method, path, body):
    async with in_process() as s:
        if method == "GET":
            status, answer = await s.get(path)
        else:
            status, answer = await s.post(path, body)
        if path == "/Execute":  # KKM refuses in the body, HTTP 200
            assert status == 200 and answer["Status"] in (2, 3), answer
        else:
            assert 400 <= status < 500
        assert PAN not in json.dumps(answer, ensure_ascii=False).replace(" ", "")
        _nothing_stored(s, "p1")


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/terminals/kassa1/Pay", {"command_id": "p1", "amount": 100, "receipt_number": PAN}, "receipt_number"),
    ("/v1/terminals/kassa1/ReturnPayment", {"command_id": "p1", "amount": 100,
                                            "universal_id": f"CN:{PAN};RN:1;RRN:123456789012;AC:1"}, "universal_id"),
    ("/Execute", {"Command": "ReturnPaymentByPaymentCard", "IdCommand": "p1", "Amount": 1,
                  "UniversalID": f"CN:{PAN};RRN:123456789012"}, "UniversalID"),
], ids=["receipt_number", "universal_id", "UniversalID"])
async def test_a_full_card_number_in_a_stored_field_is_refused(path, body, field):
    # These fields are stored, echoed in every answer and in universal_id: a card number there
    # would reach the command store and the cash register's database.
    async with in_process() as s:
        status, answer = await s.post(path, body)
        assert status == (200 if path == "/Execute" else 422), answer
        assert answer.get("field", answer.get("Field")) == field, answer
        assert PAN not in json.dumps(answer)
        _nothing_stored(s, "p1")


@pytest.mark.parametrize("amount", ["1e3", "١٢", "1_000", "0x10", "10.5.0", "+5"])
async def test_a_kkm_amount_text_is_a_plain_decimal_or_refused(amount):
    # "1e3" read as 1000 roubles, Arabic-Indic digits as 12: Decimal() accepts both; a register never
    # means them.
    async with in_process() as s:
        status, answer = await s.post("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "a1", "Amount": amount})
        assert (status, answer["Status"], answer.get("Field")) == (200, 2, "Amount"), answer
        _nothing_stored(s, "a1")


async def test_a_kkm_amount_text_with_a_comma_or_spaces_is_still_read():
    async with in_process() as s:
        _, answer = await s.post("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "a1", "Amount": " 10,50 "})
        assert answer["Status"] == 0 and answer["Amount"] == 10.5


@pytest.mark.parametrize("command_id", [".", ".."])
async def test_a_command_id_that_cannot_be_read_back_is_refused(command_id):
    # GET /v1/commands/.. is normalised to /v1/ by every URL library: the command could never be read.
    async with in_process() as s:
        status, answer = await s.post("/v1/terminals/kassa1/Pay", {"command_id": command_id, "amount": 100})
        assert (status, answer["field"]) == (422, "command_id")


async def test_a_failing_command_store_write_does_not_stop_the_terminals_queue():
    # Disk full on the store's "finished" write killed the terminal's worker: every later command
    # on it was accepted and then waited forever.
    async with in_process() as s:
        store = s.service.store
        finish = store.finish
        failures = [JournalFault(store.path, "full", "command store: database or disk is full")]

        def finish_once_failing(*args, **kwargs):
            if failures:
                raise failures.pop()
            return finish(*args, **kwargs)

        store.finish = finish_once_failing  # type: ignore[method-assign]
        _, first = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "w1", "amount": 100})
        assert first["status"] == "approved"  # from the journal, which holds the truth
        status, second = await asyncio.wait_for(
            s.post("/v1/terminals/kassa1/Pay", {"command_id": "w2", "amount": 200}), 10)
        assert status == 200 and second["status"] == "approved"


async def test_a_client_that_hangs_up_mid_operation_leaves_it_finished_and_journaled():
    async with in_process(terminal_options={"config": TerminalConfig(card_delay=0.3)}) as s:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(s.post("/v1/terminals/kassa1/Pay", {"command_id": "h1", "amount": 100}), 0.1)
        for _ in range(100):
            _, view = await s.get("/v1/commands/h1")
            if view["status"] != "running":
                break
            await asyncio.sleep(0.02)
        assert view["status"] == "approved" and view["journal_state"] == "done"
        assert s.terminals["kassa1"].last_result is not None


def _raw_request(s: InProcess, head: bytes) -> socket.socket:
    server = s.client.server
    sock = socket.create_connection((server.host, server.port))
    sock.sendall(head)
    return sock


async def test_a_client_that_hangs_up_while_sending_the_body_is_not_an_internal_error(caplog):
    caplog.set_level(logging.INFO, logger="posbridge.http")
    async with in_process() as s:
        sock = _raw_request(s, b"POST /v1/terminals/kassa1/Pay HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"command_id\"")
        await asyncio.sleep(0.1)
        sock.close()
        await asyncio.sleep(0.2)
        _nothing_stored(s)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("posbridge.http")]
    assert errors == [], [r.getMessage() for r in errors]


@pytest.mark.parametrize(("path", "field"), [("/v1/terminals/kassa1/Pay", b'"field": "body"'),
                                           ("/Execute", b'"Field": "body"')], ids=["native", "kkm"])
async def test_a_body_sent_too_slowly_is_408_the_connection_closed_and_nothing_happens(monkeypatch, path, field):
    monkeypatch.setattr(native, "BODY_TIMEOUT", 0.3)
    async with in_process() as s:
        sock = _raw_request(s, f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode()
                            + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            answer = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
            closed = await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)  # b"": hung up, no lingering
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408") and field in answer, answer
        assert closed == b""
        _nothing_stored(s)


@pytest.mark.parametrize("head", [b"", b"POST /v1/terminals/kassa1/Pay HTTP/1.1\r\nHost: x\r\nContent-Ty"],
                         ids=["nothing sent", "headers never finished"])
async def test_a_connection_without_a_whole_request_is_closed_after_the_idle_timeout(monkeypatch, head):
    # aiohttp has no header timeout: without one a client sending headers a byte a minute (or
    # nothing) held its connection for aiohttp's keep-alive default, an hour.
    monkeypatch.setattr(app, "IDLE_TIMEOUT", 0.5)
    async with in_process() as s:
        sock = _raw_request(s, head)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            closed = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        finally:
            sock.close()
        assert closed == b"" and 0.4 < loop.time() - started < 3
        _nothing_stored(s)


async def test_a_payment_that_takes_longer_than_the_idle_timeout_is_answered_on_its_connection(monkeypatch):
    monkeypatch.setattr(app, "IDLE_TIMEOUT", 0.3)
    async with in_process(terminal_options={"config": TerminalConfig(card_delay=0.8)}) as s:
        status, body = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "i1", "amount": 100})
        assert (status, body["status"]) == (200, "approved"), body


async def test_the_log_keeps_the_rrn_the_register_reconciles_by(tmp_path):
    # A 12-digit RRN was masked like a card number (411020******7330): the log could not be
    # matched with the bank's report. The RRN is the terminal's field, never a card number.
    log_file = tmp_path / "serve.log"
    async with in_process(log_file=str(log_file)) as s:
        _, answer = await s.post("/v1/terminals/kassa1/Pay", {"command_id": "l1", "amount": 100})
    line = json.loads(log_file.read_text(encoding="utf-8").splitlines()[0])
    assert len(answer["rrn"]) == 12 and line["rrn"] == answer["rrn"]


async def test_a_tls_connection_that_never_finishes_its_handshake_is_closed_after_the_idle_timeout(
        monkeypatch, tmp_path):
    # The idle clock (aiohttp's keep-alive timer) starts once the TLS handshake is done; a client
    # that connects and says nothing held the connection for asyncio's handshake limit, 60 s.
    from tests.http.processes import self_signed_certificate

    monkeypatch.setattr(app, "IDLE_TIMEOUT", 0.5)
    cert, key = self_signed_certificate(tmp_path)
    config = ServiceConfig(terminals=(TerminalSettings("kassa1", f"virtual://tls-idle-{tmp_path.name}"),),
                           journal=str(tmp_path / "ecr.sqlite3"), port=0, tls=(str(cert), str(key)))
    loop = asyncio.get_running_loop()
    where: asyncio.Future[str] = loop.create_future()
    stop = asyncio.Event()
    serving = loop.create_task(app.serve(config, ready=where.set_result, stop=stop))
    try:
        port = int((await asyncio.wait_for(where, 10)).rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        started = loop.time()
        try:
            closed = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        finally:
            sock.close()
        assert closed == b"" and loop.time() - started < 3
    finally:
        stop.set()
        await asyncio.wait_for(serving, 15)
