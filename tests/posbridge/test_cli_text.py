"""``posbridge decode --text`` (issue 13, item 3): fields named, amounts in money with the currency's
name, operation, status and response codes explained, for both protocols; JSON stays the default.
The tables are checked against the protocol packages, so a new code cannot go unexplained."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from posbridge.cli import main
from posbridge.cli.explain import (
    HOST_CODE_MEANINGS,
    INPAS_OPERATIONS,
    OPERATION_WORDS,
    STATUS_WORDS,
    explain_host_code,
    money,
)
from posbridge.emulator.host import TEXTS as HOST_TEXTS
from posbridge.model import Operation, Status
from posbridge.protocols.arcus2 import codes as arcus2_codes
from posbridge.protocols.arcus2.fields import Message as ArcusMessage
from posbridge.protocols.arcus2.frame import encode_frame as arcus_frame
from posbridge.protocols.inpas.fields import Message as InpasMessage
from posbridge.protocols.inpas.frame import encode_frame as inpas_frame
from posbridge.protocols.inpas.mapping import STATUS_BY_CODE, OpCode

ROOT = Path(__file__).resolve().parents[2]
VECTORS = dict(line.split("\t")[:2] for line in (ROOT.parent / "shared" / "vectors" / "inpas-sa.txt")
               .read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")) \
    if (ROOT.parent / "shared" / "vectors" / "inpas-sa.txt").exists() else {}
SALE_HEX = "021b00000300313530040300363433190100311b0800303033343432323432dd"
APPROVED_HEX = (  # the golden vector sale-response-approved
    "029c000003003135300403003634330a10002a2a2a2a2a2a2a2a2a2a2a2a313131310d06003435343538330e0c003333333130393138"
    "393732390f0300303031130800cec4cec1d0c5cdce190100311a0100371b08003030333434323234270100315a3a00307844465e5e"
    "0d0a202020d2c5d1d220c1c0cdca0d0acecfcbc0d2c00d0ad1d3ccccc03a20312e3530205255420d0acec4cec1d0c5cdce0d0a7ea166")


def text_of(capsys, protocol: str, *hex_parts: str) -> tuple[int, list[str]]:
    code = main(["decode", "--text", "--protocol", protocol, *hex_parts])
    return code, capsys.readouterr().out.splitlines()


def test_an_inpas_sale_request_reads_as_words(capsys) -> None:
    code, lines = text_of(capsys, "inpas", SALE_HEX, "06")
    assert code == 0
    assert lines == [
        "frame 1 at byte 0, 32 bytes: STX, CRC ok — request",
        "  amount [tag 0]: 150 = 1.50 RUB (Russian rouble)",
        "  currency [tag 4]: 643 = RUB (Russian rouble)",
        "  operation_code [tag 25]: 1 = operation 1: sale",
        "  terminal_id [tag 27]: 00344224",
        "byte 32: ACK = the frame arrived intact",
    ]


def test_an_inpas_approved_answer_names_status_code_and_shows_the_slip(capsys) -> None:
    if VECTORS:  # the golden vector, when the shared folder is there, is the frame used here
        assert VECTORS["sale-response-approved"] == APPROVED_HEX
    code, lines = text_of(capsys, "inpas", APPROVED_HEX)
    assert code == 0
    assert lines[0] == "frame 1 at byte 0, 161 bytes: STX, CRC ok — the terminal's final answer"
    assert "  rrn [tag 14]: 333109189729" in lines  # an RRN is not a card number: shown whole
    assert "  host_response_code [tag 15]: 001 = approved (SmartSale terminals send 001 for a plain approval)" in lines
    assert "  status [tag 39]: 1 = approved (the only success)" in lines
    assert "  pan [tag 10]: ************1111" in lines
    assert lines[-5:] == ["      --- customer slip ---", "      |    ТЕСТ БАНК", "      | ОПЛАТА",
                          "      | СУММА: 1.50 RUB", "      | ОДОБРЕНО"]


def test_an_inpas_decline_explains_status_16_and_the_hosts_code(capsys) -> None:
    answer = InpasMessage({25: 1, 39: 16, 15: "116", 19: "ОТКЛОНЕНО", 0: "77700", 4: "643", 10: "543254******5430"})
    code, lines = text_of(capsys, "inpas", inpas_frame(answer.encode_body()).hex())
    assert code == 0
    assert "  status [tag 39]: 16 = declined" in lines
    assert "  host_response_code [tag 15]: 116 = host response 116: insufficient funds" in lines
    assert "  amount [tag 0]: 77700 = 777.00 RUB (Russian rouble)" in lines


def test_inpas_wait_cancel_of_a_refund_report_and_unknown_codes(capsys) -> None:
    frames = [
        InpasMessage({25: 21}),
        InpasMessage({25: 4, 34: 29, 0: "2000", 4: "840", 14: "123456789012"}),
        InpasMessage({25: 63, 65: 20}),
        InpasMessage({25: 77, 39: 99}),
    ]
    code, lines = text_of(capsys, "inpas", *(inpas_frame(m.encode_body()).hex() for m in frames))
    assert code == 0
    assert "frame 1 at byte 0, 10 bytes: STX, CRC ok — intermediate packet: the terminal is still working" in lines
    assert "  operation_code [tag 25]: 21 = operation 21: WAIT: the terminal is still working" in lines
    assert "  operation_code [tag 25]: 4 = operation 4: cancel (void) of an operation of the open batch" in lines
    assert "  original_operation_code [tag 34]: 29 = operation 29: refund" in lines
    assert "  amount [tag 0]: 2000 = 20.00 USD (US dollar)" in lines
    assert "  command_mode_2 [tag 65]: 20 = sub-command 20: short report" in lines
    assert "  operation_code [tag 25]: 77 = operation 77: not an INPAS operation code" in lines
    assert "  status [tag 39]: 99 = status 99 is not an INPAS status code" in lines


def test_inpas_bad_frames_say_what_is_wrong_and_exit_1(capsys) -> None:
    code, lines = text_of(capsys, "inpas", "00ff", SALE_HEX[:-4] + "3222", SALE_HEX[:20])
    assert code == 1
    assert lines == [
        "frame 1 at byte 2, 32 bytes: STX, CRC BAD, after 2 byte(s) of noise",
        "  !! crc at byte 32: received CRC 0x3222, computed 0x32DD",
        "frame 2 at byte 34, 10 bytes: STX, INCOMPLETE: the input ends inside this frame",
        "  !! incomplete at byte 34: frame of 32 bytes, have 10",
    ]


def test_an_arcus2_request_and_decline_read_as_words(capsys) -> None:
    request = ArcusMessage("Q", {"operation": 1, "amount": 150, "currency": "643", "transaction_id": "12"})
    result = ArcusMessage("R", {"operation": 1, "response_code": "116", "host_code": "116",
                                "text_message": "ОТКЛОНЕНО", "result_amount": 150, "currency": "643"})
    code, lines = text_of(capsys, "arcus2", arcus_frame(request.encode_body()).hex(),
                          arcus_frame(result.encode_body()).hex(), "05")
    assert code == 0
    assert lines[0] == "frame 1 at byte 0, 62 bytes: SOH (link version 2), CRC ok — request (Q)"
    assert lines[1:5] == [
        "  operation: 1 = operation 1: sale (PAYMENT in the default ops.ini)",
        "  amount: 150 = 1.50 RUB (Russian rouble)",
        "  currency: 643 = RUB (Russian rouble)",
        "  transaction_id: 12  (the ECR's unique number: the idempotency key; echoed in R and carried in A)",
    ]
    assert lines[5].endswith("CRC ok — result (R)")
    assert ("  response_code: 116 = response 116: declined; host code 116: insufficient funds; "
            "printed as ОТКЛОНЕНО: НЕДОСТАТОЧНО СРЕДСТВ") in lines
    assert "  result_amount: 150 = 1.50 RUB (Russian rouble)" in lines
    assert lines[-1] == "byte 168: ENQ = the sender has something to say and asks for a turn"


def test_arcus2_mapped_padded_and_own_response_codes(capsys) -> None:
    answers = [ArcusMessage("R", {"operation": 1, "response_code": code}) for code in ("951", "005", "900", "000")]
    answers.append(ArcusMessage("R", {"operation": 2, "response_code": "956"}))
    code, lines = text_of(capsys, "arcus2", *(arcus_frame(m.encode_body()).hex() for m in answers))
    assert code == 0
    codes = [line for line in lines if line.startswith("  response_code")]
    assert codes == [
        "  response_code: 951 = response 951: declined; host code -2011: 3-D Secure: PaRes status is U; "
        "printed as ОТКЛОНЕНО: 3-D SECURE, СТАТУС PARES U",
        "  response_code: 005 = response 005: declined; host code 5: network refused the transaction; "
        "printed as ОТКЛОНЕНО: СЕТЬ ОТКАЗАЛА В ОПЕРАЦИИ",
        "  response_code: 900 = response 900: declined; any other decline: the host's own code is in host_code; "
        "printed as ОТКЛОНЕНО",
        "  response_code: 000 = response 000: approved (the only success); printed as ОДОБРЕНО",
        "  response_code: 956 = response 956: reversed; host code 151019: processing timeout: sent, no answer "
        "from the bank (reversed automatically) (ОПЕРАЦИЯ ОТМЕНЕНА: НЕТ ОТВЕТА БАНКА); "
        "printed as ОПЕРАЦИЯ АВТОМАТИЧЕСКИ ОТМЕНЕНА: НЕТ ОТВЕТА БАНКА",
    ]
    assert "  operation: 2 = operation 2: emergency reversal (the outcome of the last request was lost) " \
           "(CANCEL_LAST in the default ops.ini)" in lines


def test_a_card_number_in_any_field_is_masked_an_rrn_is_not(capsys) -> None:
    inpas = InpasMessage({25: 1, 39: 16, 19: "card 4111 1111 1111 1111 refused", 14: "333109189729",
                          71: "4111111111111111"})
    arcus = ArcusMessage("R", {"operation": 1, "response_code": "116", "text_message": "5100000000000008"})
    for protocol, data in (("inpas", inpas_frame(inpas.encode_body())), ("arcus2", arcus_frame(arcus.encode_body()))):
        code, lines = text_of(capsys, protocol, data.hex())
        text = "\n".join(lines)
        assert "4111111111111111" not in text and "4111 1111 1111 1111" not in text
        assert "5100000000000008" not in text
    assert main(["decode", "--text", "--protocol", "inpas", inpas_frame(inpas.encode_body()).hex()]) == 0
    out = capsys.readouterr().out
    assert "333109189729" in out and "411111******1111" in out


def test_every_code_of_the_protocol_tables_is_explained() -> None:
    assert set(INPAS_OPERATIONS) == set(OpCode)
    assert set(STATUS_BY_CODE.values()) <= set(STATUS_WORDS) == set(Status)
    assert set(OPERATION_WORDS) == set(Operation)
    assert {code for code in HOST_TEXTS if code} <= set(HOST_CODE_MEANINGS)  # the emulator host's codes
    assert set(arcus2_codes.HOST_CODE_MAP) <= set(HOST_CODE_MEANINGS)
    for code in ("110", "111", "116", "123", "209", "400", "902", "903", "913", "1004", "1005", "9001", "71015",
                 "151018", "151019", "5"):  # host-rules.md "Response codes"
        assert code in HOST_CODE_MEANINGS
    assert explain_host_code("4242") == "not a code posbridge knows"
    assert money("150", 643) == "1.50 RUB (Russian rouble)"
    assert money("150", 999) == "1.50 999"  # a currency posbridge has no name for: its number
    assert money("1" * 5000, 643) == "1" * 5000  # not a number of an amount's width: shown as sent


def test_json_stays_the_default_and_text_is_one_flag_away_in_a_real_process() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "posbridge", "decode", *args], capture_output=True,
                              text=True, encoding="utf-8", cwd=ROOT, timeout=60)

    default = run(SALE_HEX)
    assert default.returncode == 0 and json.loads(default.stdout)["fields"][0] == {
        "key": "0", "name": "amount", "value": "150"}
    text = run("--text", SALE_HEX)
    assert text.returncode == 0 and text.stderr == ""
    assert "  amount [tag 0]: 150 = 1.50 RUB (Russian rouble)" in text.stdout.splitlines()
    bad = run("--text", SALE_HEX[:-4] + "3222")
    assert bad.returncode == 1 and "CRC BAD" in bad.stdout
