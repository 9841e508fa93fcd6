"""The journal: SQLite (WAL), one schema for both sides of the wire.

The terminal's ledger (its operations and batches, what the bank host decides), the ECR's
write-ahead log (an operation journaled before its first byte, its outcome after), the registry
export (CSV, XML) and the storage under them (connection, versioned schema migrations, faults as
one-line :class:`JournalFault`).
"""

from posbridge.journal.core import (
    EXPORT_COLUMNS,
    EXPORT_OUTCOMES,
    SCHEMA_VERSION,
    EcrEntry,
    Journal,
    JournalCheck,
    JournalError,
    JournalFault,
    OperationRecord,
    OperationState,
    check_journal,
    default_journal_path,
    safe_masked_pan,
)

__all__ = [
    "EXPORT_COLUMNS", "EXPORT_OUTCOMES", "SCHEMA_VERSION", "EcrEntry", "Journal", "JournalCheck",
    "JournalError", "JournalFault", "OperationRecord", "OperationState", "check_journal",
    "default_journal_path", "safe_masked_pan",
]
