"""The virtual terminal's bank host: authorizes operations as an acquirer would (``host-rules.md``).

Deterministic: RRNs and authorization codes come from ``random.Random`` seeded with
``HostConfig.seed`` and a counter persisted in the journal; time comes from the injected clock. The
same scenario gives the same decisions. The batch, holds, refunds and the duplicate-control keys all
live in the :class:`~posbridge.journal.Journal`, so a new ``BankHost`` on the same file carries on
where the last one stopped. A full card number is never stored: masked PANs, plus a SHA-256 of the
PAN salted with the journal's secret salt for per-card limits.

Response codes (``HostDecision.code``; the manual's codes unless marked *posbridge*)

==========  =============  ===================================================================
code        status         when
==========  =============  ===================================================================
``00``      APPROVED       approved
``400``     APPROVED       emergency reversal that reversed (or had already reversed) an
                           operation
``9020``    APPROVED       *posbridge*: emergency reversal that found nothing to undo: no
                           operation with that STAN reached the host, or it was not approved
                           (a blind reversal is safe, and says so: the ECR resolves its lost
                           operation as never charged)
table       per table      the host-rules test cards, their exact code (``00`` when approved),
                           for sale and pre-authorization only, whatever the card's expiry
``101``     DECLINED       expired card by the host clock (ISO 8583:1993 "expired card"; the
                           manual names no code); not for test-table cards
``71015``   DECLINED       no card read for a sale / pre-authorization, or expiry not ``YYMM``
``111``     DECLINED       PAN fails Luhn or is not 12-19 digits (not for test-table cards)
``110``     DECLINED       amount missing, 0, negative or over 12 digits; completion over the
                           hold; cancel or release not for the whole amount; refund over what
                           is left to refund
``913``     DECLINED       malformed request: currency not the terminal's
                           (``HostConfig.currency``) or not the original's; STAN not digits;
                           RRN not 1-12 letters/digits; unknown operation (not journaled)
``903``     DECLINED       amount over the terminal's ``single_max``
``123``     DECLINED       over the card's ``single_max`` or ``daily_max``, or the terminal's
                           ``daily_max``
``9010``    DECLINED       *posbridge*: cancel of an operation not in the open batch (refund it);
                           emergency reversal of an approved operation of a settled batch
``9011``    DECLINED       *posbridge*: no operation with that RRN on this terminal
``9012``    DECLINED       *posbridge*: refund, cancel, completion or release without an RRN
``9013``    DECLINED       *posbridge*: the pre-authorization's hold expired (``hold_ttl``)
``9014``    DECLINED       *posbridge*: the original is not approved, is reversed, already
                           cancelled or completed, has refunds (cancel), or has later
                           operations (emergency reversal)
``9015``    DECLINED       *posbridge*: the original is of a kind the operation cannot act on
``9016``    DECLINED       *posbridge*: duplicate transaction number: the STAN of an earlier
                           operation of the open batch with another operation, amount or
                           currency (nothing charged; never that operation's outcome)
``9017``    DECLINED       *posbridge*: emergency reversal whose amount differs from the
                           operation its STAN names (nothing reversed)
``9018``    REVERSED       *posbridge*: a retry (same STAN, operation, amount) of an operation
                           that was approved and has been reversed since: nothing is charged
                           now, and the retry is never told "approved"
``151018``  DECLINED       fault ``request_not_sent``: nothing charged
``151019``  REVERSED       fault ``answer_lost`` on a money operation: whatever the host decided,
                           the terminal never learnt it and reversed on its own
                           (``auto_reversed``): nothing charged, both rows journaled;
                           DECLINED for settlement, reports, test connection (nothing done)
``""``      NO_CONNECTION  fault ``no_connection``: nothing charged
==========  =============  ===================================================================

Checks run in this order: unknown operation; duplicate STAN; request format (913, 110, 9012, 71015
for a missing card); fault; test-card table; Luhn; expiry; limits (903 before 123); the original
operation (9011, 9015, 9010, 9014, 9013, then currency 913 and amount 110).

Decisions where host-rules is silent
- Every approved operation gets a new RRN; a completion keeps the pre-authorization's auth code, an
  emergency reversal answers with the reversed operation's RRN and auth code. Declines get none.
- Completion charges at most the held amount, once; the rest of the hold is released. Completion and
  release of a hold work across batches (holds outlive batches); a cancel does not.
- Cancel (void) acts on a sale, completion, refund or pre-authorization of the open batch; cancelling
  a completion does not bring the hold back. A sale with refunds cannot be cancelled (refund the rest).
- Refund acts on a sale or completion (a pre-authorization's RRN means its completion), in any batch,
  in parts; the card, if given, passes Luhn and expiry but is not matched against the original.
- Emergency reversal looks up ``transaction_id`` (the lost request's STAN) in the open batch and
  compares the amount (9017 when it differs); an approved operation with that STAN and amount in
  a settled batch gives 9010 (refund it), and no operation at all gives 9020. Under fault ``answer_lost`` it works normally (a reversal is retried
  until answered and is idempotent).
- Daily spend = live, not cancelled sales and pre-authorizations of the host-clock day (a card's
  across every terminal of the journal). Refunds do not lower it.
- Totals: sales = live sales + completions, not cancelled; refunds = live refunds, not cancelled;
  cancels = live cancels of sales, completions, refunds. Emergency reversals count nowhere.
- Duplicate STAN: a request with the STAN of an earlier operation of this terminal's open batch
  (for a settlement, also of the batch it closed) is a retry only with the same operation and, for
  money, the same amount and currency: the first decision is returned with ``duplicate=True`` —
  as it stands now: an approval reversed since is answered 9018 REVERSED, never "approved".
  Anything else is declined 9016 and never answered with the other operation's outcome. Requests stopped by
  ``no_connection`` / ``request_not_sent`` never reached the host and are not "first outcomes".
- ``request.terminal_id`` is not checked: the host serves ``HostConfig.terminal_id``.
- The clock should give naive local time (as terminals keep it); seconds are kept, microseconds not.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypedDict

from posbridge.emulator.cards import TEST_CARDS, Card, luhn_valid
from posbridge.journal import Journal, OperationRecord
from posbridge.model import (
    ISO_4217_NUMERIC,
    MAX_AMOUNT,
    RUB,
    Operation,
    Request,
    Status,
    Totals,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11; posbridge runs on 3.10

__all__ = ["FAULTS", "TEXTS", "BankHost", "Forced", "HostConfig", "HostDecision", "Limits"]

FAULTS = (None, "no_connection", "answer_lost", "request_not_sent")
"""Faults the host can be told to have (``HostConfig.fault``)."""

TEXTS: dict[str, str] = {
    "00": "ОДОБРЕНО",
    "400": "ОТМЕНА ПРОВЕДЕНА",
    "101": "ОТКЛОНЕНО: СРОК ДЕЙСТВИЯ КАРТЫ ИСТЕК",
    "110": "ОТКЛОНЕНО: НЕВЕРНАЯ СУММА",
    "111": "ОТКЛОНЕНО: НЕВЕРНЫЙ НОМЕР КАРТЫ",
    "123": "ОТКЛОНЕНО: ПРЕВЫШЕН ЛИМИТ",
    "903": "ОТКЛОНЕНО: СУММА ПРЕВЫШАЕТ ЛИМИТ",
    "913": "ОТКЛОНЕНО: НЕВЕРНЫЙ ФОРМАТ СООБЩЕНИЯ",
    "71015": "ОТКЛОНЕНО: НЕВЕРНО ВВЕДЕНЫ ДАННЫЕ КАРТЫ",
    "9010": "ОТКЛОНЕНО: ОПЕРАЦИЯ НЕ В ОТКРЫТОМ ПАКЕТЕ, ИСПОЛЬЗУЙТЕ ВОЗВРАТ",
    "9011": "ОТКЛОНЕНО: ИСХОДНАЯ ОПЕРАЦИЯ НЕ НАЙДЕНА",
    "9012": "ОТКЛОНЕНО: НУЖЕН RRN ИСХОДНОЙ ОПЕРАЦИИ",
    "9013": "ОТКЛОНЕНО: СРОК АВТОРИЗАЦИИ ИСТЕК",
    "9014": "ОТКЛОНЕНО: ИСХОДНАЯ ОПЕРАЦИЯ НЕДОСТУПНА",
    "9015": "ОТКЛОНЕНО: НЕВЕРНЫЙ ТИП ИСХОДНОЙ ОПЕРАЦИИ",
    "9016": "ОТКЛОНЕНО: ПОВТОР НОМЕРА ОПЕРАЦИИ",
    "9017": "ОТКЛОНЕНО: ОТМЕНА НЕ СООТВЕТСТВУЕТ ОПЕРАЦИИ",
    "9018": "ОПЕРАЦИЯ ОТМЕНЕНА РАНЕЕ: ДЕНЬГИ НЕ СПИСАНЫ",
    "9020": "ОТМЕНЯТЬ НЕЧЕГО: ОПЕРАЦИЯ НЕ ПРОВОДИЛАСЬ",
    "151018": "ОТКЛОНЕНО: ТАЙМАУТ, ЗАПРОС НЕ ОТПРАВЛЕН",
    "151019": "ОПЕРАЦИЯ ОТМЕНЕНА: НЕТ ОТВЕТА БАНКА",
    "": "НЕТ СВЯЗИ С БАНКОМ",
}
"""What the terminal prints for each host code (test-table cards print their own text)."""

_AUTH_ALPHABET = string.digits + string.ascii_uppercase
_RRN = re.compile(r"^[0-9A-Za-z]{1,12}$")
_CARD_OPERATIONS = (Operation.SALE, Operation.PREAUTH)
_BY_RRN = (Operation.REFUND, Operation.CANCEL, Operation.COMPLETION, Operation.CANCEL_PREAUTH)


@dataclass
class Limits:
    """Spending limits in minor units; None means no limit."""

    single_max: int | None = None
    daily_max: int | None = None


@dataclass
class HostConfig:
    """How the simulated host behaves. Mutable: a scenario may change ``fault`` between operations.

    ``card_limits`` is keyed by PAN (kept in memory only, never journaled). ``latency`` (seconds) is
    read by the terminal, which sends WAIT meanwhile; the host itself never sleeps. ``currency`` is
    the terminal's: requests in another currency are declined (913), so a batch has one currency.
    """

    terminal_id: str = "00344224"
    merchant_id: str = "000000000123456"
    seed: int = 0
    hold_ttl: timedelta = timedelta(days=7)
    terminal_limits: Limits = field(default_factory=Limits)
    card_limits: dict[str, Limits] = field(default_factory=dict)
    fault: str | None = None
    latency: float = 0.0
    currency: int = RUB

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown host fault {self.fault!r}; one of {FAULTS}")
        if not timedelta(hours=1) <= self.hold_ttl <= timedelta(days=45):
            raise ValueError(f"hold_ttl must be 1 hour to 45 days (the manual's range), got {self.hold_ttl}")
        if self.currency not in ISO_4217_NUMERIC:
            raise ValueError(f"currency must be an ISO 4217 numeric code, got {self.currency!r}")
        if self.latency < 0:
            raise ValueError(f"latency must not be negative, got {self.latency}")


@dataclass(frozen=True)
class Forced:
    """An outcome rule's say in one decision (see :meth:`BankHost.process`)."""

    fault: str | None = None
    decline_code: str | None = None
    decline_text: str | None = None
    approve: bool = False

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown host fault {self.fault!r}; one of {FAULTS}")


@dataclass(frozen=True)
class HostDecision:
    """The host's answer to one request (see the module docstring for codes).

    ``batch_number`` is the batch the operation was journaled in (for a settlement: the batch it
    closed). ``duplicate``: a repeated STAN, the first decision returned and nothing charged anew.
    """

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
    host_datetime: datetime
    batch_number: int
    totals: Totals | None = None
    auto_reversed: bool = False
    duplicate: bool = False
    operation_id: int | None = None  # the journal row of this decision (None: not journaled)

    @property
    def approved(self) -> bool:
        """True only for status APPROVED."""
        return self.status is Status.APPROVED


class _Decline(Exception):
    """Internal: a check failed with this code (and text, if not the standard one)."""

    def __init__(self, code: str, text: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.text = text or TEXTS[code]


@dataclass
class _Ctx:
    request: Request
    op: Operation
    card: Card | None
    now: datetime
    batch: int
    force_approval: bool = False  # an outcome rule approves past the test-card table and limits


class _Columns(TypedDict, total=False):
    """Columns of a journaled operation a handler may set (``Ledger.add_operation``'s keywords);
    ``amount`` and ``currency`` default to the request's for operations that move money."""

    amount: int | None
    currency: int | None
    rrn: str | None
    auth_code: str | None
    masked_pan: str | None
    card_scheme: str | None
    expiry: str | None
    pan_hash: str | None
    original_id: int | None
    delivered: bool
    auto_reversed: bool
    totals: Totals | None


def _valid_amount(amount: object) -> bool:
    return isinstance(amount, int) and not isinstance(amount, bool) and 0 < amount <= MAX_AMOUNT


class BankHost:
    """The simulated acquirer. :meth:`process` decides one request and journals it atomically."""

    def __init__(
        self,
        journal: Journal,
        config: HostConfig | None = None,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.journal = journal
        self.config = config if config is not None else HostConfig()
        self._clock = clock
        self._salt = journal.ledger.pan_salt()

    # --- public API ------------------------------------------------------------------------------
    @property
    def batch_number(self) -> int:
        """The open batch's number."""
        return self.journal.ledger.batch_number(self.config.terminal_id)

    def totals(self) -> Totals:
        """Totals of the open batch, from the journal."""
        tid = self.config.terminal_id
        return self.journal.ledger.batch_totals(tid, self.journal.ledger.batch_number(tid), self.config.currency)

    def process(self, request: Request, card: Card | None = None, forced: Forced | None = None) -> HostDecision:
        """Decide ``request``; ``card`` is the card read for a sale, pre-authorization or refund.

        ``forced`` is an outcome rule's (posbridge.emulator.rules): a host fault, a decline with its
        code and text, or an approval past the test-card table and limits. It applies after the
        duplicate and format checks and is journaled like any decision, so totals follow the journal.
        """
        now = self._clock().replace(microsecond=0)
        try:
            op = Operation(request.operation)
        except ValueError:
            return self._unjournaled(Status.DECLINED, "913", now)
        if op is Operation.SLIP_COPY:  # the terminal's business: it keeps its last slip
            return self._unjournaled(Status.APPROVED, "00", now)
        with self.journal.transaction():
            batch = self.journal.ledger.open_batch(self.config.terminal_id, now)
            ctx = _Ctx(request, op, card if op in (*_CARD_OPERATIONS, Operation.REFUND) else None, now, batch)
            first = self._first_outcome(ctx)
            if first is not None:
                if self._same_request(first, ctx):
                    # A retry: the first outcome again, as it stands now. An approval reversed since
                    # (an emergency or automatic reversal) must not be reported as money taken.
                    if first.status is Status.APPROVED and self.journal.ledger.state(first.id).reversed:
                        return replace(self._decision(first, duplicate=True), status=Status.REVERSED,
                                       code="9018", text=TEXTS["9018"], auth_code=None)
                    return self._decision(first, duplicate=True)
                return self._decline(ctx, _Decline("9016"))  # the number names another operation
            try:
                self._check_format(ctx)
            except _Decline as d:
                return self._decline(ctx, d)
            fault = forced.fault if forced is not None and forced.fault else self.config.fault
            if fault is not None and not (fault == "answer_lost" and op is Operation.EMERGENCY_REVERSAL):
                return self._fault(ctx, fault)
            if forced is not None and forced.decline_code is not None:
                return self._decline(ctx, _Decline(forced.decline_code,
                                                   forced.decline_text or TEXTS.get(forced.decline_code, "ОТКЛОНЕНО")))
            ctx.force_approval = forced is not None and forced.approve
            try:
                return self._HANDLERS[op](self, ctx)
            except _Decline as d:
                return self._decline(ctx, d)

    def record_refusal(self, request: Request, status: Status, code: str, text: str,
                       card: Card | None = None) -> HostDecision:
        """Journal an operation the terminal ended itself, before the host saw it (aborted by the
        cashier or the ECR, card details keyed wrong, a request it could not read), so the
        terminal's journal lists every operation it was asked for. Such rows never reached the
        host (``delivered`` false): they charge nothing and are not a STAN's first outcome.
        """
        now = self._clock().replace(microsecond=0)
        try:
            op = Operation(request.operation)
        except ValueError:
            op = Operation.TEST_CONNECTION
        with self.journal.transaction():
            batch = self.journal.ledger.open_batch(self.config.terminal_id, now)
            ctx = _Ctx(request, op, card, now, batch)
            amount = request.amount if _valid_amount(request.amount) else None
            currency = request.currency if isinstance(request.currency, int) and \
                request.currency in ISO_4217_NUMERIC else None
            return self._journal(ctx, status, code, text=text, delivered=False,
                                 amount=amount if op.moves_money else None,
                                 currency=currency if op.moves_money else None)

    # --- steps -----------------------------------------------------------------------------------
    def _first_outcome(self, ctx: _Ctx) -> OperationRecord | None:
        stan = ctx.request.transaction_id
        if stan is None or ctx.op is Operation.EMERGENCY_REVERSAL:
            return None
        tid = self.config.terminal_id
        first = self.journal.ledger.find_by_stan(tid, ctx.batch, stan)
        if first is None and ctx.op is Operation.SETTLEMENT and ctx.batch > 1:
            # a settlement resent after it closed the batch must not close the next (empty) one
            closed = self.journal.ledger.find_by_stan(tid, ctx.batch - 1, stan)
            if closed is not None and closed.operation is Operation.SETTLEMENT:
                first = closed
        return first

    @staticmethod
    def _same_request(first: OperationRecord, ctx: _Ctx) -> bool:
        """Is this request a retry of ``first`` (same operation and, for money, amount and currency)?"""
        if first.operation is not ctx.op:
            return False
        if not ctx.op.moves_money:
            return True
        return first.amount == ctx.request.amount and first.currency == ctx.request.currency

    def _check_format(self, ctx: _Ctx) -> None:
        req, op = ctx.request, ctx.op
        if req.transaction_id is not None and not re.fullmatch(r"[0-9]{1,12}", str(req.transaction_id)):
            raise _Decline("913")
        if req.rrn is not None and not _RRN.match(str(req.rrn)):
            raise _Decline("913")
        if op.moves_money and op is not Operation.EMERGENCY_REVERSAL:
            if req.currency != self.config.currency:
                raise _Decline("913")
            if not _valid_amount(req.amount):
                raise _Decline("110")
            if op in _BY_RRN and not req.rrn:
                raise _Decline("9012")
            if op in _CARD_OPERATIONS and ctx.card is None:
                raise _Decline("71015")

    def _fault(self, ctx: _Ctx, fault: str) -> HostDecision:
        if fault == "no_connection":
            return self._journal(ctx, Status.NO_CONNECTION, "", delivered=False)
        if fault == "request_not_sent":
            return self._journal(ctx, Status.DECLINED, "151018", delivered=False)
        if not ctx.op.moves_money:  # answer lost for a settlement / report / test: nothing happened
            return self._journal(ctx, Status.DECLINED, "151019", delivered=False)
        # The host charged, the answer never came back, the terminal reversed on its own: net nothing.
        lost = self._record(ctx, Status.REVERSED, "151019", auto_reversed=True)
        self._record(
            ctx, Status.APPROVED, "400", original_id=lost.id, auto_reversed=True,
            operation=Operation.EMERGENCY_REVERSAL,
        )
        return self._decision(lost)

    # --- handlers --------------------------------------------------------------------------------
    def _sale(self, ctx: _Ctx) -> HostDecision:
        card = ctx.card
        assert card is not None  # _check_format declined a missing card
        rule = TEST_CARDS.get(card.pan)
        pan_hash = self._pan_hash(card.pan)
        if not ctx.force_approval:
            if rule is not None and not rule.approved:
                raise _Decline(rule.code, rule.text)
            if rule is None:
                self._check_card(card, ctx.now)
            self._check_limits(card, pan_hash, int(ctx.request.amount or 0), ctx.now)
        rrn, auth = self._new_codes()
        return self._journal(ctx, Status.APPROVED, "00", rrn=rrn, auth_code=auth, pan_hash=pan_hash)

    def _completion(self, ctx: _Ctx) -> HostDecision:
        hold = self._original(ctx, (Operation.PREAUTH,))
        state = self.journal.ledger.state(hold.id)
        if not state.live or state.voided or state.completed_by is not None:
            raise _Decline("9014")
        self._check_hold_alive(hold, ctx.now)
        self._check_currency(ctx, hold)
        if int(ctx.request.amount or 0) > int(hold.amount or 0):
            raise _Decline("110", "ОТКЛОНЕНО: СУММА БОЛЬШЕ ЗАБЛОКИРОВАННОЙ")
        rrn, _ = self._new_codes()
        return self._approve_on(ctx, hold, rrn, hold.auth_code)

    def _cancel_preauth(self, ctx: _Ctx) -> HostDecision:
        hold = self._original(ctx, (Operation.PREAUTH,))
        return self._release(ctx, hold)

    def _cancel(self, ctx: _Ctx) -> HostDecision:
        original = self._original(
            ctx, (Operation.SALE, Operation.COMPLETION, Operation.REFUND, Operation.PREAUTH)
        )
        wanted = ctx.request.original_operation
        if wanted is not None and wanted is not original.operation:
            raise _Decline("9015")
        if original.batch != ctx.batch:
            raise _Decline("9010")
        return self._release(ctx, original)

    def _release(self, ctx: _Ctx, original: OperationRecord) -> HostDecision:
        """Cancel (void) an operation or release a hold: whole amount only."""
        state = self.journal.ledger.state(original.id)
        if not state.live:
            raise _Decline("9014", "ОТКЛОНЕНО: ИСХОДНАЯ ОПЕРАЦИЯ НЕ ОДОБРЕНА ИЛИ ОТМЕНЕНА")
        if state.voided:
            raise _Decline("9014", "ОТКЛОНЕНО: ОПЕРАЦИЯ УЖЕ ОТМЕНЕНА")
        if original.operation is Operation.PREAUTH:
            if state.completed_by is not None:
                raise _Decline("9014", "ОТКЛОНЕНО: АВТОРИЗАЦИЯ УЖЕ ЗАВЕРШЕНА")
            self._check_hold_alive(original, ctx.now)
        elif state.refunded > 0:
            raise _Decline("9014", "ОТКЛОНЕНО: ПО ОПЕРАЦИИ БЫЛ ВОЗВРАТ")
        self._check_currency(ctx, original)
        if ctx.request.amount != original.amount:
            raise _Decline("110", "ОТКЛОНЕНО: ОТМЕНА ТОЛЬКО НА ПОЛНУЮ СУММУ")
        rrn, auth = self._new_codes()
        return self._approve_on(ctx, original, rrn, auth)

    def _refund(self, ctx: _Ctx) -> HostDecision:
        card = ctx.card
        if card is not None:
            self._check_card(card, ctx.now)
        original = self._original(ctx, (Operation.SALE, Operation.COMPLETION, Operation.PREAUTH))
        if original.operation is Operation.PREAUTH:
            completion = self.journal.ledger.state(original.id).completed_by
            if completion is None:
                raise _Decline("9015", "ОТКЛОНЕНО: АВТОРИЗАЦИЯ НЕ ЗАВЕРШЕНА")
            original = self.journal.ledger.operation(completion) or original
        state = self.journal.ledger.state(original.id)
        if not state.live or state.voided:
            raise _Decline("9014", "ОТКЛОНЕНО: ИСХОДНАЯ ОПЕРАЦИЯ НЕ ОДОБРЕНА ИЛИ ОТМЕНЕНА")
        self._check_currency(ctx, original)
        if int(ctx.request.amount or 0) > int(original.amount or 0) - state.refunded:
            raise _Decline("110", "ОТКЛОНЕНО: СУММА ВОЗВРАТА БОЛЬШЕ СУММЫ ОПЛАТЫ")
        rrn, auth = self._new_codes()
        if card is None:
            return self._approve_on(ctx, original, rrn, auth)
        return self._journal(
            ctx, Status.APPROVED, "00", rrn=rrn, auth_code=auth, original_id=original.id,
            pan_hash=self._pan_hash(card.pan),
        )

    def _emergency_reversal(self, ctx: _Ctx) -> HostDecision:
        tid = self.config.terminal_id
        stan = ctx.request.transaction_id
        lost = self.journal.ledger.find_by_stan(tid, ctx.batch, stan) if stan else None
        amount = ctx.request.amount if _valid_amount(ctx.request.amount) else None
        if lost is None and stan:
            settled = self.journal.ledger.find_settled_by_stan(tid, ctx.batch, stan)
            if settled is not None and (amount is None or settled.amount == amount):
                raise _Decline("9010")  # it was charged and settled since: only a refund undoes it
        if lost is not None and amount is not None and lost.amount is not None and lost.amount != amount:
            raise _Decline("9017")  # that number names another operation: reverse nothing
        if lost is None or (lost.status is not Status.APPROVED and not lost.auto_reversed) \
                or not lost.operation.moves_money:
            # A blind reversal must be safe: the host never saw it, or nothing was done. Change
            # nothing, and say so explicitly, so the ECR can tell it from a reversal that reversed.
            return self._journal(
                ctx, Status.APPROVED, "9020", amount=amount, original_id=lost.id if lost else None
            )
        state = self.journal.ledger.state(lost.id)
        if lost.auto_reversed or state.reversed:
            return replace(self._reversal_row(ctx, lost), duplicate=True)
        if state.dependents:
            raise _Decline("9014", "ОТКЛОНЕНО: ПО ОПЕРАЦИИ ЕСТЬ ПОСЛЕДУЮЩИЕ ОПЕРАЦИИ")
        return self._reversal_row(ctx, lost)

    def _reversal_row(self, ctx: _Ctx, lost: OperationRecord) -> HostDecision:
        return self._journal(
            ctx, Status.APPROVED, "400", amount=lost.amount, currency=lost.currency, rrn=lost.rrn,
            auth_code=lost.auth_code, original_id=lost.id, masked_pan=lost.masked_pan,
            card_scheme=lost.card_scheme, expiry=lost.expiry, pan_hash=lost.pan_hash,
        )

    def _settlement(self, ctx: _Ctx) -> HostDecision:
        tid, currency = self.config.terminal_id, self.config.currency
        totals = self.journal.ledger.batch_totals(tid, ctx.batch, currency)
        decision = self._journal(ctx, Status.APPROVED, "00", totals=totals, currency=currency)
        self.journal.ledger.close_batch(tid, ctx.batch, ctx.now, totals)
        return decision

    def _report(self, ctx: _Ctx) -> HostDecision:
        currency = self.config.currency
        totals = self.journal.ledger.batch_totals(self.config.terminal_id, ctx.batch, currency)
        return self._journal(ctx, Status.APPROVED, "00", totals=totals, currency=currency)

    def _test_connection(self, ctx: _Ctx) -> HostDecision:
        return self._journal(ctx, Status.APPROVED, "00")

    _HANDLERS: dict[Operation, Callable[[BankHost, _Ctx], HostDecision]] = {
        Operation.SALE: _sale,
        Operation.PREAUTH: _sale,  # same checks; a pre-authorization holds instead of charging
        Operation.COMPLETION: _completion,
        Operation.CANCEL_PREAUTH: _cancel_preauth,
        Operation.CANCEL: _cancel,
        Operation.REFUND: _refund,
        Operation.EMERGENCY_REVERSAL: _emergency_reversal,
        Operation.SETTLEMENT: _settlement,
        Operation.SHORT_REPORT: _report,
        Operation.FULL_REPORT: _report,
        Operation.TEST_CONNECTION: _test_connection,
    }

    # --- checks ----------------------------------------------------------------------------------
    @staticmethod
    def _check_card(card: Card, now: datetime) -> None:
        if not 12 <= len(card.pan) <= 19 or not luhn_valid(card.pan):
            raise _Decline("111")
        expiry = card.expiry
        if not re.fullmatch(r"[0-9]{4}", expiry) or not 1 <= int(expiry[2:]) <= 12:
            raise _Decline("71015")
        if (now.year, now.month) > (2000 + int(expiry[:2]), int(expiry[2:])):
            raise _Decline("101")  # valid through the last day of the expiry month

    def _check_limits(self, card: Card, pan_hash: str, amount: int, now: datetime) -> None:
        terminal = self.config.terminal_limits
        if terminal.single_max is not None and amount > terminal.single_max:
            raise _Decline("903")
        by_card = {Card(pan).pan: limits for pan, limits in self.config.card_limits.items()}
        limits = by_card.get(card.pan)
        if limits is not None:
            if limits.single_max is not None and amount > limits.single_max:
                raise _Decline("123")
            if limits.daily_max is not None and \
                    self.journal.ledger.day_spend(now.date(), pan_hash=pan_hash) + amount > limits.daily_max:
                raise _Decline("123")
        if terminal.daily_max is not None:
            spent = self.journal.ledger.day_spend(now.date(), terminal_id=self.config.terminal_id)
            if spent + amount > terminal.daily_max:
                raise _Decline("123")

    def _original(self, ctx: _Ctx, kinds: tuple[Operation, ...]) -> OperationRecord:
        original = self.journal.ledger.find_by_rrn(self.config.terminal_id, str(ctx.request.rrn))
        if original is None:
            raise _Decline("9011")
        if original.operation not in kinds:
            raise _Decline("9015")
        return original

    def _check_hold_alive(self, hold: OperationRecord, now: datetime) -> None:
        if now > hold.host_datetime + self.config.hold_ttl:
            raise _Decline("9013")

    @staticmethod
    def _check_currency(ctx: _Ctx, original: OperationRecord) -> None:
        if ctx.request.currency != original.currency:
            raise _Decline("913")

    # --- journaling and decisions ----------------------------------------------------------------
    def _pan_hash(self, pan: str) -> str:
        return hashlib.sha256(self._salt + pan.encode("ascii", "replace")).hexdigest()

    def _new_codes(self) -> tuple[str, str]:
        """A fresh RRN and auth code: reproducible from the seed and the journal's counter."""
        tid = self.config.terminal_id
        while True:
            n = self.journal.ledger.next_counter(f"host:{tid}")
            rng = random.Random(f"{self.config.seed}:{tid}:{n}")  # str seeds hash stably (sha512)
            rrn = f"{rng.randrange(10**12):012d}"
            auth = "".join(rng.choice(_AUTH_ALPHABET) for _ in range(6))
            if not self.journal.ledger.rrn_used(rrn):
                return rrn, auth

    def _approve_on(self, ctx: _Ctx, original: OperationRecord, rrn: str, auth: str | None) -> HostDecision:
        """Approve an operation on an earlier one: it carries the original's card."""
        return self._journal(
            ctx, Status.APPROVED, "00", rrn=rrn, auth_code=auth, original_id=original.id,
            masked_pan=original.masked_pan, card_scheme=original.card_scheme, expiry=original.expiry,
            pan_hash=original.pan_hash,
        )

    def _decline(self, ctx: _Ctx, d: _Decline) -> HostDecision:
        return self._journal(ctx, Status.DECLINED, d.code, text=d.text)

    def _journal(self, ctx: _Ctx, status: Status, code: str, *, text: str | None = None,
                 operation: Operation | None = None, **columns: Unpack[_Columns]) -> HostDecision:
        return self._decision(self._record(ctx, status, code, text=text, operation=operation, **columns))

    def _record(self, ctx: _Ctx, status: Status, code: str, *, text: str | None = None,
                operation: Operation | None = None, **columns: Unpack[_Columns]) -> OperationRecord:
        """Journal what the terminal answered; the decision is always rebuilt from this row."""
        req, card = ctx.request, ctx.card
        money = ctx.op.moves_money
        fields: _Columns = {"amount": req.amount if money else None, "currency": req.currency if money else None}
        if card is not None:
            fields.update({"masked_pan": card.masked_pan, "card_scheme": card.scheme, "expiry": card.expiry})
        fields.update(columns)
        return self.journal.ledger.add_operation(
            terminal_id=self.config.terminal_id,
            merchant_id=self.config.merchant_id,
            batch=ctx.batch,
            operation=operation or ctx.op,
            status=status,
            code=code,
            text=text if text is not None else TEXTS[code],
            host_datetime=ctx.now,
            transaction_id=req.transaction_id,
            original_rrn=req.rrn if ctx.op in _BY_RRN else None,
            **fields,
        )

    @staticmethod
    def _decision(record: OperationRecord, duplicate: bool = False) -> HostDecision:
        return HostDecision(
            status=record.status, code=record.code, text=record.text, amount=record.amount,
            currency=record.currency, rrn=record.rrn, auth_code=record.auth_code,
            masked_pan=record.masked_pan, card_scheme=record.card_scheme, expiry=record.expiry,
            host_datetime=record.host_datetime, batch_number=record.batch, totals=record.totals,
            auto_reversed=record.auto_reversed, duplicate=duplicate, operation_id=record.id,
        )

    def _unjournaled(self, status: Status, code: str, now: datetime) -> HostDecision:
        return HostDecision(
            status=status, code=code, text=TEXTS[code], amount=None, currency=None, rrn=None,
            auth_code=None, masked_pan=None, card_scheme=None, expiry=None, host_datetime=now,
            batch_number=self.batch_number,
        )
