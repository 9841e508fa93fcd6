"""One journal file and its parts: :class:`Journal`, and :func:`check_journal` for people.

A :class:`Journal` opens one :class:`~posbridge.journal.storage.Storage` and puts the three parts
over it: ``journal.ledger`` (the virtual terminal's ledger), ``journal.ecr`` (the ECR's
write-ahead log) and ``journal.export`` (the registry export). Both ends of the wire use the same
schema, so one file may hold both sides (the tests and the demo do).

It holds no SQL of its own except what :func:`check_journal` counts; each part's module says what
it holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from posbridge.journal.ecr_log import ECR_OPEN_STATES, EcrLog
from posbridge.journal.export import RegistryExport
from posbridge.journal.ledger import Ledger
from posbridge.journal.storage import JournalError, Storage

__all__ = ["Journal", "JournalCheck", "check_journal"]


class Journal:
    """The SQLite journal: ``path`` is a file (WAL mode) or ``":memory:"``.

    Its parts: :attr:`ledger` (:class:`~posbridge.journal.ledger.Ledger`), :attr:`ecr`
    (:class:`~posbridge.journal.ecr_log.EcrLog`, whose entries ``clock`` stamps) and :attr:`export`
    (:class:`~posbridge.journal.export.RegistryExport`). Thread-safe: one connection shared under a
    lock; :meth:`transaction` groups calls of any part atomically. ``readonly`` opens an existing
    journal for reading only (an export, a check).

    Raises :class:`~posbridge.journal.storage.JournalFault` when the file cannot be used — found at
    opening, before anything is sent.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        clock: Callable[[], datetime] = datetime.now,
        readonly: bool = False,
    ) -> None:
        self.storage = Storage(path, readonly=readonly)
        self.ledger = Ledger(self.storage)
        self.ecr = EcrLog(self.storage, clock)
        self.export = RegistryExport(self.storage)

    @property
    def path(self) -> str:
        """The file's path as given (``":memory:"`` for an in-memory journal)."""
        return self.storage.path

    @property
    def readonly(self) -> bool:
        """True when opened for reading only."""
        return self.storage.readonly

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block atomically (and exclusively among threads); nested blocks join the outer one."""
        with self.storage.transaction():
            yield

    def close(self) -> None:
        """Close the database (SQLite checkpoints a file journal's WAL into it)."""
        self.storage.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class JournalCheck:
    """What :func:`check_journal` found: ``ok`` and a report for people (one finding a line)."""

    ok: bool
    text: str


def check_journal(path: str | os.PathLike[str]) -> JournalCheck:
    """Say what is wrong with the journal at ``path``, reading it only (never repairing, never
    replacing: a damaged journal is evidence). Checks SQLite's integrity, the schema version, and
    reports the ECR entries that need attention. Reads every page: run it off an event loop."""
    name = os.fspath(path)
    lines = [f"journal {name}"]
    try:
        journal = Journal(name, readonly=True)
    except JournalError as error:
        return JournalCheck(False, "\n".join(lines + [f"  NOT USABLE: {error}"]))
    try:
        problems = journal.storage.integrity_problems()
        version = journal.storage.schema_version()
        ok = problems == ["ok"]
        lines.append(f"  schema {version}; SQLite integrity: {'ok' if ok else 'DAMAGED'}")
        lines += [f"    {problem}" for problem in problems[:20] if problem != "ok"]
        counts = journal.ecr.counts_by_state()
        lines.append(f"  terminal side: {journal.ledger.count()} operation(s); ECR side: "
                     + (", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no entries"))
        open_entries = sum(counts.get(state, 0) for state in ECR_OPEN_STATES)
        if open_entries:
            lines.append(f"  {open_entries} ECR operation(s) with an unknown outcome: run `posbridge recover`")
        if counts.get("refund_needed"):
            lines.append(f"  {counts['refund_needed']} ECR operation(s) need a person: their batch was settled"
                         f" (see `posbridge export --journal {name} --side ecr`)")
        if ok:
            lines.append("  sound")
        else:
            lines.append("  keep this file for the audit; start a new journal beside it")
        return JournalCheck(ok, "\n".join(lines))
    except JournalError as error:
        return JournalCheck(False, "\n".join(lines + [f"  NOT USABLE: {error}"]))
    finally:
        journal.close()
