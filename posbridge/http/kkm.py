"""``POST /Execute``: KKM Server's HTTP API for its acquiring commands, so a cash register written for
KKM Server points at posbridge unchanged (``../shared/ecr-api.md``; ``docs/http-service.md``).

Every request: ``Command``, ``NumDevice`` (0: the first idle terminal), ``IdCommand`` (the
idempotency key, as ``command_id`` in the native API; the result can be fetched again by it),
``Timeout`` (1: run asynchronously, then poll with ``GetRezult``). Every response: ``Status`` (0 done,
1 running, 2 error, 3 command or device not found, 4 not started yet: queued), ``Error``,
``Warning``, ``IdCommand``, ``NumDevice``; acquiring answers add ``UniversalID``, ``Amount``
(roubles), ``Slip``. Amounts in requests are roubles, parsed as decimals.

A declined payment is ``Status`` 2 with the host's code and text in ``Error`` and the decline slip
in ``Slip``. An outcome that was lost is ``Status`` 1 while recovery resolves it (ask again with
``GetRezult``), and ``Status`` 2 once a person must check it (``Error`` says so).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import uuid4

from aiohttp import web

from posbridge.http.native import SERVICE, answer_and_hang_up, json_response, read_json
from posbridge.http.operations import (
    OPERATIONS,
    FieldError,
    build_spec,
    parse_amount_roubles,
    parse_command_id,
    parse_universal_id,
)
from posbridge.http.service import Service, TerminalWorker, Unavailable
from posbridge.model import mask_card_numbers

__all__ = ["KKM_COMMANDS", "routes"]

KKM_COMMANDS = {
    "PayByPaymentCard": "Pay",
    "ReturnPaymentByPaymentCard": "ReturnPayment",
    "CancelPaymentByPaymentCard": "CancelPayment",
    "AuthorisationByPaymentCard": "Authorisation",
    "AuthConfirmationByPaymentCard": "AuthConfirmation",
    "CancelAuthorisationByPaymentCard": "CancelAuthorisation",
    "EmergencyReversal": "EmergencyReversal",
    "Settlement": "Settlement",
    "TerminalReport": "TerminalReport",
    "TransactionDetails": "SlipCopy",
}
"""KKM Server's acquiring commands -> the 1C operations they run (plus PrintSlipOnTerminal and
GetRezult, which the service answers itself)."""

KKM_NAMES = {"command_id": "IdCommand", "amount": "Amount", "currency": "Currency", "rrn": "RRNCode",
             "auth_code": "AuthorizationCode", "universal_id": "UniversalID", "receipt_number": "ReceiptNumber",
             "original_amount": "AmountOriginalTransaction", "detailed": "Detailed"}
_FIELD_NAMES = {**KKM_NAMES, "terminal": "NumDevice", "operation": "Command", "body": "body", "request": "Command"}

routes = web.RouteTableDef()


def _roubles(minor: int | None) -> float | None:
    return None if minor is None else float(Decimal(minor) / 100)


def _answer(command: str, id_command: str, num_device: int, status: int, error: str = "", warning: str = "",
            **fields: Any) -> dict[str, Any]:
    return {"Command": command, "IdCommand": id_command, "NumDevice": num_device, "Status": status,
            "Error": error, "Warning": warning, **fields}


def kkm_view(service: Service, command: str, view: dict[str, Any], warning: str = "") -> dict[str, Any]:
    """A command's native view in KKM's words (``Status`` and the acquiring fields)."""
    worker = service.workers.get(view["terminal"])
    num_device = worker.settings.num_device if worker is not None else 0
    status, error = {
        "approved": (0, ""),
        "running": (4 if view.get("queued") else 1, ""),
        "declined": (2, f"Отказ: {view.get('response_text') or ''} (код {view.get('host_code') or view.get('response_code')})"),
        "error": (2, view.get("error") or "error"),
    }.get(view["status"], (1, ""))
    if view["status"] == "unknown":
        recovering = view.get("recovery") is None
        status = 1 if recovering else 2
        error = (f"{view.get('error')}" if not recovering else
                 f"the outcome is unknown ({view.get('error')}); ask again with GetRezult")
    fields: dict[str, Any] = {
        "UniversalID": view.get("universal_id") or "", "Amount": _roubles(view.get("amount")),
        "Slip": view.get("slip") or "", "RRNCode": view.get("rrn") or "",
        "AuthorizationCode": view.get("auth_code") or "", "CardNumber": view.get("card") or "",
        "ReceiptNumber": (view.get("request") or {}).get("receipt_number") or "",
    }
    if view.get("totals"):
        fields["Totals"] = view["totals"]
    return _answer(command, view["command_id"], num_device, status, error, warning, **fields)


# KKM Server answers a command it refuses with HTTP 200 and the refusal in the body (Status 2 or 3,
# Error): its clients read Status and show Error to the cashier, and its sample client takes any
# other HTTP code for a broken connection ("Ошибка передачи данных по протоколу HTTP"), never
# showing why. Only what happens below the command keeps its HTTP code: a body sent too slowly
# (408, the connection is closed), credentials (401, before any command is read).
_KKM_TRANSPORT_CODES = (408,)


def _kkm_error(command: str, id_command: str, num_device: int, error: FieldError | Unavailable) -> web.Response:
    if isinstance(error, Unavailable):
        body = _answer(command, id_command, num_device, 2, str(error))
        return json_response(body, headers={"Retry-After": "5"})
    field = mask_card_numbers(_FIELD_NAMES.get(error.field, error.field))
    status = 3 if error.http_status == 404 else 2
    # Masked: a refused Command, IdCommand or field may quote what the register sent, a card number too.
    body = _answer(mask_card_numbers(command), mask_card_numbers(id_command), num_device, status,
                   mask_card_numbers(f"{field}: {error}"), Field=field)
    return json_response(body, status=error.http_status if error.http_status in _KKM_TRANSPORT_CODES else 200)


@routes.post("/Execute")
async def execute(request: web.Request) -> web.Response:
    """KKM Server's one endpoint, for its acquiring commands (module docstring)."""
    service = request.app[SERVICE]
    command, id_command, num_device = "", "", 0
    try:
        body = await read_json(request)
        command = str(body.get("Command") or "")
        raw_id = body.get("IdCommand")
        id_command = raw_id if isinstance(raw_id, str) else ""
        device = body.get("NumDevice", 0) or 0
        if isinstance(device, str) and device.isascii() and device.isdigit():
            device = int(device)
        if isinstance(device, bool) or not isinstance(device, int) or device < 0:
            raise FieldError("NumDevice", "NumDevice must be 0 (the first idle terminal) or a device number")
        num_device = device
        if command == "GetRezult":
            return _get_rezult(service, body)
        worker = _retried_on(service, raw_id) if device == 0 else None
        worker = worker or service.worker_by_device(device)
        num_device = worker.settings.num_device
        if command == "PrintSlipOnTerminal":
            # "Does the terminal print the slips?" No: posbridge hands them to the register (Slip).
            # Its IdCommand is never checked (nothing is stored): masked, as a refusal's is.
            return json_response(_answer(command, mask_card_numbers(id_command), num_device, 0,
                                         PrintSlipOnTerminal=False))
        operation = KKM_COMMANDS.get(command)
        if operation is None:
            raise FieldError("Command", f"no command {command!r}: posbridge serves "
                                        f"{', '.join([*KKM_COMMANDS, 'PrintSlipOnTerminal', 'GetRezult'])}", 404)
        kind = OPERATIONS[operation]
        if body.get("CardNumber"):
            raise FieldError("CardNumber", "CardNumber must be empty: the terminal reads the card; posbridge "
                                           "never takes a card number")
        warning = ""
        command_id = parse_command_id(raw_id, required=False, field="IdCommand")
        if command_id is None:
            command_id = f"srv-{uuid4().hex}"
            if kind.money:
                warning = "no IdCommand: this payment cannot be fetched again or told apart from a retry"
        id_command = command_id
        if command == "TransactionDetails":
            stored = _stored_transaction(service, worker, body)
            if stored is not None:
                return json_response(kkm_view(service, command, stored))
        amount, original = body.get("Amount"), body.get("AmountOriginalTransaction")
        spec = build_spec(
            worker.name, kind, command_id=command_id,
            # KKM registers send Amount 0 with commands that take none: only money commands read it.
            amount=parse_amount_roubles(amount) if kind.money and amount not in (None, "") else None,
            currency=body.get("Currency"), rrn=body.get("RRNCode"), auth_code=body.get("AuthorizationCode"),
            universal_id=body.get("UniversalID"), receipt_number=body.get("ReceiptNumber"),
            original_amount=parse_amount_roubles(original, "AmountOriginalTransaction")
            if kind.money and original not in (None, "", 0) else None,
            detailed=body.get("Detailed") if command == "TerminalReport" else None, names=KKM_NAMES)
        wait = _timeout(body.get("Timeout"))
        view = await service.submit(spec, origin="kkm", wait=wait)
        return json_response(kkm_view(service, command, view, warning))
    except (FieldError, Unavailable) as error:
        response = _kkm_error(command, id_command, num_device, error)
        if isinstance(error, FieldError) and error.http_status == 408:
            return await answer_and_hang_up(request, response)
        return response


def _retried_on(service: Service, id_command: object) -> TerminalWorker | None:
    """The terminal a command already accepted under ``id_command`` runs on: NumDevice 0 ("the first
    idle terminal") in a retry means the terminal the first attempt took, not the one idle now —
    else the retry of a payment still running would land on another terminal and be told 409."""
    if not isinstance(id_command, str) or not id_command:
        return None
    row = service.store.get(id_command)
    return service.workers.get(row.terminal) if row is not None else None


def _timeout(value: object) -> float | None:
    """KKM's Timeout: 1 = asynchronous (answer at once, then GetRezult); n = wait up to n seconds;
    absent or 0 = wait for the outcome."""
    if value in (None, "", 0):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or not 0 < value <= 3600:
        raise FieldError("Timeout", "Timeout must be seconds from 1 to 3600 (1: asynchronous)")
    return 0.0 if value == 1 else float(value)


def _stored_transaction(service: Service, worker: TerminalWorker, body: dict[str, Any]) -> dict[str, Any] | None:
    """TransactionDetails of an operation this service ran (by RRNCode or UniversalID): its stored slip."""
    rrn = body.get("RRNCode")
    if body.get("UniversalID"):
        rrn = parse_universal_id(body["UniversalID"], "UniversalID")["RRN"]
    if not rrn or not isinstance(rrn, str):
        return None
    row = service.store.find_by_rrn(worker.name, rrn)
    return service.view(row.command_id) if row is not None else None


def _get_rezult(service: Service, body: dict[str, Any]) -> web.Response:
    id_command = body.get("IdCommand")
    if not isinstance(id_command, str) or not id_command:
        raise FieldError("IdCommand", "GetRezult needs the IdCommand of the command to look up")
    view = service.view(id_command)
    if view is None:
        answer = _answer("GetRezult", mask_card_numbers(id_command), 0, 3,
                         mask_card_numbers(f"IdCommand: no command {id_command!r} was ever accepted"), Field="IdCommand")
        return json_response(answer)  # Status 3, HTTP 200: see _KKM_TRANSPORT_CODES
    original = next((k for k, v in KKM_COMMANDS.items() if v == view["operation"]), view["operation"])
    if view["origin"] == "native":
        original = view["operation"]
    rezult = kkm_view(service, original, view)
    return json_response({**rezult, "Command": "GetRezult", "Rezult": rezult})
