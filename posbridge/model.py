"""posbridge's domain model: operations, requests, results, money, masking.

Defined in :mod:`posbridge.protocols.common.model` (the bottom layer, so protocol mappings can use it) and
re-exported here, where application code looks for it.
"""

from posbridge.protocols.common.errors import InvalidRequest, PosbridgeError
from posbridge.protocols.common.model import (
    CURRENCY_LETTERS,
    ISO_4217_NUMERIC,
    MAX_AMOUNT,
    RUB,
    Operation,
    Request,
    Result,
    Slips,
    Status,
    Totals,
    format_amount,
    mask_card_numbers,
    mask_pan,
    parse_amount,
    validate_amount,
    validate_currency,
)

__all__ = [
    "CURRENCY_LETTERS", "ISO_4217_NUMERIC", "MAX_AMOUNT", "RUB", "InvalidRequest", "Operation",
    "PosbridgeError", "Request", "Result", "Slips", "Status", "Totals", "format_amount", "mask_card_numbers",
    "mask_pan", "parse_amount", "validate_amount", "validate_currency",
]
