"""How results and logs look to people (CLI, demo, console) and to programs (JSON). Masked PANs only."""

from __future__ import annotations

import argparse
import json
import logging
import re
from datetime import datetime, timezone
from typing import Any

from posbridge.model import Result, format_amount, mask_pan
from posbridge.protocols.common.model import could_be_card_number


def _shown_pan(result: Result) -> str | None:
    """The result's PAN as output may show it: masked again (defence in depth; a masked PAN is kept)."""
    return mask_pan(result.masked_pan) if result.masked_pan else result.masked_pan


def format_result(result: Result, *, slips: bool = True, cashier_slip: bool = True) -> str:
    """A result as people read it: outcome line, details, then the slips."""
    code = result.response_code or "-"
    if result.host_code and result.host_code != result.response_code:
        code += f", host {result.host_code}"  # the acquirer's own code where the protocol's differs
    lines = [f"{result.operation.value}: {result.status.value.upper()} (code {code}) {result.response_text}".rstrip()]
    details = {
        "amount": format_amount(result.amount, result.currency or 643) if result.amount is not None else None,
        "card": f"{result.card_scheme or ''} {_shown_pan(result) or ''}".strip() or None,
        "rrn": result.rrn, "auth code": result.auth_code, "terminal": result.terminal_id,
        "transaction id": result.transaction_id,
    }
    for name, value in details.items():
        if value:
            lines.append(f"  {name}: {value}")
    if result.totals is not None:
        t = result.totals
        lines.append(f"  totals: sales {t.sale_count} / {format_amount(t.sale_amount, t.currency)},"
                     f" refunds {t.refund_count} / {format_amount(t.refund_amount, t.currency)},"
                     f" cancels {t.cancel_count} / {format_amount(t.cancel_amount, t.currency)}")
    if slips:
        shown = [("customer slip", result.slips.customer)]
        if cashier_slip:
            shown.append(("cashier slip", result.slips.cashier))
        for title, text in shown:
            if text:
                lines.append(f"  --- {title} ---")
                lines += ["  | " + line for line in text.splitlines()]
    return "\n".join(lines)


def result_to_json(result: Result) -> dict[str, Any]:
    """A result as a JSON-able dict (masked PAN only, as everywhere)."""
    data: dict[str, Any] = {
        "operation": result.operation.value, "status": result.status.value, "approved": result.approved,
        "response_code": result.response_code, "host_code": result.host_code,
        "response_text": result.response_text, "amount": result.amount, "currency": result.currency,
        "rrn": result.rrn, "auth_code": result.auth_code, "masked_pan": _shown_pan(result),
        "card_scheme": result.card_scheme, "terminal_id": result.terminal_id,
        "transaction_id": result.transaction_id,
        "host_datetime": result.host_datetime.isoformat() if result.host_datetime else None,
        "slips": {"customer": result.slips.customer, "cashier": result.slips.cashier},
    }
    if result.totals is not None:
        data["totals"] = vars(result.totals)
    return data


# 13-19 digits, together or in groups split by single spaces or dashes (4111 1111 1111 1111).
_CARD_LIKE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")


def mask_possible_card_numbers(text: str) -> str:
    """``text`` with whatever could be a card number (13-19 digits, Luhn-valid, an issuer's first
    digits) masked to its first 6 and last 4 digits. An RRN (12 digits), a date-time or a zero-padded
    merchant id stays readable: technicians need them."""
    def one(match: re.Match[str]) -> str:
        digits = match.group(0).replace(" ", "").replace("-", "")
        return mask_pan(digits) if could_be_card_number(digits.encode()) else match.group(0)

    return _CARD_LIKE.sub(one, text)


def _masked(value: Any) -> Any:
    return mask_possible_card_numbers(value) if isinstance(value, str) else value


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``; a record
    carrying ``outcome`` (the virtual terminal's one line per operation) adds its fields under
    ``outcome`` (operation, amount in minor units, currency, status, code, delivered, ...). Card
    numbers are masked in every string, whatever the record's author did."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (no newline inside: strings are escaped)."""
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _masked(record.getMessage()),
        }
        outcome = getattr(record, "outcome", None)
        if isinstance(outcome, dict):
            data["outcome"] = {str(key): _masked(value) for key, value in outcome.items()}
        if record.exc_info:
            data["exception"] = _masked(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False, default=str)


def link_option_argument(text: str) -> tuple[str, bool | int | float | str]:
    """An argparse type: ``NAME=VALUE`` of a protocol link option (``--link-option``); the value
    read as true/false, else a whole number, else a number, else text. The protocol checks names
    and ranges."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name or not raw:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, e.g. ack_timeout=0.5, got {text!r}")
    # ASCII only: int() and float() (and the protocol's own conversion of text) also read other
    # scripts' digits, so "link_version=١" ran a sale at version 1 that nobody typed.
    if not raw.isascii():
        raise argparse.ArgumentTypeError(f"{name}: expected a number or true/false in ASCII, got {raw!r}")
    # true/false as booleans: the protocol takes only a boolean for a switch (INPAS
    # resend_on_ack_timeout), so as text such an option could not be set from the command line.
    if raw.lower() in ("true", "false"):
        return name, raw.lower() == "true"
    value: int | float | str = raw
    for kind in (int, float):
        try:
            value = kind(raw)
            break
        except ValueError:
            continue
    return name, value


def seconds_argument(text: str) -> float:
    """An argparse type: seconds above 0 and at most a day (``--timeout``, ``--lock-wait``…)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"seconds must be above 0 and at most 86400, got {text}")
    return value
