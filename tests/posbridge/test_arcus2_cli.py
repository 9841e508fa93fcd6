"""``posbridge arcus2-cli``: the Arcus command-line tool's files, byte for byte, with a fixed clock and seed."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from posbridge.cli.arcus2_cli import main
from posbridge.emulator.cards import Card
from posbridge.emulator.host import HostConfig
from posbridge.ecr.ownership import clock_number
from posbridge.emulator.terminal import VirtualTerminal

NOW = datetime(2026, 11, 22, 12, 30, 0)
# The ECR's first transaction number under the fixed clock: tenths of a second since 2025 (ownership.py).
STAN = clock_number(NOW.timestamp())
SEED = 42
DECLINED_CARD = "5432543254325430"  # host-rules: insufficient funds, 116
FAST = {"ack_timeout": 0.05, "enq_interval": 0.01}


def terminal_factory(*cards: str):
    def make() -> VirtualTerminal:
        terminal = VirtualTerminal("arcus2", clock=lambda: NOW, host_config=HostConfig(seed=SEED))
        terminal.cards.present(*(Card(pan, "3012") for pan in cards))
        return terminal
    return make


def crlf(lines: list[str], encoding: str = "cp1251") -> bytes:
    return "".join(line + "\r\n" for line in lines).encode(encoding)


@pytest.fixture(autouse=True)
def in_tmp_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path.cwd().iterdir())}


HEADER = [
    "           ТЕСТ БАНК",
    "г. Москва, ул. Тестовая, 1",
    "ТЕРМИНАЛ:               00344224",
    "МЕРЧАНТ:         000000000123456",
    "22.11.2026              12:30:00",
    "             ОПЛАТА",
]
SEPARATOR = "-" * 32
APPROVED_BODY = HEADER + [
    "СУММА:                123.45 RUB",
    "VISA            411111******1111",
    "RRN:                390655875747",
    "КОД АВТОРИЗАЦИИ:          I8YSQK",
    "КОД ОТВЕТА:                   00",
    "            ОДОБРЕНО",
]
APPROVED_SLIP = APPROVED_BODY + ["", "         КОПИЯ КЛИЕНТА", SEPARATOR] + APPROVED_BODY + [
    "", "ПОДПИСЬ КЛИЕНТА:", "_" * 32, "", "         КОПИЯ КАССИРА"]
APPROVED_OUTPUT = [
    "000",
    "operation=1",
    "response_code=000",
    "host_code=00",
    "text_message=ОДОБРЕНО",
    "result_amount=12345",
    "currency=643",
    f"transaction_id={STAN}",
    "rrn=390655875747",
    "auth_code=I8YSQK",
    "terminal_id=00344224",
    "pan=411111******1111",
    "card_type=VISA",
    "date=261122",
    "time=123000",
]
DECLINED_BODY = HEADER + [
    "СУММА:                999.00 RUB",
    "MASTERCARD      543254******5430",
    "КОД ОТВЕТА:                  116",
    "             ОТКАЗ",
    "ОТКЛОНЕНО: НЕДОСТАТОЧНО СРЕДСТВ",
]
DECLINED_SLIP = DECLINED_BODY + ["", "         КОПИЯ КЛИЕНТА", SEPARATOR] + DECLINED_BODY + [
    "", "         КОПИЯ КАССИРА"]
DECLINED_OUTPUT = [
    "116",
    "operation=1",
    "response_code=116",
    "host_code=116",
    "text_message=ОТКЛОНЕНО: НЕДОСТАТОЧНО СРЕДСТВ",
    "result_amount=99900",
    "currency=643",
    f"transaction_id={STAN}",
    "terminal_id=00344224",
    "pan=543254******5430",
    "card_type=MASTERCARD",
    "date=261122",
    "time=123000",
]


def test_approved_sale_writes_the_three_files_exactly(capsys):
    assert main(["/o1", "/a12345", "/c643"], terminal_factory=terminal_factory(), clock=lambda: NOW) == 0
    assert files() == {
        "cheq.out": crlf(APPROVED_SLIP),
        "output.dat": crlf(APPROVED_OUTPUT),
        "rc.out": b"000",
    }
    assert capsys.readouterr().out == "000 ОДОБРЕНО\n"


def test_declined_test_card_writes_its_code_exactly():
    assert main(["/o1", "/a99900"], terminal_factory=terminal_factory(DECLINED_CARD), clock=lambda: NOW) == 3
    assert files() == {
        "cheq.out": crlf(DECLINED_SLIP),
        "output.dat": crlf(DECLINED_OUTPUT),
        "rc.out": b"116",
    }


def test_a_host_code_wider_than_three_characters_stays_in_output_and_slip():
    assert main(["/o1", "/a500", "--copies", "1", "--encoding", "cp866"],
                terminal_factory=terminal_factory("4444333322221111")) == 3
    assert Path("rc.out").read_bytes() == b"951"
    output = Path("output.dat").read_bytes().decode("cp1251").split("\r\n")
    assert output[:4] == ["951", "operation=1", "response_code=951", "host_code=-2011"]
    slip = Path("cheq.out").read_bytes().decode("cp866")
    assert "КОД ОТВЕТА:                -2011\r\n" in slip
    assert SEPARATOR not in slip and "КОПИЯ КАССИРА" not in slip  # one copy
    assert "4444333322221111" not in slip + "".join(output)


def test_more_copies_repeat_the_cashier_copy():
    main(["/o1", "/a12345", "--copies", "3"], terminal_factory=terminal_factory(), clock=lambda: NOW)
    slip = Path("cheq.out").read_bytes().decode("cp1251")
    assert slip.count(SEPARATOR) == 2 and slip.count("КОПИЯ КАССИРА") == 2


def test_no_answer_from_the_terminal_is_999():
    Path("cheq.out").write_text("stale slip")
    assert main(["/o1", "/a100", "--port", "virtual://arcus2-cli-test-nobody"], timers=FAST) == 2
    assert files() == {
        "output.dat": crlf(["999", "text_message=НЕТ ОТВЕТА ОТ ТЕРМИНАЛА"]),
        "rc.out": b"999",
    }


def test_a_port_that_cannot_be_opened_is_999(tmp_path):
    assert main(["/o96", "--port", f"serial://{tmp_path}/no-such-tty",
                 "--journal", str(tmp_path / "ecr.sqlite3")]) == 2
    assert Path("rc.out").read_bytes() == b"999"


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["/a100"], "the operation is required"),
        (["/o77", "/a100"], "operation code 77 is not in"),
        (["/o1", "/a0"], "amount must be positive"),
        (["/o1", "/a1.5"], "amount must be digits"),
        (["/o1", "/a100", "/c1"], "currency"),
        (["/o3", "/a100", "/r1", "/f2611221230"], "yyMMddhhmmss"),
        (["/o1", "/o2"], "given twice"),
        (["/o1", "/x5"], "unknown argument"),
        (["/o1", "/a100", "--copies", "0"], "--copies"),
        (["/o1", "/a100", "--encoding", "utf-8"], "invalid choice"),
        (["/o2"], "no earlier money operation"),
    ],
)
def test_bad_arguments_write_913_and_send_nothing(argv, why, capsys):
    Path("rc.out").write_text("000")  # a stale approval must not survive
    assert main(argv, terminal_factory=terminal_factory(), clock=lambda: NOW) == 2
    assert Path("rc.out").read_bytes() == b"913"
    output = Path("output.dat").read_bytes().decode("cp1251")
    assert output.startswith("913\r\ntext_message=") and why in output
    assert not Path("cheq.out").exists()
    assert why in capsys.readouterr().err


def test_installation_ops_and_rc_res_files(tmp_path):
    ops = tmp_path / "ops.ini"
    ops.write_bytes("101 = 1, 1, ОПЛАТА\n# 1 = 1, 1, PAYMENT\n".encode("cp1251"))
    assert main(["/o101", "/a100", "--ops", str(ops)], terminal_factory=terminal_factory(), clock=lambda: NOW) == 0
    assert b"operation=101\r\n" in Path("output.dat").read_bytes()
    assert main(["/o1", "/a100", "--ops", str(ops)], terminal_factory=terminal_factory(), clock=lambda: NOW) == 2
    bad = tmp_path / "bad.ini"
    bad.write_text("1 = 1, 1, PAYMENT\n1 = 1, 3, REFUND\n")
    assert main(["/o1", "/a100", "--ops", str(bad)], terminal_factory=terminal_factory(), clock=lambda: NOW) == 2
    assert "line 2: code 1 is already used" in Path("output.dat").read_bytes().decode("cp1251")
    rc_res = tmp_path / "rc_res.ini"
    rc_res.write_bytes("999=ТЕРМИНАЛ МОЛЧИТ\n".encode("cp1251"))
    main(["/o1", "/a100", "--port", "virtual://arcus2-cli-test-silent", "--rc-res", str(rc_res)], timers=FAST)
    assert Path("output.dat").read_bytes() == crlf(["999", "text_message=ТЕРМИНАЛ МОЛЧИТ"])


def test_cancel_last_reverses_the_journals_last_sale(tmp_path):
    journal = str(tmp_path / "ecr.sqlite3")
    assert main(["/o1", "/a100", "--journal", journal], terminal_factory=terminal_factory(), clock=lambda: NOW) == 0
    # A new virtual terminal has an empty batch: the reversal is blind, approved, and changes nothing.
    assert main(["/o2", "--journal", journal], terminal_factory=terminal_factory(), clock=lambda: NOW) == 0
    output = Path("output.dat").read_bytes().decode("cp1251").split("\r\n")
    assert output[:3] == ["000", "operation=2", "response_code=000"]


def test_help():
    assert main(["--help"]) == 0
