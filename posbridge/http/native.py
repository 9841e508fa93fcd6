"""The native API, in 1C's vocabulary: ``/v1/terminals/{name}/{Operation}``, ``/v1/commands/{id}``,
``/v1/terminals``, ``/health``.

Amounts are integer minor units (kopecks); every operation that moves money needs a ``command_id``
(the idempotency key). Bad input is a JSON error naming the field, and nothing is stored,
journaled or sent (``docs/http-service.md`` has the table).
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import uuid4

from aiohttp import web

import posbridge
from posbridge.http.operations import OPERATIONS, FieldError, build_spec, parse_amount_minor, parse_command_id
from posbridge.http.service import Service

__all__ = ["SERVICE", "ClientGone", "answer_and_hang_up", "json_response", "read_json", "routes"]

SERVICE = web.AppKey("service", Service)
"""Where the application keeps its :class:`Service`."""

MAX_WAIT = 3600.0
BODY_TIMEOUT = 10.0
"""Seconds a client may take to send its body (a few hundred bytes): one that dribbles it must not
hold a connection for ever (408)."""
NATIVE_FIELDS = frozenset({"command_id", "amount", "currency", "rrn", "auth_code", "universal_id",
                           "receipt_number", "original_amount", "detailed", "wait"})

routes = web.RouteTableDef()

json_response = partial(web.json_response, dumps=partial(json.dumps, ensure_ascii=False))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


class ClientGone(Exception):
    """The client closed the connection before its request was read: nobody to answer."""


def _check_text(field: str, value: object) -> None:
    """A string with a lone surrogate (``"\\ud800"`` is valid JSON) cannot be stored or answered."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise FieldError(field, f"{field} is not valid Unicode text (a lone surrogate escape)", 400) from None
    elif isinstance(value, list):
        for item in value:
            _check_text(field, item)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (json.loads keeps the last: ``{"amount": 100,
    "amount": 1000000}`` would charge what a proxy or a log did not see) and lone surrogates."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        _check_text("body", key)
        if key in data:
            raise FieldError(key, f"{key} is given twice: which value is meant is ambiguous", 400)
        _check_text(key, value)
        data[key] = value
    return data


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, numbers with a fraction as Decimal (never float); FieldError 400
    naming ``body`` when it is not one (or naming a key given twice), 408 when the body takes more
    than :data:`BODY_TIMEOUT` seconds, 413 when it is larger than the application allows;
    :class:`ClientGone` when the client hung up meanwhile."""
    try:
        raw = await asyncio.wait_for(request.read(), BODY_TIMEOUT)
    except asyncio.TimeoutError:
        raise FieldError("body", f"the body did not arrive within {BODY_TIMEOUT:g} s", 408) from None
    except web.HTTPRequestEntityTooLarge:
        # A FieldError, not aiohttp's exception: /Execute answers it in KKM's body (Status 2, Field)
        # like every other refusal; aiohttp's own 413 reached a KKM register without a Status.
        raise FieldError("body", f"the body is larger than {request.client_max_size} bytes", 413) from None
    except ConnectionError:
        raise ClientGone() from None
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw.decode("utf-8-sig"), parse_float=Decimal, parse_constant=_no_constant,
                          object_pairs_hook=_json_object)
    except FieldError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise FieldError("body", f"the body is not JSON: {str(error)[:120]}", 400) from None
    if not isinstance(data, dict):
        raise FieldError("body", f"the body must be a JSON object, got {type(data).__name__}", 400)
    return data


async def answer_and_hang_up(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response`` now and close the connection: after a 408, aiohttp would otherwise linger up
    to 10 s more reading the body the client dribbles in."""
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


def parse_wait(value: object, field: str = "wait") -> float | None:
    """Seconds to wait for the outcome (0: answer at once); None: until the operation is over."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or not 0 <= value <= MAX_WAIT:
        raise FieldError(field, f"{field} must be seconds from 0 to {MAX_WAIT:g}")
    return float(value)


@routes.post("/v1/terminals/{name}/{operation}")
async def post_operation(request: web.Request) -> web.Response:
    """Run an operation on a terminal (or find the command already run under its command_id)."""
    service = request.app[SERVICE]
    body = await read_json(request)
    worker = service.worker(request.match_info["name"])
    name = request.match_info["operation"]
    kind = OPERATIONS.get(name)
    if kind is None:
        raise FieldError("operation", f"no operation {name!r}: one of {', '.join(OPERATIONS)}", 404)
    for key in body:
        if key not in NATIVE_FIELDS:
            raise FieldError(key, f"unknown field {key!r}: {kind.name} takes "
                                  f"{', '.join(sorted(NATIVE_FIELDS))}")
    command_id = parse_command_id(body.get("command_id"), required=kind.money) or f"srv-{uuid4().hex}"
    amount = parse_amount_minor(body["amount"]) if body.get("amount") is not None else None
    original = body.get("original_amount")
    spec = build_spec(worker.name, kind, command_id=command_id, amount=amount, currency=body.get("currency"),
                      rrn=body.get("rrn"), auth_code=body.get("auth_code"), universal_id=body.get("universal_id"),
                      receipt_number=body.get("receipt_number"),
                      original_amount=parse_amount_minor(original, "original_amount") if original is not None else None,
                      detailed=body.get("detailed"))
    wait = parse_wait(body.get("wait"))
    if kind.operation is None:
        return json_response(service.answer_locally(spec))
    view = await service.submit(spec, origin="native", wait=wait)
    return json_response(view, status=202 if view["status"] == "running" else 200)


@routes.get("/v1/commands/{command_id}")
async def get_command(request: web.Request) -> web.Response:
    """A command's state and outcome, from the journal (it survives a restart)."""
    command_id = request.match_info["command_id"]
    view = request.app[SERVICE].view(command_id)
    if view is None:
        raise FieldError("command_id", f"no command {command_id!r} was ever accepted", 404)
    return json_response(view)


@routes.get("/v1/terminals")
async def get_terminals(request: web.Request) -> web.Response:
    """Each terminal's state: idle or busy with what, its queue, its unresolved operations."""
    return json_response({"terminals": request.app[SERVICE].terminals_view()})


@routes.get("/health")
async def get_health(request: web.Request) -> web.Response:
    """Liveness: the service answers; each terminal's state in a word."""
    service = request.app[SERVICE]
    return json_response({
        "status": "ok", "version": posbridge.__version__,
        "started_at": service.started_at.isoformat(timespec="seconds"),
        "terminals": {w.name: ("busy" if w.current is not None else w.activity) for w in service.workers.values()},
    })
