"""The control API of a running ``posbridge emulate`` (``--control 127.0.0.1:PORT``).

A CI job for a cash register written in any language scripts the virtual terminal with curl:
queue cards, add outcome rules (posbridge.emulator.rules), set a host fault, read the batch and the
operations, settle, reset. aiohttp like ``posbridge serve``; the server runs in the emulator's own
event loop, beside the terminal. Loopback only: it has no authentication, and anyone who can reach
it decides the terminal's outcomes. ``GET /openapi.json`` describes it (docs/ci.md has recipes).
"""

from __future__ import annotations

import asyncio
import ipaddress
from decimal import Decimal
from typing import Any

from aiohttp import web

import posbridge
from posbridge.devices.faults import FaultPlan, FaultSpecError
from posbridge.emulator.cards import Card
from posbridge.emulator.host import FAULTS
from posbridge.emulator.rules import RuleError, card_from_name, rule_from_dict
from posbridge.emulator.terminal import VirtualTerminal
from posbridge.http.app import json_errors, runner_options
from posbridge.http.native import json_response, read_json
from posbridge.http.operations import FieldError
from posbridge.journal import OperationRecord
from posbridge.model import Operation, Request

__all__ = ["ControlAddressError", "LoopbackAddressError", "ROUTES", "make_control_app", "openapi_document", "parse_control_address", "parse_loopback_address", "start_control"]

TERMINAL: web.AppKey[VirtualTerminal] = web.AppKey("terminal", VirtualTerminal)
MAX_BODY = 64 * 1024

ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/health"), ("GET", "/openapi.json"), ("POST", "/cards"), ("GET", "/rules"), ("POST", "/rules"),
    ("DELETE", "/rules"), ("POST", "/faults"), ("GET", "/batch"), ("GET", "/operations"), ("POST", "/settle"),
    ("POST", "/reset"),
)
"""Every route the control API serves (the OpenAPI document lists exactly these)."""


class LoopbackAddressError(ValueError):
    """An address for a service without authentication that is not a loopback HOST:PORT."""


ControlAddressError = LoopbackAddressError  # the --control address's error (its first name)


def parse_loopback_address(text: str, option: str = "--control", what: str = "the control API") -> tuple[str, int]:
    """``127.0.0.1:PORT`` (or ``[::1]:PORT``, ``localhost:PORT``) as (host, port); ControlAddressError
    in one line, naming ``option``, for anything that is not loopback (``what`` has no authentication)."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise LoopbackAddressError(f"{option} must be 127.0.0.1:PORT, not {text!r}")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise LoopbackAddressError(f"{option} listens on loopback only (127.0.0.1, ::1): {host!r} refused; "
                                      f"{what} has no authentication")
    return host, int(port_text)


def parse_control_address(text: str) -> tuple[str, int]:
    """The ``--control`` address (:func:`parse_loopback_address`)."""
    return parse_loopback_address(text)


def _plain(value: Any) -> Any:
    """JSON numbers with a fraction arrive as Decimal (read_json): seconds are floats here."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _record(record: OperationRecord) -> dict[str, Any]:
    return {
        "id": record.id, "batch": record.batch, "operation": record.operation.value,
        "status": record.status.value, "code": record.code, "text": record.text, "amount": record.amount,
        "currency": record.currency, "rrn": record.rrn, "auth_code": record.auth_code,
        "masked_pan": record.masked_pan, "transaction_id": record.transaction_id,
        "host_datetime": record.host_datetime.isoformat(), "delivered": record.delivered,
        "result_delivered": record.result_delivered,
    }


def _totals(terminal: VirtualTerminal) -> dict[str, Any]:
    totals = terminal.host.totals()
    return {"batch": terminal.host.batch_number, "currency": totals.currency,
            "sale_count": totals.sale_count, "sale_amount": totals.sale_amount,
            "refund_count": totals.refund_count, "refund_amount": totals.refund_amount,
            "cancel_count": totals.cancel_count, "cancel_amount": totals.cancel_amount,
            "net_amount": totals.net_amount}


async def health(request: web.Request) -> web.Response:
    """Alive, and what the terminal is doing."""
    terminal = request.app[TERMINAL]
    return json_response({"status": "ok", "protocol": terminal.protocol.name, "state": terminal.state,
                          "version": posbridge.__version__})


async def post_cards(request: web.Request) -> web.Response:
    """Queue cards the next card operations read: ``{"cards": ["insufficient_funds", "2200..."]}``."""
    data = _plain(await read_json(request))
    _only(data, {"cards", "expiry"})
    cards = data.get("cards")
    if not isinstance(cards, list) or not cards:
        raise FieldError("cards", "cards must be a non-empty list of card numbers or test-card names")
    expiry = data.get("expiry", "3012")
    if not isinstance(expiry, str) or len(expiry) != 4 or not expiry.isdigit():
        raise FieldError("expiry", "expiry must be YYMM, 4 digits")
    try:
        pans = [card_from_name(c, f"cards[{i}]") for i, c in enumerate(cards)]
    except RuleError as error:
        raise FieldError(error.key, str(error)) from None
    terminal = request.app[TERMINAL]
    terminal.cards.present(*(Card(pan, expiry) for pan in pans))
    return json_response({"status": "ok", "pending": terminal.cards.pending()})


async def get_rules(request: web.Request) -> web.Response:
    """The rules in force, in order (card numbers masked)."""
    return json_response({"rules": [r.to_dict() for r in request.app[TERMINAL].rules.rules()]})


async def post_rules(request: web.Request) -> web.Response:
    """Add rules: one rule object, or ``{"rules": [...]}``; all are checked before any is added."""
    data = _plain(await read_json(request))
    given = data["rules"] if set(data) == {"rules"} else [data]
    if not isinstance(given, list) or not given:
        raise FieldError("rules", "rules must be a non-empty list of rule objects")
    try:
        rules = [rule_from_dict(r, f"rules[{i}]." if len(given) > 1 or "rules" in data else "")
                 for i, r in enumerate(given)]
    except RuleError as error:
        raise FieldError(error.key, str(error)) from None
    book = request.app[TERMINAL].rules
    book.add(*rules)
    return json_response({"status": "ok", "rules": [r.to_dict() for r in book.rules()]})


async def delete_rules(request: web.Request) -> web.Response:
    """Forget every rule."""
    request.app[TERMINAL].rules.clear()
    return json_response({"status": "ok", "rules": []})


async def post_faults(request: web.Request) -> web.Response:
    """Faults from now on: ``{"host": "answer_lost"}`` (null: none) for every operation at the host;
    ``{"line": "rx:corrupt@5,seed=1"}`` (null: none) for the bytes on the line, positions counted
    from now (409 unless the line was opened switchable, as emulate --control does)."""
    data = _plain(await read_json(request))
    _only(data, {"host", "line"})
    if not data:
        raise FieldError("host", "give host (a host fault or null) and/or line (a line fault spec or null)")
    terminal = request.app[TERMINAL]
    fault = data.get("host", terminal.host_config.fault)
    if fault not in FAULTS:
        raise FieldError("host", f"host must be one of {', '.join(f for f in FAULTS if f)} or null, not {fault!r}")
    line = terminal.line
    if "line" in data:
        spec = data["line"]
        if spec is not None and not isinstance(spec, str):
            raise FieldError("line", "line must be a fault spec string (devices/faults.py grammar) or null")
        if line is None:
            raise FieldError("line", "this terminal's line faults cannot change (emulate opens a switchable "
                                     "line with --control)", 409)
        try:
            FaultPlan.parse(spec or "")
        except FaultSpecError as error:
            raise FieldError("line", str(error)) from None
    terminal.host_config.fault = fault
    if line is not None and "line" in data:
        line.set_faults(data["line"])
    return json_response({"status": "ok", "host": fault, "line": line.spec if line is not None else None})


async def get_batch(request: web.Request) -> web.Response:
    """The open batch's number and totals (from the journal)."""
    return json_response(_totals(request.app[TERMINAL]))


async def get_operations(request: web.Request) -> web.Response:
    """Every journaled operation of the terminal, in order (``?batch=N``: one batch)."""
    terminal = request.app[TERMINAL]
    batch_text = request.query.get("batch")
    batch = None
    if batch_text is not None:
        if not batch_text.isdigit():
            raise FieldError("batch", "batch must be a whole number")
        batch = int(batch_text)
    rows = terminal.journal.ledger.operations(terminal.host_config.terminal_id, batch)
    return json_response({"operations": [_record(r) for r in rows]})


async def post_settle(request: web.Request) -> web.Response:
    """Close the open batch at the host, as the ECR's settlement would (409 while an operation runs)."""
    terminal = request.app[TERMINAL]
    if terminal.state != "idle":
        raise FieldError("terminal", f"the terminal is busy ({terminal.state}); settle when it is idle", 409)
    decision = await asyncio.to_thread(terminal.host.process, Request(Operation.SETTLEMENT))
    totals = decision.totals
    return json_response({"status": decision.status.value, "code": decision.code, "batch": decision.batch_number,
                          "sale_count": totals.sale_count if totals else None,
                          "sale_amount": totals.sale_amount if totals else None,
                          "refund_count": totals.refund_count if totals else None,
                          "refund_amount": totals.refund_amount if totals else None})


async def post_reset(request: web.Request) -> web.Response:
    """Forget rules, queued cards and the host fault (the journal and its batches stay)."""
    request.app[TERMINAL].forget_steering()
    return json_response({"status": "ok"})


async def get_openapi(request: web.Request) -> web.Response:
    """The control API as OpenAPI 3.1."""
    return json_response(openapi_document())


_RULE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "An outcome rule (posbridge.emulator.rules): conditions (all given must hold), effects; "
                   "the first matching rule decides. Errors name the key.",
    "properties": {
        "card": {"type": "string", "description": "card number (12-19 digits) or a test-card name "
                                                  "(approved, insufficient_funds, over_limit, ...)"},
        "amount_ends": {"type": "string", "pattern": "^[0-9]{1,12}$",
                        "description": "the amount in minor units ends with these digits"},
        "operation": {"type": "string", "enum": [o.value for o in Operation]},
        "nth": {"type": "integer", "minimum": 1, "description": "only the Nth operation the other conditions match"},
        "outcome": {"type": "string", "enum": ["approved", "declined"]},
        "code": {"type": "string", "description": "response code of a decline (implies outcome declined; default 05)"},
        "text": {"type": "string", "maxLength": 64, "description": "response text of a decline"},
        "card_delay": {"type": "number", "minimum": 0, "maximum": 3600},
        "pin_delay": {"type": "number", "minimum": 0, "maximum": 3600},
        "host_delay": {"type": "number", "minimum": 0, "maximum": 3600},
        "dialog": {"type": "boolean", "description": "ask the cashier for the card's last 4 digits"},
        "fault": {"type": "string", "enum": [f for f in FAULTS if f]},
        "once": {"type": "boolean", "description": "used up after it applied once (default false)"},
    },
    "example": {"operation": "sale", "code": "05", "once": True},
}
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["status", "field", "error"],
    "properties": {"status": {"const": "error"}, "field": {"type": "string", "description": "the key that is wrong"},
                   "error": {"type": "string", "description": "one line"}},
    "example": {"status": "error", "field": "code", "error": "code must be a response code of up to 8 digits"},
}


def _op(summary: str, body: dict[str, Any] | None = None, errors: tuple[int, ...] = ()) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "done", "content": {"application/json": {"schema": {"type": "object"}}}},
                      **{str(code): {"description": "refused; the body names the field",
                                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                         for code in errors}},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return operation


def openapi_document() -> dict[str, Any]:
    """The control API as an OpenAPI 3.1 document (written by hand; a test checks it lists exactly ROUTES)."""
    paths: dict[str, dict[str, Any]] = {
        "/health": {"get": _op("alive; the terminal's protocol and state")},
        "/openapi.json": {"get": _op("this document")},
        "/cards": {"post": _op("queue cards for the next card operations", {
            "type": "object", "required": ["cards"], "additionalProperties": False,
            "properties": {"cards": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                           "expiry": {"type": "string", "pattern": "^[0-9]{4}$", "description": "YYMM (default 3012)"}},
            "example": {"cards": ["insufficient_funds", "2200000000000004"]}}, (400, 422))},
        "/rules": {
            "get": _op("the rules in force, in order (card numbers masked)"),
            "post": _op("add one rule (the object) or several ({\"rules\": [...]})", {
                "oneOf": [{"$ref": "#/components/schemas/Rule"},
                          {"type": "object", "required": ["rules"],
                           "properties": {"rules": {"type": "array", "items": {"$ref": "#/components/schemas/Rule"}}}}]},
                (400, 422)),
            "delete": _op("forget every rule"),
        },
        "/faults": {"post": _op("faults from now on: host (every operation at the host) and/or line (byte "
                                "faults, the devices/faults.py grammar, positions counted from now); null: none", {
            "type": "object", "additionalProperties": False,
            "properties": {"host": {"enum": [*(f for f in FAULTS if f), None]},
                           "line": {"type": ["string", "null"], "example": "rx:corrupt@5,tx:split=7,seed=1"}},
            "example": {"host": "answer_lost"}}, (400, 409, 422))},
        "/batch": {"get": _op("the open batch: number and totals from the journal")},
        "/operations": {"get": {**_op("journaled operations in order (card numbers masked)", errors=(422,)),
                                "parameters": [{"name": "batch", "in": "query", "required": False,
                                                "schema": {"type": "integer"}}]}},
        "/settle": {"post": _op("close the open batch at the host, as a settlement from the ECR would", errors=(409,))},
        "/reset": {"post": _op("forget rules, queued cards and the host fault (the journal stays)")},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "posbridge emulate control API", "version": posbridge.__version__,
                 "description": "Script a running virtual terminal (loopback only, no authentication). "
                                "Recipes: docs/ci.md."},
        "paths": paths,
        "components": {"schemas": {"Rule": _RULE_SCHEMA, "Error": _ERROR_SCHEMA}},
    }


def _only(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise FieldError(unknown[0], f"{unknown[0]} is not a field here (fields: {', '.join(sorted(allowed))})", 400)


_HANDLERS = {
    ("GET", "/health"): health, ("GET", "/openapi.json"): get_openapi, ("POST", "/cards"): post_cards,
    ("GET", "/rules"): get_rules, ("POST", "/rules"): post_rules, ("DELETE", "/rules"): delete_rules,
    ("POST", "/faults"): post_faults, ("GET", "/batch"): get_batch, ("GET", "/operations"): get_operations,
    ("POST", "/settle"): post_settle, ("POST", "/reset"): post_reset,
}


def make_control_app(terminal: VirtualTerminal) -> web.Application:
    """The control application for ``terminal`` (every route in :data:`ROUTES`)."""
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY)
    app[TERMINAL] = terminal
    for method, path in ROUTES:
        app.router.add_route(method, path, _HANDLERS[(method, path)])
    return app


async def start_control(terminal: VirtualTerminal, address: str) -> tuple[web.AppRunner, str]:
    """Serve the control API on loopback ``address`` in the running loop; (runner, "http://host:port")."""
    host, port = parse_control_address(address)
    runner = web.AppRunner(make_control_app(terminal), shutdown_timeout=2.0, **runner_options())
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}"
