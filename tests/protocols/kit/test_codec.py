"""The kit, codec: every registered protocol's fast codec equals its construct declaration, round
trips, and decodes untrusted bytes raising nothing but DecodeError.

The ``construct`` declarations are the normative wire format; the hand-written fast path is what
runs per frame. These properties hold for any protocol, so they live here once; exact bytes,
offsets and per-protocol error words stay in each protocol's own tests.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posbridge.protocols import ProtocolSpec
from posbridge.protocols.common.describe import FrameDescription
from posbridge.protocols.common.errors import DecodeError
from tests.protocols.kit.adapter import KitAdapter

# The adapter is a module-scoped fixture (the same object for every example): not a health risk.
KIT = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.differing_executors])


@st.composite
def frame_like(draw: st.DrawFn, adapter: KitAdapter) -> bytes:
    """Byte strings near a protocol's frames: valid frames, then cut, extended, flipped, prefixed,
    two header bytes overwritten, or the start of another format."""
    fmt = draw(st.sampled_from(adapter.formats))
    data = bytearray(adapter.encode_frame(draw(adapter.bodies()), fmt))
    action = draw(st.sampled_from(["keep", "cut", "flip", "extend", "prefix", "header", "start"]))
    if action == "cut":
        del data[draw(st.integers(0, len(data))):]
    elif action == "flip":
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    elif action == "extend":
        data += draw(st.binary(max_size=10))
    elif action == "prefix":
        data[:0] = draw(st.binary(max_size=10))
    elif action == "header" and len(data) >= 3:
        data[1:3] = draw(st.binary(min_size=2, max_size=2))
    elif action == "start":
        other = adapter.encode_frame(b"", draw(st.sampled_from(adapter.formats)))
        data[:1] = other[:1]
    return bytes(data)


def garbage(adapter: KitAdapter) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=400), frame_like(adapter))


def skippable(adapter: KitAdapter) -> st.SearchStrategy[bytes]:
    """What a decoder skips before a frame: noise and control bytes, in any mix (or nothing)."""
    controls = st.sampled_from(adapter.control_bytes).map(lambda byte: bytes([byte]))
    return st.lists(st.one_of(adapter.noise(), controls), max_size=4).map(b"".join)


# --- the fast path equals the declarations ----------------------------------------------------------
@KIT
@given(data=st.data())
def test_encode_frame_equals_the_declaration(adapter: KitAdapter, data: st.DataObject) -> None:
    fmt = data.draw(st.sampled_from(adapter.formats))
    body = data.draw(adapter.bodies())
    assert adapter.encode_frame(body, fmt) == adapter.declared_encode_frame(body, fmt)


@settings(KIT, max_examples=400)
@given(data=st.data())
def test_decode_frame_equals_the_declaration(adapter: KitAdapter, data: st.DataObject) -> None:
    raw = data.draw(garbage(adapter))
    assert adapter.decode_frame(raw) == adapter.declared_decode_frame(raw)


@KIT
@given(data=st.data())
def test_encode_message_equals_the_declaration(adapter: KitAdapter, data: st.DataObject) -> None:
    message = data.draw(adapter.messages())
    assert adapter.encode_message(message) == adapter.declared_encode_message(message)


@settings(KIT, max_examples=400)
@given(data=st.data())
def test_decode_message_equals_the_declaration(adapter: KitAdapter, data: st.DataObject) -> None:
    body = data.draw(adapter.body_like())
    assert adapter.decode_message(body) == adapter.declared_decode_message(body)


# --- round trips ------------------------------------------------------------------------------------
@KIT
@given(data=st.data())
def test_frame_round_trip_with_noise_around(adapter: KitAdapter, data: st.DataObject) -> None:
    fmt = data.draw(st.sampled_from(adapter.formats))
    body = data.draw(adapter.bodies())
    noise = data.draw(skippable(adapter))
    frame = adapter.encode_frame(body, fmt)
    assert adapter.decode_frame(noise + frame + noise) == (fmt, body, len(noise), len(frame))


@KIT
@given(data=st.data())
def test_message_round_trip(adapter: KitAdapter, data: st.DataObject) -> None:
    message = data.draw(adapter.messages())
    body = adapter.encode_message(message)
    assert adapter.decode_message(body) == message
    assert adapter.encode_message(adapter.decode_message(body)) == body


# --- untrusted bytes ----------------------------------------------------------------------------------
@settings(KIT, max_examples=300)
@given(data=st.data())
def test_decoders_raise_nothing_but_decode_errors(adapter: KitAdapter, data: st.DataObject) -> None:
    raw = data.draw(st.one_of(garbage(adapter), adapter.body_like()))
    decoders = adapter.decoders()
    assert decoders, "the adapter must name the functions that decode untrusted bytes"
    for decode in decoders:
        try:
            decode(raw)
        except DecodeError as error:
            assert isinstance(error.reason, str) and error.reason and isinstance(error.offset, int)


@settings(KIT, max_examples=200)
@given(data=st.data())
def test_describe_never_raises_and_accounts_for_every_byte_once(spec: ProtocolSpec, adapter: KitAdapter,
                                                                 data: st.DataObject) -> None:
    raw = data.draw(st.one_of(garbage(adapter), st.lists(frame_like(adapter), max_size=4).map(b"".join)))
    entries = spec.describe(raw)
    assert all(isinstance(entry, FrameDescription) for entry in entries)
    json.dumps([entry.to_dict() for entry in entries])
    spans = [(entry.offset - entry.skipped, entry.offset + entry.size) for entry in entries]
    assert all(0 <= start < end <= len(raw) for start, end in spans)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), spans
