"""The journal's storage: one SQLite file, its versioned schema and its fault policy.

Holds :class:`Storage` — the connection (WAL mode, ``synchronous = FULL``, one connection shared by
threads under a lock, transactions that nest), the schema with its ordered migrations
(:data:`SCHEMA_VERSION`, :data:`MIGRATIONS`), the checks made before anything is written (SQLite's
``quick_check`` and write access at opening; read-only and immutable opening for readers), the
``meta`` table of settings and counters, and the fault policy: every SQLite or OS error on the
file becomes one :class:`JournalFault` sentence naming the file, what is wrong and what to do.
It also holds how values are stored (:func:`stored_datetime`, :func:`stored_int`,
:func:`safe_masked_pan`), shared by the parts above it.

It does not know what the rows mean: the terminal's ledger is :mod:`posbridge.journal.ledger`, the
ECR's write-ahead log :mod:`posbridge.journal.ecr_log`, the registry export
:mod:`posbridge.journal.export`, and :class:`posbridge.journal.journal.Journal` puts them together.

Datetimes are stored as fixed-width ISO text, so SQL compares them in order. Naive datetimes (the
terminal's local time, as terminals keep it) are stored as they are; aware ones are converted to UTC.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from posbridge.model import PosbridgeError, mask_pan

__all__ = [
    "MIGRATIONS", "SCHEMA_VERSION", "JournalError", "JournalFault", "Params", "Storage",
    "default_journal_path", "journal_fault", "loaded_datetime", "safe_masked_pan", "stored_datetime",
    "stored_int",
]

SCHEMA_VERSION = 3
"""The schema this posbridge writes (SQLite's ``user_version``); newer journals are refused."""

Params = tuple[Any, ...] | dict[str, Any]
"""Parameters of one SQL statement: positional (``?``) or named (``:name``)."""

# Version 1 of the schema. A new journal gets it and then every migration, so a new journal and an
# upgraded one always have the same tables.
SCHEMA_V1 = """
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

MIGRATIONS: tuple[str, ...] = (
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
    # 3: the highest transaction number per terminal from an index, not a scan of every entry
    #    (EcrLog.last_transaction_id runs before each operation: 25 ms at 100,000 entries before).
    """
    CREATE INDEX ecr_stan ON ecr_entries (terminal, CAST(transaction_id AS INTEGER))
        WHERE length(transaction_id) <= 18;
    """,
)
"""Schema changes after version 1, in order: ``MIGRATIONS[n]`` takes a journal from version
``n + 1`` to ``n + 2``. A new change is appended here (and :data:`SCHEMA_VERSION` raised), never
edited into :data:`SCHEMA_V1`."""

assert len(MIGRATIONS) == SCHEMA_VERSION - 1, "one migration per schema version after the first"


def default_journal_path() -> Path:
    """Where the ECR journal lives unless ``--journal`` says otherwise (XDG data folder)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "posbridge" / "ecr-journal.sqlite3"


# --- the fault policy -----------------------------------------------------------------------------
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
    if _on_disk(path):
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


def _on_disk(path: str) -> bool:
    return path not in (":memory:", "") and not path.startswith("file:")


# --- how values are stored ------------------------------------------------------------------------
def stored_datetime(dt: datetime | None) -> str | None:
    """``dt`` as stored: ISO text to the microsecond (aware datetimes in UTC, made naive)."""
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.isoformat(timespec="microseconds")


def loaded_datetime(text: str | None) -> datetime | None:
    """A datetime stored by :func:`stored_datetime`, read back."""
    return None if text is None else datetime.fromisoformat(text)


def stored_int(value: object) -> int | None:
    """``value`` if SQLite can hold it as an integer (64-bit), else None: a float, a bool or a
    20-digit amount is not stored."""
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        return None
    return value


def safe_masked_pan(pan: str | None) -> str | None:
    """``pan`` masked by ``mask_pan`` (which keeps an already masked PAN as it is); None and "" as given.

    Lets callers hand in whatever they hold: a full number never reaches the database.
    """
    return mask_pan(pan) if pan else pan


# --- the connection -------------------------------------------------------------------------------
class Storage:
    """One journal file (WAL mode) or ``":memory:"``, opened, checked and migrated.

    Thread-safe: one connection shared under a lock. :meth:`query` and :meth:`execute` run one
    statement (atomic on its own: SQLite autocommit), :meth:`transaction` several atomically,
    :meth:`locked` several under the lock without a transaction. ``readonly`` opens an existing
    journal for reading only (immutable when its folder cannot hold SQLite's ``-shm`` file and no
    writer left a ``-wal``); it must already have this posbridge's schema.

    Raises :class:`JournalFault` when the file cannot be used (checked at opening, before anything
    is written) and :class:`JournalError` for a schema newer than :data:`SCHEMA_VERSION`.
    """

    BUSY_TIMEOUT = 10.0
    """Seconds SQLite waits for another process's write lock before the journal is ``locked``."""

    def __init__(self, path: str | os.PathLike[str] = ":memory:", *, readonly: bool = False) -> None:
        self.path = os.fspath(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._depth = 0  # nesting of transaction() blocks
        on_disk = _on_disk(self.path)
        if on_disk and os.path.isdir(self.path):
            raise journal_fault(IsADirectoryError("is a directory"), self.path)
        folder = os.path.dirname(os.path.abspath(self.path))
        if on_disk and not os.path.isdir(folder):
            raise journal_fault(FileNotFoundError("no such folder"), self.path)
        if readonly and on_disk and not os.path.exists(self.path):
            raise journal_fault(FileNotFoundError("no such file"), self.path)
        try:
            target = f"file:{self.path}?mode=ro" if readonly and on_disk else self.path
            if readonly and on_disk and not os.access(folder, os.W_OK) and not os.path.exists(self.path + "-wal"):
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
                self._check_version(self.schema_version())
                return
            if on_disk:
                # Damage SQLite would only notice when it reads the page: found now, before anything
                # is sent (~10 ms on a 5 MB journal).
                check = self._conn.execute("PRAGMA quick_check(1)").fetchone()
                if check is not None and check[0] != "ok":
                    raise sqlite3.DatabaseError(
                        "database disk image is malformed (" + " ".join(str(check[0]).split()) + ")")
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

    @property
    def on_disk(self) -> bool:
        """True for a journal file, False for an in-memory journal."""
        return _on_disk(self.path)

    # --- schema ------------------------------------------------------------------------------------
    def schema_version(self) -> int:
        """The schema version the file holds (SQLite's ``user_version``)."""
        with self.locked() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path}: schema {version} is newer than this posbridge's ({SCHEMA_VERSION}); "
                "upgrade posbridge")
        if self.readonly and version != SCHEMA_VERSION:
            raise JournalError(f"journal {self.path}: schema {version}, not {SCHEMA_VERSION}; open it "
                               "once with a posbridge command that writes, to upgrade it")

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            self._check_version(version)
            if version == 0:
                self._run_script(conn, SCHEMA_V1)
                version = 1
            for script in MIGRATIONS[version - 1:]:
                self._run_script(conn, script)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _run_script(conn: sqlite3.Connection, script: str) -> None:
        # Statement by statement (executescript would COMMIT the transaction the migration runs in).
        for statement in script.split(";\n"):
            if statement.strip():
                conn.execute(statement)

    def integrity_problems(self) -> list[str]:
        """SQLite's full ``integrity_check``: ``["ok"]`` for a sound file, else what it found.

        Reads every page: seconds on a big journal (run it off an event loop).
        """
        return [str(row[0]) for row in self.query("PRAGMA integrity_check")]

    # --- statements and transactions ---------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, held exclusively among threads for the block, SQLite errors turned into
        :class:`JournalFault`. No transaction: each statement commits on its own."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as error:
                raise journal_fault(error, self.path, self.BUSY_TIMEOUT) from None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block atomically (and exclusively among threads); nested blocks join the outer one."""
        with self.locked() as conn:
            outer = self._depth == 0
            if outer:
                conn.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield conn
            except BaseException:
                self._depth -= 1
                if outer and conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                try:
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

    # One statement is atomic on its own (SQLite autocommit); explicit transactions are for the
    # multi-statement steps. Skipping BEGIN/COMMIT here halves the host's journal cost per sale.
    def query(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run one statement and return its rows."""
        with self.locked() as conn:
            return conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        """Run one statement; the cursor tells ``rowcount`` and ``lastrowid``."""
        with self.locked() as conn:
            return conn.execute(sql, params)

    def close(self) -> None:
        """Close the database (SQLite checkpoints a file journal's WAL into it)."""
        with self._lock:
            self._conn.close()

    # --- settings and counters (table meta) --------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        """A stored setting or counter, or None."""
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting or counter."""
        self.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                     "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def next_counter(self, key: str, *, wrap_after: int | None = None) -> int:
        """Increment and return the persisted counter ``key`` (1, 2, 3 …) in one statement; with
        ``wrap_after``, the value after ``wrap_after`` is 1 again."""
        limit = 2**63 - 1 if wrap_after is None else wrap_after
        rows = self.query(
            "INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key) "
            "DO UPDATE SET value = CASE WHEN CAST(value AS INTEGER) >= ? THEN 1 "
            "ELSE CAST(value AS INTEGER) + 1 END RETURNING value", (key, limit))
        return int(rows[0][0])
