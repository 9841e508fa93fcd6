"""The kit, streams: every registered protocol's scanner cuts a byte stream into the same tokens
whether it is fed whole, in two halves, byte by byte or in random pieces; garbage never raises and
never makes it hold more than one frame."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protocols.kit.adapter import KitAdapter
from tests.protocols.kit.test_codec import KIT, garbage

Item = tuple[bytes, tuple[Any, ...]]


@st.composite
def stream_items(draw: st.DrawFn, adapter: KitAdapter) -> Item:
    """One piece of a stream and the token it must give: a frame, a damaged frame, a control byte
    or noise. A damaged frame's token carries its problem's offset within the frame."""
    kind = draw(st.sampled_from(["frame", "bad", "control", "noise"]))
    if kind == "control":
        byte = draw(st.sampled_from(adapter.control_bytes))
        return bytes([byte]), ("control", byte)
    if kind == "noise":
        data = draw(adapter.noise())
        return data, ("noise", data)
    fmt = draw(st.sampled_from(adapter.formats))
    body = draw(adapter.bodies().map(lambda b: b[:60]))
    frame = adapter.encode_frame(body, fmt)
    if kind == "bad":
        damaged, reason, offset = adapter.damage(frame, fmt)
        return damaged, ("bad", reason, offset)
    return frame, ("frame", fmt, body)


def merged(tokens: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Tokens with adjacent noise merged (a run of noise may come out in pieces across feeds)."""
    out: list[tuple[Any, ...]] = []
    for token in tokens:
        if token[0] == "noise" and out and out[-1][0] == "noise":
            out[-1] = ("noise", out[-1][1] + token[1])
        else:
            out.append(token)
    return out


def expected(items: list[Item]) -> list[tuple[Any, ...]]:
    """The tokens a stream of ``items`` gives: a damaged frame's offset made a stream offset."""
    out: list[tuple[Any, ...]] = []
    offset = 0
    for data, token in items:
        out.append(("bad", token[1], offset + token[2]) if token[0] == "bad" else token)
        offset += len(data)
    return merged(out)


def feed(adapter: KitAdapter, chunks: list[bytes]) -> tuple[list[tuple[Any, ...]], int]:
    """The tokens a new scanner gives for ``chunks`` (normalised, noise merged) and what it still holds."""
    scanner = adapter.scanner()
    tokens = [adapter.token(t) for chunk in chunks for t in scanner.feed(chunk)]
    return merged(tokens), scanner.pending


def chunkings(stream: bytes, cuts: list[int]) -> dict[str, list[bytes]]:
    bounds = [0, *sorted(cuts), len(stream)]
    half = len(stream) // 2
    return {
        "whole": [stream],
        "halves": [stream[:half], stream[half:]],
        "byte by byte": [stream[i: i + 1] for i in range(len(stream))],
        "random pieces": [stream[a:b] for a, b in zip(bounds, bounds[1:])],
    }


@settings(KIT, max_examples=150, suppress_health_check=[HealthCheck.differing_executors, HealthCheck.too_slow])
@given(data=st.data())
def test_a_stream_gives_the_same_tokens_however_it_is_cut(adapter: KitAdapter, data: st.DataObject) -> None:
    items = data.draw(st.lists(stream_items(adapter), max_size=12))
    stream = b"".join(piece for piece, _ in items)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    want = expected(items)
    for how, chunks in chunkings(stream, cuts).items():
        assert feed(adapter, chunks) == (want, 0), how


@settings(KIT, max_examples=150)
@given(data=st.data())
def test_any_bytes_give_the_same_tokens_however_they_are_cut(adapter: KitAdapter, data: st.DataObject) -> None:
    stream = data.draw(garbage(adapter))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    results = {how: feed(adapter, chunks) for how, chunks in chunkings(stream, cuts).items()}
    assert len({repr(result) for result in results.values()}) == 1, results
    assert results["whole"][1] <= adapter.max_frame


def test_memory_stays_bounded_by_one_frame_whatever_follows_a_start(adapter: KitAdapter) -> None:
    rng = random.Random(7)
    fillers = (b"\xff" * 10_000, bytes(10_000), bytes(rng.randrange(256) for _ in range(10_000)))
    for fmt in adapter.formats:
        start = adapter.encode_frame(b"x" * 40, fmt)[:1]  # a start byte; 0xFF next announces the longest frame
        for filler in fillers:
            scanner = adapter.scanner()
            scanner.feed(start)
            for _ in range(30):  # 300 kB: more than any frame may hold
                for token in scanner.feed(filler):
                    adapter.token(token)  # every token is one of the four kinds
                assert scanner.pending <= adapter.max_frame


def test_reset_drops_a_partial_frame_and_the_next_frame_decodes(adapter: KitAdapter) -> None:
    for fmt in adapter.formats:
        frame = adapter.encode_frame(b"hello", fmt)
        scanner = adapter.scanner()
        assert scanner.feed(frame[: len(frame) // 2]) == []
        assert scanner.pending == len(frame) // 2
        scanner.reset()
        assert scanner.pending == 0
        tokens = [adapter.token(t) for t in scanner.feed(frame)]
        assert tokens == [("frame", fmt, b"hello")] and scanner.pending == 0


def test_bytearray_and_memoryview_are_taken_like_bytes(adapter: KitAdapter) -> None:
    for fmt in adapter.formats:
        frame = adapter.encode_frame(b"hello", fmt)
        for data in (bytearray(frame), memoryview(frame)):
            assert [adapter.token(t) for t in adapter.scanner().feed(data)] == [("frame", fmt, b"hello")]
