"""The fault layer: the spec grammar, and each fault's effect on a real device pair."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posbridge.devices import (
    Device,
    DeviceClosed,
    DeviceError,
    FaultPlan,
    FaultSpecError,
    FaultyDevice,
    open_device,
    open_pair,
)
from posbridge.devices.faults import DirectionFaults, InjectedFault

from ._util import read_exactly

DATA = bytes(range(40))


class Recorder(Device):
    """A device that records every write call and reads from a queue the test fills."""

    def __init__(self) -> None:
        self.url = "recorder://"
        self.writes: list[bytes] = []
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()

    async def read(self, max_bytes: int = 4096) -> bytes:
        if self._closed:
            raise DeviceClosed("closed")
        return await self.incoming.get()

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise DeviceClosed("closed")
        self.writes.append(bytes(data))

    def discard_input(self) -> int:
        n = 0
        while not self.incoming.empty():
            n += len(self.incoming.get_nowait())
        return n

    async def close(self) -> None:
        self._closed = True


# --- the grammar ---------------------------------------------------------------------------------
def test_the_example_spec_parses_into_both_directions() -> None:
    plan = FaultPlan.parse("tx:drop@12,rx:corrupt@7,split=3,delay=0.05,silence=2@40,disconnect@100,seed=7")
    assert plan.seed == 7
    assert plan.tx.drop_at == {12} and plan.rx.drop_at == frozenset()
    assert plan.rx.corrupt_at == ((7, 0xFF),) and plan.tx.corrupt_at == ()
    for side in (plan.tx, plan.rx):
        assert side.split == 3 and side.delay == 0.05 and side.disconnect_at == 100
        assert side.silence == ((40, 2.0, True),)  # no prefix: the whole line goes silent


@pytest.mark.parametrize("spec", [
    "", "tx:drop@0", "drop@3,drop@9", "rx:drop=0.01", "drop=2%", "corrupt=0x20@5", "tx:corrupt=0.5",
    "tx:silence=1@5,rx:silence=1@5", "silence=0.5@3", "rx:split=1", "tx:delay=0.2", "disconnect@0",
    "tx:drop@1,rx:drop@2,seed=99", " tx : drop @ 4 , rx:corrupt = 3 @ 6 ",
])
def test_specs_round_trip_through_their_canonical_text(spec: str) -> None:
    plan = FaultPlan.parse(spec)
    assert FaultPlan.parse(plan.spec()) == plan
    assert str(plan) == plan.spec()


positions = st.integers(0, 10_000)
seconds = st.floats(0, 100, allow_nan=False, allow_infinity=False)
directions = st.builds(
    DirectionFaults,
    drop_at=st.frozensets(positions, max_size=3),
    drop_probability=st.one_of(st.just(0.0), st.floats(1e-6, 1)),
    corrupt_at=st.dictionaries(positions, st.integers(1, 255), max_size=3).map(lambda d: tuple(sorted(d.items()))),
    split=st.one_of(st.none(), st.integers(1, 64)),
    delay=seconds,
    silence=st.dictionaries(positions, seconds, max_size=2).map(
        lambda d: tuple((p, s, False) for p, s in sorted(d.items()))),
    disconnect_at=st.one_of(st.none(), positions),
)


@settings(max_examples=200, deadline=None)
@given(tx=directions, rx=directions, seed=st.integers(0, 2**32))
def test_any_plan_round_trips_through_its_spec(tx: DirectionFaults, rx: DirectionFaults, seed: int) -> None:
    plan = FaultPlan(tx=tx, rx=rx, seed=seed)
    assert FaultPlan.parse(plan.spec()) == plan


def test_an_empty_plan_is_false_and_a_real_one_true() -> None:
    assert not FaultPlan.parse("") and not FaultPlan()
    assert FaultPlan.parse("rx:drop@1") and not FaultPlan.parse("seed=3")


@pytest.mark.parametrize("spec, message", [
    ("bogus@3", "unknown fault 'bogus'"),
    ("xx:drop@1", "direction must be 'tx'"),
    ("tx:drop", "expected drop@POSITION or drop=PROBABILITY"),
    ("drop@-1", "the position must be >= 0"),
    ("drop@abc", "the position must be an integer"),
    ("drop=2", "a probability must be in (0, 1]"),
    ("drop=often", "expected a probability"),
    ("corrupt=0x100@1", "the XOR mask must be 1..255"),
    ("corrupt", "expected corrupt@POSITION"),
    ("split=0", "the piece size must be >= 1"),
    ("split@3", "expected split=BYTES"),
    ("delay=soon", "expected seconds"),
    ("delay=-1", "seconds must be a finite number >= 0"),
    ("silence@3", "expected silence=SECONDS@POSITION"),
    ("disconnect=3", "expected disconnect@POSITION"),
    ("split=2,split=3", "split given twice for tx"),
    ("seed=1,seed=2", "seed given twice"),
    ("tx:seed=1", "expected seed=INT"),
    ("corrupt@3,corrupt=1@3", "corrupted twice"),
])
def test_bad_specs_say_what_was_expected(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError) as info:
        FaultPlan.parse(spec)
    assert message in str(info.value)
    assert isinstance(info.value, DeviceError) and isinstance(info.value, ValueError)


def test_plans_can_be_built_without_the_text() -> None:
    plan = FaultPlan(rx=DirectionFaults(drop_at=frozenset({3}), split=2))
    assert plan.spec() == "rx:drop@3,rx:split=2"


# --- the faults on a real pair -------------------------------------------------------------------
async def faulty_pair(spec: str) -> tuple[FaultyDevice, Device]:
    a, b = await open_pair()
    return FaultyDevice(a, spec), b


async def test_drop_and_corrupt_hit_the_named_positions_in_each_direction() -> None:
    dev, peer = await faulty_pair("tx:drop@2,tx:corrupt=0x01@4,rx:drop@0,rx:corrupt@39")
    await dev.write(DATA[:10])
    await dev.write(DATA[10:])
    expected_tx = bytearray(DATA)
    expected_tx[4] ^= 0x01
    del expected_tx[2]
    assert await read_exactly(peer, 39) == bytes(expected_tx)
    await peer.write(DATA)
    expected_rx = bytearray(DATA[1:])
    expected_rx[-1] ^= 0xFF
    assert await read_exactly(dev, 39) == bytes(expected_rx)
    assert dev.injected_kinds() == ["tx:drop@2", "tx:corrupt@4", "rx:drop@0", "rx:corrupt@39"]
    assert dev.positions == {"tx": 40, "rx": 40}
    await dev.close()
    await peer.close()


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(1, 39), max_size=8, unique=True))
def test_a_fault_hits_the_same_byte_however_the_stream_is_chunked(cuts: list[int]) -> None:
    async def run() -> tuple[bytes, list[InjectedFault]]:
        dev, peer = await faulty_pair("tx:drop@5,tx:corrupt@17,tx:drop=0.2,seed=4")
        bounds = [0, *sorted(cuts), len(DATA)]
        for lo, hi in itertools.pairwise(bounds):
            await dev.write(DATA[lo:hi])
        await dev.close()
        got = bytearray()
        try:
            while True:
                got += await peer.read()
        except DeviceClosed:
            pass
        await peer.close()
        return bytes(got), list(dev.injected)

    whole = asyncio.run(_reference())
    assert asyncio.run(run()) == whole


async def _reference() -> tuple[bytes, list[InjectedFault]]:
    dev, peer = await faulty_pair("tx:drop@5,tx:corrupt@17,tx:drop=0.2,seed=4")
    await dev.write(DATA)
    await dev.close()
    got = bytearray()
    try:
        while True:
            got += await peer.read()
    except DeviceClosed:
        pass
    await peer.close()
    return bytes(got), list(dev.injected)


async def test_probabilistic_faults_are_seeded() -> None:
    async def run(seed: int) -> list[str]:
        dev, peer = await faulty_pair(f"drop=0.1,corrupt=0.1,seed={seed}")
        await dev.write(bytes(500))
        await peer.write(bytes(500))
        await asyncio.sleep(0)
        dev.discard_input()
        await dev.close()
        await peer.close()
        return dev.injected_kinds()

    first, again, other = await run(1), await run(1), await run(2)
    assert first == again and first != other
    assert 20 < sum(k.startswith("tx:drop") for k in first) < 100  # about 10 % of 500


async def test_split_passes_writes_on_in_pieces() -> None:
    inner = Recorder()
    dev = FaultyDevice(inner, "tx:split=3")
    await dev.write(b"abcdefgh")
    assert inner.writes == [b"abc", b"def", b"gh"]


async def test_rx_split_returns_at_most_that_many_bytes_per_read() -> None:
    dev, peer = await faulty_pair("rx:split=4")
    await peer.write(DATA)
    sizes = []
    got = b""
    while len(got) < len(DATA):
        chunk = await dev.read()
        sizes.append(len(chunk))
        got += chunk
    assert got == DATA and max(sizes) == 4


async def test_delay_holds_writes_and_reads() -> None:
    dev, peer = await faulty_pair("delay=0.1")
    start = time.monotonic()
    await dev.write(b"x")
    assert time.monotonic() - start >= 0.09
    await peer.write(b"y")
    start = time.monotonic()
    assert await dev.read() == b"y"
    assert time.monotonic() - start >= 0.09


async def test_a_cancelled_delayed_read_loses_nothing() -> None:
    dev, peer = await faulty_pair("rx:delay=0.2")
    await peer.write(b"kept")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(dev.read(), 0.05)  # the bytes arrived but are still held
    assert await asyncio.wait_for(dev.read(), 1) == b"kept"


async def test_silence_swallows_bytes_for_a_while_then_the_line_talks_again() -> None:
    now = [100.0]
    a, peer = await open_pair()
    dev = FaultyDevice(a, "tx:silence=5@3", clock=lambda: now[0])
    await dev.write(b"abcdef")  # a, b, c pass; from d on: silent until t=105
    now[0] = 104.9
    await dev.write(b"gh")
    now[0] = 105.0
    await dev.write(b"ij")
    assert await read_exactly(peer, 5) == b"abcij"
    assert dev.injected_kinds() == ["tx:silence@3"]


async def test_whole_line_silence_also_silences_the_other_direction() -> None:
    now = [0.0]
    a, peer = await open_pair()
    dev = FaultyDevice(a, "silence=1@2", clock=lambda: now[0])
    await dev.write(b"abc")  # tx position 2 silences the whole line
    assert await read_exactly(peer, 2) == b"ab"
    await peer.write(b"xyz")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(dev.read(), 0.05)  # swallowed: the line is silent
    now[0] = 2.0
    await peer.write(b"ok")
    assert await asyncio.wait_for(dev.read(), 1) == b"ok"


async def test_disconnect_on_write_sends_the_bytes_before_then_closes_the_line() -> None:
    dev, peer = await faulty_pair("tx:disconnect@5")
    await dev.write(b"abc")
    with pytest.raises(DeviceClosed, match="disconnect@5"):
        await dev.write(b"defgh")
    assert await read_exactly(peer, 5) == b"abcde"
    with pytest.raises(DeviceClosed):
        await asyncio.wait_for(peer.read(), 1)  # the peer sees the line drop
    with pytest.raises(DeviceClosed):
        await dev.write(b"more")
    with pytest.raises(DeviceClosed):
        await dev.read()


async def test_disconnect_on_read_returns_the_bytes_before_then_device_closed() -> None:
    dev, peer = await faulty_pair("rx:disconnect@4")
    await peer.write(b"abcdefg")
    assert await read_exactly(dev, 4) == b"abcd"
    with pytest.raises(DeviceClosed, match="rx:disconnect@4"):
        await asyncio.wait_for(dev.read(), 1)
    with pytest.raises(DeviceClosed):
        await peer.write(b"x")


async def test_discard_input_drops_held_bytes_too() -> None:
    dev, peer = await faulty_pair("rx:delay=10")
    await peer.write(b"abc")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(dev.read(), 0.05)
    await peer.write(b"de")
    await asyncio.sleep(0)
    assert dev.discard_input() == 5


async def test_open_device_takes_faults_as_argument_or_url_parameter() -> None:
    peer = await open_device("virtual://faults-url")
    dev = await open_device("virtual://faults-url?faults=tx:drop@0")
    assert isinstance(dev, FaultyDevice) and dev.url == "virtual://faults-url"
    await dev.write(b"xy")
    assert await peer.read() == b"y"
    await dev.close()
    await peer.close()
    peer = await open_device("virtual://faults-arg")
    dev = await open_device("virtual://faults-arg", faults="tx:corrupt=0x20@0")
    await dev.write(b"a")
    assert await peer.read() == b"A"
    await dev.close()
    await peer.close()
    plain = await open_device("virtual://faults-none", faults="")
    assert not isinstance(plain, FaultyDevice)  # no faults: no wrapper
    await plain.close()


@pytest.mark.parametrize("url, kwargs, message", [
    ("virtual://f1?faults=nonsense@1", {}, "unknown fault 'nonsense'"),
    ("virtual://f2?faults=tx:drop@1&faults=rx:drop@1", {}, "faults= given twice"),
    ("virtual://f3?faults=tx:drop@1", {"faults": "rx:drop@2"}, "both in the URL and as an argument"),
    ("virtual://f4", {"faults": 3}, "must be a FaultPlan or a spec string"),
])
async def test_bad_fault_options_fail_before_anything_is_opened(url: str, kwargs: dict, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        await open_device(url, **kwargs)
    # Nothing was left half-open: both ends of the name are still free.
    name = url.partition("?")[0]
    a, b = await open_device(name), await open_device(name)
    await a.close()
    await b.close()


async def test_faults_compose_with_tcp() -> None:
    listener = await open_device("tcp-listen://127.0.0.1:0")
    port = listener.port  # type: ignore[attr-defined]
    client = await open_device(f"tcp://127.0.0.1:{port}?faults=tx:drop@1,tx:split=1")
    try:
        await client.write(b"abc")
        assert await read_exactly(listener, 2) == b"ac"
    finally:
        await client.close()
        await listener.close()


async def test_a_disconnect_fault_on_a_listener_drops_that_peer_once_and_the_next_is_served() -> None:
    """Issue 9: ``--fault disconnect@N`` on tcp-listen stopped listening for good."""
    listener = await open_device("tcp-listen://127.0.0.1:0")
    dev = FaultyDevice(listener, "disconnect@3")
    try:
        assert dev.reconnects
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"abcdef")
        assert await asyncio.wait_for(dev.read(), 2) == b"abc"
        with pytest.raises(DeviceClosed):
            await asyncio.wait_for(dev.read(), 2)
        assert await asyncio.wait_for(reader.read(10), 2) == b""  # the peer saw the line drop
        _, second = await asyncio.open_connection("127.0.0.1", listener.port)
        second.write(b"0123456789")  # past position 3 of both directions: no second disconnect
        got = b""
        while len(got) < 10:
            got += await asyncio.wait_for(dev.read(), 2)
        assert got == b"0123456789"
        await dev.write(b"ok")  # the other direction reaches position 3 later: still connected
        await dev.write(b"still")
        assert dev.injected_kinds() == ["rx:disconnect@3"]
        writer.close()
        second.close()
    finally:
        await dev.close()
