"""INPAS SA: numbers from the wire are bounded, unreadable answers are typed, the dialog timeout is
clamped -- through the sessions (``receive()``), both sides.

A number field longer than its width (amount 12 digits, currency 3, STAN 12, totals 18, codes 3,
timeout 5) is not a number: the terminal refuses such a request (RequestRejected, then 913), the
ECR reads such a field as None and reports the answer as an AnswerMismatch. Python's ``int()``
raises ValueError on more than 4,300 digits: nothing here may reach it.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posbridge.protocols.common.errors import AnswerMismatch, DecodeError, ExchangeTimeout, LinkError
from posbridge.protocols.common.model import Operation, Request, Result, Status
from posbridge.protocols.common.session import CashierPrompt, Completed, Failed, RequestReceived, RequestRejected
from posbridge.protocols.inpas.constants import ACK, EOT, SOH
from posbridge.protocols.inpas.describe import describe
from posbridge.protocols.inpas.fields import NUMBER_WIDTHS, Message, read_number
from posbridge.protocols.inpas.frame import encode_frame, encode_records
from posbridge.protocols.inpas.link import LinkTimers
from posbridge.protocols.inpas.mapping import (
    MAX_DIALOG_TIMEOUT,
    UnsupportedMessage,
    dialog_timeout,
    message_to_request,
    message_to_result,
    unreadable_result,
)
from posbridge.protocols.inpas.multipart import decode_part
from posbridge.protocols.inpas.session import InpasEcrSession, InpasTerminalSession

HUGE = "9" * 5000  # more digits than Python's int() takes from text (4,300)
TIMERS = LinkTimers(ack_timeout=5.0, packet_timeout=45.0)
SALE = Request(Operation.SALE, 150, 643, transaction_id="7", terminal_id="00344224")
TAGS = {"amount": 0, "currency": 4, "stan": 26, "operation": 25, "sub_command": 65, "original": 34,
        "status": 39, "timeout": 57, "debit_amount": 29, "debit_count": 30, "credit_amount": 31,
        "credit_count": 32, "void_amount": 49, "void_count": 50}


def raw_frame(fields: dict[int, str]) -> bytes:
    """A frame the encoder would refuse (5,000-digit numbers): records built by hand."""
    return encode_frame(encode_records([(tag, value.encode("cp1251")) for tag, value in sorted(fields.items())]))


def started_ecr(request: Request = SALE) -> InpasEcrSession:
    ecr = InpasEcrSession(TIMERS, ecr_id=None)
    ecr.start(request, 0.0)
    ecr.data_to_send()
    assert ecr.receive(bytes([ACK]), 0.1) == []
    return ecr


def answer(ecr: InpasEcrSession, fields: dict[int, str]) -> list:
    """Feed the final answer; the ECR must ACK it and close the exchange with EOT in any case."""
    events = ecr.receive(raw_frame(fields), 0.2)
    assert ecr.data_to_send() == bytes([ACK, EOT])
    assert not ecr.busy and ecr.next_deadline() is None
    return events


APPROVED_SALE = {25: "1", 39: "1", 15: "001", 0: "150", 4: "643", 26: "7", 10: "4111111111111111"}


# --- widths ------------------------------------------------------------------------------------------------
def test_every_number_field_has_a_width():
    assert (NUMBER_WIDTHS[0], NUMBER_WIDTHS[4], NUMBER_WIDTHS[26], NUMBER_WIDTHS[29], NUMBER_WIDTHS[57]) == (
        12, 3, 12, 18, 5)
    assert read_number(0, "1" * 12) == int("1" * 12) and read_number(0, "1" * 13) is None
    assert read_number(0, HUGE) is None and read_number(0, "²") is None and read_number(0, b"12") is None
    assert read_number(39, "01") == 1 and read_number(39, None) is None
    assert read_number(39, " 1") is None and read_number(0, "-150") is None  # digits only: no sign, no spaces
    assert Message({25: HUGE}).operation_code is None and Message({25: "1234"}).operation_code is None


# --- terminal side -------------------------------------------------------------------------------------------
def request_fields(**changes: str) -> dict[int, str]:
    fields = {25: "4", 0: "150", 4: "643", 26: "7", 14: "333109189729", 34: "1"}
    for name, value in changes.items():
        fields[TAGS[name]] = value
    return fields


@pytest.mark.parametrize("name", ["amount", "currency", "stan", "operation", "original"])
@pytest.mark.parametrize("value", [HUGE, "1" * 13, "12a", "-5"], ids=["5000", "13", "letter", "minus"])
def test_terminal_rejects_a_request_with_a_bad_number_then_answers_913(name, value):
    if value == "1" * 13 and name in ("amount", "stan"):
        value = "1" * 13  # one over the width of 12
    terminal = InpasTerminalSession(TIMERS)
    events = terminal.receive(raw_frame(request_fields(**{name: value})), 0.0)
    assert terminal.data_to_send() == bytes([ACK])
    assert [type(e) for e in events] == [RequestRejected], events
    assert len(events[0].reason) < 200 and len(events[0].operation_code) <= 3
    terminal.send_result(Result(Operation.SALE, Status.DECLINED, "913", host_code="913"), 0.0)
    sent = terminal.data_to_send()
    assert sent and HUGE.encode() not in sent


def test_a_custom_command_with_a_huge_sub_command_is_rejected():
    terminal = InpasTerminalSession(TIMERS)
    events = terminal.receive(raw_frame({25: "63", 65: HUGE}), 0.0)
    assert [type(e) for e in events] == [RequestRejected] and events[0].operation_code == "63"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({25: "1", 0: HUGE}, "amount has 5000 digits, at most 12"),
        ({25: "1", 0: "1" * 13}, "amount has 13 digits"),
        ({25: "1", 0: "150", 4: HUGE}, "currency has 5000 digits, at most 3"),
        ({25: "1", 0: "150", 26: HUGE}, "stan has 5000 digits, at most 12"),
        ({25: "1", 0: "150", 26: "A7"}, "stan must be ASCII digits"),
        ({25: HUGE}, "operation_code has 5000 digits, at most 3"),
        ({25: "4", 0: "150", 34: HUGE}, "original_operation_code has 5000 digits"),
        ({25: "1", 0: "1.5"}, "amount must be ASCII digits"),
    ],
)
def test_message_to_request_raises_only_unsupported_message(fields, reason):
    with pytest.raises(UnsupportedMessage, match=reason):
        message_to_request(Message(fields))


@pytest.mark.parametrize("tag", [57, 29, 30, 39, 64, 67])
def test_terminal_does_not_read_a_5000_digit_field_a_request_does_not_use(tag):
    terminal = InpasTerminalSession(TIMERS)
    events = terminal.receive(raw_frame({25: "1", 0: "150", 4: "643", 26: "7", tag: HUGE}), 0.0)
    assert [type(e) for e in events] == [RequestReceived] and events[0].request.amount == 150


def test_terminal_still_serves_good_requests():
    terminal = InpasTerminalSession(TIMERS)
    events = terminal.receive(raw_frame({25: "1", 0: "1" * 12, 4: "643", 26: "9" * 12}), 0.0)
    assert [type(e) for e in events] == [RequestReceived]
    assert (events[0].request.amount, events[0].request.transaction_id) == (int("1" * 12), "9" * 12)


# --- ECR side: numbers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tag", [0, 4])
def test_ecr_reports_a_5000_digit_amount_or_currency_as_an_answer_mismatch(tag):
    ecr = started_ecr()
    [event] = answer(ecr, {**APPROVED_SALE, tag: HUGE})
    assert isinstance(event, Failed) and isinstance(event.error, AnswerMismatch)
    assert event.error.problems and "5000 digits" in event.error.problems[0]
    result = event.error.answer
    assert isinstance(result, Result) and result.status is Status.APPROVED
    assert (result.amount if tag == 0 else result.currency) is None  # never a guess
    assert result.masked_pan == "411111******1111"  # masked whatever the terminal sent


@pytest.mark.parametrize("tag", [29, 30, 31, 32, 49, 50])
def test_ecr_reports_5000_digit_totals_as_an_answer_mismatch_without_totals(tag):
    ecr = started_ecr(Request(Operation.SETTLEMENT, transaction_id="8"))
    fields = {25: "59", 39: "1", 15: "001", 26: "8", 29: "15000", 30: "1", 31: "0", 32: "0", tag: HUGE}
    [event] = answer(ecr, fields)
    assert isinstance(event, Failed) and isinstance(event.error, AnswerMismatch)
    assert event.error.answer.totals is None


def test_an_answer_for_a_5000_digit_stan_is_not_ours():
    ecr = started_ecr()
    assert ecr.receive(raw_frame({**APPROVED_SALE, 26: HUGE}), 0.2) == []
    assert ecr.data_to_send() == bytes([ACK]) and ecr.busy  # ACKed as a stale answer; ours is awaited
    events = ecr.poll(ecr.next_deadline())
    assert len(events) == 1 and isinstance(events[0].error, ExchangeTimeout)


def test_message_to_result_never_guesses_a_number():
    fields = {**APPROVED_SALE, 0: "1" * 13, 4: "RUB", 26: HUGE, 29: HUGE}
    result = message_to_result(Message(fields), SALE)
    assert (result.amount, result.currency, result.transaction_id, result.totals) == (None, None, None, None)
    assert len(unreadable_result(Message(fields))) == 4


# --- ECR side: status -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "problem"), [
    (None, "no status (tag 39)"),
    ("7", "7 is not a known status code"),
    ("99", "99 is not a known status code"),
    ("x", "status: tag 39 (status) must be ASCII digits"),
    (HUGE, "status: tag 39 (status) has 5000 digits, at most 3"),
], ids=["missing", "unknown", "unknown-2", "letter", "5000-digits"])
def test_an_answer_without_a_known_status_is_an_answer_mismatch_not_a_result(status, problem):
    ecr = started_ecr()
    fields = dict(APPROVED_SALE)
    del fields[39]
    if status is not None:
        fields[39] = status
    [event] = answer(ecr, fields)  # ACK and EOT went out: the line is clean
    assert isinstance(event, Failed) and isinstance(event.error, AnswerMismatch)
    assert event.error.reason == "mismatch" and problem in event.error.problems[0]
    result = event.error.answer
    assert isinstance(result, Result) and result.status is Status.UNDEFINED and not result.approved
    assert (result.amount, result.response_code, result.transaction_id) == (150, "001", "7")
    ecr.start(SALE.with_changes(transaction_id="8"), 1.0)  # the next exchange starts at once
    assert ecr.data_to_send()


@pytest.mark.parametrize("status", ["0", "1", "2", "13", "16", "17", "34", "53", "01"])
def test_every_known_status_completes(status):
    ecr = started_ecr()
    [event] = answer(ecr, {**APPROVED_SALE, 39: status})
    assert isinstance(event, Completed)


# --- ECR side: cashier dialog timeout --------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "seconds"), [
    ("30", 30.0), ("300", 300.0), ("301", MAX_DIALOG_TIMEOUT), ("99999", MAX_DIALOG_TIMEOUT),
    ("100000", None), ("9" * 400, None), (HUGE, None), ("²", None), ("３０", None), ("abc", None), ("", None),
    (None, None), ("0", 0.0),
])
def test_dialog_timeout_is_clamped_and_nonsense_is_no_timeout(value, seconds):
    assert dialog_timeout(value) == seconds
    assert MAX_DIALOG_TIMEOUT == 300.0


@pytest.mark.parametrize(("value", "seconds"), [("600", 300.0), ("9" * 400, None), ("2x", None), ("20", 20.0)])
def test_the_ecr_session_waits_for_the_cashier_no_longer_than_the_clamp(value, seconds):
    ecr = started_ecr()
    events = ecr.receive(raw_frame({25: "52", 76: "ВВЕДИТЕ 4 ЦИФРЫ", 64: HUGE, 57: value}), 1.0)
    assert ecr.data_to_send() == bytes([ACK])
    assert events == [CashierPrompt("ВВЕДИТЕ 4 ЦИФРЫ", seconds, 0)]
    assert ecr.next_deadline() == pytest.approx(1.0 + (seconds or 0) + 45.0)


# --- describe and multi-part headers ---------------------------------------------------------------------------------
def test_describe_flags_numbers_too_long_for_their_tag():
    [entry] = describe(raw_frame({25: "1", 0: HUGE, 4: "6430", 26: "7", 39: "x"}))
    problems = {f.key: f.problem for f in entry.fields}
    assert problems["0"] == "tag 0 (amount) has 5000 digits, at most 12 allowed"
    assert problems["4"] == "tag 4 (currency) has 4 digits, at most 3 allowed"
    assert str(problems["39"]).startswith("tag 39 (status) must be ASCII digits")
    assert problems["25"] is None and problems["26"] is None
    json.dumps(entry.to_dict())


def test_a_part_number_of_5000_digits_is_a_decode_error():
    header = encode_records([(1, b"1"), (2, HUGE.encode())])
    body = len(header).to_bytes(2, "little") + header + b"chunk"
    with pytest.raises(DecodeError) as caught:
        decode_part(body)
    assert caught.value.reason == "part" and len(str(caught.value)) < 200
    entries = describe(encode_frame(body, SOH))
    assert entries[0].problems[0].reason == "part"


# --- any long digit run, anywhere, in either session -----------------------------------------------------------------
def hostile_frames():
    tags = st.sampled_from([0, 4, 6, 8, 11, 21, 25, 26, 29, 30, 31, 32, 34, 39, 49, 50, 57, 64, 65, 66, 67])
    return st.builds(
        lambda operation, tag, n, before, after: before + raw_frame({25: operation, 39: "1", 26: "7", tag: "7" * n})
        + after,
        st.sampled_from(["1", "4", "21", "52", "59", "63"]), tags, st.integers(4000, 6000),
        st.binary(max_size=16), st.binary(max_size=16))


@settings(max_examples=80, deadline=None)
@given(hostile_frames(), st.integers(min_value=1, max_value=4096))
def test_long_digit_runs_never_raise_in_either_session(data, chunk):
    for session in (InpasEcrSession(TIMERS), InpasTerminalSession(TIMERS)):
        if isinstance(session, InpasEcrSession):
            session.start(SALE, 0.0)
            session.receive(bytes([ACK]), 0.0)
        for i in range(0, len(data), chunk):
            for event in session.receive(data[i : i + chunk], 0.01):
                if isinstance(event, Failed):
                    assert isinstance(event.error, LinkError)
                if isinstance(event, CashierPrompt):
                    assert event.timeout is None or event.timeout <= MAX_DIALOG_TIMEOUT
            session.poll(0.01)
            deadline = session.next_deadline()
            assert deadline is None or deadline < 1e6  # never an endless wait
        session.poll(1000.0)
        session.data_to_send()
    describe(data)
