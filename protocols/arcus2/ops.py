"""Arcus operation tables: the ops.ini format, posbridge's default table, and its loader.

An ops.ini line is ``CODE = CLASS, ID, NAME`` (arcus2.md, "Public contract"):

* CODE -- the number the cash register sends (``/o1``, ``operation=1``); installations remap it;
* CLASS -- the operation's class: 1 financial (moves money), 2 batch and reports, 3 service;
  posbridge keeps it but does not act on it;
* ID -- which operation it is (posbridge's ids: the codes of the default table below); this is
  what posbridge maps to the domain :class:`~posbridge.protocols.common.model.Operation`;
* NAME -- a label for people.

``#`` (or ``;``) at the start of a line disables it; ``[section]`` lines and blank lines are skipped.
Both ends of a link must use the same table: the wire carries the CODE.

The parsers take the file's text or its bytes (:func:`decode_config`: UTF-8 or CP1251); reading
the file is the application's business (``posbridge arcus2-cli --ops``), not this sans-IO layer's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..common.errors import InvalidRequest, PosbridgeError
from ..common.model import Operation

__all__ = [
    "OPERATION_IDS",
    "DEFAULT_OPS_INI",
    "OpsEntry",
    "OpsTable",
    "IniFileError",
    "decode_config",
    "parse_ops_ini",
    "default_ops_table",
]

#: posbridge's operation ids (the ID column) and the domain operation each one is. A cancel of a
#: pre-authorization is CANCEL (4) naming PREAUTH's code in ``original_operation``.
OPERATION_IDS: dict[int, Operation] = {
    1: Operation.SALE,  # PAYMENT
    2: Operation.EMERGENCY_REVERSAL,  # CANCEL_LAST
    3: Operation.REFUND,
    4: Operation.CANCEL,
    5: Operation.PREAUTH,
    6: Operation.COMPLETION,
    7: Operation.SETTLEMENT,
    8: Operation.SHORT_REPORT,
    9: Operation.FULL_REPORT,
    60: Operation.SLIP_COPY,
    96: Operation.TEST_CONNECTION,
}
_ID_BY_OPERATION = {operation: op_id for op_id, operation in OPERATION_IDS.items()}
_ID_BY_OPERATION[Operation.CANCEL_PREAUTH] = 4

#: posbridge's default table (the codes most used in public integrations), in ops.ini format.
#: ``protocols/arcus2/ops.ini`` is this text, for installations to copy and edit.
DEFAULT_OPS_INI = """\
# posbridge default Arcus operation table (ops.ini format)
# CODE = CLASS, ID, NAME
#   CODE  what the cash register sends (/o<CODE>, operation=<CODE>); remap it per installation
#   CLASS 1 financial, 2 batch and reports, 3 service
#   ID    which operation it is (posbridge's ids; do not change)
#   NAME  a label
# A line starting with # is disabled.
1 = 1, 1, PAYMENT
2 = 1, 2, CANCEL_LAST
3 = 1, 3, REFUND
4 = 1, 4, CANCEL
5 = 1, 5, PREAUTH
6 = 1, 6, COMPLETION
7 = 2, 7, SETTLEMENT
8 = 2, 8, SHORT_REPORT
9 = 2, 9, FULL_REPORT
60 = 3, 60, SLIP_COPY
96 = 3, 96, TEST
"""


class IniFileError(PosbridgeError, ValueError):
    """An ops.ini- or rc_res.ini-format file that cannot be used; ``line`` is the 1-based line number
    (0: none)."""

    def __init__(self, source: str, line: int, detail: str) -> None:
        self.source = source
        self.line = line
        self.detail = detail
        super().__init__(f"{source}, line {line}: {detail}" if line else f"{source}: {detail}")


@dataclass(frozen=True)
class OpsEntry:
    """One enabled ops.ini line."""

    code: int
    op_class: int
    op_id: int
    name: str
    line: int = 0

    @property
    def operation(self) -> Operation:
        """The domain operation of this entry's ID."""
        return OPERATION_IDS[self.op_id]


class OpsTable:
    """Operation codes both ways: domain :class:`Operation` <-> the CODE on the wire."""

    def __init__(self, entries: list[OpsEntry] | tuple[OpsEntry, ...], source: str = "ops table") -> None:
        """Build a table; raises :class:`IniFileError` for an unknown ID or a repeated CODE or ID."""
        self.source = source
        self.entries = tuple(entries)
        self._by_code: dict[int, OpsEntry] = {}
        self._by_id: dict[int, OpsEntry] = {}
        for entry in self.entries:
            if entry.op_id not in OPERATION_IDS:
                known = " ".join(str(i) for i in OPERATION_IDS)
                raise IniFileError(source, entry.line,
                                   f"operation id {entry.op_id} is not one posbridge knows ({known})")
            if entry.code in self._by_code:
                first = self._by_code[entry.code]
                raise IniFileError(source, entry.line,
                                   f"code {entry.code} is already used on line {first.line} ({first.name})")
            if entry.op_id in self._by_id:
                first = self._by_id[entry.op_id]
                raise IniFileError(
                    source, entry.line,
                    f"operation id {entry.op_id} already has code {first.code} (line {first.line}, {first.name})")
            self._by_code[entry.code] = entry
            self._by_id[entry.op_id] = entry

    def entry_for_code(self, code: int) -> OpsEntry | None:
        """The entry whose CODE is ``code``, or None (an unknown or disabled code)."""
        return self._by_code.get(code)

    def code_for(self, operation: Operation) -> int:
        """The CODE that sends ``operation``; InvalidRequest if the table has no line for it."""
        entry = self._by_id.get(_ID_BY_OPERATION.get(operation, -1))
        if entry is None:
            raise InvalidRequest(f"{operation.value} has no enabled line in {self.source}")
        return entry.code

    def operation_for(self, code: int) -> Operation | None:
        """The domain operation CODE ``code`` stands for (CANCEL for id 4), or None."""
        entry = self._by_code.get(code)
        return entry.operation if entry else None

    def __repr__(self) -> str:
        return f"OpsTable({self.source!r}, {len(self.entries)} operations)"


_LINE = re.compile(r"(?P<code>\d{1,6})\s*=\s*(?P<cls>[^,]*),(?P<id>[^,]*),(?P<name>.*)")


def decode_config(data: str | bytes) -> str:
    """An Arcus configuration file's text from its bytes: UTF-8 (with or without BOM), else CP1251
    as Windows tools write it. Text is returned as it is."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1251", "replace")


def parse_ops_ini(text: str | bytes, source: str = "ops.ini") -> OpsTable:
    """Parse an ops.ini-format file's text or bytes (:func:`decode_config`); raises
    :class:`IniFileError` naming the line of a bad one."""
    text = decode_config(text)
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;" or (line[0] == "[" and line.endswith("]")):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise IniFileError(source, number, f"expected 'CODE = CLASS, ID, NAME', got {line[:60]!r}")
        fields = {}
        for part in ("cls", "id"):
            value = match.group(part).strip()
            if not value.isascii() or not value.isdigit() or len(value) > 9:
                what = "CLASS" if part == "cls" else "ID"
                raise IniFileError(source, number, f"{what} must be a number, got {value!r}")
            fields[part] = int(value)
        name = match.group("name").strip()
        if not name:
            raise IniFileError(source, number, "NAME is empty")
        entries.append(OpsEntry(int(match.group("code")), fields["cls"], fields["id"], name, number))
    return OpsTable(entries, source)


_DEFAULT: OpsTable | None = None


def default_ops_table() -> OpsTable:
    """posbridge's default table (:data:`DEFAULT_OPS_INI`)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = parse_ops_ini(DEFAULT_OPS_INI, source="posbridge default ops table")
    return _DEFAULT
