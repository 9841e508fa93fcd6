"""posbridge's journal: one SQLite schema for both ends of the wire.

* **Terminal side** — the virtual terminal's batch, written by :class:`posbridge.emulator.host.BankHost`:
  every operation it decided (table ``ops``), its batches (``batches``) and counters (``meta``).
  The batch lives here, not in memory, so settlement and duplicate control survive a restart.
* **ECR side** — the ECR client's write-ahead journal (``ecr_entries``): an operation is journaled
  before its first byte is sent and its outcome after, so a crash or a lost answer is always found
  again (:meth:`Journal.ecr_unresolved`) and resolved, never charged twice nor forgotten.
* **Registry export** of both sides to CSV and XML (:meth:`Journal.export_csv`,
  :meth:`Journal.export_xml`).

Rows are append-only on the terminal side: whether an operation still counts is *derived* from the
rows that refer to it (an approved emergency reversal, a cancel, a completion, refunds — see the
``op_live`` / ``op_state`` views), never stored as a flag that could drift from the journal.

No full card number is ever stored: masked PANs only (anything with more than 10 digits is masked
again on the way in), plus a salted SHA-256 the host uses for per-card limits.

Datetimes are stored as fixed-width ISO text, so SQL compares them in order. Naive datetimes (the
terminal's local time, as terminals keep it) are stored as they are; aware ones are converted to UTC.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import sqlite3
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from datetime import date, datetime, timedelta, timezone
from typing import Any, TextIO

from posbridge.model import Operation, PosbridgeError, Request, Result, Status, Totals, mask_pan

__all__ = [
    "EXPORT_COLUMNS", "EXPORT_OUTCOMES", "SCHEMA_VERSION", "JournalCheck", "check_journal", "EcrEntry", "Journal", "JournalError", "JournalFault", "OperationRecord",
    "OperationState", "default_journal_path", "safe_masked_pan",
]

SCHEMA_VERSION = 2
MAX_TRANSACTION_ID = 999_999

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

ECR_OPEN_STATES = ("pending", "sent", "unknown")

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE batches (
    terminal_id TEXT NOT NULL,
    number      INTEGER NOT NULL,
    opened_at   TEXT NOT NULL,
    closed_at   TEXT,
    totals      TEXT,
    PRIMARY KEY (terminal_id, number)
);
CREATE TABLE ops (
    id             INTEGER PRIMARY KEY,
    terminal_id    TEXT NOT NULL,
    merchant_id    TEXT,
    batch          INTEGER NOT NULL,
    stan           TEXT,
    operation      TEXT NOT NULL,
    status         TEXT NOT NULL,
    code           TEXT NOT NULL,
    text           TEXT NOT NULL,
    amount         INTEGER,
    currency       INTEGER,
    rrn            TEXT,
    auth_code      TEXT,
    masked_pan     TEXT,
    card_scheme    TEXT,
    expiry         TEXT,
    pan_hash       TEXT,
    original_id    INTEGER REFERENCES ops(id),
    original_rrn   TEXT,
    host_datetime  TEXT NOT NULL,
    delivered      INTEGER NOT NULL DEFAULT 1,
    auto_reversed  INTEGER NOT NULL DEFAULT 0,
    totals         TEXT
);
CREATE INDEX ops_stan ON ops (terminal_id, batch, stan);
CREATE INDEX ops_rrn ON ops (rrn);
CREATE INDEX ops_original ON ops (original_id);
CREATE INDEX ops_time ON ops (host_datetime);
CREATE INDEX ops_pan_hash ON ops (pan_hash);

-- live: approved and not undone by an approved emergency (or automatic) reversal.
CREATE VIEW op_live AS
SELECT o.*,
       (o.status = 'approved' AND o.operation <> 'emergency_reversal' AND NOT EXISTS (
            SELECT 1 FROM ops r
            WHERE r.original_id = o.id AND r.operation = 'emergency_reversal'
              AND r.status = 'approved')) AS live
FROM ops o;

-- voided: a live cancel / cancel of a pre-authorization refers to it.
-- completed_by: the live completion of a pre-authorization. refunded: live, not voided refunds.
CREATE VIEW op_state AS
SELECT l.*,
       EXISTS (SELECT 1 FROM op_live c
               WHERE c.original_id = l.id AND c.live
                 AND c.operation IN ('cancel', 'cancel_preauth')) AS voided,
       (SELECT MIN(c.id) FROM op_live c
        WHERE c.original_id = l.id AND c.live AND c.operation = 'completion') AS completed_by
FROM op_live l;

CREATE TABLE ecr_entries (
    id                 INTEGER PRIMARY KEY,
    terminal           TEXT NOT NULL,
    state              TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    operation          TEXT NOT NULL,
    amount             INTEGER,
    currency           INTEGER,
    transaction_id     TEXT,
    rrn                TEXT,
    auth_code          TEXT,
    original_operation TEXT,
    original_amount    INTEGER,
    terminal_id        TEXT,
    ecr_datetime       TEXT,
    error              TEXT,
    how                TEXT,
    status             TEXT,
    response_code      TEXT,
    response_text      TEXT,
    host_code          TEXT,
    res_amount         INTEGER,
    res_currency       INTEGER,
    res_rrn            TEXT,
    res_auth_code      TEXT,
    masked_pan         TEXT,
    card_scheme        TEXT,
    expiry             TEXT,
    res_terminal_id    TEXT,
    merchant_id        TEXT,
    host_datetime      TEXT
);
CREATE INDEX ecr_open ON ecr_entries (state, terminal);
"""

# Schema changes after version 1, in order: _MIGRATIONS[n] takes a journal from version n + 1 to
# n + 2. A new journal gets _SCHEMA and then every migration, so both paths give the same tables.
_MIGRATIONS = (
    # 2: whether the ECR got the terminal's result (NULL: not answered yet / not applicable);
    #    the ECR side's owner process, the port as spelled, the answer that did not match its
    #    request (JSON), and the original operation's reference for reversals.
    """
    ALTER TABLE ops ADD COLUMN result_delivered INTEGER;
    ALTER TABLE ecr_entries ADD COLUMN owner TEXT;
    ALTER TABLE ecr_entries ADD COLUMN port TEXT;
    ALTER TABLE ecr_entries ADD COLUMN answer TEXT;
    ALTER TABLE ecr_entries ADD COLUMN original_transaction_id TEXT;
    """,
)


def default_journal_path() -> Path:
    """Where the ECR journal lives unless ``--journal`` says otherwise (XDG data folder)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "posbridge" / "ecr-journal.sqlite3"


class JournalError(PosbridgeError):
    """A journal that cannot be used as asked: unknown entry, wrong state change, newer schema, or a
    file fault (:class:`JournalFault`)."""


class JournalFault(JournalError):
    """The journal's file cannot be used: damaged, locked, read-only, full, missing folder...

    The message is one line naming the file, what is wrong and what to do (docs/journal.md, "Fault
    policy"); ``kind`` is a word for programs (``damaged``, ``locked``, ``read_only``, ``full``,
    ``missing_folder``, ``is_directory``, ``unavailable``). Nothing was run unrecorded when this
    is raised before an operation was journaled, and a damaged file is never replaced.
    """

    def __init__(self, path: str, kind: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.kind = kind


_ADVICE = {
    "damaged": "it is kept as it is for the audit: move it aside, start a new journal, and keep the "
               "damaged file (`posbridge journal check {path}` says more)",
    "locked": "another process has held it for more than {timeout:g} s: let it finish, or stop it",
    "read_only": "posbridge needs to write it and its folder (the -wal and -shm files beside it): "
                 "fix the permissions or choose another --journal",
    "full": "it cannot be written (the disk is full, or a file size limit): free space, then run "
            "the operation again",
    "missing_folder": "the folder does not exist: create it or choose another --journal",
    "is_directory": "that is a folder, not a journal file: name a file inside it",
    "unavailable": "check the path and its permissions",
}


def _fault_kind(error: BaseException, path: str) -> str:
    text = str(error).lower()
    name = str(getattr(error, "sqlite_errorname", "") or "")  # e.g. SQLITE_IOERR_WRITE (Python 3.11+)
    if name.startswith("SQLITE_IOERR_") and any(w in name for w in ("WRITE", "FSYNC", "TRUNCATE", "SHMSIZE")):
        return "full"
    if name in ("SQLITE_IOERR_READ", "SQLITE_IOERR_SHORT_READ"):
        return "damaged"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return "damaged"
    if "locked" in text or "busy" in text:
        return "locked"
    if "readonly" in text or "read-only" in text or "permission" in text:
        return "read_only"
    if "disk is full" in text or "disk full" in text or "no space" in text:
        return "full"
    if path not in ("", ":memory:") and not path.startswith("file:"):
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            return "is_directory"
        if not os.path.isdir(folder):
            return "missing_folder"
        if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
            return "read_only"
    return "unavailable"


def journal_fault(error: BaseException, path: str, timeout: float = 10.0) -> JournalFault:
    """The one-line :class:`JournalFault` for an SQLite (or OS) error on the journal at ``path``."""
    kind = _fault_kind(error, path)
    advice = _ADVICE[kind].format(path=path, timeout=timeout)
    what = kind.replace("_", " ")
    return JournalFault(path, kind, f"journal {path}: {what} ({error}); {advice}")


def _ts(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.isoformat(timespec="microseconds")


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _int_or_none(value: object) -> int | None:
    # SQLite holds 64-bit integers; anything else (a float, a bool, a 20-digit amount) is not stored.
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        return None
    return value


def safe_masked_pan(pan: str | None) -> str | None:
    """``pan`` masked by ``mask_pan`` (which keeps an already masked PAN as it is); None and "" as given.

    Lets callers hand in whatever they hold: a full number never reaches the database.
    """
    return mask_pan(pan) if pan else pan


def _totals_json(totals: Totals | None) -> str | None:
    if totals is None:
        return None
    return json.dumps(totals.__dict__, sort_keys=True)


def _totals_from(text: str | None) -> Totals | None:
    return None if text is None else Totals(**json.loads(text))


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


_OP_FIELDS = (
    "terminal_id", "merchant_id", "batch", "stan", "operation", "status", "code", "text", "amount",
    "currency", "rrn", "auth_code", "masked_pan", "card_scheme", "expiry", "pan_hash", "original_id",
    "original_rrn", "host_datetime", "delivered", "auto_reversed", "totals",
)


class Journal:
    """The SQLite journal. ``path`` is a file (WAL mode) or ``":memory:"``.

    Thread-safe: one connection shared under a lock; :meth:`transaction` groups several calls
    atomically (BankHost decides each operation inside one). ``clock`` stamps ECR entries.
    """

    BUSY_TIMEOUT = 10.0  # seconds SQLite waits for another process's write lock

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        clock: Callable[[], datetime] = datetime.now,
        readonly: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        self.readonly = readonly
        on_disk = self.path not in (":memory:", "") and not self.path.startswith("file:")
        if on_disk and os.path.isdir(self.path):
            raise journal_fault(IsADirectoryError("is a directory"), self.path)
        if on_disk and not os.path.isdir(os.path.dirname(os.path.abspath(self.path))):
            raise journal_fault(FileNotFoundError("no such folder"), self.path)
        if readonly and on_disk and not os.path.exists(self.path):
            raise journal_fault(FileNotFoundError("no such file"), self.path)
        try:
            target = f"file:{self.path}?mode=ro" if readonly and on_disk else self.path
            if readonly and on_disk and not os.access(os.path.dirname(os.path.abspath(self.path)), os.W_OK) \
                    and not os.path.exists(self.path + "-wal"):
                target += "&immutable=1"  # SQLite cannot make its -shm file here; nothing else writes it
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), not the module's guesses.
            self._conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None,
                                         timeout=self.BUSY_TIMEOUT, uri=target.startswith("file:"))
        except sqlite3.Error as error:
            raise journal_fault(error, self.path, self.BUSY_TIMEOUT) from None
        try:
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA foreign_keys = ON")
            if readonly:
                self._check_version(self._conn.execute("PRAGMA user_version").fetchone()[0])
                return
            if on_disk:
                # Damage SQLite would only notice when it reads the page: found now, before anything
                # is sent (~10 ms on a 5 MB journal).
                check = self._conn.execute("PRAGMA quick_check(1)").fetchone()
                if check is not None and check[0] != "ok":
                    raise sqlite3.DatabaseError("database disk image is malformed (" + " ".join(str(check[0]).split()) + ")")
                folder = os.path.dirname(os.path.abspath(self.path))
                if not os.access(folder, os.W_OK) or (os.path.exists(self.path) and not os.access(self.path, os.W_OK)):
                    raise sqlite3.OperationalError("attempt to write a readonly database")
                self._conn.execute("PRAGMA journal_mode = WAL")
                # FULL: a journaled step survives a power cut, the point of a write-ahead journal.
                self._conn.execute("PRAGMA synchronous = FULL")
            self._migrate()
        except sqlite3.Error as error:
            self._conn.close()
            raise journal_fault(error, self.path, self.BUSY_TIMEOUT) from None
        except JournalError:
            self._conn.close()
            raise

    @contextmanager
    def _faults(self) -> Iterator[None]:
        """Turn SQLite's errors into one-line :class:`JournalFault` sentences."""
        try:
            yield
        except sqlite3.Error as error:
            raise journal_fault(error, self.path, self.BUSY_TIMEOUT) from None

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path}: schema {version} is newer than this posbridge's ({SCHEMA_VERSION}); "
                "upgrade posbridge")
        if self.readonly and version != SCHEMA_VERSION:
            raise JournalError(f"journal {self.path}: schema {version}, not {SCHEMA_VERSION}; open it "
                               "once with a posbridge command that writes, to upgrade it")

    # --- plumbing --------------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self.transaction():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            if version == 0:
                self._run_script(_SCHEMA)
                version = 1
            for script in _MIGRATIONS[version - 1:]:
                self._run_script(script)
            if version != SCHEMA_VERSION:
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _run_script(self, script: str) -> None:
        for statement in script.split(";\n"):
            if statement.strip():
                self._conn.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block atomically (and exclusively among threads); nested blocks join the outer one."""
        with self._lock, self._faults():
            outer = self._depth == 0
            if outer:
                self._conn.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer and self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                try:
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise

    # One statement is atomic on its own (SQLite autocommit); explicit transactions are for the
    # multi-statement steps. Skipping BEGIN/COMMIT here halves the host's journal cost per sale.
    def _q(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock, self._faults():
            return self._conn.execute(sql, params).fetchall()

    def _x(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock, self._faults():
            return self._conn.execute(sql, params)

    def close(self) -> None:
        """Close the database (a file journal is checkpointed by SQLite)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- counters and settings -------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        """A stored setting or counter, or None."""
        rows = self._q("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting or counter."""
        self._x("INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def next_counter(self, name: str) -> int:
        """Increment and return a persisted counter (1, 2, 3 …), in one statement."""
        rows = self._q(
            "INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key) "
            "DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING value", (f"counter:{name}",))
        return int(rows[0][0])

    def pan_salt(self) -> bytes:
        """This journal's secret salt for card-number hashes, created on first use."""
        with self.transaction():
            salt = self.get_meta("pan_salt")
            if salt is None:
                salt = secrets.token_hex(16)
                self.set_meta("pan_salt", salt)
            return bytes.fromhex(salt)

    # --- terminal side: batches ------------------------------------------------------------------
    def batch_number(self, terminal_id: str) -> int:
        """The terminal's open batch number (the next one if none is open yet). Writes nothing."""
        row = self._q("SELECT MAX(number), MAX(CASE WHEN closed_at IS NULL THEN number END) "
                      "FROM batches WHERE terminal_id = ?", (terminal_id,))[0]
        if row[1] is not None:
            return int(row[1])
        return int(row[0] or 0) + 1

    def open_batch(self, terminal_id: str, now: datetime) -> int:
        """The terminal's open batch number, opening the next batch if none is open."""
        with self.transaction():
            number = self.batch_number(terminal_id)
            self._conn.execute(
                "INSERT OR IGNORE INTO batches (terminal_id, number, opened_at) VALUES (?, ?, ?)",
                (terminal_id, number, _ts(now)),
            )
            return number

    def close_batch(self, terminal_id: str, number: int, now: datetime, totals: Totals) -> None:
        """Close the batch (settlement) with its totals; the next operation opens ``number + 1``."""
        with self.transaction():
            cur = self._conn.execute(
                "UPDATE batches SET closed_at = ?, totals = ? "
                "WHERE terminal_id = ? AND number = ? AND closed_at IS NULL",
                (_ts(now), _totals_json(totals), terminal_id, number),
            )
            if cur.rowcount != 1:
                raise JournalError(f"batch {number} of terminal {terminal_id} is not open")

    # --- terminal side: operations ---------------------------------------------------------------
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
            Status(status).value, code, text, _int_or_none(amount), _int_or_none(currency), rrn,
            auth_code, safe_masked_pan(masked_pan), card_scheme, expiry, pan_hash, original_id,
            original_rrn, _ts(host_datetime), int(delivered), int(auto_reversed), _totals_json(totals),
        )
        with self.transaction():
            cur = self._conn.execute(
                f"INSERT INTO ops ({', '.join(_OP_FIELDS)}) VALUES ({', '.join('?' * len(_OP_FIELDS))})",
                values,
            )
            record = self.operation(int(cur.lastrowid or 0))
        assert record is not None
        return record

    @staticmethod
    def _record(row: sqlite3.Row) -> OperationRecord:
        return OperationRecord(
            id=row["id"], terminal_id=row["terminal_id"], merchant_id=row["merchant_id"],
            batch=row["batch"], transaction_id=row["stan"], operation=Operation(row["operation"]),
            status=Status(row["status"]), code=row["code"], text=row["text"], amount=row["amount"],
            currency=row["currency"], rrn=row["rrn"], auth_code=row["auth_code"],
            masked_pan=row["masked_pan"], card_scheme=row["card_scheme"], expiry=row["expiry"],
            pan_hash=row["pan_hash"], original_id=row["original_id"], original_rrn=row["original_rrn"],
            host_datetime=_dt(row["host_datetime"]) or datetime.min, delivered=bool(row["delivered"]),
            auto_reversed=bool(row["auto_reversed"]), totals=_totals_from(row["totals"]),
            result_delivered=None if row["result_delivered"] is None else bool(row["result_delivered"]),
        )

    def operation(self, op_id: int) -> OperationRecord | None:
        """The operation with this id, or None."""
        rows = self._q("SELECT * FROM ops WHERE id = ?", (op_id,))
        return self._record(rows[0]) if rows else None

    def operations(self, terminal_id: str | None = None, batch: int | None = None) -> list[OperationRecord]:
        """Operations in journal order, optionally of one terminal and batch."""
        sql, params = "SELECT * FROM ops WHERE 1", list[Any]()
        if terminal_id is not None:
            sql += " AND terminal_id = ?"
            params.append(terminal_id)
        if batch is not None:
            sql += " AND batch = ?"
            params.append(batch)
        return [self._record(r) for r in self._q(sql + " ORDER BY id", tuple(params))]

    def set_result_delivered(self, op_id: int, delivered: bool) -> None:
        """Record whether the ECR acknowledged the terminal's result of operation ``op_id``.

        An undelivered result stays visible in the journal (the ECR does not know the outcome and
        will recover it), rather than only in the terminal's memory.
        """
        self._x("UPDATE ops SET result_delivered = ? WHERE id = ?", (int(delivered), op_id))

    def undelivered_operations(self, terminal_id: str | None = None) -> list[OperationRecord]:
        """Operations whose result the ECR never acknowledged, oldest first."""
        sql, params = "SELECT * FROM ops WHERE result_delivered = 0", list[Any]()
        if terminal_id is not None:
            sql += " AND terminal_id = ?"
            params.append(terminal_id)
        return [self._record(r) for r in self._q(sql + " ORDER BY id", tuple(params))]

    def find_by_rrn(self, terminal_id: str, rrn: str) -> OperationRecord | None:
        """The operation that was given this RRN (emergency-reversal rows only repeat it: skipped)."""
        rows = self._q(
            "SELECT * FROM ops WHERE terminal_id = ? AND rrn = ? AND operation <> 'emergency_reversal' "
            "ORDER BY id LIMIT 1", (terminal_id, rrn),
        )
        return self._record(rows[0]) if rows else None

    def rrn_used(self, rrn: str) -> bool:
        """True if any operation of any terminal carries this RRN."""
        return bool(self._q("SELECT 1 FROM ops WHERE rrn = ? LIMIT 1", (rrn,)))

    def find_by_stan(self, terminal_id: str, batch: int, transaction_id: str) -> OperationRecord | None:
        """The first delivered operation with this STAN in the batch (the duplicate-control key).

        Emergency reversals carry the STAN of what they reverse, and requests a link fault stopped
        never reached the host: neither is a first outcome.
        """
        rows = self._q(
            "SELECT * FROM ops WHERE terminal_id = ? AND batch = ? AND stan = ? AND delivered = 1 "
            "AND operation <> 'emergency_reversal' ORDER BY id LIMIT 1",
            (terminal_id, batch, transaction_id),
        )
        return self._record(rows[0]) if rows else None

    def find_settled_by_stan(self, terminal_id: str, open_batch: int,
                             transaction_id: str) -> OperationRecord | None:
        """The latest approved money operation with this STAN in a batch before ``open_batch``."""
        rows = self._q(
            "SELECT * FROM ops WHERE terminal_id = ? AND batch < ? AND stan = ? AND delivered = 1 "
            "AND status = 'approved' AND operation IN ('sale', 'refund', 'cancel', 'preauth', "
            "'completion', 'cancel_preauth') ORDER BY id DESC LIMIT 1",
            (terminal_id, open_batch, transaction_id),
        )
        return self._record(rows[0]) if rows else None

    def state(self, op_id: int) -> OperationState:
        """The derived state of an operation (see :class:`OperationState`)."""
        with self.transaction():
            row = self._conn.execute(
                "SELECT live, voided, completed_by, status FROM op_state WHERE id = ?", (op_id,)
            ).fetchone()
            if row is None:
                raise JournalError(f"no operation {op_id}")
            refunded, dependents = self._conn.execute(
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

    def batch_totals(self, terminal_id: str, batch: int, currency: int) -> Totals:
        """Settlement totals of a batch, straight from the journal.

        Sales: live, not cancelled sales and completions. Refunds: live, not cancelled refunds.
        Cancels: live cancels of sales, completions and refunds (releasing a pre-authorization moves
        no charged money, so it is not a cancel here). Reversed operations count nowhere.
        """
        row = self._q(
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
        params: list[Any] = [_ts(start), _ts(start + timedelta(days=1))]
        if terminal_id is not None:
            sql += " AND terminal_id = ?"
            params.append(terminal_id)
        if pan_hash is not None:
            sql += " AND pan_hash = ?"
            params.append(pan_hash)
        return int(self._q(sql, tuple(params))[0][0])

    # --- ECR side --------------------------------------------------------------------------------
    def next_transaction_id(self) -> str:
        """The ECR's next transaction number (STAN): persisted, 1 … 999999, then 1 again."""
        rows = self._q(
            "INSERT INTO meta (key, value) VALUES ('ecr_transaction_id', '1') ON CONFLICT (key) "
            "DO UPDATE SET value = CASE WHEN CAST(value AS INTEGER) >= ? THEN 1 "
            "ELSE CAST(value AS INTEGER) + 1 END RETURNING value", (MAX_TRANSACTION_ID,))
        return str(int(rows[0][0]))

    def ecr_begin(self, request: Request, terminal: str, *, port: str | None = None,
                  owner: str | None = None) -> int:
        """Journal a request before its first byte is sent (state ``pending``); returns the entry id.

        ``terminal`` is the journal's key for the terminal (its id or canonical port), ``port`` the
        canonical port, ``owner`` the process running the operation.
        """
        now = _ts(self._clock())
        op = request.operation
        original_transaction_id = request.transaction_id if op is Operation.EMERGENCY_REVERSAL else None
        cur = self._x(
            "INSERT INTO ecr_entries (terminal, state, created_at, updated_at, operation, amount, "
            "currency, transaction_id, rrn, auth_code, original_operation, original_amount, "
            "terminal_id, ecr_datetime, owner, port, original_transaction_id) "
            "VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                terminal, now, now, op.value if isinstance(op, Operation) else str(op),
                _int_or_none(request.amount), _int_or_none(request.currency), request.transaction_id,
                request.rrn, request.auth_code,
                request.original_operation.value if request.original_operation else None,
                _int_or_none(request.original_amount), request.terminal_id, _ts(request.ecr_datetime),
                owner, port, original_transaction_id,
            ),
        )
        return int(cur.lastrowid or 0)

    def _ecr_move(self, entry_id: int, allowed: tuple[str, ...], state: str, **values: Any) -> None:
        values.update(state=state, updated_at=_ts(self._clock()))
        sets = ", ".join(f"{k} = :{k}" for k in values)
        allowed_names = ", ".join(f":allowed{i}" for i in range(len(allowed)))
        values.update({f"allowed{i}": name for i, name in enumerate(allowed)}, entry_id=entry_id)
        with self._lock, self._faults():  # one conditional UPDATE: the state check and the move are one statement
            moved = self._conn.execute(
                f"UPDATE ecr_entries SET {sets} WHERE id = :entry_id AND state IN ({allowed_names})", values
            ).rowcount
            if moved:
                return
            row = self._conn.execute("SELECT state FROM ecr_entries WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise JournalError(f"no ECR journal entry {entry_id}")
        raise JournalError(f"ECR journal entry {entry_id} is {row['state']}, cannot become {state}")

    @staticmethod
    def _result_values(result: Result) -> dict[str, Any]:
        return {
            "status": Status(result.status).value,
            "response_code": result.response_code,
            "response_text": result.response_text,
            "host_code": result.host_code,
            "res_amount": _int_or_none(result.amount),
            "res_currency": _int_or_none(result.currency),
            "res_rrn": result.rrn,
            "res_auth_code": result.auth_code,
            "masked_pan": safe_masked_pan(result.masked_pan),
            "card_scheme": result.card_scheme,
            "expiry": result.expiry,
            "res_terminal_id": result.terminal_id,
            "merchant_id": result.merchant_id,
            "host_datetime": _ts(result.host_datetime),
        }

    def ecr_sent(self, entry_id: int) -> None:
        """The first byte of the request was written: state ``sent``."""
        self._ecr_move(entry_id, ("pending", "sent"), "sent")

    def ecr_finish(self, entry_id: int, result: Result) -> None:
        """The outcome is known: state ``done``, with the result's status, codes, RRN, masked PAN…"""
        self._ecr_move(entry_id, ECR_OPEN_STATES, "done", **self._result_values(result))

    def ecr_unknown(self, entry_id: int, error: str, answer: Result | None = None) -> None:
        """The exchange failed after sending: state ``unknown`` — the entry must be resolved later.

        ``answer`` is an answer that did not match the request, kept beside it for the audit.
        """
        values: dict[str, Any] = {"error": error}
        if answer is not None:
            values["answer"] = json.dumps(
                {k: v for k, v in self._result_values(answer).items() if v is not None}, ensure_ascii=False)
        self._ecr_move(entry_id, ECR_OPEN_STATES, "unknown", **values)

    def ecr_resolve(self, entry_id: int, result: Result | None, how: str) -> None:
        """An open entry was settled afterwards (``how``: e.g. ``"reversed"``, ``"not_sent"``):
        state ``resolved``. ``result`` is the answer that proved it (None when nothing was sent)."""
        values = self._result_values(result) if result is not None else {}
        self._ecr_move(entry_id, ECR_OPEN_STATES, "resolved", how=how, **values)

    def ecr_flag(self, entry_id: int, result: Result | None, how: str, note: str) -> None:
        """Recovery cannot settle the entry by itself (e.g. its batch was settled): state
        ``refund_needed``, with the reversal's answer and a note for the person who must act."""
        values = self._result_values(result) if result is not None else {}
        values.pop("status", None)  # the entry's own outcome stays unknown; the answer is the reversal's
        self._ecr_move(entry_id, ECR_OPEN_STATES, "refund_needed", how=how, error=note, **values)

    def ecr_note(self, entry_id: int, note: str) -> None:
        """Add a line to an entry's error text (what recovery tried), without changing its state."""
        self._x("UPDATE ecr_entries SET error = COALESCE(error || char(10), '') || ?, updated_at = ? "
                "WHERE id = ?", (note, _ts(self._clock()), entry_id))

    def ecr_resolve_superseded(self, transaction_id: str | None, terminal: str, original_id: int) -> None:
        """Close open reversal entries of ``transaction_id`` that an earlier recovery left behind:
        the original (entry ``original_id``) has been resolved since."""
        if not transaction_id:
            return
        self._x("UPDATE ecr_entries SET state = 'resolved', how = 'superseded', updated_at = ? "
                "WHERE terminal = ? AND transaction_id = ? AND operation = 'emergency_reversal' "
                "AND state IN ('pending', 'sent', 'unknown') AND id <> ?",
                (_ts(self._clock()), terminal, transaction_id, original_id))

    def ecr_settled_after(self, entry_id: int, terminal: str) -> bool:
        """True if a settlement of ``terminal`` was (or may have been) run after entry ``entry_id``."""
        return bool(self._q(
            "SELECT 1 FROM ecr_entries WHERE terminal = ? AND id > ? AND operation = 'settlement' "
            "AND (status IS NULL OR status = 'approved') AND state <> 'pending' LIMIT 1",
            (terminal, entry_id)))

    def ecr_last_transaction_id(self, terminal: str) -> int | None:
        """The highest transaction number this journal holds for ``terminal``."""
        row = self._q("SELECT MAX(CAST(transaction_id AS INTEGER)) FROM ecr_entries WHERE terminal = ? "
                      "AND length(transaction_id) <= 18", (terminal,))[0]
        return None if row[0] is None else int(row[0])

    def ecr_last_money_operation(self, terminal: str) -> EcrEntry | None:
        """The terminal's most recent money operation that was sent (not a reversal), or None."""
        rows = self._q(
            "SELECT * FROM ecr_entries WHERE terminal = ? AND state <> 'pending' AND operation IN "
            "('sale', 'refund', 'cancel', 'preauth', 'completion', 'cancel_preauth') "
            "ORDER BY id DESC LIMIT 1", (terminal,))
        return self._entry(rows[0]) if rows else None

    @staticmethod
    def _entry(row: sqlite3.Row) -> EcrEntry:
        try:
            operation: Any = Operation(row["operation"])
        except ValueError:
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
            ecr_datetime=_dt(row["ecr_datetime"]),
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
                host_datetime=_dt(row["host_datetime"]),
                host_code=row["host_code"],
            )
        return EcrEntry(
            id=row["id"], terminal=row["terminal"], request=request, state=row["state"],
            created_at=_dt(row["created_at"]) or datetime.min,
            updated_at=_dt(row["updated_at"]) or datetime.min,
            result=result, error=row["error"], how=row["how"], owner=row["owner"], port=row["port"],
            answer=json.loads(row["answer"]) if row["answer"] else None,
        )

    def ecr_entry(self, entry_id: int) -> EcrEntry | None:
        """One ECR entry by id, or None."""
        rows = self._q("SELECT * FROM ecr_entries WHERE id = ?", (entry_id,))
        return self._entry(rows[0]) if rows else None

    def ecr_unresolved(self, terminal: str | None = None) -> list[EcrEntry]:
        """Entries still ``pending``, ``sent`` or ``unknown`` (of one terminal or all), oldest first."""
        sql = "SELECT * FROM ecr_entries WHERE state IN ('pending', 'sent', 'unknown')"
        params: tuple[Any, ...] = ()
        if terminal is not None:
            sql, params = sql + " AND terminal = ?", (terminal,)
        return [self._entry(r) for r in self._q(sql + " ORDER BY id", params)]

    def ecr_unresolved_for(
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
        for entry in self.ecr_unresolved():
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

    def ecr_last(self, terminal: str) -> EcrEntry | None:
        """The terminal's most recent entry, whatever its state."""
        rows = self._q("SELECT * FROM ecr_entries WHERE terminal = ? ORDER BY id DESC LIMIT 1", (terminal,))
        return self._entry(rows[0]) if rows else None

    # --- registry export -------------------------------------------------------------------------
    def registry(
        self,
        *,
        side: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        operation: Operation | None = None,
        status: Status | str | None = None,
    ) -> list[dict[str, str]]:
        """Rows of the registry export (see :data:`EXPORT_COLUMNS`), ordered by date-time.

        ``side`` is ``"terminal"``, ``"ecr"`` or None for both; ``since`` is inclusive, ``until``
        exclusive. The date-time is the host's for terminal rows and the ECR's journal time for ECR
        rows. ``outcome`` is the *final* one (:data:`EXPORT_OUTCOMES`): an operation later reversed
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
        where, params = self._filters(since, until, operation)
        if side in (None, "terminal"):
            sql = (
                "SELECT s.id, s.operation, s.status, s.amount, s.currency, s.masked_pan, s.rrn, s.auth_code, "
                "s.code, s.terminal_id, s.batch, s.stan, s.host_datetime AS at, s.live, s.voided, "
                "COALESCE(s.original_rrn, o.rrn) AS original_rrn, o.stan AS original_stan "
                "FROM op_state s LEFT JOIN ops o ON o.id = s.original_id WHERE 1"
                + where.format(at="s.host_datetime", op="s.operation")
            )
            for r in self._q(sql, params):
                outcome = r["status"]
                if outcome == "approved" and r["operation"] != "emergency_reversal" and \
                        (not r["live"] or r["voided"]):
                    outcome = "reversed"
                original_stan = r["stan"] if r["operation"] == "emergency_reversal" else r["original_stan"]
                rows.append((r["at"], "terminal", r["id"], self._export_row(
                    "terminal", r, outcome, r["code"], r["stan"], r["original_rrn"], original_stan)))
        if side in (None, "ecr"):
            sql = (
                "SELECT e.id, e.operation, e.state, e.status, e.how, COALESCE(e.res_amount, e.amount) AS amount, "
                "COALESCE(e.res_currency, e.currency) AS currency, e.masked_pan, e.res_rrn AS rrn, "
                "e.res_auth_code AS auth_code, COALESCE(e.host_code, e.response_code) AS code, "
                "COALESCE(e.res_terminal_id, e.terminal_id) AS terminal_id, NULL AS batch, e.transaction_id, "
                "e.rrn AS request_rrn, e.original_transaction_id, e.created_at AS at, EXISTS ("
                "  SELECT 1 FROM ecr_entries r WHERE r.terminal = e.terminal AND r.id > e.id"
                "  AND r.operation = 'emergency_reversal' AND r.transaction_id = e.transaction_id"
                "  AND r.status = 'approved' AND COALESCE(r.host_code, '') <> '9020') AS reversed_later "
                "FROM ecr_entries e WHERE 1" + where.format(at="e.created_at", op="e.operation")
            )
            for r in self._q(sql, params):
                outcome = self._ecr_outcome(r)
                original_rrn = r["request_rrn"] if r["operation"] in _BY_ORIGINAL_RRN else None
                rows.append((r["at"], "ecr", r["id"], self._export_row(
                    "ecr", r, outcome, r["code"], r["transaction_id"], original_rrn,
                    r["original_transaction_id"])))
        rows.sort(key=lambda item: item[:3])
        return [item[3] for item in rows if wanted is None or item[3]["outcome"] == wanted]

    @staticmethod
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

    @staticmethod
    def _filters(
        since: datetime | None, until: datetime | None, operation: Operation | None
    ) -> tuple[str, tuple[Any, ...]]:
        where, params = "", []
        if since is not None:
            where += " AND {at} >= ?"
            params.append(_ts(since))
        if until is not None:
            where += " AND {at} < ?"
            params.append(_ts(until))
        if operation is not None:
            where += " AND {op} = ?"
            params.append(Operation(operation).value)
        return where, tuple(params)

    @staticmethod
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

    def export_csv(
        self,
        fp: TextIO,
        *,
        side: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        operation: Operation | None = None,
        status: Status | str | None = None,
    ) -> int:
        """Write the registry (filtered as :meth:`registry`) as CSV with a header; returns the row count.

        Open ``fp`` with ``newline=""``: rows end with CRLF, as RFC 4180 says.
        """
        rows = self.registry(side=side, since=since, until=until, operation=operation, status=status)
        writer = csv.DictWriter(fp, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return len(rows)

    def export_xml(
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
        rows = self.registry(side=side, since=since, until=until, operation=operation, status=status)
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


@dataclass(frozen=True)
class JournalCheck:
    """What :func:`check_journal` found: ``ok`` and a report for people (one finding a line)."""

    ok: bool
    text: str


def check_journal(path: str | os.PathLike[str]) -> JournalCheck:
    """Say what is wrong with the journal at ``path``, reading it only (never repairing, never
    replacing: a damaged journal is evidence). Checks SQLite's integrity, the schema version, and
    reports the ECR entries that need attention."""
    name = os.fspath(path)
    lines = [f"journal {name}"]
    try:
        journal = Journal(name, readonly=True)
    except JournalError as error:
        return JournalCheck(False, "\n".join(lines + [f"  NOT USABLE: {error}"]))
    try:
        with journal._lock, journal._faults():  # the one place that runs SQLite's own checks
            problems = [row[0] for row in journal._conn.execute("PRAGMA integrity_check").fetchall()]
            version = journal._conn.execute("PRAGMA user_version").fetchone()[0]
        ok = problems == ["ok"]
        lines.append(f"  schema {version}; SQLite integrity: {'ok' if ok else 'DAMAGED'}")
        lines += [f"    {problem}" for problem in problems[:20] if problem != "ok"]
        counts = {row[0]: row[1] for row in journal._q("SELECT state, COUNT(*) FROM ecr_entries GROUP BY state")}
        ops = journal._q("SELECT COUNT(*) FROM ops")[0][0]
        lines.append(f"  terminal side: {ops} operation(s); ECR side: "
                     + (", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no entries"))
        open_entries = sum(counts.get(state, 0) for state in ECR_OPEN_STATES)
        if open_entries:
            lines.append(f"  {open_entries} ECR operation(s) with an unknown outcome: run `posbridge recover`")
        if counts.get("refund_needed"):
            lines.append(f"  {counts['refund_needed']} ECR operation(s) need a person: their batch was settled"
                         " (see `posbridge export --journal {name} --side ecr`)")
        if ok:
            lines.append("  sound")
        else:
            lines.append("  keep this file for the audit; start a new journal beside it")
        return JournalCheck(ok, "\n".join(lines))
    except JournalError as error:
        return JournalCheck(False, "\n".join(lines + [f"  NOT USABLE: {error}"]))
    finally:
        journal.close()
