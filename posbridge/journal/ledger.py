"""The virtual terminal's ledger: its operations, batches and totals, in the journal.

Holds :class:`Ledger`, written by :class:`posbridge.emulator.host.BankHost` (one row per operation
it decided, table ``ops``; its batches, table ``batches``; its RRN counter and card-hash salt) and
read by the terminal (reports, undelivered results). The batch lives here, not in memory, so
settlement and duplicate control survive a restart.

Rows are append-only: whether an operation still counts is *derived* from the rows that refer to it
(an approved emergency reversal, a cancel, a completion, refunds — the ``op_live`` / ``op_state``
views of :mod:`posbridge.journal.storage`), never stored as a flag that could drift from the journal.
No full card number is stored: masked PANs only, plus a salted SHA-256 the host uses for per-card
limits.

It does not hold the connection, schema or fault policy (:mod:`posbridge.journal.storage`), the
ECR's write-ahead log (:mod:`posbridge.journal.ecr_log`) or the export
(:mod:`posbridge.journal.export`); it decides nothing (the host does).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from posbridge.journal.storage import (
    JournalError,
    Storage,
    loaded_datetime,
    safe_masked_pan,
    stored_datetime,
    stored_int,
)
from posbridge.model import Operation, Status, Totals

__all__ = ["Ledger", "OperationRecord", "OperationState"]


@dataclass(frozen=True)
class OperationRecord:
    """One terminal-side operation as journaled: what the terminal answered, and its links."""

    id: int
    terminal_id: str
    merchant_id: str | None
    batch: int
    transaction_id: str | None
    operation: Operation
    status: Status
    code: str
    text: str
    amount: int | None
    currency: int | None
    rrn: str | None
    auth_code: str | None
    masked_pan: str | None
    card_scheme: str | None
    expiry: str | None
    pan_hash: str | None
    original_id: int | None
    original_rrn: str | None
    host_datetime: datetime
    delivered: bool
    auto_reversed: bool
    totals: Totals | None
    result_delivered: bool | None = None  # did the ECR get the result? None: not known yet


@dataclass(frozen=True)
class OperationState:
    """What an operation amounts to now, derived from the rows that refer to it.

    ``live``: approved and not reversed. ``voided``: a live cancel refers to it. ``completed_by``:
    id of the live completion of a pre-authorization. ``refunded``: sum of live, not voided refunds
    of it. ``dependents``: how many live operations refer to it (cancels, completions, refunds).
    """

    live: bool
    reversed: bool
    voided: bool
    completed_by: int | None
    refunded: int
    dependents: int


_OP_FIELDS = (
    "terminal_id", "merchant_id", "batch", "stan", "operation", "status", "code", "text", "amount",
    "currency", "rrn", "auth_code", "masked_pan", "card_scheme", "expiry", "pan_hash", "original_id",
    "original_rrn", "host_datetime", "delivered", "auto_reversed", "totals",
)
_INSERT_OP = f"INSERT INTO ops ({', '.join(_OP_FIELDS)}) VALUES ({', '.join('?' * len(_OP_FIELDS))})"


def _totals_json(totals: Totals | None) -> str | None:
    return None if totals is None else json.dumps(totals.__dict__, sort_keys=True)


def _totals_from(text: str | None) -> Totals | None:
    return None if text is None else Totals(**json.loads(text))


# The columns an OperationRecord is read from, in this order: rows are unpacked by position (a full
# report lists a whole batch, and looking 24 columns up by name per row was most of its cost).
_RECORD_COLUMNS = ", ".join(("id", *_OP_FIELDS[:-1], "result_delivered", "totals"))
_SELECT_RECORDS = f"SELECT {_RECORD_COLUMNS} FROM ops"
_OPERATIONS = {op.value: op for op in Operation}
_STATUSES = {status.value: status for status in Status}


def _record(row: sqlite3.Row) -> OperationRecord:
    (op_id, terminal_id, merchant_id, batch, stan, operation, status, code, text, amount, currency, rrn,
     auth_code, masked_pan, card_scheme, expiry, pan_hash, original_id, original_rrn, host_datetime,
     delivered, auto_reversed, result_delivered, totals) = row
    return OperationRecord(
        id=op_id, terminal_id=terminal_id, merchant_id=merchant_id, batch=batch, transaction_id=stan,
        operation=_OPERATIONS.get(operation) or Operation(operation),
        status=_STATUSES.get(status) or Status(status), code=code, text=text, amount=amount,
        currency=currency, rrn=rrn, auth_code=auth_code, masked_pan=masked_pan, card_scheme=card_scheme,
        expiry=expiry, pan_hash=pan_hash, original_id=original_id, original_rrn=original_rrn,
        host_datetime=loaded_datetime(host_datetime) or datetime.min, delivered=bool(delivered),
        auto_reversed=bool(auto_reversed), totals=_totals_from(totals),
        result_delivered=None if result_delivered is None else bool(result_delivered),
    )


class Ledger:
    """The terminal side of a journal (``journal.ledger``): batches, operations, derived states,
    totals and limits. Every method is one statement or one transaction of ``storage``; group
    several in ``journal.transaction()`` (the host decides each operation inside one)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    # --- the host's counters -------------------------------------------------------------------------
    def next_counter(self, name: str) -> int:
        """Increment and return a persisted counter (1, 2, 3 …), in one statement."""
        return self._storage.next_counter(f"counter:{name}")

    def pan_salt(self) -> bytes:
        """This journal's secret salt for card-number hashes, created on first use."""
        with self._storage.transaction():
            salt = self._storage.get_meta("pan_salt")
            if salt is None:
                salt = secrets.token_hex(16)
                self._storage.set_meta("pan_salt", salt)
            return bytes.fromhex(salt)

    # --- batches -------------------------------------------------------------------------------------
    def batch_number(self, terminal_id: str) -> int:
        """The terminal's open batch number (the next one if none is open yet). Writes nothing."""
        row = self._storage.query("SELECT MAX(number), MAX(CASE WHEN closed_at IS NULL THEN number END) "
                                  "FROM batches WHERE terminal_id = ?", (terminal_id,))[0]
        if row[1] is not None:
            return int(row[1])
        return int(row[0] or 0) + 1

    def open_batch(self, terminal_id: str, now: datetime) -> int:
        """The terminal's open batch number, opening the next batch if none is open."""
        with self._storage.transaction() as conn:
            number = self.batch_number(terminal_id)
            conn.execute("INSERT OR IGNORE INTO batches (terminal_id, number, opened_at) VALUES (?, ?, ?)",
                         (terminal_id, number, stored_datetime(now)))
            return number

    def close_batch(self, terminal_id: str, number: int, now: datetime, totals: Totals) -> None:
        """Close the batch (settlement) with its totals; the next operation opens ``number + 1``."""
        with self._storage.transaction() as conn:
            cur = conn.execute(
                "UPDATE batches SET closed_at = ?, totals = ? "
                "WHERE terminal_id = ? AND number = ? AND closed_at IS NULL",
                (stored_datetime(now), _totals_json(totals), terminal_id, number),
            )
            if cur.rowcount != 1:
                raise JournalError(f"batch {number} of terminal {terminal_id} is not open")

    # --- operations ----------------------------------------------------------------------------------
    def add_operation(
        self,
        *,
        terminal_id: str,
        batch: int,
        operation: Operation,
        status: Status,
        code: str,
        text: str,
        host_datetime: datetime,
        merchant_id: str | None = None,
        transaction_id: str | None = None,
        amount: int | None = None,
        currency: int | None = None,
        rrn: str | None = None,
        auth_code: str | None = None,
        masked_pan: str | None = None,
        card_scheme: str | None = None,
        expiry: str | None = None,
        pan_hash: str | None = None,
        original_id: int | None = None,
        original_rrn: str | None = None,
        delivered: bool = True,
        auto_reversed: bool = False,
        totals: Totals | None = None,
    ) -> OperationRecord:
        """Append one operation the terminal answered; returns it as stored."""
        values = (
            terminal_id, merchant_id, batch, transaction_id, Operation(operation).value,
            Status(status).value, code, text, stored_int(amount), stored_int(currency), rrn,
            auth_code, safe_masked_pan(masked_pan), card_scheme, expiry, pan_hash, original_id,
            original_rrn, stored_datetime(host_datetime), int(delivered), int(auto_reversed),
            _totals_json(totals),
        )
        with self._storage.transaction() as conn:
            cur = conn.execute(_INSERT_OP, values)
            record = self.operation(int(cur.lastrowid or 0))
        assert record is not None
        return record

    def operation(self, op_id: int) -> OperationRecord | None:
        """The operation with this id, or None."""
        rows = self._storage.query(_SELECT_RECORDS + " WHERE id = ?", (op_id,))
        return _record(rows[0]) if rows else None

    def operations(self, terminal_id: str | None = None, batch: int | None = None) -> list[OperationRecord]:
        """Operations in journal order, optionally of one terminal and batch."""
        sql, params = _SELECT_RECORDS + " WHERE 1", list[Any]()
        if terminal_id is not None:
            sql += " AND terminal_id = ?"
            params.append(terminal_id)
        if batch is not None:
            sql += " AND batch = ?"
            params.append(batch)
        return [_record(r) for r in self._storage.query(sql + " ORDER BY id", tuple(params))]

    def set_result_delivered(self, op_id: int, delivered: bool) -> None:
        """Record whether the ECR acknowledged the terminal's result of operation ``op_id``.

        An undelivered result stays visible in the journal (the ECR does not know the outcome and
        will recover it), rather than only in the terminal's memory.
        """
        self._storage.execute("UPDATE ops SET result_delivered = ? WHERE id = ?", (int(delivered), op_id))

    def undelivered_operations(self, terminal_id: str | None = None) -> list[OperationRecord]:
        """Operations whose result the ECR never acknowledged, oldest first."""
        sql, params = _SELECT_RECORDS + " WHERE result_delivered = 0", list[Any]()
        if terminal_id is not None:
            sql += " AND terminal_id = ?"
            params.append(terminal_id)
        return [_record(r) for r in self._storage.query(sql + " ORDER BY id", tuple(params))]

    # --- lookups the host's rules need ---------------------------------------------------------------
    def find_by_rrn(self, terminal_id: str, rrn: str) -> OperationRecord | None:
        """The operation that was given this RRN (emergency-reversal rows only repeat it: skipped)."""
        rows = self._storage.query(
            _SELECT_RECORDS + " WHERE terminal_id = ? AND rrn = ? AND operation <> 'emergency_reversal' "
            "ORDER BY id LIMIT 1", (terminal_id, rrn),
        )
        return _record(rows[0]) if rows else None

    def rrn_used(self, rrn: str) -> bool:
        """True if any operation of any terminal carries this RRN."""
        return bool(self._storage.query("SELECT 1 FROM ops WHERE rrn = ? LIMIT 1", (rrn,)))

    def find_by_stan(self, terminal_id: str, batch: int, transaction_id: str) -> OperationRecord | None:
        """The first delivered operation with this STAN in the batch (the duplicate-control key).

        Emergency reversals carry the STAN of what they reverse, and requests a link fault stopped
        never reached the host: neither is a first outcome.
        """
        rows = self._storage.query(
            _SELECT_RECORDS + " WHERE terminal_id = ? AND batch = ? AND stan = ? AND delivered = 1 "
            "AND operation <> 'emergency_reversal' ORDER BY id LIMIT 1",
            (terminal_id, batch, transaction_id),
        )
        return _record(rows[0]) if rows else None

    def find_settled_by_stan(self, terminal_id: str, open_batch: int,
                             transaction_id: str) -> OperationRecord | None:
        """The latest approved money operation with this STAN in a batch before ``open_batch``."""
        rows = self._storage.query(
            _SELECT_RECORDS + " WHERE terminal_id = ? AND batch < ? AND stan = ? AND delivered = 1 "
            "AND status = 'approved' AND operation IN ('sale', 'refund', 'cancel', 'preauth', "
            "'completion', 'cancel_preauth') ORDER BY id DESC LIMIT 1",
            (terminal_id, open_batch, transaction_id),
        )
        return _record(rows[0]) if rows else None

    def state(self, op_id: int) -> OperationState:
        """The derived state of an operation (see :class:`OperationState`)."""
        with self._storage.transaction() as conn:
            row = conn.execute(
                "SELECT live, voided, completed_by, status FROM op_state WHERE id = ?", (op_id,)
            ).fetchone()
            if row is None:
                raise JournalError(f"no operation {op_id}")
            refunded, dependents = conn.execute(
                "SELECT COALESCE(SUM(CASE WHEN operation = 'refund' AND NOT voided THEN amount END), 0), "
                "       COUNT(*) FROM op_state WHERE original_id = ? AND live",
                (op_id,),
            ).fetchone()
        return OperationState(
            live=bool(row["live"]),
            reversed=row["status"] == Status.APPROVED.value and not row["live"],
            voided=bool(row["voided"]),
            completed_by=row["completed_by"],
            refunded=int(refunded),
            dependents=int(dependents),
        )

    # --- totals and limits ---------------------------------------------------------------------------
    def batch_totals(self, terminal_id: str, batch: int, currency: int) -> Totals:
        """Settlement totals of a batch, straight from the journal.

        Sales: live, not cancelled sales and completions. Refunds: live, not cancelled refunds.
        Cancels: live cancels of sales, completions and refunds (releasing a pre-authorization moves
        no charged money, so it is not a cancel here). Reversed operations count nowhere.
        """
        row = self._storage.query(
            """
            SELECT
              COALESCE(SUM(s.operation IN ('sale', 'completion') AND s.live AND NOT s.voided), 0),
              COALESCE(SUM(CASE WHEN s.operation IN ('sale', 'completion') AND s.live AND NOT s.voided
                                THEN s.amount END), 0),
              COALESCE(SUM(s.operation = 'refund' AND s.live AND NOT s.voided), 0),
              COALESCE(SUM(CASE WHEN s.operation = 'refund' AND s.live AND NOT s.voided
                                THEN s.amount END), 0),
              COALESCE(SUM(s.operation = 'cancel' AND s.live
                           AND o.operation IN ('sale', 'completion', 'refund')), 0),
              COALESCE(SUM(CASE WHEN s.operation = 'cancel' AND s.live
                                 AND o.operation IN ('sale', 'completion', 'refund') THEN s.amount END), 0)
            FROM op_state s LEFT JOIN ops o ON o.id = s.original_id
            WHERE s.terminal_id = ? AND s.batch = ? AND s.currency = ?
            """,
            (terminal_id, batch, currency),
        )[0]
        return Totals(currency, *(int(v) for v in row))

    def day_spend(self, day: date, *, terminal_id: str | None = None, pan_hash: str | None = None) -> int:
        """Sum of live, not cancelled sales and pre-authorizations on ``day`` (for daily limits)."""
        start = datetime.combine(day, datetime.min.time())
        sql = (
            "SELECT COALESCE(SUM(amount), 0) FROM op_state WHERE operation IN ('sale', 'preauth') "
            "AND live AND NOT voided AND host_datetime >= ? AND host_datetime < ?"
        )
        params: list[Any] = [stored_datetime(start), stored_datetime(start + timedelta(days=1))]
        if terminal_id is not None:
            sql += " AND terminal_id = ?"
            params.append(terminal_id)
        if pan_hash is not None:
            sql += " AND pan_hash = ?"
            params.append(pan_hash)
        return int(self._storage.query(sql, tuple(params))[0][0])

    def count(self) -> int:
        """How many operations the ledger holds (every terminal, every batch)."""
        return int(self._storage.query("SELECT COUNT(*) FROM ops")[0][0])
