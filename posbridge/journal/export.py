"""The registry export: both sides of a journal as CSV or XML, one row per operation.

Holds :class:`RegistryExport` (``journal.export``) with its columns (:data:`EXPORT_COLUMNS`) and
final outcomes (:data:`EXPORT_OUTCOMES`, host-rules.md "Registry export"). An outcome is the *final*
one, derived from the rows that refer to an operation: an approved sale later reversed or voided is
``reversed``, an ECR entry whose outcome was never learnt ``unknown``.

It only reads. It does not hold the connection (:mod:`posbridge.journal.storage`) nor write either
side (:mod:`posbridge.journal.ledger`, :mod:`posbridge.journal.ecr_log`). An export reads the
whole journal: from async code, run it in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import csv
import sqlite3
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any, TextIO

from posbridge.journal.storage import Storage, safe_masked_pan, stored_datetime
from posbridge.model import Operation, Status

__all__ = ["EXPORT_COLUMNS", "EXPORT_OUTCOMES", "RegistryExport"]

EXPORT_COLUMNS = (
    "side", "kind", "outcome", "amount_minor_units", "currency", "masked_pan", "rrn", "auth_code",
    "response_code", "terminal_id", "batch", "datetime", "transaction_id", "original_rrn",
    "original_transaction_id",
)
"""Registry export columns, in order (datetime ISO 8601 to the second; ``original_rrn`` /
``original_transaction_id``: what a refund, cancel, completion or reversal acts on)."""

EXPORT_OUTCOMES = (
    "approved", "declined", "reversed", "unknown", "not_sent", "no_connection", "aborted", "undefined",
    "conditional", "approved_offline",
)
"""Final outcomes in the registry export (host-rules.md, "Registry export")."""

_MONEY_KINDS = ("sale", "refund", "cancel", "preauth", "completion", "cancel_preauth")
_BY_ORIGINAL_RRN = ("refund", "cancel", "completion", "cancel_preauth")

_TERMINAL_ROWS = (
    "SELECT s.id, s.operation, s.status, s.amount, s.currency, s.masked_pan, s.rrn, s.auth_code, "
    "s.code, s.terminal_id, s.batch, s.stan, s.host_datetime AS at, s.live, s.voided, "
    "COALESCE(s.original_rrn, o.rrn) AS original_rrn, o.stan AS original_stan "
    "FROM op_state s LEFT JOIN ops o ON o.id = s.original_id WHERE 1"
)
_ECR_ROWS = (
    "SELECT e.id, e.operation, e.state, e.status, e.how, COALESCE(e.res_amount, e.amount) AS amount, "
    "COALESCE(e.res_currency, e.currency) AS currency, e.masked_pan, e.res_rrn AS rrn, "
    "e.res_auth_code AS auth_code, COALESCE(e.host_code, e.response_code) AS code, "
    "COALESCE(e.res_terminal_id, e.terminal_id) AS terminal_id, NULL AS batch, e.transaction_id, "
    "e.rrn AS request_rrn, e.original_transaction_id, e.created_at AS at, EXISTS ("
    "  SELECT 1 FROM ecr_entries r WHERE r.terminal = e.terminal AND r.id > e.id"
    "  AND r.operation = 'emergency_reversal' AND r.transaction_id = e.transaction_id"
    "  AND r.status = 'approved' AND COALESCE(r.host_code, '') <> '9020') AS reversed_later "
    "FROM ecr_entries e WHERE 1"
)


def _ecr_outcome(r: sqlite3.Row) -> str:
    state, how = r["state"], r["how"]
    if state == "done":
        if r["status"] == "approved" and r["operation"] in _MONEY_KINDS and r["reversed_later"]:
            return "reversed"
        return str(r["status"])
    if state == "resolved" and how in ("reversed", "reversal_approved", "emergency_reversal"):
        return "reversed"
    if state == "resolved" and how in ("not_charged", "not_sent"):
        return "not_sent"
    return "unknown"  # pending, sent, unknown, refund_needed, or resolved without money moving


def _filters(since: datetime | None, until: datetime | None,
             operation: Operation | None) -> tuple[str, tuple[Any, ...]]:
    where, params = "", []
    if since is not None:
        where += " AND {at} >= ?"
        params.append(stored_datetime(since))
    if until is not None:
        where += " AND {at} < ?"
        params.append(stored_datetime(until))
    if operation is not None:
        where += " AND {op} = ?"
        params.append(Operation(operation).value)
    return where, tuple(params)


def _export_row(side: str, r: sqlite3.Row, outcome: str, code: str | None, transaction_id: str | None,
                original_rrn: str | None, original_transaction_id: str | None) -> dict[str, str]:
    def text(value: object) -> str:
        return "" if value is None else str(value)

    return {
        "side": side,
        "kind": r["operation"],
        "outcome": text(outcome),
        "amount_minor_units": text(r["amount"]),
        "currency": text(r["currency"]),
        "masked_pan": text(safe_masked_pan(r["masked_pan"])),
        "rrn": text(r["rrn"]),
        "auth_code": text(r["auth_code"]),
        "response_code": text(code),
        "terminal_id": text(r["terminal_id"]),
        "batch": text(r["batch"]),
        "datetime": text(r["at"])[:19],
        "transaction_id": text(transaction_id),
        "original_rrn": text(original_rrn),
        "original_transaction_id": text(original_transaction_id),
    }


class RegistryExport:
    """The registry of a journal (``journal.export``): :meth:`rows`, written by :meth:`csv` or :meth:`xml`.

    Every method takes the same filters: ``side`` is ``"terminal"``, ``"ecr"`` or None for both;
    ``since`` is inclusive, ``until`` exclusive (the host's date-time for terminal rows, the ECR's
    journal time for ECR rows); ``operation`` one kind; ``status`` one final outcome
    (:data:`EXPORT_OUTCOMES`). A bad ``side`` or ``status`` raises ValueError.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def rows(
        self,
        *,
        side: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        operation: Operation | None = None,
        status: Status | str | None = None,
    ) -> list[dict[str, str]]:
        """Rows of the registry export (see :data:`EXPORT_COLUMNS`), ordered by date-time.

        ``outcome`` is the *final* one (:data:`EXPORT_OUTCOMES`): an operation later reversed
        (emergency or automatic reversal, or voided by a cancel) is ``reversed``, not ``approved``;
        an ECR entry whose outcome was never learnt is ``unknown``, one recovery proved never
        charged is ``not_sent``. ``status`` filters by that outcome.
        """
        if side not in (None, "terminal", "ecr"):
            raise ValueError(f"side must be 'terminal', 'ecr' or None, got {side!r}")
        wanted = None if status is None else (status.value if isinstance(status, Status) else str(status))
        if wanted is not None and wanted not in EXPORT_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(EXPORT_OUTCOMES)}, got {wanted!r}")
        rows: list[tuple[str, str, int, dict[str, str]]] = []
        where, params = _filters(since, until, operation)
        if side in (None, "terminal"):
            sql = _TERMINAL_ROWS + where.format(at="s.host_datetime", op="s.operation")
            for r in self._storage.query(sql, params):
                outcome = r["status"]
                if outcome == "approved" and r["operation"] != "emergency_reversal" and \
                        (not r["live"] or r["voided"]):
                    outcome = "reversed"
                original_stan = r["stan"] if r["operation"] == "emergency_reversal" else r["original_stan"]
                rows.append((r["at"], "terminal", r["id"], _export_row(
                    "terminal", r, outcome, r["code"], r["stan"], r["original_rrn"], original_stan)))
        if side in (None, "ecr"):
            sql = _ECR_ROWS + where.format(at="e.created_at", op="e.operation")
            for r in self._storage.query(sql, params):
                original_rrn = r["request_rrn"] if r["operation"] in _BY_ORIGINAL_RRN else None
                rows.append((r["at"], "ecr", r["id"], _export_row(
                    "ecr", r, _ecr_outcome(r), r["code"], r["transaction_id"], original_rrn,
                    r["original_transaction_id"])))
        rows.sort(key=lambda item: item[:3])
        return [item[3] for item in rows if wanted is None or item[3]["outcome"] == wanted]

    def csv(
        self,
        fp: TextIO,
        *,
        side: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        operation: Operation | None = None,
        status: Status | str | None = None,
    ) -> int:
        """Write the registry (filtered as :meth:`rows`) as CSV with a header; returns the row count.

        Open ``fp`` with ``newline=""``: rows end with CRLF, as RFC 4180 says.
        """
        rows = self.rows(side=side, since=since, until=until, operation=operation, status=status)
        writer = csv.DictWriter(fp, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return len(rows)

    def xml(
        self,
        fp: TextIO,
        *,
        side: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        operation: Operation | None = None,
        status: Status | str | None = None,
    ) -> int:
        """Write the registry as XML: ``<registry count=N><operation><side>…</side>…</operation>…``.

        One ``<operation>`` per row with one child element per column (:data:`EXPORT_COLUMNS`).
        Returns the row count.
        """
        rows = self.rows(side=side, since=since, until=until, operation=operation, status=status)
        root = ET.Element("registry", count=str(len(rows)))
        for row in rows:
            item = ET.SubElement(root, "operation")
            for column in EXPORT_COLUMNS:
                ET.SubElement(item, column).text = row[column]
        ET.indent(root)
        fp.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        fp.write(ET.tostring(root, encoding="unicode"))
        fp.write("\n")
        return len(rows)
