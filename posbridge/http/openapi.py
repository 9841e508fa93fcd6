"""``GET /openapi.json``: the whole HTTP API as a hand-written OpenAPI 3.1 document, with examples.

Written by hand, not generated: the words a 1C developer reads (what ``status`` values mean, which
fields to store) matter more than a schema a generator could infer. A test checks that every route
the application serves is here and nothing else is.
"""

from __future__ import annotations

from typing import Any

import posbridge
from posbridge.http.kkm import KKM_COMMANDS
from posbridge.http.operations import OPERATIONS

__all__ = ["openapi_document"]

_UID = "CN:411111******1111;RN:26;RRN:512345678901;AC:123456"
_SLIP = ("        ТЕСТ БАНК\nТЕРМИНАЛ:               00344224\n             ОПЛАТА\nСУММА:               150.00 RUB\n"
         "VISA            411111******1111\nRRN:                512345678901\n            ОДОБРЕНО\n\n"
         "         КОПИЯ КЛИЕНТА\n[cut]\n        ТЕСТ БАНК\n...\n         КОПИЯ КАССИРА")


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object", "required": ["status", "field", "error"],
        "properties": {
            "status": {"const": "error"},
            "field": {"type": "string", "description": "the request field (or body, path, terminal, operation, "
                                                       "command_id, authorization) that is wrong"},
            "error": {"type": "string", "description": "one line for people"},
        },
        "example": {"status": "error", "field": "amount", "error": "amount has fractional kopecks: 150.5 "
                                                                   "(minor units are whole)"},
    }


def _request_schema() -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False,
        "properties": {
            "command_id": {"type": "string", "maxLength": 64, "pattern": "^[^\\s/\\\\?#%]{1,64}$",
                           "description": "idempotency key, required for operations that move money: the same "
                                          "command_id with the same body returns the first outcome and runs "
                                          "nothing; with another body it is 409. Store it before sending."},
            "amount": {"type": "integer", "minimum": 1, "maximum": 999999999999,
                       "description": "integer minor units (kopecks): 15000 is 150.00 RUB"},
            "currency": {"type": "integer", "default": 643, "description": "ISO 4217 numeric code"},
            "rrn": {"type": "string", "pattern": "^[0-9A-Za-z]{1,12}$",
                    "description": "the original operation's RRN (ReturnPayment, CancelPayment, AuthConfirmation, "
                                   "CancelAuthorisation; EmergencyReversal of that operation)"},
            "auth_code": {"type": "string", "pattern": "^[0-9A-Za-z ]{1,6}$"},
            "universal_id": {"type": "string", "description": "the one reference the answer gave "
                                                               "(KKM's UniversalID): carries the RRN and auth code"},
            "receipt_number": {"type": "string", "maxLength": 32, "description": "the register's receipt number, "
                                                                                 "echoed in universal_id"},
            "original_amount": {"type": "integer", "description": "CancelPayment: the original amount (1C's "
                                                                  "AmountOriginalTransaction); must equal amount"},
            "detailed": {"type": "boolean", "description": "TerminalReport: list every operation"},
            "wait": {"type": "number", "minimum": 0, "maximum": 3600,
                     "description": "seconds to wait for the outcome; 0 answers at once with status running "
                                    "(then GET /v1/commands/{command_id}); default: until it is over"},
        },
    }


def _command_schema() -> dict[str, Any]:
    return {
        "type": "object", "required": ["command_id", "terminal", "operation", "status"],
        "properties": {
            "command_id": {"type": "string"},
            "terminal": {"type": "string"},
            "operation": {"type": "string", "enum": list(OPERATIONS)},
            "status": {"enum": ["approved", "declined", "running", "unknown", "error"],
                       "description": "approved / declined: the terminal's definite answer. running: queued or "
                                      "in progress (queued, position). error: it did not happen (nothing sent, "
                                      "or recovery proved nothing was charged: see recovery). unknown: the outcome "
                                      "was lost and recovery has not resolved it yet, or a person must check the "
                                      "settlement report (recovery.outcome refund_needed). Never report unknown "
                                      "as a failure to the customer: ask again."},
            "response_code": {"type": "string"}, "response_text": {"type": "string"},
            "host_code": {"type": ["string", "null"], "description": "the acquirer's own code"},
            "terminal_status": {"type": "string", "description": "the terminal's status word (approved, declined, "
                                                                 "aborted, no_connection...)"},
            "amount": {"type": ["integer", "null"]}, "currency": {"type": ["integer", "null"]},
            "rrn": {"type": ["string", "null"]}, "auth_code": {"type": ["string", "null"]},
            "card": {"type": ["string", "null"], "description": "masked card number (first 6, last 4)"},
            "card_scheme": {"type": ["string", "null"]},
            "universal_id": {"type": ["string", "null"], "description": "store it: the reference for a later "
                                                                        "ReturnPayment or CancelPayment"},
            "transaction_id": {"type": ["string", "null"]},
            "totals": {"type": ["object", "null"], "description": "Settlement and TerminalReport: counts and sums"},
            "slip": {"type": "string", "description": "customer and cashier copies separated by a [cut] line; no "
                                                      "control characters; print it (a decline has one too)"},
            "error": {"type": ["string", "null"]},
            "recovery": {"type": ["object", "null"], "description": "how recovery resolved a lost outcome: "
                                                                    "outcome (reversed, not_charged, not_sent, "
                                                                    "refund_needed...) and note"},
            "request": {"type": "object", "description": "the fields the command was accepted with"},
            "journal_entry": {"type": ["integer", "null"]}, "journal_state": {"type": ["string", "null"]},
            "accepted_at": {"type": "string"}, "finished_at": {"type": ["string", "null"]},
            "queued": {"type": "boolean"}, "position": {"type": ["integer", "null"]},
        },
    }


_PAY_ANSWER = {
    "command_id": "1c-7f3a2b10", "terminal": "kassa1", "operation": "Pay", "status": "approved",
    "response_code": "00", "response_text": "ОДОБРЕНО", "terminal_status": "approved", "amount": 15000,
    "currency": 643, "rrn": "512345678901", "auth_code": "123456", "card": "411111******1111",
    "card_scheme": "VISA", "universal_id": _UID, "slip": _SLIP, "error": None, "recovery": None,
    "journal_entry": 41, "journal_state": "done", "request": {"amount": 15000, "currency": 643},
}
_EXAMPLES = {
    "Pay": {"command_id": "1c-7f3a2b10", "amount": 15000},
    "ReturnPayment": {"command_id": "1c-7f3a2b11", "amount": 5000, "universal_id": _UID},
    "CancelPayment": {"command_id": "1c-7f3a2b12", "amount": 15000, "rrn": "512345678901", "auth_code": "123456"},
    "Authorisation": {"command_id": "1c-7f3a2b13", "amount": 30000},
    "AuthConfirmation": {"command_id": "1c-7f3a2b14", "amount": 25000, "universal_id": _UID},
    "EmergencyReversal": {"command_id": "1c-7f3a2b15"},
    "Settlement": {"command_id": "1c-day-2026-11-01"},
    "TerminalReport": {"detailed": True},
    "Pay, asynchronous": {"command_id": "1c-7f3a2b16", "amount": 15000, "wait": 0},
}


def _native_paths() -> dict[str, Any]:
    error = {"$ref": "#/components/schemas/Error"}
    command = {"$ref": "#/components/schemas/Command"}

    def err(text: str) -> dict[str, Any]:
        return {"description": text, "content": {"application/json": {"schema": error}}}

    return {
        "/v1/terminals/{name}/{operation}": {"post": {
            "summary": "Run an operation on a terminal (1C's vocabulary)",
            "description": "Operations: " + "; ".join(f"{k.name}: {k.summary}" for k in OPERATIONS.values())
                           + ". Operations on one terminal run one after the other from a bounded queue.",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
                 "description": "the terminal's name (GET /v1/terminals)"},
                {"name": "operation", "in": "path", "required": True, "schema": {"enum": list(OPERATIONS)}},
            ],
            "requestBody": {"content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/OperationRequest"},
                "examples": {name: {"value": value} for name, value in _EXAMPLES.items()}}}},
            "responses": {
                "200": {"description": "the outcome (approved, declined, error, unknown)",
                        "content": {"application/json": {"schema": command, "examples": {
                            "approved": {"value": _PAY_ANSWER},
                            "declined": {"value": {**_PAY_ANSWER, "status": "declined", "response_code": "116",
                                                   "response_text": "ОТКЛОНЕНО: НЕДОСТАТОЧНО СРЕДСТВ",
                                                   "terminal_status": "declined", "rrn": None,
                                                   "universal_id": None, "auth_code": None}},
                        }}}},
                "202": {"description": "still running (wait elapsed, or wait 0): poll GET /v1/commands/{command_id}",
                        "content": {"application/json": {"schema": command, "example": {
                            "command_id": "1c-7f3a2b16", "terminal": "kassa1", "operation": "Pay",
                            "status": "running", "queued": False, "position": None}}}},
                "400": err("the body is not a JSON object (field: body), or names a key twice (field: that key)"),
                "408": err("the body took more than 10 s to arrive (field: body); the connection is closed"),
                "401": err("authentication required"),
                "404": err("no such terminal (field: terminal) or operation (field: operation)"),
                "409": err("the command_id was used for another request (field: command_id)"),
                "422": err("a field the operation cannot take: amount 0, negative, fractional kopecks, over 12 "
                           "digits; a missing rrn; an unknown field"),
                "503": err("the terminal's queue is full (field: terminal; Retry-After)"),
            },
        }},
        "/v1/commands/{command_id}": {"get": {
            "summary": "A command's state and outcome, from the journal (survives a restart)",
            "parameters": [{"name": "command_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the command", "content": {"application/json": {
                "schema": command, "examples": {
                    "approved": {"value": _PAY_ANSWER},
                    "resolved by recovery": {"value": {
                        "command_id": "1c-7f3a2b17", "terminal": "kassa1", "operation": "Pay", "status": "error",
                        "error": "the outcome was lost; recovery reversed it: nothing is charged",
                        "recovery": {"outcome": "reversed", "note": "the outcome was lost; recovery reversed it: "
                                                                   "nothing is charged"},
                        "journal_entry": 42, "journal_state": "resolved"}}}}}},
                "404": err("no command with this id was ever accepted (field: command_id)")},
        }},
        "/v1/terminals": {"get": {
            "summary": "Each terminal's state: idle or busy with what, its queue, unresolved operations",
            "responses": {"200": {"description": "the terminals", "content": {"application/json": {"example": {
                "terminals": [{"name": "kassa1", "port": "serial:///dev/ttyACM0", "protocol": "inpas",
                               "terminal_id": "00344224", "num_device": 1, "state": "busy", "operation": "Pay",
                               "command_id": "1c-7f3a2b10", "since": "2026-11-01T12:01:07", "connected": True,
                               "queued": 1, "queue_limit": 8, "unresolved": [], "last_error": None,
                               "last_recovery": []}]}}}}},
        }},
        "/health": {"get": {
            "summary": "The service answers (no authentication)",
            "responses": {"200": {"description": "alive", "content": {"application/json": {"example": {
                "status": "ok", "version": posbridge.__version__, "started_at": "2026-11-01T09:00:00",
                "terminals": {"kassa1": "idle"}}}}}},
        }},
        "/openapi.json": {"get": {
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
        }},
    }


def _kkm_path() -> dict[str, Any]:
    commands = [*KKM_COMMANDS, "PrintSlipOnTerminal", "GetRezult"]
    return {"/Execute": {"post": {
        "summary": "KKM Server's endpoint, for its acquiring commands",
        "description": "Commands: " + ", ".join(commands) + ". Amounts are roubles (decimals). IdCommand is the "
                       "idempotency key (without one a payment cannot be told apart from a retry). Timeout 1 runs "
                       "asynchronously: poll GetRezult with the same IdCommand. Status: 0 done, 1 running (or the "
                       "outcome is being recovered), 2 error or declined (Error says which; a decline has its "
                       "Slip), 3 command or device not found, 4 queued. Bad input is 4xx with Status 2 and Error "
                       "naming the field.",
        "requestBody": {"content": {"application/json": {"schema": {
            "type": "object", "required": ["Command"],
            "properties": {
                "Command": {"enum": commands}, "NumDevice": {"type": "integer", "default": 0},
                "IdCommand": {"type": "string", "maxLength": 64}, "Timeout": {"type": "integer"},
                "Amount": {"type": "number", "description": "roubles, at most two decimals"},
                "UniversalID": {"type": "string"}, "RRNCode": {"type": "string"},
                "AuthorizationCode": {"type": "string"}, "ReceiptNumber": {"type": "string"},
                "CardNumber": {"type": "string", "description": "must be empty: the terminal reads the card"},
                "Detailed": {"type": "boolean"}, "AmountOriginalTransaction": {"type": "number"},
            }},
            "examples": {
                "pay": {"value": {"Command": "PayByPaymentCard", "NumDevice": 0, "IdCommand": "kkm-0001",
                                  "Amount": 150.00, "ReceiptNumber": "26"}},
                "pay asynchronously": {"value": {"Command": "PayByPaymentCard", "IdCommand": "kkm-0002",
                                                 "Amount": 99.90, "Timeout": 1}},
                "poll": {"value": {"Command": "GetRezult", "IdCommand": "kkm-0002"}},
                "return": {"value": {"Command": "ReturnPaymentByPaymentCard", "IdCommand": "kkm-0003",
                                     "Amount": 50.00, "UniversalID": _UID}},
            }}}},
        "responses": {
            "200": {"description": "the answer, refusals included as KKM Server gives them: Status 2 (a body "
                                   "that is not JSON or names a key twice, a field the command cannot take, "
                                   "IdCommand used for another request, the terminal's queue full — with "
                                   "Retry-After), Status 3 (unknown Command, NumDevice or IdCommand); Error "
                                   "and Field name the field",
                    "content": {"application/json": {"example": {
                "Command": "PayByPaymentCard", "IdCommand": "kkm-0001", "NumDevice": 1, "Status": 0, "Error": "",
                "Warning": "", "UniversalID": _UID, "Amount": 150.0, "Slip": _SLIP, "RRNCode": "512345678901",
                "AuthorizationCode": "123456", "CardNumber": "411111******1111", "ReceiptNumber": "26"}}}},
            "408": {"description": "the body took more than 10 s to arrive (Status 2; the connection is closed)"},
        },
    }}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of everything ``posbridge serve`` serves."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "posbridge serve", "version": posbridge.__version__,
                 "description": "A bank card terminal as a local HTTP service for any cash register: the native "
                                "API in 1C's acquiring-driver vocabulary and KKM Server's /Execute. Every "
                                "operation is journaled before it is sent; a lost outcome is resolved by "
                                "recovery, never charged twice."},
        "servers": [{"url": "http://127.0.0.1:8765"}],
        "components": {
            "schemas": {"Error": _error_schema(), "OperationRequest": _request_schema(),
                        "Command": _command_schema()},
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic",
                                          "description": "when the service is configured with [auth]"}},
        },
        "paths": {**_native_paths(), **_kkm_path()},
    }
