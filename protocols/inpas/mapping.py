"""Mapping between SA messages and the domain model (inpas-sa.md, "Operation codes" and "Status").

Both directions for both sides: the ECR encodes a :class:`Request` and decodes a :class:`Result`;
the terminal decodes the request and encodes the result. Field choices follow what INPAS's own ECR
library sends (ascending tags, tag 89 on the operations it marks).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from ..common.errors import UnsupportedMessage
from ..common.model import Operation, Request, Result, Slips, Status, Totals

from .constants import MAX_BODY
from .fields import NUMBER_WIDTHS, Message, brief, mask_pan, name_for, number_problem, read_number


class Tag(enum.IntEnum):
    """The SA tags this mapping uses, by name (the full table is ``fields.FIELDS``)."""

    AMOUNT = 0
    CURRENCY = 4
    HOST_DATETIME = 6
    PAN = 10
    EXPIRY = 11
    AUTH_CODE = 13
    RRN = 14
    RESPONSE_CODE = 15
    RESPONSE_TEXT = 19
    ECR_DATETIME = 21
    OPERATION = 25
    STAN = 26
    TERMINAL_ID = 27
    MERCHANT_ID = 28
    DEBIT_AMOUNT = 29
    DEBIT_COUNT = 30
    CREDIT_AMOUNT = 31
    CREDIT_COUNT = 32
    ORIGINAL_OPERATION = 34
    STATUS = 39
    VOID_AMOUNT = 49
    VOID_COUNT = 50
    TIMEOUT = 57
    COMMAND_MODE_1 = 64
    COMMAND_MODE_2 = 65
    COMMAND_RESULT = 67
    GATEWAY_DATA = 70
    DISPLAY = 71
    CASHIER_PROMPT = 76
    CASHIER_ANSWER = 77
    ECR_ID = 89
    RECEIPT = 90


class OpCode(enum.IntEnum):
    """SA operation codes (tag 25)."""

    SALE = 1
    REFUND_ALT = 3  # REFUND as some ECRs send it; accepted like 29
    CANCEL = 4
    PREAUTH = 15
    COMPLETION = 16
    WAIT = 21
    TEST_CONNECTION = 26
    REFUND = 29
    CASHIER_DIALOG = 52
    EMERGENCY_REVERSAL = 53
    SETTLEMENT = 59
    CUSTOM_COMMAND = 63


class CustomCommand(enum.IntEnum):
    """Sub-commands of operation 63 (tag 65)."""

    GATEWAY_OPEN_CLOSE = 16
    GATEWAY_DATA = 17
    SHORT_REPORT = 20
    FULL_REPORT = 21
    SLIP_COPY = 22


STATUS_CODES: dict[Status, int] = {
    Status.UNDEFINED: 0,
    Status.APPROVED: 1,
    Status.CONDITIONAL: 2,
    Status.REVERSED: 13,
    Status.DECLINED: 16,
    Status.APPROVED_OFFLINE: 17,
    Status.NO_CONNECTION: 34,
    Status.ABORTED: 53,
}
STATUS_BY_CODE = {code: status for status, code in STATUS_CODES.items()}

APPROVED_RESPONSE_CODE = "001"  # as SmartSale terminals send it (vectors: sale-response-approved)
_PLAIN_APPROVALS = ("001", "00", "000", "0")
DATETIME_FORMAT = "%Y%m%d%H%M%S"
DEFAULT_ECR_ID = "POSBRIDGE;0.1.0;SA:;2;"

_SIMPLE_OPS: dict[Operation, OpCode] = {
    Operation.SALE: OpCode.SALE,
    Operation.REFUND: OpCode.REFUND,
    Operation.CANCEL: OpCode.CANCEL,
    Operation.PREAUTH: OpCode.PREAUTH,
    Operation.COMPLETION: OpCode.COMPLETION,
    Operation.CANCEL_PREAUTH: OpCode.CANCEL,
    Operation.EMERGENCY_REVERSAL: OpCode.EMERGENCY_REVERSAL,
    Operation.SETTLEMENT: OpCode.SETTLEMENT,
    Operation.TEST_CONNECTION: OpCode.TEST_CONNECTION,
    Operation.SHORT_REPORT: OpCode.CUSTOM_COMMAND,
    Operation.FULL_REPORT: OpCode.CUSTOM_COMMAND,
    Operation.SLIP_COPY: OpCode.CUSTOM_COMMAND,
}
_CUSTOM_COMMANDS = {
    Operation.SHORT_REPORT: CustomCommand.SHORT_REPORT,
    Operation.FULL_REPORT: CustomCommand.FULL_REPORT,
    Operation.SLIP_COPY: CustomCommand.SLIP_COPY,
}
_OPERATION_BY_CUSTOM = {int(code): op for op, code in _CUSTOM_COMMANDS.items()}
# The original operation a cancel names in tag 34.
_ORIGINAL_CODES = {Operation.SALE: OpCode.SALE, Operation.PREAUTH: OpCode.PREAUTH,
                   Operation.COMPLETION: OpCode.COMPLETION, Operation.REFUND: OpCode.REFUND}
_OPERATION_BY_ORIGINAL = {int(code): op for op, code in _ORIGINAL_CODES.items()}
_OPERATION_BY_ORIGINAL[OpCode.REFUND_ALT] = Operation.REFUND
# DualConnector adds tag 89 to these operation codes.
_ECR_ID_CODES = {1, 2, 3, 16, 22, 29, 49, 59, 61, 63}


@dataclass(frozen=True)
class RequestContext:
    """What the terminal must echo in its answer: the request's own operation and sub-command."""

    operation_code: int
    custom_command: int | None = None


def operation_code(operation: Operation) -> OpCode:
    """The SA operation code (tag 25) a request for ``operation`` carries."""
    return _SIMPLE_OPS[operation]


# --- ECR side --------------------------------------------------------------------------------------
def request_to_message(request: Request, ecr_id: str | None = DEFAULT_ECR_ID) -> Message:
    """Encode a (validated) request as the SA message an ECR sends."""
    op = request.operation
    code = _SIMPLE_OPS[op]
    fields: dict[int, str | int] = {Tag.OPERATION: int(code)}
    if op.moves_money:
        fields[Tag.AMOUNT] = request.amount or 0
        fields[Tag.CURRENCY] = f"{request.currency:03d}"
    if request.auth_code:
        fields[Tag.AUTH_CODE] = request.auth_code
    if request.rrn:
        fields[Tag.RRN] = request.rrn
    if request.ecr_datetime and op is not Operation.TEST_CONNECTION:
        fields[Tag.ECR_DATETIME] = request.ecr_datetime.strftime(DATETIME_FORMAT)
    if request.transaction_id and op is not Operation.TEST_CONNECTION:
        fields[Tag.STAN] = request.transaction_id
    if request.terminal_id:
        fields[Tag.TERMINAL_ID] = request.terminal_id
    if op is Operation.CANCEL:
        original = request.original_operation
        fields[Tag.ORIGINAL_OPERATION] = int(_ORIGINAL_CODES.get(original, OpCode.SALE) if original else OpCode.SALE)
    elif op is Operation.CANCEL_PREAUTH:
        fields[Tag.ORIGINAL_OPERATION] = int(OpCode.PREAUTH)
    if op in _CUSTOM_COMMANDS:
        fields[Tag.COMMAND_MODE_2] = int(_CUSTOM_COMMANDS[op])
    if ecr_id and int(code) in _ECR_ID_CODES:
        fields[Tag.ECR_ID] = ecr_id
    return Message(fields)


def message_to_result(message: Message, request: Request | None = None) -> Result:
    """Decode the terminal's final response; ``request`` fills what the answer leaves out.

    Never raises. A number field that is not a number of its width (``NUMBER_WIDTHS``) is None in
    the result (the settlement totals as a whole when one of them is bad), never guessed: the caller
    compares the answer with its request. An answer whose status (tag 39) is missing or unknown
    (:func:`unreadable_result`) has status UNDEFINED here; the ECR session reports it as an
    :class:`~posbridge.protocols.common.errors.AnswerMismatch` carrying this result.
    """
    status_code = _int(message.get(Tag.STATUS), Tag.STATUS)
    status = STATUS_BY_CODE.get(status_code, Status.UNDEFINED) if status_code is not None else Status.UNDEFINED
    operation = request.operation if request else _operation_of(message)[0]
    receipt = message.get(Tag.RECEIPT)
    slips, scheme = parse_receipt(receipt) if isinstance(receipt, str) else (Slips(), None)
    response_code = _text(message.get(Tag.RESPONSE_CODE)) or ""
    return Result(
        operation=operation,
        status=status,
        response_code=response_code,
        # Tag 15 carries the host's own code, except that plain approvals read "001" on the wire.
        host_code=response_code if status is not Status.APPROVED or response_code not in _PLAIN_APPROVALS
        else None,
        response_text=_text(message.get(Tag.RESPONSE_TEXT)) or "",
        amount=_int(message.get(Tag.AMOUNT), Tag.AMOUNT),
        currency=_int(message.get(Tag.CURRENCY), Tag.CURRENCY),
        rrn=_text(message.get(Tag.RRN)),
        auth_code=_text(message.get(Tag.AUTH_CODE)),
        masked_pan=_masked(message.get(Tag.PAN)),  # defence in depth: mask whatever arrives
        card_scheme=scheme,
        expiry=_text(message.get(Tag.EXPIRY)),
        terminal_id=_text(message.get(Tag.TERMINAL_ID)),
        merchant_id=_text(message.get(Tag.MERCHANT_ID)),
        transaction_id=_stan(message.get(Tag.STAN)),
        host_datetime=_datetime(message.get(Tag.HOST_DATETIME)),
        slips=slips,
        totals=_totals(message),
    )


def unreadable_result(message: Message) -> list[str]:
    """Why a final answer cannot be read (in words), or an empty list when it can.

    The outcome is read from tag 39 (status) alone. One that is missing, not a number or not a
    status code of the table (inpas-sa.md "Status") says neither approved nor declined. A number
    field the result carries (amount, currency, STAN, totals) that is present but not a number of
    its width (a 5,000-digit amount) makes the answer unreadable too: :func:`message_to_result`
    leaves it None, which alone would look like a field the terminal did not send.
    """
    problems = []
    raw = message.get(Tag.STATUS)
    code = _int(raw, Tag.STATUS)
    if raw is None:
        problems.append("the answer carries no status (tag 39)")
    elif code is None:
        problems.append(f"status: {number_problem(Tag.STATUS, raw)}")
    elif code not in STATUS_BY_CODE:
        problems.append(f"status (tag 39) {code} is not a known status code")
    for tag in _RESULT_NUMBERS:
        value = message.get(tag)
        if value is not None:
            problem = number_problem(tag, value) if tag != Tag.STAN else _stan_problem(value)
            if problem:
                problems.append(problem)
    return problems


# --- terminal side ---------------------------------------------------------------------------------
def message_to_request(message: Message) -> tuple[Request, RequestContext]:
    """Decode an ECR's request. Amounts are passed on as sent (0 included: the host answers 110).

    Raises :class:`UnsupportedMessage` (and nothing else) for an unknown operation or a number field
    that is not a number of its width (amount 12 digits, currency 3, STAN 12, codes 3).
    """
    operation, context = _operation_of(message)
    amount = message.get(Tag.AMOUNT)
    currency = message.get(Tag.CURRENCY)
    stan = message.get(Tag.STAN)
    code = context.operation_code
    if stan is not None:
        _digits(stan, Tag.STAN, code)  # 1-12 ASCII digits, or the request is refused
    request = Request(
        operation=operation,
        amount=_digits(amount, Tag.AMOUNT, code) if amount is not None else None,
        currency=_digits(currency, Tag.CURRENCY, code) if currency is not None else 643,
        transaction_id=stan if isinstance(stan, str) else None,
        rrn=_text(message.get(Tag.RRN)),
        auth_code=_text(message.get(Tag.AUTH_CODE)),
        original_operation=_original_operation(message, operation, code),
        terminal_id=_text(message.get(Tag.TERMINAL_ID)),
        ecr_datetime=_datetime(message.get(Tag.ECR_DATETIME)),
    )
    return request, context


def result_to_message(result: Result, context: RequestContext) -> Message:
    """Encode the terminal's final response to the request described by ``context``."""
    fields: dict[int, str | int | bytes] = {
        Tag.OPERATION: context.operation_code,
        Tag.STATUS: STATUS_CODES[result.status],
        Tag.RESPONSE_CODE: _response_code(result),
        Tag.RESPONSE_TEXT: result.response_text,
    }
    if context.custom_command is not None:
        fields[Tag.COMMAND_MODE_2] = context.custom_command
    optional: dict[int, str | int | None] = {
        Tag.AMOUNT: result.amount,
        Tag.CURRENCY: f"{result.currency:03d}" if result.currency else None,
        Tag.HOST_DATETIME: result.host_datetime.strftime(DATETIME_FORMAT) if result.host_datetime else None,
        Tag.PAN: result.masked_pan,
        Tag.AUTH_CODE: result.auth_code,
        Tag.RRN: result.rrn,
        Tag.STAN: result.transaction_id,
        Tag.TERMINAL_ID: result.terminal_id,
        Tag.MERCHANT_ID: result.merchant_id,
    }
    for tag, value in optional.items():
        if value is not None and value != "":
            fields[tag] = value
    if result.totals is not None:
        totals = result.totals
        fields.update({
            Tag.DEBIT_AMOUNT: totals.sale_amount, Tag.DEBIT_COUNT: totals.sale_count,
            Tag.CREDIT_AMOUNT: totals.refund_amount, Tag.CREDIT_COUNT: totals.refund_count,
            Tag.VOID_AMOUNT: totals.cancel_amount, Tag.VOID_COUNT: totals.cancel_count,
        })
    receipt = format_receipt(result.slips, result.card_scheme)
    if receipt:
        fields[Tag.RECEIPT] = receipt
    return Message(fields)


def _response_code(result: Result) -> str:
    """Tag 15: "001" for a plain approval, as SmartSale terminals send it; otherwise the host's code.

    An approved emergency reversal keeps its host code (400 reversed, 9020 nothing to reverse): it is
    what tells the ECR's recovery which of the two happened (posbridge's decision, inpas-sa.md).
    """
    code = result.host_code or result.response_code
    if result.approved and (result.operation is not Operation.EMERGENCY_REVERSAL or code in _PLAIN_APPROVALS
                            or not code):
        return APPROVED_RESPONSE_CODE
    return code


def rejection_context(message: Message) -> RequestContext:
    """The context to answer a message that could not be understood (echo its code if any)."""
    return RequestContext(_int(message.get(Tag.OPERATION), Tag.OPERATION) or 0,
                          _int(message.get(Tag.COMMAND_MODE_2), Tag.COMMAND_MODE_2))


# --- intermediate packets -----------------------------------------------------------------------------
def wait_message() -> Message:
    """Operation 21, WAIT: the terminal is still busy."""
    return Message({Tag.OPERATION: int(OpCode.WAIT)})


def cashier_prompt_message(prompt: str, timeout: float | None, kind: int = 0) -> Message:
    """Operation 52, the cashier dialog: prompt in 76, dialog type in 64, timeout in 57."""
    fields: dict[int, str | int] = {Tag.OPERATION: int(OpCode.CASHIER_DIALOG), Tag.CASHIER_PROMPT: prompt,
                                    Tag.COMMAND_MODE_1: kind}
    if timeout:
        fields[Tag.TIMEOUT] = min(max(1, round(timeout)), _MAX_TIMEOUT_FIELD)
    return Message(fields)


#: The widest tag 57 (5 digits): a longer timeout is sent as this.
_MAX_TIMEOUT_FIELD = 99_999

#: The longest cashier-dialog timeout (tag 57, seconds) the ECR honours. A terminal asks the
#: cashier something small (the card's last four digits); five minutes is ample, and an absurd
#: value (one of 400 digits once hung a client waiting for the dialog) must not hold a register.
MAX_DIALOG_TIMEOUT = 300.0


def dialog_timeout(value: object) -> float | None:
    """The timeout the ECR uses for a cashier dialog's tag 57: seconds, at most
    :data:`MAX_DIALOG_TIMEOUT`; None ("no timeout given") when absent or not a number of at most
    5 ASCII digits."""
    if not isinstance(value, str) or not 0 < len(value) <= 5 or not (value.isascii() and value.isdigit()):
        return None
    return min(float(int(value)), MAX_DIALOG_TIMEOUT)


def dialog_kind(value: object) -> int:
    """The dialog type of tag 64 as an int; 0 when absent or not a number of at most 3 ASCII digits."""
    return read_number(Tag.COMMAND_MODE_1, value) or 0 if isinstance(value, str) else 0


def cashier_answer_message(answer: str, ok: bool) -> Message:
    """The ECR's answer to a cashier dialog: ``{25: 52, 77: answer, 67: 0|1}``."""
    return Message({Tag.OPERATION: int(OpCode.CASHIER_DIALOG), Tag.CASHIER_ANSWER: answer,
                    Tag.COMMAND_RESULT: 0 if ok else 1})


# --- gateway mode (operation 63, sub-commands 16 and 17) -------------------------------------------------
#: (sub-command tag 65, mode tag 64) of each gateway action (inpas-sa.md, Exchange).
GATEWAY_MODES: dict[str, tuple[int, int]] = {
    "open": (CustomCommand.GATEWAY_OPEN_CLOSE, 1), "close": (CustomCommand.GATEWAY_OPEN_CLOSE, 0),
    "send": (CustomCommand.GATEWAY_DATA, 0), "receive": (CustomCommand.GATEWAY_DATA, 1),
}
_GATEWAY_ACTIONS = {(str(int(sub)), str(mode)): action for action, (sub, mode) in GATEWAY_MODES.items()}
#: The most host data one gateway packet carries in tag 70: the frame's body (MAX_BODY) less room
#: for the packet's other tags (25, 64/65, 67: under 20 bytes), so a full answer still fits one frame.
MAX_GATEWAY_DATA = MAX_BODY - 64


def gateway_command_message(action: str, data: bytes = b"") -> Message:
    """The terminal asks its ECR to carry the host connection: ``{25: 63, 65: 16|17, 64: 0|1[, 70: data]}``."""
    sub_command, mode = GATEWAY_MODES[action]
    fields: dict[int, str | int | bytes] = {Tag.OPERATION: int(OpCode.CUSTOM_COMMAND),
                                            Tag.COMMAND_MODE_1: mode, Tag.COMMAND_MODE_2: int(sub_command)}
    if data:
        fields[Tag.GATEWAY_DATA] = data
    return Message(fields)


def gateway_action(message: Message) -> str | None:
    """The action a terminal's operation-63 gateway packet asks for (None: not one, or an unknown mode)."""
    if message.operation_code != OpCode.CUSTOM_COMMAND:
        return None
    return _GATEWAY_ACTIONS.get((str(message.get(Tag.COMMAND_MODE_2)), str(message.get(Tag.COMMAND_MODE_1))))


def gateway_answer_message(sub_command: str, ok: bool, data: bytes = b"") -> Message:
    """The ECR's answer to a gateway packet: ``{25: 63, 65: mode, 67: 0|1[, 70: data]}``."""
    fields: dict[int, str | int | bytes] = {Tag.OPERATION: int(OpCode.CUSTOM_COMMAND), Tag.COMMAND_MODE_2: sub_command,
                                            Tag.COMMAND_RESULT: 0 if ok else 1}
    if data:
        fields[Tag.GATEWAY_DATA] = data
    return Message(fields)


def gateway_data(message: Message) -> bytes:
    """Tag 70 as bytes (empty when absent)."""
    value = message.get(Tag.GATEWAY_DATA)
    if isinstance(value, str):
        return value.encode("cp1251", "replace")
    return value or b""


# --- receipt (tag 90) ------------------------------------------------------------------------------------
CUSTOMER_SLIP, CASHIER_SLIP, SCHEME_NAME = "0xDF", "0xDA", "0xDE"


def format_receipt(slips: Slips, scheme: str | None = None) -> str:
    """Tag 90: items ``KIND^NAME^TEXT~``; lines inside TEXT end with CRLF."""
    items = []
    for kind, text in ((CUSTOMER_SLIP, slips.customer), (CASHIER_SLIP, slips.cashier), (SCHEME_NAME, scheme)):
        if text:
            crlf = "\r\n".join(text.splitlines()) + ("\r\n" if kind != SCHEME_NAME else "")
            items.append(f"{kind}^^{crlf}~")
    return "".join(items)


def parse_receipt(receipt: str) -> tuple[Slips, str | None]:
    """Split tag 90 into the customer and cashier slips (text with ``\\n`` lines) and the scheme."""
    texts: dict[str, list[str]] = {}
    for item in receipt.split("~"):
        if not item.strip():
            continue
        parts = item.split("^", 2)
        kind, text = (parts[0], parts[2]) if len(parts) == 3 else (CUSTOMER_SLIP, item)
        texts.setdefault(kind.upper().replace("0X", "0x"), []).append(text.replace("\r\n", "\n").strip("\n"))
    scheme = "\n".join(texts.get(SCHEME_NAME, [])) or None
    return Slips("\n\n".join(texts.get(CUSTOMER_SLIP, [])), "\n\n".join(texts.get(CASHIER_SLIP, []))), scheme


# --- helpers ---------------------------------------------------------------------------------------------
def _operation_of(message: Message) -> tuple[Operation, RequestContext]:
    raw = message.get(Tag.OPERATION)
    if raw is None:
        raise UnsupportedMessage("the message has no operation code (tag 25)")
    code = _digits(raw, Tag.OPERATION)
    raw_sub = message.get(Tag.COMMAND_MODE_2)
    sub = _digits(raw_sub, Tag.COMMAND_MODE_2, code) if raw_sub is not None and code == OpCode.CUSTOM_COMMAND \
        else None
    context = RequestContext(code, sub if code == OpCode.CUSTOM_COMMAND else None)
    if code == OpCode.CUSTOM_COMMAND:
        if sub in _OPERATION_BY_CUSTOM:
            return _OPERATION_BY_CUSTOM[sub], context
        raise UnsupportedMessage(f"operation 63 with sub-command {sub} is not supported", str(code))
    if code == OpCode.CANCEL:
        raw_original = message.get(Tag.ORIGINAL_OPERATION)
        original = _digits(raw_original, Tag.ORIGINAL_OPERATION, code) if raw_original is not None else None
        return (Operation.CANCEL_PREAUTH if original == OpCode.PREAUTH else Operation.CANCEL), context
    by_code: dict[int, Operation] = {
        OpCode.SALE: Operation.SALE, OpCode.REFUND: Operation.REFUND, OpCode.REFUND_ALT: Operation.REFUND,
        OpCode.PREAUTH: Operation.PREAUTH, OpCode.COMPLETION: Operation.COMPLETION,
        OpCode.EMERGENCY_REVERSAL: Operation.EMERGENCY_REVERSAL, OpCode.SETTLEMENT: Operation.SETTLEMENT,
        OpCode.TEST_CONNECTION: Operation.TEST_CONNECTION,
    }
    if code in by_code:
        return by_code[code], context
    raise UnsupportedMessage(f"operation code {code} is not supported", str(code))


def _original_operation(message: Message, operation: Operation, code: int) -> Operation | None:
    if operation is Operation.CANCEL_PREAUTH:
        return Operation.PREAUTH
    raw = message.get(Tag.ORIGINAL_OPERATION)
    original = _digits(raw, Tag.ORIGINAL_OPERATION, code) if raw is not None else None
    if original is None:
        return Operation.SALE if operation is Operation.CANCEL else None
    return _OPERATION_BY_ORIGINAL.get(original)


_TOTALS_TAGS = (Tag.DEBIT_AMOUNT, Tag.DEBIT_COUNT, Tag.CREDIT_AMOUNT, Tag.CREDIT_COUNT, Tag.VOID_AMOUNT,
                Tag.VOID_COUNT)
#: Number fields of a final answer that the result carries (see :func:`unreadable_result`).
_RESULT_NUMBERS = (Tag.AMOUNT, Tag.CURRENCY, Tag.STAN, *_TOTALS_TAGS)


def _totals(message: Message) -> Totals | None:
    """The totals tags as Totals; None when there are none, or when one of them (or the currency)
    is not a number: a report that cannot be read whole is not read at all. Missing ones count 0."""
    raw = [message.get(tag) for tag in _TOTALS_TAGS]
    if all(v is None for v in raw):
        return None
    values = [_int(value, tag) for tag, value in zip(_TOTALS_TAGS, raw)]
    if any(number is None and value is not None for number, value in zip(values, raw)):
        return None
    sa, sc, ra, rc, ca, cc = (v or 0 for v in values)
    raw_currency = message.get(Tag.CURRENCY)
    currency = _int(raw_currency, Tag.CURRENCY) if raw_currency is not None else 643
    if currency is None:
        return None
    return Totals(currency=currency or 643, sale_count=sc, sale_amount=sa, refund_count=rc, refund_amount=ra,
                  cancel_count=cc, cancel_amount=ca)


def _masked(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    return mask_pan(value if isinstance(value, str) else value.decode("latin-1"))


def _text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else value.hex()


def _int(value: str | bytes | None, tag: int) -> int | None:
    """A number field as an int; None when absent or not a number of the tag's width."""
    return read_number(tag, value)


def _stan_problem(value: str | bytes) -> str | None:
    if _stan(value) is not None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return f"tag 26 (stan) has {len(value)} digits, at most 12 allowed"
    return f"tag 26 (stan) must be ASCII digits, got {brief(value)}"


def _stan(value: str | bytes | None) -> str | None:
    """Tag 26 as text when it is a STAN (1-12 ASCII digits), else None."""
    if isinstance(value, str) and 0 < len(value) <= 12 and value.isascii() and value.isdigit():
        return value
    return None


def _digits(value: str | bytes, tag: int, operation_code: int | None = None) -> int:
    """A number field of a request: 1 to the tag's width of ASCII digits; UnsupportedMessage if not
    (``operation_code``, when known, goes with it)."""
    name = name_for(tag)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        if len(value) <= NUMBER_WIDTHS[tag]:
            return int(value)
        reason = f"{name} has {len(value)} digits, at most {NUMBER_WIDTHS[tag]} allowed"
    else:
        reason = f"{name} must be ASCII digits, got {brief(value)}"
    raise UnsupportedMessage(reason, str(operation_code) if operation_code is not None else "")


def _datetime(value: str | bytes | None) -> datetime | None:
    # Sliced by hand: strptime costs ~15 us and runs twice per exchange.
    if not isinstance(value, str) or len(value) != 14 or not value.isdigit():
        return None
    try:
        return datetime(int(value[:4]), int(value[4:6]), int(value[6:8]), int(value[8:10]),
                        int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None
