"""ops.ini and rc_res.ini formats: posbridge's defaults, remapping, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

import posbridge.protocols.arcus2
from posbridge.protocols.arcus2.codes import (
    DEFAULT_RC_RES_INI,
    DEFAULT_TEXTS,
    parse_rc_res,
)
from posbridge.protocols.arcus2.ops import (
    DEFAULT_OPS_INI,
    IniFileError,
    decode_config,
    default_ops_table,
    parse_ops_ini,
)
from posbridge.protocols.common.errors import InvalidRequest
from posbridge.protocols.common.model import Operation

PACKAGE = Path(posbridge.protocols.arcus2.__file__).parent


def test_default_table_is_arcus2_md():
    table = default_ops_table()
    assert [(e.code, e.name, e.operation) for e in table.entries] == [
        (1, "PAYMENT", Operation.SALE),
        (2, "CANCEL_LAST", Operation.EMERGENCY_REVERSAL),
        (3, "REFUND", Operation.REFUND),
        (4, "CANCEL", Operation.CANCEL),
        (5, "PREAUTH", Operation.PREAUTH),
        (6, "COMPLETION", Operation.COMPLETION),
        (7, "SETTLEMENT", Operation.SETTLEMENT),
        (8, "SHORT_REPORT", Operation.SHORT_REPORT),
        (9, "FULL_REPORT", Operation.FULL_REPORT),
        (60, "SLIP_COPY", Operation.SLIP_COPY),
        (96, "TEST", Operation.TEST_CONNECTION),
    ]
    assert table.code_for(Operation.CANCEL_PREAUTH) == 4  # CANCEL naming PREAUTH
    assert table.operation_for(60) is Operation.SLIP_COPY and table.operation_for(61) is None


def test_shipped_files_are_the_defaults():
    assert (PACKAGE / "ops.ini").read_text(encoding="utf-8") == DEFAULT_OPS_INI
    assert (PACKAGE / "rc_res.ini").read_text(encoding="utf-8") == DEFAULT_RC_RES_INI
    assert parse_rc_res(DEFAULT_RC_RES_INI) == DEFAULT_TEXTS


def test_remapped_and_disabled_codes():
    text = "[OPS]\n; an installation's table\n101 = 1, 1, ОПЛАТА\n# 3 = 1, 3, REFUND\n  \n 7=2,7,СВЕРКА, ИТОГОВ \n"
    table = parse_ops_ini(text.encode("cp1251"))  # a file's bytes: Windows tools write CP1251
    assert [(e.code, e.op_class, e.op_id, e.name, e.line) for e in table.entries] == [
        (101, 1, 1, "ОПЛАТА", 3), (7, 2, 7, "СВЕРКА, ИТОГОВ", 6)]
    assert table.code_for(Operation.SALE) == 101 and table.operation_for(1) is None
    with pytest.raises(InvalidRequest, match="refund has no enabled line"):
        table.code_for(Operation.REFUND)
    assert parse_ops_ini(text.encode("utf-8")).code_for(Operation.SETTLEMENT) == 7
    assert parse_ops_ini(text.encode("utf-8-sig")).code_for(Operation.SETTLEMENT) == 7


def test_config_bytes_are_utf8_or_cp1251():
    assert decode_config("СВЕРКА".encode("utf-8")) == "СВЕРКА"
    assert decode_config("СВЕРКА".encode("utf-8-sig")) == "СВЕРКА"
    assert decode_config("СВЕРКА".encode("cp1251")) == "СВЕРКА"
    assert decode_config("СВЕРКА") == "СВЕРКА"


@pytest.mark.parametrize(
    ("text", "line", "detail"),
    [
        ("1 = 1, 1, PAYMENT\nPAYMENT\n", 2, "expected 'CODE = CLASS, ID, NAME'"),
        ("1 = 1, 1\n", 1, "expected 'CODE = CLASS, ID, NAME'"),
        ("x = 1, 1, PAYMENT\n", 1, "expected"),
        ("1 = a, 1, PAYMENT\n", 1, "CLASS must be a number"),
        ("1 = 1, , PAYMENT\n", 1, "ID must be a number"),
        ("1 = 1, 1,   \n", 1, "NAME is empty"),
        ("#\n1 = 1, 42, MAGIC\n", 2, "operation id 42 is not one posbridge knows"),
        ("1 = 1, 1, PAYMENT\n1 = 1, 3, REFUND\n", 2, "code 1 is already used on line 1 (PAYMENT)"),
        ("1 = 1, 1, PAYMENT\n\n11 = 1, 1, AGAIN\n", 3, "operation id 1 already has code 1"),
    ],
)
def test_bad_lines_are_named(text, line, detail):
    with pytest.raises(IniFileError) as caught:
        parse_ops_ini(text, source="my-ops.ini")
    assert caught.value.line == line and detail in caught.value.detail
    assert str(caught.value).startswith(f"my-ops.ini, line {line}: ")
    assert isinstance(caught.value, ValueError)


def test_rc_res_separators_comments_and_defaults():
    text = "[RC]\n# comment\n000=Одобрено\n116;Недостаточно средств\n123,Лимит\n913\tФормат\n5 Сеть\n-2011: 3DS\n"
    assert parse_rc_res(text) == {"000": "Одобрено", "116": "Недостаточно средств", "123": "Лимит",
                                  "913": "Формат", "5": "Сеть", "-2011": "3DS"}
    assert parse_rc_res("116=НЕТ ДЕНЕГ\n116=НЕТ СРЕДСТВ\n".encode("cp1251")) == {"116": "НЕТ СРЕДСТВ"}


@pytest.mark.parametrize("text", ["Одобрено\n", "000Одобрено\n", "abc=1\n"])
def test_rc_res_bad_line(text):
    with pytest.raises(IniFileError) as caught:
        parse_rc_res("# ok\n" + text)
    assert caught.value.line == 2
