"""The bad-input table: each case a 4xx JSON answer naming the field, and nothing stored, journaled
or sent (the terminal saw no request at all)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.http.support import InProcess, in_process

UID = "CN:411111******1111;RN:1;RRN:123456789012;AC:123456"


@dataclass(frozen=True)
class Case:
    path: str
    body: Any
    status: int
    field: str
    raw: bytes | None = None


NATIVE = {
    "malformed JSON": Case("/v1/terminals/kassa1/Pay", None, 400, "body", raw=b'{"command_id": "b1", "amount": 1'),
    "not UTF-8": Case("/v1/terminals/kassa1/Pay", None, 400, "body", raw=b'{"command_id": "\xff"}'),
    "body not an object": Case("/v1/terminals/kassa1/Pay", [1, 2], 400, "body"),
    "NaN amount": Case("/v1/terminals/kassa1/Pay", None, 400, "body", raw=b'{"command_id": "b1", "amount": NaN}'),
    "unknown operation": Case("/v1/terminals/kassa1/Refund", {"command_id": "b1", "amount": 100}, 404, "operation"),
    "unknown terminal": Case("/v1/terminals/kassa9/Pay", {"command_id": "b1", "amount": 100}, 404, "terminal"),
    "unknown path": Case("/v1/pay", {"command_id": "b1", "amount": 100}, 404, "path"),
    "amount 0": Case("/v1/terminals/kassa1/Pay", {"command_id": "b1", "amount": 0}, 422, "amount"),
    "card number as command id": Case("/v1/terminals/kassa1/Pay", {"command_id": "pay-4111111111111111",
                                                                   "amount": 100}, 422, "command_id"),
    "negative amount": Case("/v1/terminals/kassa1/Pay", {"command_id": "b1", "amount": -100}, 422, "amount"),
    "fractional kopecks": Case("/v1/terminals/kassa1/Pay", {"command_id": "b1", "amount": 150.5}, 422, "amount"),
    "roubles where kopecks are expected": Case("/v1/terminals/kassa1/Pay", {"command_id": "b1", "amount": 150.00},
                                               422, "amount"),
    "amount over 12 digits": Case("/v1/terminals/kassa1/Pay", {"command_id": "b1", "amount": 10**12}, 422, "amount"),
    "amount as text": Case("/v1/terminals/kassa1/Pay", {"command_id": "b1", "amount": "100"}, 422, "amount"),
    "amount true": Case("/v1/terminals/kassa1/Pay", {"command_id": "b1", "amount": True}, 422, "amount"),
    "missing amount": Case("/v1/terminals/kassa1/Pay", {"command_id": "b1"}, 422, "amount"),
    "missing command_id": Case("/v1/terminals/kassa1/Pay", {"amount": 100}, 422, "command_id"),
    "command_id with a slash": Case("/v1/terminals/kassa1/Pay", {"command_id": "a/b", "amount": 100}, 422,
                                    "command_id"),
    "command_id too long": Case("/v1/terminals/kassa1/Pay", {"command_id": "x" * 65, "amount": 100}, 422,
                                "command_id"),
    "bad currency": Case("/v1/terminals/kassa1/Pay", {"command_id": "b1", "amount": 100, "currency": 999999}, 422,
                         "currency"),
    "unknown field": Case("/v1/terminals/kassa1/Pay", {"command_id": "b1", "ammount": 100}, 422, "ammount"),
    "ReturnPayment without a reference": Case("/v1/terminals/kassa1/ReturnPayment",
                                              {"command_id": "b1", "amount": 100}, 422, "rrn"),
    "CancelPayment without a reference": Case("/v1/terminals/kassa1/CancelPayment",
                                              {"command_id": "b1", "amount": 100}, 422, "rrn"),
    "AuthConfirmation without a reference": Case("/v1/terminals/kassa1/AuthConfirmation",
                                                 {"command_id": "b1", "amount": 100}, 422, "rrn"),
    "CancelAuthorisation without a reference": Case("/v1/terminals/kassa1/CancelAuthorisation",
                                                    {"command_id": "b1", "amount": 100}, 422, "rrn"),
    "universal_id without an RRN": Case("/v1/terminals/kassa1/ReturnPayment",
                                        {"command_id": "b1", "amount": 100, "universal_id": "CN:4111;AC:1"}, 422,
                                        "universal_id"),
    "universal_id and another rrn": Case("/v1/terminals/kassa1/ReturnPayment",
                                         {"command_id": "b1", "amount": 100, "universal_id": UID, "rrn": "999"}, 422,
                                         "rrn"),
    "bad rrn": Case("/v1/terminals/kassa1/ReturnPayment", {"command_id": "b1", "amount": 100, "rrn": "12-34"}, 422,
                    "rrn"),
    "bad auth_code": Case("/v1/terminals/kassa1/CancelPayment",
                          {"command_id": "b1", "amount": 100, "rrn": "1", "auth_code": "1234567"}, 422, "auth_code"),
    "a reference where none is taken": Case("/v1/terminals/kassa1/Pay",
                                            {"command_id": "b1", "amount": 100, "rrn": "123"}, 422, "rrn"),
    "partial cancellation": Case("/v1/terminals/kassa1/CancelPayment",
                                 {"command_id": "b1", "amount": 100, "original_amount": 200, "rrn": "1"}, 422,
                                 "amount"),
    "Settlement with an amount": Case("/v1/terminals/kassa1/Settlement", {"amount": 100}, 422, "amount"),
    "detailed for Pay": Case("/v1/terminals/kassa1/Pay", {"command_id": "b1", "amount": 100, "detailed": True},
                             422, "detailed"),
    "negative wait": Case("/v1/terminals/kassa1/Pay", {"command_id": "b1", "amount": 100, "wait": -1}, 422, "wait"),
    "EmergencyReversal with nothing to reverse": Case("/v1/terminals/kassa1/EmergencyReversal",
                                                      {"command_id": "b1"}, 422, "operation"),
    "receipt number with ';'": Case("/v1/terminals/kassa1/Pay",
                                    {"command_id": "b1", "amount": 100, "receipt_number": "1;RRN:2"}, 422,
                                    "receipt_number"),
}

KKM = {
    "KKM malformed JSON": Case("/Execute", None, 400, "body", raw=b'{"Command": "PayByPaymentCard",'),
    "KKM unknown command": Case("/Execute", {"Command": "PayByCash", "IdCommand": "k1", "Amount": 1}, 404, "Command"),
    "KKM unknown device": Case("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "k1", "NumDevice": 7,
                                            "Amount": 1}, 404, "NumDevice"),
    "KKM fractional kopecks": Case("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "k1",
                                                "Amount": 10.005}, 422, "Amount"),
    "KKM amount 0": Case("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "k1", "Amount": 0}, 422, "Amount"),
    "KKM negative amount": Case("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "k1", "Amount": -1}, 422,
                                "Amount"),
    "KKM amount over 12 digits": Case("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "k1",
                                                   "Amount": 10_000_000_000.00}, 422, "Amount"),
    "KKM missing amount": Case("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "k1"}, 422, "Amount"),
    "KKM card number as IdCommand": Case("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "4111111111111111",
                                                      "Amount": 1}, 422, "IdCommand"),
    "KKM card number given": Case("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "k1", "Amount": 1,
                                               "CardNumber": "4111111111111111"}, 422, "CardNumber"),
    "KKM return without a reference": Case("/Execute", {"Command": "ReturnPaymentByPaymentCard", "IdCommand": "k1",
                                                        "Amount": 1}, 422, "RRNCode"),
    "KKM bad Timeout": Case("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "k1", "Amount": 1,
                                         "Timeout": -5}, 422, "Timeout"),
    "KKM body over the limit": Case("/Execute", None, 413, "body",
                                    raw=b'{"Command": "PayByPaymentCard", "IdCommand": "k1", "Amount": 1, "x": "'
                                    + b"a" * 70_000 + b'"}'),
}


async def _nothing_happened(s: InProcess) -> None:
    worker = s.service.workers["kassa1"]
    assert s.service.journal.ecr.last(worker.client.journal_key) is None, "something was journaled"
    assert s.terminals["kassa1"].last_result is None, "the terminal was sent something"
    assert s.terminals["kassa1"].state_history.count("request_received") == 0
    for command_id in ("b1", "k1"):
        assert s.service.store.get(command_id) is None, "the command was stored"


@pytest.mark.parametrize("case", list(NATIVE.values()), ids=list(NATIVE))
async def test_native_bad_input_is_4xx_naming_the_field_and_nothing_happens(case: Case):
    async with in_process() as s:
        status, body = await s.post(case.path, case.body, raw=case.raw)
        assert (status, body["field"]) == (case.status, case.field), body
        assert body["status"] == "error" and body["error"]
        await _nothing_happened(s)


@pytest.mark.parametrize("case", list(KKM.values()), ids=list(KKM))
async def test_kkm_bad_input_is_refused_in_the_body_naming_the_field_and_nothing_happens(case: Case):
    # HTTP 200 as KKM Server: its clients read Status/Error; ``case.status`` is the native API's code.
    async with in_process() as s:
        status, body = await s.post(case.path, case.body, raw=case.raw)
        assert (status, body.get("Field", "body")) == (200, case.field), body
        assert body["Status"] == (3 if case.status == 404 else 2)
        assert body["Error"].startswith(case.field)
        assert "4111111111111111" not in str(body)
        await _nothing_happened(s)


async def test_an_unknown_command_id_is_404_naming_it():
    async with in_process() as s:
        status, body = await s.get("/v1/commands/never-sent")
        assert (status, body["field"]) == (404, "command_id")


async def test_a_wrong_method_is_405_naming_it():
    async with in_process() as s:
        status, body = await s.get("/v1/terminals/kassa1/Pay")
        assert (status, body["field"]) == (405, "method")


async def test_a_body_over_the_limit_is_413():
    async with in_process() as s:
        status, body = await s.post("/v1/terminals/kassa1/Pay", None, raw=b'{"x": "' + b"a" * 70_000 + b'"}')
        assert (status, body["field"]) == (413, "body")
        await _nothing_happened(s)
