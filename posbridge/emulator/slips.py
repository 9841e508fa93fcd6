"""Slip layout: what a card terminal prints for the card holder and the cashier.

A slip is plain text, one line per printer line, at most ``width`` characters (32 for the common
57 mm printers). Each protocol encodes it as it must (SA tag 90 in CP1251, Arcus cheq.out in
CP1251 or CP866); this module only lays it out. Only masked card numbers ever reach a slip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from posbridge.model import Operation, Result, Slips, Status, Totals, format_amount, mask_pan

TITLES = {
    Operation.SALE: "ОПЛАТА",
    Operation.REFUND: "ВОЗВРАТ",
    Operation.CANCEL: "ОТМЕНА",
    Operation.PREAUTH: "ПРЕДАВТОРИЗАЦИЯ",
    Operation.COMPLETION: "ЗАВЕРШЕНИЕ РАСЧЕТА",
    Operation.CANCEL_PREAUTH: "ОТМЕНА ПРЕДАВТОРИЗАЦИИ",
    Operation.EMERGENCY_REVERSAL: "АВАРИЙНАЯ ОТМЕНА",
    Operation.SETTLEMENT: "СВЕРКА ИТОГОВ",
    Operation.SHORT_REPORT: "КРАТКИЙ ОТЧЕТ",
    Operation.FULL_REPORT: "ПОЛНЫЙ ОТЧЕТ",
    Operation.SLIP_COPY: "КОПИЯ ЧЕКА",
    Operation.TEST_CONNECTION: "ПРОВЕРКА СВЯЗИ",
}
OUTCOMES = {
    Status.APPROVED: "ОДОБРЕНО",
    Status.APPROVED_OFFLINE: "ОДОБРЕНО (ОФЛАЙН)",
    Status.CONDITIONAL: "ВЫПОЛНЕНО УСЛОВНО",
    Status.REVERSED: "ОПЕРАЦИЯ ОТМЕНЕНА",
    Status.DECLINED: "ОТКАЗ",
    Status.NO_CONNECTION: "НЕТ СВЯЗИ С БАНКОМ",
    Status.ABORTED: "ОПЕРАЦИЯ ПРЕРВАНА",
    Status.UNDEFINED: "НЕ ВЫПОЛНЕНО",
}
AUTO_REVERSAL_LINES = ("ОТВЕТ НЕ ПОЛУЧЕН", "ОПЕРАЦИЯ АВТОМАТИЧЕСКИ ОТМЕНЕНА")
CUSTOMER_MARK = "КОПИЯ КЛИЕНТА"
CASHIER_MARK = "КОПИЯ КАССИРА"


@dataclass(frozen=True)
class Merchant:
    """Who the slip is printed for."""

    name: str = "ТЕСТ БАНК"
    address: str = "г. Москва, ул. Тестовая, 1"
    terminal_id: str = "00344224"
    merchant_id: str = "000000000123456"


class SlipPrinter:
    """Lays out slips for results; ``copies`` = how many slips are printed (1: the card holder's
    only, 2: card holder's and cashier's, more: extra cashier copies)."""

    def __init__(self, merchant: Merchant | None = None, width: int = 32, copies: int = 2) -> None:
        if width < 24:
            raise ValueError("a slip needs at least 24 characters a line")
        if copies < 1:
            raise ValueError("at least one copy is printed")
        self.merchant = merchant or Merchant()
        self.width = width
        self.copies = copies

    def render(self, result: Result, *, auto_reversed: bool = False, details: Sequence[str] = ()) -> Slips:
        """Both slips of ``result``; the cashier copy is empty when only one copy is printed.

        ``details`` are extra lines after the amount or totals (a report's operation list).
        """
        body = self._body(result, auto_reversed, details)
        customer = "\n".join(body + ["", self._center(CUSTOMER_MARK)])
        if self.copies == 1:
            return Slips(customer=customer)
        cashier_lines = list(body)
        if result.approved and result.operation in (Operation.SALE, Operation.PREAUTH, Operation.COMPLETION):
            cashier_lines += ["", "ПОДПИСЬ КЛИЕНТА:", "_" * self.width]
        cashier_one = "\n".join(cashier_lines + ["", self._center(CASHIER_MARK)])
        separator = "\n" + "-" * self.width + "\n"
        return Slips(customer=customer, cashier=separator.join([cashier_one] * (self.copies - 1)))

    def operation_line(self, when: datetime, title: str, masked_pan: str | None, amount: int | None,
                       currency: int | None) -> str:
        """One line of a report's operation list: time, kind, card's last digits, amount."""
        left = f"{when:%H:%M} {title[:10]} {(masked_pan or '')[-4:]}".rstrip()
        right = format_amount(amount or 0, currency or 643).split()[0]
        return self._pair(left, right)

    def _body(self, result: Result, auto_reversed: bool, details: Sequence[str]) -> list[str]:
        m = self.merchant
        when = result.host_datetime
        lines = [self._center(m.name), *self._wrap(m.address)]
        lines.append(self._pair("ТЕРМИНАЛ:", result.terminal_id or m.terminal_id))
        lines.append(self._pair("МЕРЧАНТ:", result.merchant_id or m.merchant_id))
        if when:
            lines.append(self._pair(when.strftime("%d.%m.%Y"), when.strftime("%H:%M:%S")))
        lines.append(self._center(TITLES[result.operation]))
        if result.totals is not None:
            lines += self._totals(result.totals)
        elif result.amount is not None:
            lines.append(self._pair("СУММА:", format_amount(result.amount, result.currency or 643)))
        lines += [line[: self.width] for line in details]
        if result.masked_pan:
            # Defence in depth: whatever arrives here is masked again (a masked PAN stays as it is).
            lines.append(self._pair(result.card_scheme or "КАРТА", mask_pan(result.masked_pan)))
        for label, value in (("RRN:", result.rrn), ("КОД АВТОРИЗАЦИИ:", result.auth_code),
                             ("КОД ОТВЕТА:", result.host_code or result.response_code)):
            if value:
                lines.append(self._pair(label, value))
        if auto_reversed:
            lines += [self._center(text) for text in AUTO_REVERSAL_LINES]
        lines.append(self._center(OUTCOMES[result.status]))
        if result.response_text and result.response_text != OUTCOMES[result.status]:
            lines += self._wrap(result.response_text)
        return lines

    def _totals(self, totals: Totals) -> list[str]:
        cur = totals.currency
        return [
            self._pair(f"ОПЛАТА ({totals.sale_count})", format_amount(totals.sale_amount, cur)),
            self._pair(f"ВОЗВРАТ ({totals.refund_count})", format_amount(totals.refund_amount, cur)),
            self._pair(f"ОТМЕНА ({totals.cancel_count})", format_amount(totals.cancel_amount, cur)),
            self._pair("ИТОГО:", format_amount(totals.net_amount, cur)),
        ]

    def _center(self, text: str) -> str:
        return text[: self.width].center(self.width).rstrip()

    def _pair(self, left: str, right: str) -> str:
        gap = self.width - len(left) - len(right)
        if gap < 1:
            return f"{left} {right}"[: self.width]
        return left + " " * gap + right

    def _wrap(self, text: str) -> list[str]:
        words, lines, line = text.split(), [], ""
        for word in words:
            if line and len(line) + 1 + len(word) > self.width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        if line:
            lines.append(line[: self.width])
        return lines
