"""The virtual terminal never lies (issue 9): one answer per request, to the exchange that asked.

The recovery race, two registers on one slow terminal, a register that gives up on its exchange,
INPAS's EOT during the card wait, and the ACK before the work."""

from __future__ import annotations

import asyncio
import threading

import pytest

from posbridge.devices import open_device
from posbridge.emulator.host import HostConfig
from posbridge.journal import Journal
from posbridge.model import Operation, Result, Status
from posbridge.emulator.terminal import TerminalConfig, VirtualTerminal
from posbridge.protocols.common.errors import LinkError
from posbridge.protocols.inpas.fields import Message
from posbridge.protocols.inpas.frame import FrameScanner, FrameToken, encode_frame

from .terminal_support import PROTOCOLS, TERMINAL_ID, Register, legitimate_sale, request, serving

FAST_ECR = {"ack_timeout": 3.0, "packet_timeout": 5.0}



def slow_terminal(protocol: str, latency: float, **config: object) -> VirtualTerminal:
    settings = {"progress_interval": 0.1, "idle_timeout": 0.3, **config}
    return VirtualTerminal(protocol, config=TerminalConfig(**settings),  # type: ignore[arg-type]
                           host_config=HostConfig(latency=latency), journal=Journal())


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_recovery_race_a_reversal_after_a_dead_sale_is_answered_as_a_reversal(protocol: str) -> None:
    """The sale's ECR dies while the host thinks; at once a new connection sends the emergency
    reversal of that sale (same STAN). Before issue 9 the reversal got the sale's approval."""
    terminal = slow_terminal(protocol, latency=0.6)
    sale = request(Operation.SALE, 999_00, "41")
    async with serving(terminal) as port:
        dying = await Register(protocol, port, FAST_ECR).open()
        dying.send(sale)
        await dying.wait_progress()  # the terminal has the sale and is at the host
        await dying.close()  # the cash register crashes
        async with Register(protocol, port, FAST_ECR) as recovery:
            recovery.send(sale.with_changes(operation=Operation.EMERGENCY_REVERSAL,
                                            original_operation=Operation.SALE))
            answer = await recovery.outcome()
        assert isinstance(answer, Result), answer
        # Its own answer: the host's "reversal processed", not the sale's plain approval.
        assert answer.operation is Operation.EMERGENCY_REVERSAL and answer.approved
        assert answer.host_code == "400" or answer.response_code == "400", answer
        assert answer.transaction_id in (None, "41")
        async with Register(protocol, port, FAST_ECR) as closing:
            closing.send(request(Operation.SETTLEMENT, None, "42"))
            settlement = await closing.outcome()
    assert isinstance(settlement, Result) and settlement.totals is not None
    assert (settlement.totals.sale_count, settlement.totals.sale_amount) == (0, 0)  # nothing charged
    undelivered = terminal.journal.ledger.undelivered_operations(TERMINAL_ID)
    assert [(op.operation, op.transaction_id, op.amount) for op in undelivered] == [(Operation.SALE, "41", 999_00)]
    assert [(r.operation, r.amount) for r in terminal.undelivered] == [(Operation.SALE, 999_00)]
    delivered = [op for op in terminal.journal.ledger.operations(TERMINAL_ID) if op.result_delivered]
    assert {op.operation for op in delivered} == {Operation.EMERGENCY_REVERSAL, Operation.SETTLEMENT}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("stans", [("1", "2"), ("7", "7")], ids=["own-numbers", "same-number"])
async def test_two_registers_on_one_slow_terminal_never_get_each_others_answer(
        protocol: str, stans: tuple[str, str]) -> None:
    """Register A's 999.00 sale is at the slow host when register B sends its 7.00 sale on a
    second connection. Each gets its own answer or a typed refusal/timeout, never the other's."""
    terminal = slow_terminal(protocol, latency=1.0)
    async with serving(terminal) as port:
        a = await Register(protocol, port, FAST_ECR).open()
        b = await Register(protocol, port, FAST_ECR).open()
        try:
            a.send(request(Operation.SALE, 999_00, stans[0]))
            await a.wait_progress()
            b.send(request(Operation.SALE, 7_00, stans[1]))
            first, second = await asyncio.gather(a.outcome(), b.outcome())
        finally:
            await a.close()
            await b.close()
    assert isinstance(first, Result) and first.approved and first.amount == 999_00
    if isinstance(second, LinkError):
        return  # a typed timeout is an honest answer
    assert second.amount != 999_00, f"register B got register A's answer: {second}"
    if stans[0] == stans[1]:  # the same transaction number in one batch: refused, never A's outcome
        assert second.status is Status.DECLINED and second.host_code == "9016", second
    else:
        assert second.approved and second.amount == 7_00, second
    assert terminal.host.totals().sale_amount == 999_00 + (7_00 if stans[0] != stans[1] else 0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_register_that_gives_up_and_asks_again_gets_the_answer_to_its_new_request(protocol: str) -> None:
    """Same connection: the register gives up on its 999.00 sale while the host thinks and sends a
    7.00 sale. The first result is never sent to it (kept as undelivered); the second is answered."""
    terminal = slow_terminal(protocol, latency=0.8)
    async with serving(terminal) as port:
        async with Register(protocol, port, FAST_ECR) as register:
            register.send(request(Operation.SALE, 999_00, "11"))
            await register.wait_progress()
            register.give_up()
            register.send(request(Operation.SALE, 7_00, "12"))
            answer = await register.outcome()
    assert isinstance(answer, Result) and answer.approved and answer.amount == 7_00, answer
    assert answer.transaction_id in (None, "12")
    assert [(r.amount, r.transaction_id) for r in terminal.undelivered] == [(999_00, "11")]
    (kept,) = terminal.journal.ledger.undelivered_operations(TERMINAL_ID)
    assert (kept.transaction_id, kept.result_delivered) == ("11", False)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_request_given_up_while_the_card_is_awaited_is_aborted_and_charges_nothing(protocol: str) -> None:
    terminal = slow_terminal(protocol, latency=0.0, card_delay=1.0)
    async with serving(terminal) as port:
        async with Register(protocol, port, FAST_ECR) as register:
            register.send(request(Operation.SALE, 500_00, "21"))
            await register.wait_progress()  # "insert the card"
            register.give_up()
            register.send(request(Operation.TEST_CONNECTION, None, "22"))
            answer = await register.outcome()
    assert isinstance(answer, Result) and answer.operation is Operation.TEST_CONNECTION and answer.approved
    rows = terminal.journal.ledger.operations(TERMINAL_ID)
    sale = next(op for op in rows if op.operation is Operation.SALE)
    assert (sale.status, sale.code, sale.result_delivered) == (Status.ABORTED, "998", False)
    assert terminal.host.totals().sale_amount == 0


def inpas_frames(data: bytes, scanner: FrameScanner) -> list[Message]:
    return [Message.decode_body(t.body) for t in scanner.feed(data) if isinstance(t, FrameToken)]


async def test_inpas_eot_during_the_card_wait_ends_the_exchange_silently_and_is_journaled_aborted() -> None:
    """INPAS's own library sends EOT and expects nothing more (it crashes on a late answer)."""
    terminal = slow_terminal("inpas", latency=0.0, card_delay=0.6)
    async with serving(terminal) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode_frame(Message({0: "15000", 4: "643", 25: "1", 26: "31"}).encode_body()))
        scanner = FrameScanner()
        seen: list[Message] = []
        while not seen:  # the ACK, then a WAIT ("insert the card")
            seen += inpas_frames(await asyncio.wait_for(reader.read(4096), 5), scanner)
        writer.write(b"\x06\x04")  # ACK the WAIT, then EOT: the cashier gave up
        after = b""
        try:
            while True:
                after += await asyncio.wait_for(reader.read(4096), 1.2)
        except asyncio.TimeoutError:
            pass
        finals = [m for m in inpas_frames(after, scanner) if m.fields.get(25) != "21"]
        assert finals == [], f"answered after the ECR's EOT: {finals}"
        writer.close()
        await legitimate_sale(port, "inpas")
    (aborted,) = [op for op in terminal.journal.ledger.operations(TERMINAL_ID) if op.transaction_id == "31"]
    assert (aborted.status, aborted.code, aborted.result_delivered) == (Status.ABORTED, "998", False)
    assert terminal.host.totals().sale_amount == 10_00  # only the legitimate sale


async def test_arcus_abort_during_the_card_wait_is_answered_998() -> None:
    """Arcus's ``A`` is not INPAS's EOT: the terminal answers it (arcus2.md, section 4)."""
    terminal = slow_terminal("arcus2", latency=0.0, card_delay=2.0)
    async with serving(terminal) as port:
        async with Register("arcus2", port, FAST_ECR) as register:
            register.send(request(Operation.SALE, 150_00, "51"))
            await register.wait_progress()
            register.pump.act(register.pump.session.abort)  # type: ignore[union-attr]
            answer = await register.outcome()
    assert isinstance(answer, Result) and answer.status is Status.ABORTED and answer.response_code == "998"
    (row,) = terminal.journal.ledger.operations(TERMINAL_ID)
    assert (row.status, row.code, row.result_delivered) == (Status.ABORTED, "998", True)


def _settlement_frame() -> bytes:
    return encode_frame(Message({25: "59", 26: "1", 27: TERMINAL_ID}).encode_body())


async def test_the_ack_of_a_settlement_leaves_while_the_host_still_decides() -> None:
    """The host decision runs off the event loop: the ACK is on the line before it ends."""
    name = "virtual://ack-first-settlement"
    terminal = VirtualTerminal("inpas", journal=Journal())
    release = threading.Event()
    original = terminal.host.process

    def slow_process(req, card=None):  # type: ignore[no-untyped-def]
        assert release.wait(5), "the ECR never saw the ACK while the host decided"
        return original(req, card)

    terminal.host.process = slow_process  # type: ignore[method-assign]
    end = await open_device(name)
    ecr = await open_device(name)
    task = asyncio.get_running_loop().create_task(terminal.serve(end))
    try:
        await ecr.write(_settlement_frame())
        assert await asyncio.wait_for(ecr.read(1), 2) == b"\x06"
        release.set()
        scanner = FrameScanner()
        answer: list[Message] = []
        while not answer:
            answer = [m for m in inpas_frames(await asyncio.wait_for(ecr.read(), 5), scanner)
                      if m.fields.get(25) == "59"]
        assert answer[0].fields.get(39) == "1"
    finally:
        release.set()
        await ecr.close()
        await asyncio.wait_for(task, 5)
        await end.close()


async def test_the_ack_of_a_sale_is_written_before_the_host_is_asked() -> None:
    name = "virtual://ack-first-sale"
    terminal = VirtualTerminal("inpas", journal=Journal())
    end = await open_device(name)
    ecr = await open_device(name)
    seen_before: list[int] = []
    original = terminal.host.process

    def watching(req, card=None):  # type: ignore[no-untyped-def]
        seen_before.append(len(ecr._inbox))  # type: ignore[attr-defined]  # bytes already at the ECR
        return original(req, card)

    terminal.host.process = watching  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(terminal.serve(end))
    try:
        await ecr.write(encode_frame(Message({0: "100", 4: "643", 25: "1", 26: "3"}).encode_body()))
        for _ in range(200):
            if seen_before:
                break
            await asyncio.sleep(0.01)
        assert seen_before and seen_before[0] >= 1  # the ACK was on its way before the decision
    finally:
        await ecr.close()
        await asyncio.wait_for(task, 5)
        await end.close()
