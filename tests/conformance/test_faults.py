"""A line fault at every byte of a sale, both directions, for every protocol: never a hang, never a
second charge, and a lost outcome is always recovered.

For each protocol the bytes of a clean sale are counted per direction (``tx``: ECR -> terminal,
``rx``: terminal -> ECR). Then, for every position N and each fault (drop the byte, corrupt it),
a fresh ECR/virtual-terminal pair runs the sale with that one fault on the ECR's device. Each run
must end, within the configured timers, in

- a result that is approved with exactly one charge in the host's batch, or
- a typed :class:`LinkError`; then ``recover()`` must leave no charge for that sale and nothing
  unresolved in the ECR journal.

The runs are independent (own ``virtual://`` name, journals, terminal, host), so those of one
group run concurrently: most of their time is spent waiting for link timers.

Timers: ACK 0.2 s, packet 1.0 s. The packet (result) timer must exceed Arcus2's turn limit
(3 x T1 = 0.6 s here), as it does with the real defaults (T1 2 s, result timer 120 s): with 0.5 s an
ECR whose turn-ending EOT was lost gives up before the terminal may take its turn.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import defaultdict
from datetime import datetime

import pytest

from posbridge import protocols
from posbridge.emulator.terminal import TerminalConfig
from posbridge.testing import TerminalLink
from posbridge.protocols.common.errors import LinkError

TIMERS = {"ack_timeout": 0.2, "packet_timeout": 1.0}
AMOUNT = 100_00
FIXED_NOW = datetime(2026, 11, 22, 12, 30, 0)
# An exchange may take: a few ACK timers (resends), a packet timer, plus scheduling lag of the
# concurrent runs on a loaded 2-core machine.
EXCHANGE_LIMIT = 2 * TIMERS["packet_timeout"] + 3 * TIMERS["ack_timeout"] + 1.0
HANG_LIMIT = 15.0  # a run still going after this is a hang (reported with its position)
CONCURRENCY = 32  # runs mostly wait for timers; with small GC pauses the loop lag stays < ~80 ms
NEVER = "disconnect@100000000"  # a plan that counts positions and never fires

_sale_sizes: dict[str, dict[str, int]] = {}


def make_link(protocol: str, faults: str) -> TerminalLink:
    return TerminalLink(
        protocol, client_faults=faults,
        client_options={"timers": TIMERS, "clock": lambda: FIXED_NOW},
        config=TerminalConfig(timers=TIMERS), clock=lambda: FIXED_NOW)


async def sale_sizes(protocol: str) -> dict[str, int]:
    """Bytes per direction of a clean sale, counted by the fault layer (cached per protocol)."""
    if protocol not in _sale_sizes:
        link = make_link(protocol, NEVER)
        async with link:
            assert (await link.client.sale(AMOUNT)).approved
            await asyncio.sleep(0.05)  # the ECR's closing bytes (ACK, EOT) go out after the result
        _sale_sizes[protocol] = dict(link.client_device.positions)  # type: ignore[union-attr]
    return _sale_sizes[protocol]


async def run_one(protocol: str, spec: str) -> tuple[str, str]:
    """Run a sale with fault ``spec``; returns (verdict, detail). Verdicts starting "bad" fail."""
    link = make_link(protocol, spec)
    try:
        return await check_sale(link)
    finally:
        client = getattr(link, "client", None)
        if client is not None:
            client.journal.close()
        link.terminal.journal.close()


async def check_sale(link: TerminalLink) -> tuple[str, str]:
    async with link:
        started = time.monotonic()
        try:
            result = await link.client.sale(AMOUNT)
        except LinkError as error:
            elapsed = time.monotonic() - started
            if elapsed > EXCHANGE_LIMIT:
                return "bad: slow error", f"{error!r} after {elapsed:.2f} s"
            totals = link.terminal.host.totals()
            if totals.sale_count > 1 or totals.sale_amount > AMOUNT:
                return "bad: second charge", f"{totals} before recover"
            try:
                await link.client.recover()
            except LinkError as again:
                totals = link.terminal.host.totals()
                return "bad: recover failed", f"{error.reason}, then recover() raised {again!r}; {totals}"
            totals = link.terminal.host.totals()
            if totals.sale_amount:
                return "bad: charge left", f"after recover(): {totals}"
            if link.client.journal.ecr_unresolved(link.client.journal_key):
                return "bad: unresolved", "the journal still holds the sale after recover()"
            return f"error {error.reason}, recovered", ""
        elapsed = time.monotonic() - started
        totals = link.terminal.host.totals()
        if not result.approved:
            return "bad: not approved", f"{result.status} {result.host_code}"
        if (totals.sale_count, totals.sale_amount) != (1, AMOUNT):
            return "bad: wrong charge", f"{totals}"
        if elapsed > EXCHANGE_LIMIT:
            return "bad: slow approval", f"{elapsed:.2f} s"
        return "approved", ""


class SmallGcPauses:
    """Collect cyclic garbage often, in small steps, instead of in rare long pauses.

    Every run leaves a few hundred objects in reference cycles (the terminal's state machine).
    Left to the automatic collector they pile up until a full collection stalls the event loop
    for ~150 ms: longer than an ACK timer minus a round trip, so timers of healthy exchanges would
    expire. Collecting every ``every`` runs keeps each pause to a few milliseconds.
    """

    def __init__(self, every: int = 16) -> None:
        self.every = every
        self.finished = 0

    def __enter__(self) -> SmallGcPauses:
        gc.collect()
        gc.freeze()  # what exists now (modules, tables) is not scanned again
        gc.disable()
        return self

    def run_finished(self) -> None:
        self.finished += 1
        if self.finished % self.every == 0:
            gc.collect()

    def __exit__(self, *exc: object) -> None:
        gc.enable()
        gc.unfreeze()
        gc.collect()


async def run_guarded(protocol: str, spec: str, gate: asyncio.Semaphore, gc_steps: SmallGcPauses) -> tuple[str, str]:
    async with gate:
        try:
            return await asyncio.wait_for(run_one(protocol, spec), HANG_LIMIT)
        except (asyncio.TimeoutError, TimeoutError):
            return "bad: hang", f"no outcome within {HANG_LIMIT:g} s"
        finally:
            gc_steps.run_finished()


GROUPS = [(p, d, k) for p in protocols.names() for d in ("tx", "rx") for k in ("drop", "corrupt")]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("protocol, direction, fault", GROUPS, ids=["-".join(g) for g in GROUPS])
async def test_a_fault_at_every_byte_of_a_sale(protocol: str, direction: str, fault: str) -> None:
    size = (await sale_sizes(protocol))[direction]
    assert size > 10, f"a sale moved only {size} bytes {direction}: the count is wrong"
    gate = asyncio.Semaphore(CONCURRENCY)
    specs = [f"{direction}:{fault}@{position}" for position in range(size)]
    with SmallGcPauses() as gc_steps:
        outcomes = await asyncio.gather(*(run_guarded(protocol, spec, gate, gc_steps) for spec in specs))
    by_verdict: dict[str, list[str]] = defaultdict(list)
    for spec, (verdict, detail) in zip(specs, outcomes):
        by_verdict[verdict].append(f"{spec} {detail}".strip())
    bad = {v: cases for v, cases in by_verdict.items() if v.startswith("bad")}
    assert not bad, "\n".join(f"{v} ({len(c)} of {size}): " + "; ".join(c[:5]) for v, c in bad.items())
    assert by_verdict.get("approved"), "not one sale went through: the faults are not what they seem"


@pytest.mark.parametrize("transport", ["virtual", "pty", "tcp", "usb"])
async def test_either_side_can_be_put_in_a_fault_layer_over_every_transport(transport: str) -> None:
    # The terminal's answer is damaged once (the ECR NAKs, the terminal resends); the ECR's request
    # travels in 7-byte pieces. A sale still goes through, once.
    protocol = protocols.names()[0]
    link = TerminalLink(protocol, transport=transport, terminal_faults="tx:corrupt@5",
                        client_faults="tx:split=7", client_options={"timers": TIMERS},
                        config=TerminalConfig(timers=TIMERS))
    async with link:
        assert (await link.client.sale(AMOUNT)).approved
        assert link.terminal.host.totals().sale_count == 1
        assert link.terminal_device.injected_kinds() == ["tx:corrupt@5"]  # type: ignore[union-attr]
        assert link.client_device is not None and link.client_device.positions["tx"] > 7  # type: ignore[attr-defined]
