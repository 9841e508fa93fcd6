"""The command store: command ids as idempotency keys, persisted in SQLite next to the ECR journal.

A cash register that retries a request (its HTTP client timed out, it crashed and came back) sends
the same ``command_id`` again; the store remembers every accepted command so the retry gets the
first command's outcome and runs nothing. Each row links the command to the ECR journal entry that
carries its operation (:meth:`CommandStore.link_entry`, written *before* the operation's first
byte), so after a crash the command's truth is the journal's, resolved by recovery.

Its own file (``ecr.sqlite3`` -> ``ecr.commands.sqlite3``), not a table in the journal: the journal
is the ECR client's, with its own schema versions; the store is the HTTP service's. WAL mode,
``synchronous=FULL``, as the journal: an accepted command survives a power cut.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from posbridge.journal import JournalFault

__all__ = ["CommandRow", "CommandStore", "commands_path_for"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    command_id   TEXT PRIMARY KEY,
    terminal     TEXT NOT NULL,
    operation    TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    params       TEXT NOT NULL,
    origin       TEXT NOT NULL,
    instance     TEXT NOT NULL,
    phase        TEXT NOT NULL,      -- queued (accepted, not over), finished
    entry_id     INTEGER,            -- the ECR journal entry of its operation, once journaled
    outcome      TEXT,               -- JSON: the result (masked card only) and slip, when one came
    error        TEXT,               -- why it failed without a result
    rrn          TEXT,               -- the result's RRN, to find the operation later
    accepted_at  TEXT NOT NULL,
    finished_at  TEXT
);
CREATE INDEX IF NOT EXISTS commands_by_rrn ON commands (terminal, rrn);
CREATE INDEX IF NOT EXISTS commands_by_terminal ON commands (terminal, accepted_at);
"""


def commands_path_for(journal: str) -> str:
    """Where the store lives for a journal file: ``ecr.sqlite3`` -> ``ecr.commands.sqlite3``
    (``:memory:`` for an in-memory journal)."""
    if journal in ("", ":memory:"):
        return ":memory:"
    path = Path(journal)
    return str(path.with_name(f"{path.stem}.commands{path.suffix or '.sqlite3'}"))


@dataclass(frozen=True)
class CommandRow:
    """One accepted command as stored (see the module docstring)."""

    command_id: str
    terminal: str
    operation: str
    fingerprint: str
    params: dict[str, Any]
    origin: str
    instance: str
    phase: str
    entry_id: int | None
    outcome: dict[str, Any] | None
    error: str | None
    rrn: str | None
    accepted_at: datetime
    finished_at: datetime | None


class CommandStore:
    """SQLite table of commands (see the module docstring). Thread-safe; ``path`` or ``:memory:``."""

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._conn.row_factory = sqlite3.Row
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.executescript(SCHEMA)
        except sqlite3.Error as error:
            damaged = "malformed" in str(error) or "not a database" in str(error)
            raise JournalFault(self.path, "damaged" if damaged else "unavailable",
                               f"command store {self.path}: {error}") from None

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    def _x(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._conn.execute(sql, params)
            except sqlite3.Error as error:
                raise JournalFault(self.path, "unavailable", f"command store {self.path}: {error}") from None

    @staticmethod
    def _row(row: sqlite3.Row) -> CommandRow:
        return CommandRow(
            command_id=row["command_id"], terminal=row["terminal"], operation=row["operation"],
            fingerprint=row["fingerprint"], params=json.loads(row["params"]), origin=row["origin"],
            instance=row["instance"], phase=row["phase"], entry_id=row["entry_id"],
            outcome=json.loads(row["outcome"]) if row["outcome"] else None, error=row["error"], rrn=row["rrn"],
            accepted_at=datetime.fromisoformat(row["accepted_at"]),
            finished_at=datetime.fromisoformat(row["finished_at"]) if row["finished_at"] else None)

    def get(self, command_id: str) -> CommandRow | None:
        """The command with this id, or None."""
        rows = self._x("SELECT * FROM commands WHERE command_id = ?", (command_id,)).fetchall()
        return self._row(rows[0]) if rows else None

    def accept(self, command_id: str, *, terminal: str, operation: str, fingerprint: str,
               params: dict[str, Any], origin: str, instance: str, now: datetime) -> CommandRow | None:
        """Store a new command (phase ``queued``); None when it is new, else the command already
        stored under this id (nothing is changed then)."""
        cursor = self._x(
            "INSERT OR IGNORE INTO commands (command_id, terminal, operation, fingerprint, params, origin, "
            "instance, phase, accepted_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
            (command_id, terminal, operation, fingerprint, json.dumps(params, ensure_ascii=False, sort_keys=True),
             origin, instance, now.isoformat(timespec="milliseconds")))
        return None if cursor.rowcount else self.get(command_id)

    def link_entry(self, command_id: str, entry_id: int) -> None:
        """The command's operation was journaled as ECR journal entry ``entry_id`` (durable before
        anything is written to the line)."""
        self._x("UPDATE commands SET entry_id = ? WHERE command_id = ?", (entry_id, command_id))

    def finish(self, command_id: str, *, now: datetime, outcome: dict[str, Any] | None = None,
               error: str | None = None) -> None:
        """The command is over: its result (masked card only; slip included) or why it failed."""
        rrn = (outcome or {}).get("rrn")
        self._x("UPDATE commands SET phase = 'finished', outcome = ?, error = ?, rrn = ?, finished_at = ? "
                "WHERE command_id = ?",
                (json.dumps(outcome, ensure_ascii=False) if outcome is not None else None, error, rrn,
                 now.isoformat(timespec="milliseconds"), command_id))

    def unfinished(self, other_than: str) -> list[CommandRow]:
        """Commands left queued or running by another instance of the service (a crash)."""
        rows = self._x("SELECT * FROM commands WHERE phase <> 'finished' AND instance <> ? ORDER BY accepted_at",
                       (other_than,)).fetchall()
        return [self._row(r) for r in rows]

    def find_by_rrn(self, terminal: str, rrn: str) -> CommandRow | None:
        """The latest command of ``terminal`` whose result carried RRN ``rrn`` and was journaled."""
        rows = self._x("SELECT * FROM commands WHERE terminal = ? AND rrn = ? AND entry_id IS NOT NULL "
                       "ORDER BY accepted_at DESC LIMIT 1", (terminal, rrn)).fetchall()
        return self._row(rows[0]) if rows else None

    def last_settlement(self, terminal: str) -> datetime | None:
        """When the terminal's latest approved Settlement command was accepted (None: never)."""
        rows = self._x("SELECT MAX(accepted_at) FROM commands WHERE terminal = ? AND operation = 'Settlement' "
                       "AND json_extract(outcome, '$.terminal_status') = 'approved'", (terminal,)).fetchall()
        return datetime.fromisoformat(rows[0][0]) if rows and rows[0][0] else None

    def since(self, terminal: str, after: datetime | None) -> list[CommandRow]:
        """The terminal's commands accepted after ``after`` (all when None), oldest first."""
        if after is None:
            rows = self._x("SELECT * FROM commands WHERE terminal = ? ORDER BY accepted_at", (terminal,))
        else:
            rows = self._x("SELECT * FROM commands WHERE terminal = ? AND accepted_at > ? ORDER BY accepted_at",
                           (terminal, after.isoformat(timespec="milliseconds")))
        return [self._row(r) for r in rows.fetchall()]
