"""Protocol-neutral requests for every operation of the domain model, and the answers the kit's
terminal gives them: what every registered protocol must carry from one side to the other."""

from __future__ import annotations

from datetime import datetime

from posbridge.protocols.common.model import Operation, Request, Result, Slips, Status, Totals

RRN = "333109189729"
AUTH_CODE = "454583"
TERMINAL_ID = "00344224"
HOST_TIME = datetime(2026, 11, 22, 12, 30, 0)
ORIGINAL_TIME = datetime(2026, 11, 21, 18, 5, 0)
TOTALS = Totals(643, 3, 45_000, 1, 5_000, 1, 20_000)

#: One request per operation, as a cash register sends it (what each one needs filled in).
REQUESTS: dict[Operation, Request] = {
    Operation.SALE: Request(Operation.SALE, 15_000, 643, transaction_id="7", terminal_id=TERMINAL_ID),
    Operation.REFUND: Request(Operation.REFUND, 5_000, 643, transaction_id="8", rrn=RRN),
    Operation.CANCEL: Request(Operation.CANCEL, 15_000, 643, transaction_id="9", rrn=RRN, auth_code=AUTH_CODE,
                              original_operation=Operation.SALE),
    Operation.PREAUTH: Request(Operation.PREAUTH, 50_000, 643, transaction_id="10"),
    Operation.COMPLETION: Request(Operation.COMPLETION, 45_000, 643, transaction_id="11", rrn=RRN,
                                  auth_code=AUTH_CODE, original_amount=50_000),
    Operation.CANCEL_PREAUTH: Request(Operation.CANCEL_PREAUTH, 50_000, 643, transaction_id="12", rrn=RRN,
                                      original_operation=Operation.PREAUTH),
    Operation.EMERGENCY_REVERSAL: Request(Operation.EMERGENCY_REVERSAL, 15_000, 643, transaction_id="13",
                                          original_operation=Operation.SALE),
    Operation.SETTLEMENT: Request(Operation.SETTLEMENT, transaction_id="14"),
    Operation.SHORT_REPORT: Request(Operation.SHORT_REPORT, transaction_id="15"),
    Operation.FULL_REPORT: Request(Operation.FULL_REPORT, transaction_id="16"),
    Operation.SLIP_COPY: Request(Operation.SLIP_COPY, transaction_id="17"),
    Operation.TEST_CONNECTION: Request(Operation.TEST_CONNECTION, transaction_id="18"),
}
assert set(REQUESTS) == set(Operation), "every operation of the model needs a request here"
for _request in REQUESTS.values():
    _request.validated()

SALE = REQUESTS[Operation.SALE]


def approved(request: Request) -> Result:
    """The host's approval of ``request``, with everything a result of that operation carries."""
    slips = Slips(f"   ТЕСТ БАНК\n{request.operation.value.upper()}\nОДОБРЕНО", "КОПИЯ КАССИРА")
    result = Result(request.operation, Status.APPROVED, response_code="00", response_text="ОДОБРЕНО",
                    host_code="00", terminal_id=TERMINAL_ID, transaction_id=request.transaction_id, slips=slips)
    if request.operation.moves_money:
        result = result.with_changes(amount=request.amount, currency=request.currency, rrn=RRN,
                                     auth_code=AUTH_CODE, masked_pan="411111******1111", card_scheme="VISA")
    if request.operation is Operation.SETTLEMENT:
        result = result.with_changes(totals=TOTALS)
    if request.operation in (Operation.SHORT_REPORT, Operation.FULL_REPORT):
        report = "\n".join(f"СТРОКА ОТЧЕТА {i:03d}" for i in range(40))
        result = result.with_changes(slips=Slips(report))
    return result


def declined(request: Request) -> Result:
    """The host's refusal (insufficient funds), with the card it was read from."""
    return Result(request.operation, Status.DECLINED, response_code="51", response_text="НЕДОСТАТОЧНО СРЕДСТВ",
                  host_code="51", amount=request.amount, currency=request.currency if request.amount else None,
                  masked_pan="411111******1111", terminal_id=TERMINAL_ID, transaction_id=request.transaction_id,
                  slips=Slips("ОТКАЗ", "ОТКАЗ"))


def aborted(request: Request) -> Result:
    """The terminal's answer when the operation was aborted before the card was read."""
    return Result(request.operation, Status.ABORTED, response_code="998", response_text="ОПЕРАЦИЯ ПРЕРВАНА",
                  host_code="998", transaction_id=request.transaction_id)
