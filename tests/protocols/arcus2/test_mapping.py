"""Arcus2-style messages <-> the domain model: every operation both ways, response codes, slips."""

from __future__ import annotations

from datetime import datetime

import pytest

from posbridge.protocols.arcus2.codes import (
    DEFAULT_TEXTS,
    HOST_CODE_MAP,
    response_code_for,
    status_for,
)
from posbridge.protocols.arcus2.fields import Message
from posbridge.protocols.arcus2.mapping import (
    SLIP_SEPARATOR,
    RequestContext,
    UnsupportedMessage,
    abort_message,
    format_slip,
    intermediate_message,
    message_to_request,
    message_to_result,
    parse_slip,
    request_to_message,
    result_to_message,
)
from posbridge.protocols.arcus2.ops import default_ops_table
from posbridge.protocols.common.errors import InvalidRequest
from posbridge.protocols.common.model import Operation, Request, Result, Slips, Status, Totals

OPS = default_ops_table()
NOW = datetime(2026, 11, 22, 12, 30, 5)

REQUESTS = [
    (Request(Operation.SALE, 15000, transaction_id="1"),
     {"operation": "1", "amount": "15000", "currency": "643", "transaction_id": "1"}),
    (Request(Operation.EMERGENCY_REVERSAL, 15000, transaction_id="1", original_operation=Operation.SALE),
     {"operation": "2", "amount": "15000", "currency": "643", "transaction_id": "1", "original_operation": "1"}),
    (Request(Operation.REFUND, 5000, transaction_id="2", rrn="333109189729", original_amount=15000),
     {"operation": "3", "amount": "5000", "currency": "643", "transaction_id": "2", "rrn": "333109189729",
      "original_amount": "15000"}),
    (Request(Operation.CANCEL, 15000, transaction_id="3", rrn="333109189729", auth_code="454583",
             original_operation=Operation.SALE),
     {"operation": "4", "amount": "15000", "currency": "643", "transaction_id": "3", "rrn": "333109189729",
      "auth_code": "454583", "original_operation": "1"}),
    (Request(Operation.CANCEL_PREAUTH, 50000, transaction_id="4", rrn="333109189730",
             original_operation=Operation.PREAUTH),
     {"operation": "4", "amount": "50000", "currency": "643", "transaction_id": "4", "rrn": "333109189730",
      "original_operation": "5"}),
    (Request(Operation.PREAUTH, 50000, 840, transaction_id="5"),
     {"operation": "5", "amount": "50000", "currency": "840", "transaction_id": "5"}),
    (Request(Operation.COMPLETION, 40000, transaction_id="6", rrn="333109189730", auth_code="AB12CD"),
     {"operation": "6", "amount": "40000", "currency": "643", "transaction_id": "6", "rrn": "333109189730",
      "auth_code": "AB12CD"}),
    (Request(Operation.SETTLEMENT, transaction_id="7", terminal_id="00344224"),
     {"operation": "7", "transaction_id": "7", "terminal_id": "00344224"}),
    (Request(Operation.SHORT_REPORT), {"operation": "8"}),
    (Request(Operation.FULL_REPORT), {"operation": "9"}),
    (Request(Operation.SLIP_COPY), {"operation": "60"}),
    (Request(Operation.TEST_CONNECTION, transaction_id="8"), {"operation": "96", "transaction_id": "8"}),
]


@pytest.mark.parametrize(("request_", "fields"), REQUESTS, ids=[r.operation.value for r, _ in REQUESTS])
def test_every_operation_both_ways(request_, fields):
    message = request_to_message(request_.validated(), OPS)
    assert message.message_class == "Q" and message.fields == fields
    decoded, context = message_to_request(Message.decode_body(message.encode_body()), OPS)
    assert decoded == request_  # CANCEL naming PREAUTH comes back as a cancel of a pre-authorization
    assert context == RequestContext(fields["operation"], fields.get("transaction_id"),
                                     fields.get("original_operation"))


def test_cancel_without_original_is_a_cancel_by_rrn():
    request, _ = message_to_request(Message("Q", {"operation": "4", "amount": "100", "rrn": "1"}), OPS)
    assert request.operation is Operation.CANCEL and request.original_operation is None


def test_operation_missing_from_the_table_cannot_be_sent():
    from posbridge.protocols.arcus2.ops import parse_ops_ini

    with pytest.raises(InvalidRequest, match="sale"):
        request_to_message(Request(Operation.SALE, 100), parse_ops_ini("96 = 3, 96, TEST"))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "no operation code"),
        ({"operation": "x"}, "'x' is not in"),
        ({"operation": "42"}, "'42' is not in"),
        ({"operation": "1", "amount": "1.5"}, "amount must be ASCII digits"),
        ({"operation": "1", "currency": "RUB"}, "currency must be ASCII digits"),
        ({"operation": "1", "transaction_id": "A7"}, "transaction_id must be ASCII digits"),
        ({"operation": "4", "original_operation": "77"}, "original operation '77'"),
        ({"operation": "3", "original_date_time": "2611221230"}, "yyMMddhhmmss"),
    ],
)
def test_unsupported_requests(fields, reason):
    with pytest.raises(UnsupportedMessage, match=reason):
        message_to_request(Message("Q", fields), OPS)


def test_original_date_time_travels_both_ways():
    request, _ = message_to_request(Message("Q", {"operation": "3", "amount": "100", "rrn": "1",
                                                  "original_date_time": "261122123005"}), OPS)
    assert request.operation is Operation.REFUND
    assert request.original_datetime == NOW
    assert request_to_message(request, OPS).fields["original_date_time"] == "261122123005"


# --- results ----------------------------------------------------------------------------------------
def full_result(**changes) -> Result:
    result = Result(Operation.SALE, Status.APPROVED, "00", "ОДОБРЕНО", amount=15000, currency=643,
                    rrn="333109189729", auth_code="454583", masked_pan="411111******1111", card_scheme="VISA",
                    terminal_id="00344224", transaction_id="7", host_datetime=NOW, host_code="00",
                    slips=Slips("ТЕСТ БАНК\nКОПИЯ КЛИЕНТА", "ТЕСТ БАНК\nКОПИЯ КАССИРА"))
    return result.with_changes(**changes)


CONTEXT = RequestContext("1", "7")


def test_result_message_exact_fields_in_table_order():
    message = result_to_message(full_result(), CONTEXT)
    assert message.message_class == "R"
    assert list(message.fields.items()) == [
        ("operation", "1"), ("response_code", "000"), ("host_code", "00"), ("text_message", "ОДОБРЕНО"),
        ("result_amount", "15000"), ("currency", "643"), ("transaction_id", "7"), ("rrn", "333109189729"),
        ("auth_code", "454583"), ("terminal_id", "00344224"), ("pan", "411111******1111"),
        ("card_type", "VISA"), ("date", "261122"), ("time", "123005"),
        ("slip", f"ТЕСТ БАНК\nКОПИЯ КЛИЕНТА\n{SLIP_SEPARATOR}\nТЕСТ БАНК\nКОПИЯ КАССИРА"),
    ]


def test_result_round_trip_through_the_wire():
    sale = Request(Operation.SALE, 15000, transaction_id="7")
    sent = full_result()
    message = Message.decode_body(result_to_message(sent, CONTEXT).encode_body())
    got = message_to_result(message, sale)
    assert got == sent.with_changes(response_code="000", merchant_id=None)


def test_totals_round_trip():
    totals = Totals(643, 3, 45_000, 1, 5_000, 1, 20_000)
    sent = Result(Operation.SETTLEMENT, Status.APPROVED, "00", "ИТОГИ", totals=totals, currency=643, host_code="00")
    message = result_to_message(sent, RequestContext("7"))
    assert {k: message[k] for k in ("sale_count", "sale_amount", "refund_count", "refund_amount",
                                    "cancel_count", "cancel_amount")} == {
        "sale_count": "3", "sale_amount": "45000", "refund_count": "1", "refund_amount": "5000",
        "cancel_count": "1", "cancel_amount": "20000"}
    assert message_to_result(message, Request(Operation.SETTLEMENT)).totals == totals


def test_a_full_card_number_is_masked_on_both_sides():
    message = result_to_message(full_result(masked_pan="4111111111111111"), CONTEXT)
    assert message["pan"] == "411111******1111"
    leaked = Message("R", {"response_code": "000", "pan": "5100000000000008"})
    assert message_to_result(leaked, Request(Operation.SALE, 100)).masked_pan == "510000******0008"
    assert "5100000000000008" not in repr(leaked)


def test_text_that_cp1251_cannot_hold_still_travels():
    message = result_to_message(full_result(response_text="ОДОБРЕНО ₽\x1cOK"), CONTEXT)
    assert message["text_message"] == "ОДОБРЕНО ? OK"
    message.encode_body()


def test_missing_text_comes_from_the_response_texts():
    message = Message("R", {"response_code": "116"})
    result = message_to_result(message, Request(Operation.SALE, 100))
    assert result.response_text == DEFAULT_TEXTS["116"] and result.status is Status.DECLINED
    assert result.host_code is None and result.currency == 643
    custom = message_to_result(message, Request(Operation.SALE, 100), {"116": "НЕТ ДЕНЕГ"})
    assert custom.response_text == "НЕТ ДЕНЕГ"


# --- response codes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "host_code", "expected"),
    [
        (Status.APPROVED, "00", "000"),
        (Status.APPROVED, "400", "000"),
        (Status.APPROVED_OFFLINE, None, "000"),
        (Status.ABORTED, "998", "998"),
        (Status.NO_CONNECTION, "", "990"),
        (Status.DECLINED, "116", "116"),
        (Status.DECLINED, "913", "913"),
        (Status.DECLINED, "5", "005"),
        (Status.DECLINED, "-2011", "951"),
        (Status.DECLINED, "-2016", "952"),
        (Status.DECLINED, "-20010", "953"),
        (Status.DECLINED, "151017", "954"),
        (Status.DECLINED, "151018", "955"),
        (Status.REVERSED, "151019", "956"),
        (Status.DECLINED, "151019", "956"),
        (Status.DECLINED, "71015", "957"),
        (Status.DECLINED, "9011", "971"),
        (Status.DECLINED, "00", "900"),  # a decline never reads as approved
        (Status.DECLINED, "0", "900"),
        (Status.DECLINED, "999", "900"),
        (Status.DECLINED, "", "900"),
        (Status.DECLINED, None, "900"),
        (Status.DECLINED, "12345678", "900"),
        (Status.UNDEFINED, "ABC", "900"),
    ],
)
def test_response_code_table(status, host_code, expected):
    assert response_code_for(status, host_code) == expected


def test_every_mapped_code_is_three_digits_with_a_text():
    for code in HOST_CODE_MAP.values():
        assert len(code) == 3 and code.isdigit() and code in DEFAULT_TEXTS


@pytest.mark.parametrize(
    ("code", "operation", "status"),
    [
        ("000", Operation.SALE, Status.APPROVED),
        ("998", Operation.SALE, Status.ABORTED),
        ("990", Operation.SALE, Status.NO_CONNECTION),
        ("956", Operation.SALE, Status.REVERSED),
        ("956", Operation.SETTLEMENT, Status.DECLINED),
        ("999", Operation.SALE, Status.UNDEFINED),
        ("116", Operation.SALE, Status.DECLINED),
        ("", Operation.SALE, Status.DECLINED),
    ],
)
def test_status_from_the_response_code(code, operation, status):
    assert status_for(code, operation) is status


# --- slip, intermediate, abort ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "slips",
    [Slips("A\nB", "C\nD"), Slips("A", ""), Slips("", ""), Slips("", "C"),
     Slips("A", f"C1\n{SLIP_SEPARATOR}\nC2")],  # several cashier copies stay in the cashier part
    ids=["both", "customer-only", "none", "cashier-only", "extra-copies"],
)
def test_slip_round_trip(slips):
    assert parse_slip(format_slip(slips)) == slips


def test_slip_with_crlf_lines():
    assert parse_slip(f"A\r\nB\r\n{SLIP_SEPARATOR}\r\nC") == Slips("A\nB", "C")


def test_intermediate_and_abort_messages():
    assert intermediate_message("ВВЕДИТЕ ПИН").fields == {"text_message": "ВВЕДИТЕ ПИН"}
    assert intermediate_message("").fields == {"text_message": "ПОДОЖДИТЕ..."}
    assert abort_message("7") == Message("A", {"transaction_id": "7"})
    assert abort_message(None).encode_body() == b"A"


# --- numbers from the wire: bounded, never an untyped exception -------------------------------------------
HUGE = "9" * 5000  # more digits than Python's int() takes from text (4,300)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"operation": "1", "amount": HUGE}, "amount has 5000 digits, at most 12"),
        ({"operation": "1", "amount": "1" * 13}, "amount has 13 digits, at most 12"),
        ({"operation": "1", "amount": "100", "currency": HUGE}, "currency has 5000 digits, at most 3"),
        ({"operation": "1", "amount": "100", "currency": "0643"}, "currency has 4 digits"),
        ({"operation": "1", "amount": "100", "transaction_id": HUGE}, "transaction_id has 5000 digits, at most 12"),
        ({"operation": "4", "amount": "100", "original_operation": HUGE}, "original operation '999"),
        ({"operation": "4", "amount": "100", "original_amount": HUGE}, "original_amount has 5000 digits"),
        ({"operation": HUGE}, "operation code '999"),
        ({"operation": "1234567"}, "operation code '1234567' is not in"),
        ({"operation": "1", "amount": "１００"}, "amount must be ASCII digits"),  # full-width digits
        ({"operation": "1", "amount": "²"}, "amount must be ASCII digits"),  # isdigit(), but int() refuses it
    ],
)
def test_numbers_wider_than_their_key_are_unsupported_never_value_error(fields, reason):
    with pytest.raises(UnsupportedMessage, match=reason) as caught:
        message_to_request(Message("Q", fields), OPS)
    assert len(caught.value.reason) < 200  # the reason says how long, it does not repeat 5,000 digits
    assert len(caught.value.operation_code) <= 6


def test_results_with_numbers_wider_than_their_key_read_them_as_missing():
    sale = Request(Operation.SALE, 15000, transaction_id="7")
    result = message_to_result(Message("R", {"operation": "1", "response_code": "000", "result_amount": HUGE,
                                             "currency": HUGE, "transaction_id": HUGE}), sale)
    assert (result.status, result.amount, result.currency, result.transaction_id) == (Status.APPROVED, None, None, None)
    result = message_to_result(Message("R", {"operation": "1", "response_code": "000", "result_amount": "1" * 13,
                                             "currency": "RUB"}), sale)
    assert (result.amount, result.currency) == (None, None)  # a bad currency is not replaced by the request's
    result = message_to_result(Message("R", {"operation": "1", "response_code": "000"}), sale)
    assert (result.currency, result.transaction_id) == (643, None)  # a currency not echoed is the request's;
    # a transaction_id is never filled in: the caller finds the answer carries none
    settle = Request(Operation.SETTLEMENT, transaction_id="8")
    for key in ("sale_count", "sale_amount", "refund_amount", "cancel_count", "currency"):
        fields = {"operation": "7", "response_code": "000", "sale_count": "1", "sale_amount": "100", key: HUGE}
        assert message_to_result(Message("R", fields), settle).totals is None, key
    fields = {"operation": "7", "response_code": "000", "sale_count": "1", "sale_amount": "1" * 18}
    assert message_to_result(Message("R", fields), settle).totals == Totals(643, 1, int("1" * 18))


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "no response_code"),
        ({"response_code": ""}, "no response_code"),
        ({"response_code": "5"}, "'5' is not three digits"),
        ({"response_code": "00"}, "'00' is not three digits"),
        ({"response_code": "0000"}, "is not three digits"),
        ({"response_code": "OK!"}, "is not three digits"),
        ({"response_code": HUGE}, "(5000 characters) is not three digits"),
    ],
)
def test_a_result_whose_response_code_cannot_be_read_is_unreadable_never_declined(fields, problem):
    from posbridge.protocols.arcus2.mapping import unreadable_result

    message = Message("R", {"operation": "1", "result_amount": "15000", "transaction_id": "7", **fields})
    [said] = unreadable_result(message)
    assert problem in said
    result = message_to_result(message, Request(Operation.SALE, 15000, transaction_id="7"))
    assert result.status is Status.UNDEFINED and not result.approved and result.amount == 15000


def test_readable_results_have_no_problems():
    from posbridge.protocols.arcus2.mapping import unreadable_result

    for code in ("000", "116", "998", "956", "990", "900"):
        assert unreadable_result(Message("R", {"operation": "1", "response_code": code})) == []
    full = {"operation": "7", "response_code": "000", "result_amount": "1" * 12, "currency": "643",
            "transaction_id": "9" * 12, "sale_count": "1" * 18, "sale_amount": "0"}
    assert unreadable_result(Message("R", full)) == []


@pytest.mark.parametrize("key", ["result_amount", "currency", "transaction_id", "sale_count", "sale_amount",
                                 "refund_count", "refund_amount", "cancel_count", "cancel_amount"])
def test_a_number_the_result_carries_that_cannot_be_read_makes_the_result_unreadable(key):
    from posbridge.protocols.arcus2.mapping import unreadable_result

    for bad in (HUGE, "12a", ""):
        problems = unreadable_result(Message("R", {"operation": "1", "response_code": "000", key: bad}))
        assert len(problems) == 1 and problems[0].startswith(key) and len(problems[0]) < 200
