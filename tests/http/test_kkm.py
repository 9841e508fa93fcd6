"""KKM Server's /Execute in process: the acquiring commands with roubles, IdCommand as the
idempotency key, Timeout 1 then GetRezult, declines, devices by NumDevice."""

from __future__ import annotations


from posbridge.emulator.config import TerminalConfig

from tests.http.support import in_process

DECLINED_PAN = "5432543254325430"


async def test_pay_return_cancel_and_the_same_id_command_again():
    async with in_process() as s:
        status, paid = await s.post("/Execute", {"Command": "PayByPaymentCard", "NumDevice": 0, "IdCommand": "k1",
                                                 "Amount": 150.25, "ReceiptNumber": "26", "CardNumber": ""})
        assert status == 200 and paid["Status"] == 0 and paid["Error"] == ""
        assert paid["Amount"] == 150.25 and paid["NumDevice"] == 1 and paid["IdCommand"] == "k1"
        assert paid["UniversalID"].startswith("CN:411111******1111;RN:26;RRN:")
        assert "[cut]" in paid["Slip"] and paid["CardNumber"] == "411111******1111"
        _, again = await s.post("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "k1", "Amount": 150.25,
                                             "ReceiptNumber": "26"})
        assert again == paid
        status, conflict = await s.post("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "k1",
                                                     "Amount": "150.26", "ReceiptNumber": "26"})
        assert status == 200 and conflict["Status"] == 2 and conflict["Field"] == "IdCommand"
        _, returned = await s.post("/Execute", {"Command": "ReturnPaymentByPaymentCard", "IdCommand": "k2",
                                                "Amount": 50, "UniversalID": paid["UniversalID"]})
        assert returned["Status"] == 0 and returned["Amount"] == 50.0
        _, second = await s.post("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "k3", "Amount": "10,50"})
        _, cancelled = await s.post("/Execute", {"Command": "CancelPaymentByPaymentCard", "IdCommand": "k4",
                                                 "Amount": 10.5, "UniversalID": second["UniversalID"]})
        assert cancelled["Status"] == 0
        _, report = await s.post("/Execute", {"Command": "TerminalReport", "IdCommand": "k5", "Detailed": False})
        assert report["Status"] == 0 and report["Slip"]
        _, settled = await s.post("/Execute", {"Command": "Settlement", "IdCommand": "k6", "Amount": 0})
        assert settled["Status"] == 0 and "СВЕРКА ИТОГОВ" in settled["Slip"]
        totals = settled["Totals"]
        assert (totals["sale_count"], totals["sale_amount"]) == (1, 15025)
        assert (totals["refund_count"], totals["refund_amount"]) == (1, 5000)
        assert (totals["cancel_count"], totals["cancel_amount"]) == (1, 1050)


async def test_timeout_1_runs_asynchronously_and_get_rezult_tells_the_outcome():
    async with in_process(terminal_options={"config": TerminalConfig(card_delay=0.3)}) as s:
        _, started = await s.post("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "a1", "Amount": 99.9,
                                               "Timeout": 1})
        assert started["Status"] in (1, 4) and started["Slip"] == ""
        status, polled = await s.get_rezult("a1")
        assert status == 200 and polled["Status"] == 0 and polled["Command"] == "GetRezult"
        assert polled["Rezult"]["Command"] == "PayByPaymentCard" and polled["Rezult"]["Amount"] == 99.9
        assert polled["UniversalID"] == polled["Rezult"]["UniversalID"]
        status, missing = await s.post("/Execute", {"Command": "GetRezult", "IdCommand": "never"})
        assert status == 200 and missing["Status"] == 3


async def test_a_decline_is_status_2_with_the_host_code_and_the_decline_slip():
    async with in_process() as s:
        s.terminals["kassa1"].cards.present(DECLINED_PAN)
        status, body = await s.post("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "d1", "Amount": 25})
        assert status == 200 and body["Status"] == 2
        assert "116" in body["Error"] and "НЕДОСТАТОЧНО СРЕДСТВ" in body["Error"]
        assert "ОТКАЗ" in body["Slip"] and body["UniversalID"] == ""


async def test_num_device_picks_the_terminal_and_0_the_first_idle_one():
    options = {"config": TerminalConfig(card_delay=0.3)}
    async with in_process(("kassa1", "kassa2"), terminal_options=options) as s:
        _, one = await s.post("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "n1", "Amount": 1,
                                           "NumDevice": 1, "Timeout": 1})
        _, two = await s.post("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "n2", "Amount": 2,
                                           "NumDevice": 0, "Timeout": 1})
        assert (one["NumDevice"], two["NumDevice"]) == (1, 2)  # device 1 is busy: 0 chose the idle one
        for command_id in ("n1", "n2"):
            _, polled = await s.get_rezult(command_id)
            assert polled["Status"] == 0
        _, terminals = await s.get("/v1/terminals")
        assert [t["state"] for t in terminals["terminals"]] == ["idle", "idle"]


async def test_print_slip_on_terminal_and_transaction_details():
    async with in_process() as s:
        _, answer = await s.post("/Execute", {"Command": "PrintSlipOnTerminal", "IdCommand": "p1"})
        assert answer["Status"] == 0 and answer["PrintSlipOnTerminal"] is False
        # Its IdCommand is not checked (nothing is stored), so it is echoed masked: never a card number.
        _, answer = await s.post("/Execute", {"Command": "PrintSlipOnTerminal", "IdCommand": "4111111111111111"})
        assert answer["Status"] == 0 and answer["IdCommand"] == "411111******1111"
        _, paid = await s.post("/Execute", {"Command": "PayByPaymentCard", "IdCommand": "p2", "Amount": 3})
        _, details = await s.post("/Execute", {"Command": "TransactionDetails", "IdCommand": "p3",
                                               "UniversalID": paid["UniversalID"]})
        assert details["Status"] == 0 and details["Slip"] == paid["Slip"]
        _, copy = await s.post("/Execute", {"Command": "TransactionDetails", "IdCommand": "p4"})
        assert copy["Status"] == 0 and "КОПИЯ" in copy["Slip"]


async def test_without_id_command_a_payment_runs_with_a_warning():
    async with in_process() as s:
        _, paid = await s.post("/Execute", {"Command": "PayByPaymentCard", "Amount": 5})
        assert paid["Status"] == 0 and paid["IdCommand"].startswith("srv-") and "IdCommand" in paid["Warning"]
