"""``posbridge demo``: every kind of operation against the built-in virtual terminal, in-process.

The ECR client and the virtual terminal talk over an in-memory ``virtual://`` link, with the same
bytes a real terminal would exchange. Prints each result and its slip.
"""

from __future__ import annotations

import io
import uuid
from typing import TextIO

from posbridge.emulator.cards import Card
from posbridge.ecr.client import EcrClient
from posbridge.cli.formatting import format_result
from posbridge.model import Result
from posbridge.emulator.terminal import TerminalConfig, VirtualTerminal, running_terminal

DECLINED_CARD = "5432543254325430"  # host-rules: insufficient funds, code 116


async def run_demo(protocol: str = "inpas", out: TextIO | None = None) -> int:
    """Run the demo; returns 0 when every step gave the expected outcome."""
    out = out or io.StringIO()
    name = f"virtual://demo-{uuid.uuid4().hex[:8]}"
    terminal = VirtualTerminal(protocol, config=TerminalConfig(part_size=512))
    failures = shown = 0

    def show(title: str, result: Result, expect_approved: bool) -> None:
        nonlocal failures, shown
        ok = result.approved == expect_approved
        failures += not ok
        print(f"\n=== {title}{'' if ok else ' (UNEXPECTED OUTCOME)'}", file=out)
        print(format_result(result, cashier_slip=shown == 0), file=out)  # one cashier copy is enough
        shown += 1

    print(f"posbridge demo: ECR client <-> virtual terminal over {name} ({terminal.protocol.title})", file=out)
    async with running_terminal(terminal, name), EcrClient(name, protocol) as ecr:
        sale = await ecr.sale(150_00)
        show("Sale 150.00", sale, True)
        show("Refund 50.00 of that sale", await ecr.refund(50_00, rrn=sale.rrn or ""), True)
        second = await ecr.sale(200_00)
        show("Sale 200.00", second, True)
        show("Cancel of the 200.00 sale", await ecr.cancel(200_00, rrn=second.rrn or "",
                                                           auth_code=second.auth_code), True)
        hold = await ecr.preauth(1000_00)
        show("Pre-authorization 1000.00", hold, True)
        show("Partial completion 750.00 of the hold", await ecr.completion(750_00, rrn=hold.rrn or "",
                                                                           auth_code=hold.auth_code), True)
        terminal.cards.present(Card(DECLINED_CARD, "3012"))
        show("Sale 99.00 with a test card that has no funds", await ecr.sale(99_00), False)
        show("Settlement", await ecr.settlement(), True)
    print(f"\n{'all steps gave the expected outcome' if not failures else f'{failures} unexpected outcome(s)'}",
          file=out)
    return 0 if not failures else 1
