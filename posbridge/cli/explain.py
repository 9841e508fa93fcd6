"""``posbridge decode --text``: frames as people read them — fields named, amounts in money, codes
explained — for both protocols. JSON (``FrameDescription.to_dict``) stays the machines' form.

The facts come from the protocol packages (INPAS: ``fields.FIELDS``, ``mapping.OpCode``,
``mapping.STATUS_BY_CODE``, ``mapping.CustomCommand``, ``mapping.GATEWAY_MODES``; Arcus2: ``fields.FIELDS``,
the default ops.ini table, ``codes``) and from ``../shared/host-rules.md`` and the emulator host's table
(``posbridge.emulator.host.TEXTS``) for the bank's response codes. Card numbers arrive masked from the
describer and are masked again here before anything is printed.
"""

from __future__ import annotations

from collections.abc import Callable

from posbridge.cli.formatting import mask_possible_card_numbers
from posbridge.emulator.host import TEXTS as HOST_TEXTS
from posbridge.model import Operation, Status, format_amount
from posbridge.protocols.arcus2 import codes as arcus2_codes
from posbridge.protocols.arcus2.fields import FIELDS as ARCUS2_FIELDS
from posbridge.protocols.arcus2.ops import default_ops_table
from posbridge.protocols.common.describe import EntryKind, FieldDescription, FrameDescription
from posbridge.protocols.inpas.mapping import (
    APPROVED_RESPONSE_CODE,
    GATEWAY_MODES,
    STATUS_BY_CODE,
    CustomCommand,
    OpCode,
    parse_receipt,
)

__all__ = ["CURRENCY_NAMES", "HOST_CODE_MEANINGS", "INPAS_OPERATIONS", "OPERATION_WORDS", "STATUS_WORDS",
           "explain_entries", "explain_host_code", "money"]

#: Names of the currencies ``format_amount`` knows by their letters (ISO 4217).
CURRENCY_NAMES: dict[int, str] = {
    643: "Russian rouble", 840: "US dollar", 978: "euro", 933: "Belarusian rouble", 398: "Kazakhstani tenge",
    156: "Chinese yuan", 51: "Armenian dram",
}

#: Each domain operation in words.
OPERATION_WORDS: dict[Operation, str] = {
    Operation.SALE: "sale",
    Operation.REFUND: "refund",
    Operation.CANCEL: "cancel (void) of an operation of the open batch",
    Operation.PREAUTH: "pre-authorization (hold)",
    Operation.COMPLETION: "completion of a pre-authorization",
    Operation.CANCEL_PREAUTH: "cancel of a pre-authorization (release the hold)",
    Operation.EMERGENCY_REVERSAL: "emergency reversal (the outcome of the last request was lost)",
    Operation.SETTLEMENT: "settlement (closes the batch)",
    Operation.SHORT_REPORT: "short report",
    Operation.FULL_REPORT: "full report",
    Operation.SLIP_COPY: "copy of the last slip",
    Operation.TEST_CONNECTION: "test connection",
}

#: INPAS SA operation codes (tag 25 and 34; inpas-sa.md "Operation codes").
INPAS_OPERATIONS: dict[OpCode, str] = {
    OpCode.SALE: "sale",
    OpCode.REFUND_ALT: "refund (code 3, as some ECRs send it)",
    OpCode.CANCEL: "cancel (void) of an operation of the open batch",
    OpCode.PREAUTH: "pre-authorization (hold)",
    OpCode.COMPLETION: "completion of a pre-authorization",
    OpCode.WAIT: "WAIT: the terminal is still working",
    OpCode.TEST_CONNECTION: "test connection",
    OpCode.REFUND: "refund",
    OpCode.CASHIER_DIALOG: "cashier dialog",
    OpCode.EMERGENCY_REVERSAL: "emergency reversal (the outcome of the last request was lost)",
    OpCode.SETTLEMENT: "settlement (closes the batch)",
    OpCode.CUSTOM_COMMAND: "custom command (sub-command in tag 65)",
}

#: INPAS operation 63's sub-commands (tag 65).
_INPAS_SUB_COMMANDS: dict[CustomCommand, str] = {
    CustomCommand.GATEWAY_OPEN_CLOSE: "gateway: open or close the host connection (tag 64: 1 open, 0 close)",
    CustomCommand.GATEWAY_DATA: "gateway: host data (tag 64: 0 send, 1 receive)",
    CustomCommand.SHORT_REPORT: "short report",
    CustomCommand.FULL_REPORT: "full report",
    CustomCommand.SLIP_COPY: "copy of the last slip",
}

#: Each outcome in words (INPAS tag 39 by ``STATUS_BY_CODE``; Arcus2's response code by ``status_for``).
STATUS_WORDS: dict[Status, str] = {
    Status.UNDEFINED: "undefined / not performed",
    Status.APPROVED: "approved (the only success)",
    Status.CONDITIONAL: "performed conditionally",
    Status.REVERSED: "reversed",
    Status.DECLINED: "declined",
    Status.APPROVED_OFFLINE: "approved offline",
    Status.NO_CONNECTION: "no connection to the bank host",
    Status.ABORTED: "aborted (cashier or card holder cancelled, or the terminal timed out)",
}

#: The bank host's response codes (host-rules.md "Response codes" and test cards; posbridge host's own
#: 90xx codes as ``posbridge/emulator/host.py`` documents them).
HOST_CODE_MEANINGS: dict[str, str] = {
    "00": "approved", "000": "approved", "001": "approved",
    "5": "network refused the transaction",
    "101": "card expired",
    "110": "invalid amount",
    "111": "card number incorrect",
    "116": "insufficient funds",
    "123": "limit exceeded",
    "209": "card limitations exceeded",
    "400": "reversal processed",
    "902": "card limitations exceeded",
    "903": "amount exceeds the issuer's limit",
    "913": "invalid message format",
    "1004": "authorization phase 1",
    "1005": "authorization phase 2",
    "9001": "internal error",
    "71015": "card details entered incorrectly",
    "151017": "3-D Secure communication error (TDSEC_COMM_ERROR)",
    "151018": "processing timeout: the request could not be sent",
    "151019": "processing timeout: sent, no answer from the bank (reversed automatically)",
    "-2011": "3-D Secure: PaRes status is U",
    "-2016": "3-D Secure: VeRes status is U",
    "-20010": "blocked by limit (BLOCKED_BY_LIMIT)",
    "9010": "posbridge host: the operation is not in the open batch; refund it instead",
    "9011": "posbridge host: no original operation with that RRN",
    "9012": "posbridge host: the RRN of the original operation is missing",
    "9013": "posbridge host: the hold has expired",
    "9014": "posbridge host: the original operation cannot be acted on",
    "9015": "posbridge host: the original operation is of the wrong kind",
    "9016": "posbridge host: duplicate transaction number (STAN) with another operation or amount",
    "9017": "posbridge host: the reversal does not match the operation (amount differs)",
    "9018": "posbridge host: a retry of an operation reversed since (nothing charged; never \"approved\")",
    "9020": "posbridge host: nothing to reverse, the operation never happened",
}

_CONTROL_MEANINGS: dict[str, dict[str, str]] = {
    "inpas": {  # inpas-sa.md "Handshake"
        "ACK": "the frame arrived intact",
        "NAK": "the frame was damaged or malformed: send it again (3 tries in all)",
        "ENQ": "still busy, keep waiting (restarts the ACK timer)",
        "EOT": "end of the exchange (from the ECR: finished; a lone EOT from the terminal: abort)",
    },
    "arcus2": {  # arcus2.md "Link layer"
        "ACK": "ready to receive / the frame arrived intact",
        "NAK": "busy, or the frame was damaged: try again",
        "ENQ": "the sender has something to say and asks for a turn",
        "EOT": "end of the turn",
    },
}


def money(minor_units: str, currency: int) -> str:
    """``"150", 643`` -> ``"1.50 RUB (Russian rouble)"``; the text itself when it is not a number."""
    if not (minor_units.isascii() and minor_units.isdigit()) or len(minor_units) > 18:
        return minor_units
    shown = format_amount(int(minor_units), currency)
    name = CURRENCY_NAMES.get(currency)
    return f"{shown} ({name})" if name else shown


def explain_host_code(code: str) -> str:
    """A bank host's response code in words, with the text the virtual terminal prints where known."""
    meaning = HOST_CODE_MEANINGS.get(code.strip())
    printed = HOST_TEXTS.get(code.strip()) if code.strip() else None
    if meaning and printed:
        return f"{meaning} ({printed})"
    return meaning or printed or "not a code posbridge knows"


def _currency_of(fields: tuple[FieldDescription, ...], key: str) -> int:
    for field in fields:
        if field.key == key and field.value.isascii() and field.value.isdigit() and len(field.value) <= 3:
            return int(field.value)
    return 643  # both protocols' default: an amount without a currency is in roubles


def _number(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 6 else None


def _datetime(value: str, year_digits: int = 4) -> str | None:
    """``YYYYMMDDhhmmss`` (or ``yyMMddhhmmss``) as ``YYYY-MM-DD hh:mm:ss``; None when not one."""
    width = 10 + year_digits
    if len(value) != width or not (value.isascii() and value.isdigit()):
        return None
    year = value[:year_digits] if year_digits == 4 else "20" + value[:2]
    rest = value[year_digits:]
    return f"{year}-{rest[0:2]}-{rest[2:4]} {rest[4:6]}:{rest[6:8]}:{rest[8:10]}"


# --- INPAS SA --------------------------------------------------------------------------------------------
def _inpas_operation(value: str) -> str:
    code = _number(value)
    if code is None or code not in OpCode._value2member_map_:
        return f"operation {value}: not an INPAS operation code"
    return f"operation {code}: {INPAS_OPERATIONS[OpCode(code)]}"


def _inpas_field(field: FieldDescription, fields: tuple[FieldDescription, ...]) -> str | None:
    """What an INPAS field's value means, or None when the value says it all."""
    tag, value = field.key, field.value
    currency = _currency_of(fields, "4")
    values = {f.key: f.value for f in fields}
    if tag in ("0", "1", "29", "31", "49"):
        return money(value, currency)
    if tag == "4":
        number = _number(value)
        return money("0", number).split(" ", 1)[1] if number is not None else None
    if tag in ("25", "34"):
        return _inpas_operation(value)
    if tag == "39":
        code = _number(value)
        status = STATUS_BY_CODE.get(code) if code is not None else None
        return STATUS_WORDS[status] if status else f"status {value} is not an INPAS status code"
    if tag == "15":
        if value == APPROVED_RESPONSE_CODE and values.get("39") == "1":
            return "approved (SmartSale terminals send 001 for a plain approval)"
        return f"host response {value}: {explain_host_code(value)}"
    if tag == "65" and values.get("25") == str(int(OpCode.CUSTOM_COMMAND)):
        code = _number(value)
        if code is not None and code in CustomCommand._value2member_map_:
            return f"sub-command {code}: {_INPAS_SUB_COMMANDS[CustomCommand(code)]}"
        return f"sub-command {value}: not one posbridge knows"
    if tag == "64" and values.get("25") == str(int(OpCode.CUSTOM_COMMAND)):
        for action, (sub, mode) in GATEWAY_MODES.items():
            if values.get("65") == str(int(sub)) and value == str(mode):
                return f"gateway action: {action}"
        return None
    if tag == "67":
        return {"0": "ok", "1": "error"}.get(value)
    if tag in ("6", "21"):
        return _datetime(value)
    if tag == "11" and len(value) == 4 and value.isdigit():
        return f"expires {value[2:]}/{value[:2]} (MM/YY)"
    if tag == "57":
        return f"{value} seconds" if _number(value) is not None else None
    return None


def _inpas_summary(entry: FrameDescription) -> str:
    values = {f.key: f.value for f in entry.fields}
    code = _number(values.get("25", ""))
    if "39" in values:
        return "the terminal's final answer"
    if code == OpCode.WAIT:
        return "intermediate packet: the terminal is still working"
    if code == OpCode.CASHIER_DIALOG:
        return "the ECR's answer to the cashier dialog" if "77" in values else "cashier dialog: the terminal asks"
    if code == OpCode.CUSTOM_COMMAND and values.get("65") in (str(int(CustomCommand.GATEWAY_OPEN_CLOSE)),
                                                              str(int(CustomCommand.GATEWAY_DATA))):
        return "gateway packet"
    return "request" if code is not None else "message"


def _inpas_extra_lines(field: FieldDescription) -> list[str]:
    """Tag 90 (receipt data) as the slips it carries."""
    if field.key != "90":
        return []
    slips, scheme = parse_receipt(field.value)
    lines = [f"      card scheme: {scheme}"] if scheme else []
    for title, text in (("customer slip", slips.customer), ("cashier slip", slips.cashier)):
        if text:
            lines.append(f"      --- {title} ---")
            lines += [f"      | {line}" for line in text.splitlines()]
    return lines


# --- Arcus2 ----------------------------------------------------------------------------------------------
_ARCUS2_AMOUNT_KEYS = ("amount", "result_amount", "original_amount", "sale_amount", "refund_amount",
                       "cancel_amount")


def _arcus2_operation(value: str) -> str:
    code = _number(value)
    entry = default_ops_table().entry_for_code(code) if code is not None else None
    if entry is None:
        return f"operation {value}: not in posbridge's default ops.ini (an installation may remap codes)"
    return f"operation {code}: {OPERATION_WORDS[entry.operation]} ({entry.name} in the default ops.ini)"


def _arcus2_response_code(value: str, fields: tuple[FieldDescription, ...]) -> str:
    operation_field = {f.key: f.value for f in fields}.get("operation", "")
    code = _number(operation_field)
    entry = default_ops_table().entry_for_code(code) if code is not None else None
    status = arcus2_codes.status_for(value, entry.operation if entry else Operation.SALE)
    parts = [f"response {value}: {STATUS_WORDS[status]}"]
    host = {mapped: host for host, mapped in arcus2_codes.HOST_CODE_MAP.items()}.get(value)
    if value == arcus2_codes.OTHER_DECLINE:
        parts.append("any other decline: the host's own code is in host_code")
    elif host is not None:  # a host code wider than three characters, mapped (codes.HOST_CODE_MAP)
        parts.append(f"host code {host}: {explain_host_code(host)}")
    elif status is Status.DECLINED:  # the host's code passed through, one or two digits zero-padded
        host = value if value in HOST_CODE_MEANINGS else value.lstrip("0") or "0"
        parts.append(f"host code {host}: {explain_host_code(host)}")
    text = arcus2_codes.DEFAULT_TEXTS.get(value)
    if text:
        parts.append(f"printed as {text}")
    return "; ".join(parts)


def _arcus2_field(field: FieldDescription, fields: tuple[FieldDescription, ...]) -> str | None:
    key, value = field.key, field.value
    if key in _ARCUS2_AMOUNT_KEYS:
        return money(value, _currency_of(fields, "currency"))
    if key == "currency":
        number = _number(value)
        return money("0", number).split(" ", 1)[1] if number is not None else None
    if key in ("operation", "original_operation"):
        return _arcus2_operation(value)
    if key == "response_code":
        return _arcus2_response_code(value, fields)
    if key == "host_code":
        return f"host response {value}: {explain_host_code(value)}"
    if key == "original_date_time":
        return _datetime(value, year_digits=2)
    if key == "date" and len(value) == 6 and value.isdigit():
        return f"20{value[:2]}-{value[2:4]}-{value[4:6]}"
    if key == "time" and len(value) == 6 and value.isdigit():
        return f"{value[:2]}:{value[2:4]}:{value[4:6]}"
    if key == "expiry" and len(value) == 4 and value.isdigit():
        return f"expires {value[2:]}/{value[:2]} (MM/YY)"
    return None


def _arcus2_meaning(key: str) -> str | None:
    """What an Arcus2 key is for, from the key table (INPAS fields are named well enough)."""
    spec = ARCUS2_FIELDS.get(key)
    return spec.meaning if spec is not None and key not in ("pan", "rrn", "auth_code", "terminal_id") else None


def _arcus2_extra_lines(field: FieldDescription) -> list[str]:
    if field.key != "slip":
        return []
    return ["      | " + line for line in field.value.splitlines()]


# --- both ------------------------------------------------------------------------------------------------
_Explainer = Callable[[FieldDescription, tuple[FieldDescription, ...]], "str | None"]


def _field_line(protocol: str, field: FieldDescription, fields: tuple[FieldDescription, ...]) -> list[str]:
    where = f"tag {field.key}" if protocol == "inpas" else field.key
    label = field.name if protocol == "inpas" else field.key
    explain: _Explainer = _inpas_field if protocol == "inpas" else _arcus2_field
    multiline = "\n" in field.value or "\r" in field.value
    shown = f"({len(field.value)} characters, below)" if multiline else field.value
    if field.binary:
        shown = f"{shown} (binary, hex)"
    meaning = None if field.problem else explain(field, fields)
    line = f"  {label} [{where}]: {shown}" if protocol == "inpas" else f"  {label}: {shown}"
    if meaning and meaning != field.value:
        line += f" = {meaning}"
    elif protocol == "arcus2" and (about := _arcus2_meaning(field.key)):
        line += f"  ({about})"
    if field.problem:
        line += f"  !! {field.problem}"
    lines = [line]
    if multiline:
        extra = _inpas_extra_lines(field) if protocol == "inpas" else _arcus2_extra_lines(field)
        lines += extra or ["      | " + text for text in field.value.replace("\r\n", "\n").splitlines()]
    return lines


def _entry_lines(protocol: str, entry: FrameDescription, number: int) -> list[str]:
    if entry.kind is EntryKind.CONTROL:
        meaning = _CONTROL_MEANINGS.get(protocol, {}).get(entry.name, "control byte")
        return [f"byte {entry.offset}: {entry.name} = {meaning}"]
    if entry.kind is EntryKind.NOISE:
        return [f"bytes {entry.offset}-{entry.offset + entry.size - 1}: noise, not part of a frame: {entry.data}"]
    head = f"frame {number} at byte {entry.offset}, {entry.size} bytes: {entry.name}"
    if entry.version is not None:
        head += f" (link version {entry.version})"
    if entry.kind is EntryKind.INCOMPLETE:
        head += ", INCOMPLETE: the input ends inside this frame"
    elif entry.check:
        verdict = {True: "ok", False: "BAD", None: "not checked"}[entry.check_ok]
        head += f", {entry.check.upper()} {verdict}"
    if entry.skipped:
        head += f", after {entry.skipped} byte(s) of noise"
    if entry.part is not None:
        head += f", part {entry.part.number}" + (" (the last)" if entry.part.final else "")
    if entry.fields:
        kind = _inpas_summary(entry) if protocol == "inpas" else (entry.message_kind or "message")
        head += f" — {kind}"
        if entry.message:
            head += f" ({entry.message})"
        if entry.part is not None:
            head += ", the whole message"
    lines = [head]
    for problem in entry.problems:
        where = f" at byte {problem.offset}" if problem.offset is not None else ""
        lines.append(f"  !! {problem.reason}{where}: {problem.detail}".rstrip(": "))
    for field in entry.fields:
        lines += _field_line(protocol, field, entry.fields)
    return lines


def explain_entries(protocol: str, entries: list[FrameDescription]) -> str:
    """The describer's entries of ``protocol`` (``"inpas"`` or ``"arcus2"``) as text for people:
    one head line per frame, control byte or noise run, then a line per field with its meaning.
    Card numbers are masked (again) in every line."""
    lines: list[str] = []
    frame_number = 0
    for entry in entries:
        if entry.kind in (EntryKind.FRAME, EntryKind.INCOMPLETE):
            frame_number += 1
        lines += _entry_lines(protocol, entry, frame_number)
    return "\n".join(mask_possible_card_numbers(line) for line in lines)

