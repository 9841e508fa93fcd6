"""The journal: SQLite (WAL), one schema for both sides of the wire, in parts.

- :mod:`~posbridge.journal.storage` — the connection, the versioned schema and its migrations,
  transactions, and the fault policy (every file problem one :class:`JournalFault` sentence);
- :mod:`~posbridge.journal.ledger` — the virtual terminal's ledger (its operations and batches, what
  the bank host decided), ``journal.ledger``;
- :mod:`~posbridge.journal.ecr_log` — the ECR's write-ahead log (an operation journaled before its
  first byte, its outcome after), ``journal.ecr``;
- :mod:`~posbridge.journal.export` — the registry export to CSV and XML, ``journal.export``;
- :mod:`~posbridge.journal.journal` — :class:`Journal`, one file with those parts, and
  :func:`check_journal`.
"""

from posbridge.journal.ecr_log import EcrEntry, EcrLog
from posbridge.journal.export import EXPORT_COLUMNS, EXPORT_OUTCOMES, RegistryExport
from posbridge.journal.journal import Journal, JournalCheck, check_journal
from posbridge.journal.ledger import Ledger, OperationRecord, OperationState
from posbridge.journal.storage import (
    SCHEMA_VERSION,
    JournalError,
    JournalFault,
    Storage,
    default_journal_path,
    safe_masked_pan,
)

__all__ = [
    "EXPORT_COLUMNS", "EXPORT_OUTCOMES", "SCHEMA_VERSION", "EcrEntry", "EcrLog", "Journal", "JournalCheck",
    "JournalError", "JournalFault", "Ledger", "OperationRecord", "OperationState", "RegistryExport", "Storage",
    "check_journal", "default_journal_path", "safe_masked_pan",
]
