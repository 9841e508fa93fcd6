"""Slip layout, exactly as printed."""

from datetime import datetime

import pytest

from posbridge.model import Operation, Result, Status, Totals
from posbridge.emulator.slips import Merchant, SlipPrinter

WHEN = datetime(2026, 11, 22, 12, 30, 5)
SALE = Result(Operation.SALE, Status.APPROVED, "00", "ОДОБРЕНО", amount=15000, currency=643,
              rrn="333109189729", auth_code="454583", masked_pan="411111******1111", card_scheme="VISA",
              terminal_id="00344224", merchant_id="000000000123456", host_datetime=WHEN, host_code="00")


def test_approved_sale_customer_and_cashier_copies():
    slips = SlipPrinter(Merchant(), width=32, copies=2).render(SALE)
    body = [
        "           ТЕСТ БАНК",
        "г. Москва, ул. Тестовая, 1",
        "ТЕРМИНАЛ:               00344224",
        "МЕРЧАНТ:         000000000123456",
        "22.11.2026              12:30:05",
        "             ОПЛАТА",
        "СУММА:                150.00 RUB",
        "VISA            411111******1111",
        "RRN:                333109189729",
        "КОД АВТОРИЗАЦИИ:          454583",
        "КОД ОТВЕТА:                   00",
        "            ОДОБРЕНО",
    ]
    assert slips.customer.splitlines() == body + ["", "         КОПИЯ КЛИЕНТА"]
    assert slips.cashier.splitlines() == body + ["", "ПОДПИСЬ КЛИЕНТА:", "_" * 32, "", "         КОПИЯ КАССИРА"]
    assert all(len(line) <= 32 for line in slips.customer.splitlines() + slips.cashier.splitlines())


def test_one_copy_and_three_copies():
    assert SlipPrinter(copies=1).render(SALE).cashier == ""
    three = SlipPrinter(copies=3).render(SALE).cashier
    assert three.count("КОПИЯ КАССИРА") == 2 and ("\n" + "-" * 32 + "\n") in three


def test_decline_auto_reversal_and_full_pan_masked_again():
    declined = SALE.with_changes(status=Status.REVERSED, host_code="151019", response_code="151019",
                                 response_text="ОТВЕТ НЕ ПОЛУЧЕН", masked_pan="4111111111111111", rrn=None,
                                 auth_code=None)
    text = SlipPrinter().render(declined, auto_reversed=True).customer
    assert "4111111111111111" not in text and "411111******1111" in text
    assert "ОПЕРАЦИЯ АВТОМАТИЧЕСКИ ОТМЕНЕНА" in text and "151019" in text


def test_settlement_totals_and_operation_lines():
    printer = SlipPrinter()
    settlement = Result(Operation.SETTLEMENT, Status.APPROVED, "00", host_datetime=WHEN,
                        totals=Totals(643, 2, 30000, 1, 5000, 1, 10000))
    line = printer.operation_line(WHEN, "ОПЛАТА", "411111******1111", 15000, 643)
    assert line == "12:30 ОПЛАТА 1111         150.00" and len(line) == 32
    text = printer.render(settlement, details=[line]).customer.splitlines()
    assert text[5:11] == ["         СВЕРКА ИТОГОВ", "ОПЛАТА (2)            300.00 RUB", "ВОЗВРАТ (1)            50.00 RUB",
                          "ОТМЕНА (1)            100.00 RUB", "ИТОГО:                250.00 RUB", line]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        SlipPrinter(width=10)
    with pytest.raises(ValueError):
        SlipPrinter(copies=0)
