"""The ECR's write-ahead log: every operation journaled before its first byte, its outcome after.

Holds :class:`EcrLog` (``journal.ecr``), used by :class:`posbridge.ecr.client.EcrClient` and the
CLI, and :class:`EcrEntry`, one row of table ``ecr_entries``. An entry moves

    pending -> sent -> done                  (outcome known)
                    -> unknown -> resolved   (settled afterwards by recovery, ``how`` says how)
                               -> refund_needed (recovery could not undo it: a person must look)

each move one conditional UPDATE, so a crash or a lost answer is always found again
(:meth:`EcrLog.unresolved`) and resolved — never charged twice nor forgotten. The log also numbers
the ECR's transactions and answers the recovery's questions (last money operation, a settlement
since, the open entries of one terminal under any of its names, their owner processes).

It does not hold the connection, schema or fault policy (:mod:`posbridge.journal.storage`), the
terminal's ledger (:mod:`posbridge.journal.ledger`) or the export (:mod:`posbridge.journal.export`);
it sends nothing and decides no recovery (the ECR client does).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from posbridge.journal.storage import (
    JournalError,
    Storage,
    loaded_datetime,
    safe_masked_pan,
    stored_datetime,
    stored_int,
)
from posbridge.model import Operation, Request, Result, Status

__all__ = ["ECR_OPEN_STATES", "ECR_STATES", "MAX_TRANSACTION_ID", "EcrEntry", "EcrLog"]

MAX_TRANSACTION_ID = 999_999
"""The ECR's transaction numbers run 1 … 999999, then 1 again."""

ECR_STATES = ("pending", "sent", "done", "unknown", "resolved", "refund_needed")
"""Every state an entry can be in (see :class:`EcrEntry`)."""

ECR_OPEN_STATES = ("pending", "sent", "unknown")
"""States whose outcome is not known yet: recovery must resolve them."""

_MONEY_OPERATIONS_SQL = "('sale', 'refund', 'cancel', 'preauth', 'completion', 'cancel_preauth')"


@dataclass(frozen=True)
class EcrEntry:
    """One ECR-side write-ahead journal entry.

    ``state`` is ``pending`` (journaled, nothing sent), ``sent`` (durably journaled; its bytes may
    have been written), ``done`` (outcome known), ``unknown`` (the exchange failed after sending:
    must be resolved), ``resolved`` (settled afterwards, ``how`` says how) or ``refund_needed``
    (recovery could not undo it by reversal: a person must look). ``result`` is the outcome once
    known (slips are not journaled); ``answer`` an answer that did not match the request; ``owner``
    the process that ran it (:class:`posbridge.ecr.ownership.Owner` as text).
    """

    id: int
    terminal: str
    request: Request
    state: str
    created_at: datetime
    updated_at: datetime
    result: Result | None = None
    error: str | None = None
    how: str | None = None
    owner: str | None = None
    port: str | None = None
    answer: dict[str, Any] | None = None


def _result_values(result: Result) -> dict[str, Any]:
    return {
        "status": Status(result.status).value,
        "response_code": result.response_code,
        "response_text": result.response_text,
        "host_code": result.host_code,
        "res_amount": stored_int(result.amount),
        "res_currency": stored_int(result.currency),
        "res_rrn": result.rrn,
        "res_auth_code": result.auth_code,
        "masked_pan": safe_masked_pan(result.masked_pan),
        "card_scheme": result.card_scheme,
        "expiry": result.expiry,
        "res_terminal_id": result.terminal_id,
        "merchant_id": result.merchant_id,
        "host_datetime": stored_datetime(result.host_datetime),
    }


def _entry(row: sqlite3.Row) -> EcrEntry:
    try:
        operation: Any = Operation(row["operation"])
    except ValueError:  # written by a newer posbridge: kept as its text
        operation = row["operation"]
    request = Request(
        operation=operation,
        amount=row["amount"],
        currency=row["currency"],
        transaction_id=row["transaction_id"],
        rrn=row["rrn"],
        auth_code=row["auth_code"],
        original_operation=Operation(row["original_operation"]) if row["original_operation"] else None,
        original_amount=row["original_amount"],
        terminal_id=row["terminal_id"],
        ecr_datetime=loaded_datetime(row["ecr_datetime"]),
    )
    result = None
    if row["status"] is not None:
        result = Result(
            operation=operation,
            status=Status(row["status"]),
            response_code=row["response_code"] or "",
            response_text=row["response_text"] or "",
            amount=row["res_amount"],
            currency=row["res_currency"],
            rrn=row["res_rrn"],
            auth_code=row["res_auth_code"],
            masked_pan=row["masked_pan"],
            card_scheme=row["card_scheme"],
            expiry=row["expiry"],
            terminal_id=row["res_terminal_id"],
            merchant_id=row["merchant_id"],
            transaction_id=row["transaction_id"],
            host_datetime=loaded_datetime(row["host_datetime"]),
            host_code=row["host_code"],
        )
    return EcrEntry(
        id=row["id"], terminal=row["terminal"], request=request, state=row["state"],
        created_at=loaded_datetime(row["created_at"]) or datetime.min,
        updated_at=loaded_datetime(row["updated_at"]) or datetime.min,
        result=result, error=row["error"], how=row["how"], owner=row["owner"], port=row["port"],
        answer=json.loads(row["answer"]) if row["answer"] else None,
    )


class EcrLog:
    """The ECR side of a journal (``journal.ecr``). ``clock`` stamps the entries.

    Each write is one statement on ``storage`` (atomic and durable on its own), so the client's
    per-operation cost is a few fsyncs of a WAL file, not a transaction's.
    """

    def __init__(self, storage: Storage, clock: Callable[[], datetime] = datetime.now) -> None:
        self._storage = storage
        self._clock = clock

    def next_transaction_id(self) -> str:
        """The ECR's next transaction number (STAN): persisted, 1 … 999999, then 1 again."""
        return str(self._storage.next_counter("ecr_transaction_id", wrap_after=MAX_TRANSACTION_ID))

    # --- the write-ahead steps -----------------------------------------------------------------------
    def begin(self, request: Request, terminal: str, *, port: str | None = None,
              owner: str | None = None) -> int:
        """Journal a request before its first byte is sent (state ``pending``); returns the entry id.

        ``terminal`` is the journal's key for the terminal (its id or canonical port), ``port`` the
        canonical port, ``owner`` the process running the operation.
        """
        now = stored_datetime(self._clock())
        op = request.operation
        original_transaction_id = request.transaction_id if op is Operation.EMERGENCY_REVERSAL else None
        cur = self._storage.execute(
            "INSERT INTO ecr_entries (terminal, state, created_at, updated_at, operation, amount, "
            "currency, transaction_id, rrn, auth_code, original_operation, original_amount, "
            "terminal_id, ecr_datetime, owner, port, original_transaction_id) "
            "VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                terminal, now, now, op.value if isinstance(op, Operation) else str(op),
                stored_int(request.amount), stored_int(request.currency), request.transaction_id,
                request.rrn, request.auth_code,
                request.original_operation.value if request.original_operation else None,
                stored_int(request.original_amount), request.terminal_id,
                stored_datetime(request.ecr_datetime), owner, port, original_transaction_id,
            ),
        )
        return int(cur.lastrowid or 0)

    def _move(self, entry_id: int, allowed: tuple[str, ...], state: str, **values: Any) -> None:
        values.update(state=state, updated_at=stored_datetime(self._clock()))
        sets = ", ".join(f"{k} = :{k}" for k in values)
        allowed_names = ", ".join(f":allowed{i}" for i in range(len(allowed)))
        values.update({f"allowed{i}": name for i, name in enumerate(allowed)}, entry_id=entry_id)
        with self._storage.locked() as conn:  # one conditional UPDATE: the state check and the move are one statement
            moved = conn.execute(
                f"UPDATE ecr_entries SET {sets} WHERE id = :entry_id AND state IN ({allowed_names})", values
            ).rowcount
            if moved:
                return
            row = conn.execute("SELECT state FROM ecr_entries WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise JournalError(f"no ECR journal entry {entry_id}")
        raise JournalError(f"ECR journal entry {entry_id} is {row['state']}, cannot become {state}")

    def sent(self, entry_id: int) -> None:
        """The first byte of the request is about to be written: state ``sent``."""
        self._move(entry_id, ("pending", "sent"), "sent")

    def finish(self, entry_id: int, result: Result) -> None:
        """The outcome is known: state ``done``, with the result's status, codes, RRN, masked PAN…"""
        self._move(entry_id, ECR_OPEN_STATES, "done", **_result_values(result))

    def unknown(self, entry_id: int, error: str, answer: Result | None = None) -> None:
        """The exchange failed after sending: state ``unknown`` — the entry must be resolved later.

        ``answer`` is an answer that did not match the request, kept beside it for the audit.
        """
        values: dict[str, Any] = {"error": error}
        if answer is not None:
            values["answer"] = json.dumps(
                {k: v for k, v in _result_values(answer).items() if v is not None}, ensure_ascii=False)
        self._move(entry_id, ECR_OPEN_STATES, "unknown", **values)

    # --- recovery's steps ----------------------------------------------------------------------------
    def resolve(self, entry_id: int, result: Result | None, how: str) -> None:
        """An open entry was settled afterwards (``how``: e.g. ``"reversed"``, ``"not_sent"``):
        state ``resolved``. ``result`` is the answer that proved it (None when nothing was sent)."""
        values = _result_values(result) if result is not None else {}
        self._move(entry_id, ECR_OPEN_STATES, "resolved", how=how, **values)

    def flag(self, entry_id: int, result: Result | None, how: str, note: str) -> None:
        """Recovery cannot settle the entry by itself (e.g. its batch was settled): state
        ``refund_needed``, with the reversal's answer and a note for the person who must act."""
        values = _result_values(result) if result is not None else {}
        values.pop("status", None)  # the entry's own outcome stays unknown; the answer is the reversal's
        self._move(entry_id, ECR_OPEN_STATES, "refund_needed", how=how, error=note, **values)

    def note(self, entry_id: int, note: str) -> None:
        """Add a line to an entry's error text (what recovery tried), without changing its state."""
        self._storage.execute(
            "UPDATE ecr_entries SET error = COALESCE(error || char(10), '') || ?, updated_at = ? "
            "WHERE id = ?", (note, stored_datetime(self._clock()), entry_id))

    def resolve_superseded(self, transaction_id: str | None, terminal: str, original_id: int) -> None:
        """Close open reversal entries of ``transaction_id`` that an earlier recovery left behind:
        the original (entry ``original_id``) has been resolved since."""
        if not transaction_id:
            return
        self._storage.execute(
            "UPDATE ecr_entries SET state = 'resolved', how = 'superseded', updated_at = ? "
            "WHERE terminal = ? AND transaction_id = ? AND operation = 'emergency_reversal' "
            "AND state IN ('pending', 'sent', 'unknown') AND id <> ?",
            (stored_datetime(self._clock()), terminal, transaction_id, original_id))

    # --- questions -----------------------------------------------------------------------------------
    def settled_after(self, entry_id: int, terminal: str) -> bool:
        """True if a settlement of ``terminal`` was (or may have been) run after entry ``entry_id``."""
        return bool(self._storage.query(
            "SELECT 1 FROM ecr_entries WHERE terminal = ? AND id > ? AND operation = 'settlement' "
            "AND (status IS NULL OR status = 'approved') AND state <> 'pending' LIMIT 1",
            (terminal, entry_id)))

    def last_transaction_id(self, terminal: str) -> int | None:
        """The highest transaction number this journal holds for ``terminal``."""
        row = self._storage.query(
            "SELECT MAX(CAST(transaction_id AS INTEGER)) FROM ecr_entries WHERE terminal = ? "
            "AND length(transaction_id) <= 18", (terminal,))[0]
        return None if row[0] is None else int(row[0])

    def last_money_operation(self, terminal: str) -> EcrEntry | None:
        """The terminal's most recent money operation that was sent (not a reversal), or None."""
        rows = self._storage.query(
            "SELECT * FROM ecr_entries WHERE terminal = ? AND state <> 'pending' AND operation IN "
            f"{_MONEY_OPERATIONS_SQL} ORDER BY id DESC LIMIT 1", (terminal,))
        return _entry(rows[0]) if rows else None

    def reversal_of(self, terminal: str, transaction_id: str, after_id: int) -> EcrEntry | None:
        """An approved emergency reversal of ``transaction_id`` journaled after entry ``after_id``
        for ``terminal``, or None."""
        rows = self._storage.query(
            "SELECT * FROM ecr_entries WHERE terminal = ? AND id > ? AND operation = 'emergency_reversal' "
            "AND original_transaction_id = ? AND status = 'approved' ORDER BY id LIMIT 1",
            (terminal, after_id, transaction_id))
        return _entry(rows[0]) if rows else None

    def entry(self, entry_id: int) -> EcrEntry | None:
        """One entry by id, or None."""
        rows = self._storage.query("SELECT * FROM ecr_entries WHERE id = ?", (entry_id,))
        return _entry(rows[0]) if rows else None

    def last(self, terminal: str) -> EcrEntry | None:
        """The terminal's most recent entry, whatever its state."""
        rows = self._storage.query(
            "SELECT * FROM ecr_entries WHERE terminal = ? ORDER BY id DESC LIMIT 1", (terminal,))
        return _entry(rows[0]) if rows else None

    def unresolved(self, terminal: str | None = None) -> list[EcrEntry]:
        """Entries still ``pending``, ``sent`` or ``unknown`` (of one terminal or all), oldest first."""
        sql = "SELECT * FROM ecr_entries WHERE state IN ('pending', 'sent', 'unknown')"
        params: tuple[Any, ...] = ()
        if terminal is not None:
            sql, params = sql + " AND terminal = ?", (terminal,)
        return [_entry(r) for r in self._storage.query(sql + " ORDER BY id", params)]

    def unresolved_for(
        self,
        terminal: str,
        *,
        port: str | None = None,
        terminal_id: str | None = None,
        canonical: Callable[[str], str] | None = None,
    ) -> list[EcrEntry]:
        """Open entries of one terminal under any of its names, oldest first: the journal key
        ``terminal``, the canonical ``port``, the ``terminal_id`` sent, or (for entries written
        before ports were canonical) a key that ``canonical`` turns into ``port``."""
        found = []
        for entry in self.unresolved():
            same = entry.terminal == terminal or (port is not None and entry.port == port) or (
                terminal_id is not None and entry.request.terminal_id == terminal_id)
            if not same and port is not None and canonical is not None and entry.port is None:
                try:
                    same = canonical(entry.terminal) == port
                except (OSError, ValueError):
                    same = False
            if same:
                found.append(entry)
        return found

    def counts_by_state(self) -> dict[str, int]:
        """How many entries are in each state (states with none left out)."""
        rows = self._storage.query("SELECT state, COUNT(*) FROM ecr_entries GROUP BY state")
        return {str(row[0]): int(row[1]) for row in rows}
