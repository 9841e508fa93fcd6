"""Does an answer belong to its request? The ECR's check before it believes a terminal.

A terminal's final answer is taken as the outcome of the request sent only when it names the same
operation, the same transaction number, the same amount (for money that moved), the same currency
and terminal, and carries what such an answer must carry (a settlement's totals). Anything else is
an :class:`~posbridge.protocols.common.errors.AnswerMismatch`: the outcome is unknown and recovery resolves
it. A false "approved" costs a merchant the goods; a false "declined" makes the cashier charge the
customer again: so declines are checked as strictly as approvals.
"""

from __future__ import annotations

from posbridge.model import Operation, Request, Result, Status

__all__ = ["answer_problems"]

# Results that say money moved: their amount must be the one asked for.
_MONEY_MOVED = (Status.APPROVED, Status.APPROVED_OFFLINE, Status.CONDITIONAL)


def answer_problems(request: Request, result: Result) -> list[str]:
    """What does not match between ``request`` (as sent) and ``result``; empty when it matches."""
    problems: list[str] = []
    op = request.operation
    if result.operation is not op:
        problems.append(f"answer is for {result.operation.value}, the request was {op.value}")
    if request.transaction_id and op is not Operation.TEST_CONNECTION:
        if not result.transaction_id:
            problems.append(f"answer carries no transaction number (sent {request.transaction_id})")
        elif result.transaction_id.lstrip("0") != request.transaction_id.lstrip("0"):
            problems.append(f"answer is for transaction {result.transaction_id}, "
                            f"the request was {request.transaction_id}")
    if op.moves_money:
        if result.status in _MONEY_MOVED and result.amount is None:
            problems.append(f"{result.status.value} answer carries no amount (sent {request.amount})")
        elif result.amount is not None and result.amount != request.amount:
            problems.append(f"answer amount {result.amount} differs from the request's {request.amount}")
        if result.currency is not None and result.currency != request.currency:
            problems.append(f"answer currency {result.currency} differs from the request's {request.currency}")
    if request.terminal_id and result.terminal_id and result.terminal_id != request.terminal_id:
        problems.append(f"answer is from terminal {result.terminal_id}, the request was for {request.terminal_id}")
    if op is Operation.SETTLEMENT and result.status in _MONEY_MOVED and result.totals is None:
        problems.append("settlement answer carries no totals")
    return problems
