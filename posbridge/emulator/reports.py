"""What a settlement or full report slip carries after its totals, computed once from a batch's
journal rows: totals by card scheme, and (full report) the operations it lists.

The virtual terminal computes it from its own journal; in gateway mode its journal stays empty
(the host journals every operation), so ``posbridge host`` computes it from the host's journal and
sends it with its decision (PBH1 ``"report"``, docs/host-protocol.md): either way the slip lists
the same lines.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from posbridge.journal import OperationRecord
from posbridge.model import Operation, Status

__all__ = ["REPORT_OPERATIONS", "MAX_LISTED", "BatchReport", "ListedOperation", "SchemeTotals", "batch_report"]

REPORT_OPERATIONS = frozenset({Operation.FULL_REPORT, Operation.SETTLEMENT})
MAX_LISTED = 1000
"""Operations a report carries at most, whatever was asked: a slip holds far fewer
(``SLIP_BUDGET``), and a PBH1 answer stays well under its 1 MiB limit (~150 bytes each)."""

_KINDS = ("sale", "refund", "cancel")


@dataclass(frozen=True)
class SchemeTotals:
    """One card scheme's live sales, refunds and cancels in a batch: ``(count, amount)`` each."""

    scheme: str
    sale: tuple[int, int] = (0, 0)
    refund: tuple[int, int] = (0, 0)
    cancel: tuple[int, int] = (0, 0)

    @property
    def net(self) -> int:
        """Sales less refunds (a cancelled sale or refund is in neither)."""
        return self.sale[1] - self.refund[1]


@dataclass(frozen=True)
class ListedOperation:
    """One line of a full report's operation list (the card number masked)."""

    host_datetime: datetime
    operation: Operation
    masked_pan: str | None
    amount: int
    currency: int | None


@dataclass(frozen=True)
class BatchReport:
    """A report's lines after the totals, as data.

    ``schemes``: totals by card scheme, by name. ``listed``: the latest operations a full report
    lists, oldest first (none for a settlement); ``listed_total``: how many it would list in all
    (the slip counts those not carried: "... ЕЩЕ N ОПЕРАЦИЙ РАНЕЕ")."""

    schemes: tuple[SchemeTotals, ...] = ()
    listed: tuple[ListedOperation, ...] = ()
    listed_total: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (PBH1's ``"report"``)."""
        return {
            "schemes": [{"scheme": s.scheme, **{kind: list(getattr(s, kind)) for kind in _KINDS}}
                        for s in self.schemes],
            "listed": [{"host_datetime": op.host_datetime.isoformat(), "operation": op.operation.value,
                        "masked_pan": op.masked_pan, "amount": op.amount, "currency": op.currency}
                       for op in self.listed],
            "listed_total": self.listed_total,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchReport:
        """The report back from :meth:`to_json`'s data; ValueError (one line) when it is not that."""
        try:
            schemes = tuple(SchemeTotals(str(item["scheme"]), *(_pair(item[kind]) for kind in _KINDS))
                            for item in data["schemes"])
            listed = tuple(ListedOperation(datetime.fromisoformat(item["host_datetime"]),
                                           Operation(item["operation"]), _optional_str(item["masked_pan"]),
                                           _int(item["amount"]), _optional_int(item["currency"]))
                           for item in data["listed"])
            total = _int(data["listed_total"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"report: {type(error).__name__}: {error}"[:200]) from None
        if total < len(listed) or len(listed) > MAX_LISTED:
            raise ValueError(f"report: {len(listed)} operations listed of {total}")
        return cls(schemes, listed, total)


def batch_report(records: Sequence[OperationRecord], currency: int, *, listing: int | None) -> BatchReport:
    """The report of a batch's ``records`` (a ledger's rows, oldest first): totals by scheme in
    ``currency`` (the batch totals' rules: live, not cancelled sales and completions; live, not
    cancelled refunds; live cancels of those) and, for a full report, the latest ``listing``
    approved money operations (at most :data:`MAX_LISTED`) of how many there are; ``listing``
    None (a settlement): no list."""
    reversed_ids = {r.original_id for r in records if r.operation is Operation.EMERGENCY_REVERSAL
                    and r.status is Status.APPROVED and r.original_id is not None}
    by_id = {r.id: r for r in records}

    def live(r: OperationRecord) -> bool:
        return r.status is Status.APPROVED and r.operation is not Operation.EMERGENCY_REVERSAL \
            and r.id not in reversed_ids

    voided = {r.original_id for r in records if live(r) and r.original_id is not None
              and r.operation in (Operation.CANCEL, Operation.CANCEL_PREAUTH)}
    sums: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in records:
        if not live(r) or r.currency not in (None, currency):
            continue
        kind = None
        if r.operation in (Operation.SALE, Operation.COMPLETION) and r.id not in voided:
            kind = "sale"
        elif r.operation is Operation.REFUND and r.id not in voided:
            kind = "refund"
        elif r.operation is Operation.CANCEL:
            original = by_id.get(r.original_id) if r.original_id is not None else None
            if original is not None and original.operation in (Operation.SALE, Operation.COMPLETION,
                                                               Operation.REFUND):
                kind = "cancel"
        if kind is not None:
            entry = sums[r.card_scheme or "ПРОЧИЕ"][kind]
            entry[0] += 1
            entry[1] += int(r.amount or 0)
    schemes = tuple(SchemeTotals(scheme, **{kind: (count, amount) for kind, (count, amount) in sums[scheme].items()})
                    for scheme in sorted(sums))
    if listing is None:
        return BatchReport(schemes)
    listable = [r for r in records if r.status is Status.APPROVED and r.operation.moves_money and r.amount]
    keep = min(len(listable), max(0, min(listing, MAX_LISTED)))
    listed = tuple(ListedOperation(r.host_datetime, r.operation, r.masked_pan, int(r.amount or 0), r.currency)
                   for r in listable[len(listable) - keep:])
    return BatchReport(schemes, listed, len(listable))


def _pair(value: Any) -> tuple[int, int]:
    count, amount = value
    return _int(count), _int(amount)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a count or an amount")
    return value


def _optional_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{value!r} is not text")
    return value
