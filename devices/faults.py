"""A fault layer any device can be put in: named, deterministic, composable line faults.

    plan = FaultPlan.parse("tx:drop@12,rx:corrupt@7,split=3,delay=0.05,seed=7")
    device = FaultyDevice(await open_device("virtual://t1"), plan)
    # or: await open_device("virtual://t1", faults=plan)  /  open_device("virtual://t1?faults=rx:drop@7")

Directions are seen from the wrapped device's user: ``tx`` is what it writes, ``rx`` what it reads.
Positions count the bytes of one direction's stream as they reach the fault layer (0-based, the
first byte is ``@0``), so a fault hits the same byte however the stream is chunked. Probabilistic
faults draw from a generator seeded with ``seed`` and the direction: the same spec and the same
byte stream give the same faults on every run.

Grammar (items separated by commas, spaces ignored)::

    spec   := item ("," item)*
    item   := "seed=" INT | [dir ":"] fault
    dir    := "tx" | "rx"                      (no prefix: both directions)
    fault  := "drop@" POS                      drop the byte at POS
            | "drop=" PROB                     drop each byte with probability PROB
            | "corrupt@" POS                   XOR the byte at POS with 0xFF
            | "corrupt=" MASK "@" POS          XOR the byte at POS with MASK (1..255, 0x.. allowed)
            | "corrupt=" PROB                  XOR each byte, with probability PROB, by a random mask
            | "split=" K                       tx: pass each write on in writes of at most K bytes;
                                               rx: return at most K bytes per read
            | "delay=" SECONDS                 tx: hold each write SECONDS before passing it on;
                                               rx: hold received bytes SECONDS before returning them
            | "silence=" SECONDS "@" POS       from byte POS on, swallow every byte for SECONDS
            | "disconnect@" POS                bytes before POS pass; then the line drops as by a
                                               pulled cable: the device is closed (the peer sees
                                               the line drop) and DeviceClosed raised — on a
                                               listening device (tcp-listen://) only the connected
                                               peer is dropped, and the next peer is served
    POS    := INT >= 0          PROB := decimal in (0, 1], or a percentage such as "2%"

``drop@``, ``corrupt@`` and ``silence`` may be given several times. Without a direction prefix a
fault applies to each direction separately (each counts its own positions), except that
``silence`` and ``disconnect`` then take the whole line down once either direction reaches POS.
For one byte, the order is: disconnect, silence, drop, corrupt; ``split`` and ``delay`` then shape
what is left. Bad specs raise :class:`FaultSpecError` naming the item and what was expected.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from .base import Device, DeviceClosed, DeviceError

__all__ = ["DirectionFaults", "FaultPlan", "FaultSpecError", "FaultyDevice", "InjectedFault", "Superseded"]

Direction = Literal["tx", "rx"]
DIRECTIONS: tuple[Direction, Direction] = ("tx", "rx")
_DIRECTION_OF: dict[str, Direction] = {"tx": "tx", "rx": "rx"}  # a word of a spec as a Direction
MAX_LOG = 10_000  # injected faults remembered per device (a probabilistic fault on a long run...)


class FaultSpecError(DeviceError, ValueError):
    """A fault spec that does not follow the grammar in :mod:`posbridge.devices.faults`."""


@dataclass(frozen=True)
class DirectionFaults:
    """The faults of one direction. Positions are 0-based offsets in that direction's stream."""

    drop_at: frozenset[int] = frozenset()
    drop_probability: float = 0.0
    corrupt_at: tuple[tuple[int, int], ...] = ()  # (position, XOR mask), sorted by position
    corrupt_probability: float = 0.0
    split: int | None = None
    delay: float = 0.0
    # (position, seconds, whole line): from that byte on, swallow bytes for that long; a whole-line
    # silence (given without a direction) silences the other direction too.
    silence: tuple[tuple[int, float, bool], ...] = ()
    disconnect_at: int | None = None

    def __bool__(self) -> bool:
        return self != DirectionFaults()

    def _items(self) -> list[str]:
        """Spec items without a direction prefix; whole-line silences are marked with ``"*"``."""
        out = [f"drop@{p}" for p in sorted(self.drop_at)]
        if self.drop_probability:
            out.append(f"drop={self.drop_probability!r}")
        out += [f"corrupt@{p}" if m == 0xFF else f"corrupt=0x{m:02x}@{p}" for p, m in self.corrupt_at]
        if self.corrupt_probability:
            out.append(f"corrupt={self.corrupt_probability!r}")
        if self.split is not None:
            out.append(f"split={self.split}")
        if self.delay:
            out.append(f"delay={self.delay!r}")
        out += [f"{'*' if line else ''}silence={s!r}@{p}" for p, s, line in self.silence]
        if self.disconnect_at is not None:
            out.append(f"disconnect@{self.disconnect_at}")
        return out


@dataclass(frozen=True)
class FaultPlan:
    """Faults for both directions plus the seed of the probabilistic ones.

    Build one with :meth:`parse` (the textual spec) or directly from :class:`DirectionFaults`.
    ``str(plan)`` gives the canonical spec back.
    """

    tx: DirectionFaults = field(default_factory=DirectionFaults)
    rx: DirectionFaults = field(default_factory=DirectionFaults)
    seed: int = 0

    def __bool__(self) -> bool:
        return bool(self.tx) or bool(self.rx)

    def __str__(self) -> str:
        return self.spec()

    def spec(self) -> str:
        """The canonical textual spec (``FaultPlan.parse(plan.spec()) == plan``)."""
        tx, rx = self.tx._items(), self.rx._items()
        # Items both directions share are written once, without a prefix; a one-direction silence
        # must keep its prefix (without one it would mean a whole-line silence).
        both = [item for item in tx if item in rx and not item.startswith("silence")]
        items = [item.lstrip("*") for item in both]
        for prefix, own in (("tx:", tx), ("rx:", rx)):
            for item in own:
                if item in both:
                    continue
                if item.startswith("*"):
                    raise ValueError(f"a whole-line silence must be in both directions: {self!r}")
                items.append(prefix + item)
        if self.seed:
            items.append(f"seed={self.seed}")
        return ",".join(items)

    def direction(self, name: Direction) -> DirectionFaults:
        """The faults of ``"tx"`` or ``"rx"``."""
        return self.tx if name == "tx" else self.rx

    @classmethod
    def coerce(cls, faults: FaultPlan | str | None) -> FaultPlan:
        """A plan from a plan, a spec string or None (no faults)."""
        if faults is None:
            return cls()
        if isinstance(faults, FaultPlan):
            return faults
        if isinstance(faults, str):
            return cls.parse(faults)
        raise FaultSpecError(f"faults must be a FaultPlan or a spec string, not {type(faults).__name__}")

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """Parse the textual spec (grammar in the module docstring); raises FaultSpecError."""
        if not isinstance(spec, str):
            raise FaultSpecError(f"a fault spec must be a string, not {type(spec).__name__}")
        builders = {d: _Builder(d) for d in DIRECTIONS}
        seed = 0
        seed_seen = False
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue  # "drop@1," or an empty spec: nothing to add
            direction: Direction | None = None
            body = item
            head, colon, rest = item.partition(":")
            if colon:
                word, body = head.strip().lower(), rest.strip()
                direction = _DIRECTION_OF.get(word)
                if direction is None:
                    raise FaultSpecError(
                        f"fault {item!r}: direction must be 'tx' (what the device writes) or 'rx' "
                        f"(what it reads), not {head.strip()!r}")
            name, value, position = _split_item(item, body)
            if name == "seed":
                if direction is not None or position is not None or value is None:
                    raise FaultSpecError(f"fault {item!r}: expected seed=INT")
                if seed_seen:
                    raise FaultSpecError("seed given twice")
                seed, seed_seen = _int(item, value, "the seed", minimum=0), True
                continue
            targets = DIRECTIONS if direction is None else (direction,)
            for target in targets:
                builders[target].add(item, name, value, position, both=direction is None)
        return cls(tx=builders["tx"].build(), rx=builders["rx"].build(), seed=seed)


_ITEM = re.compile(r"^(?P<name>[a-z_]+)\s*(?:=\s*(?P<value>[^@]*?))?\s*(?:@\s*(?P<pos>.*))?$")
_FAULTS = ("drop", "corrupt", "split", "delay", "silence", "disconnect", "seed")


def _split_item(item: str, body: str) -> tuple[str, str | None, str | None]:
    m = _ITEM.match(body.strip().lower())
    if m is None or m.group("name") not in _FAULTS:
        word = re.split(r"[=@\s]", body.strip(), maxsplit=1)[0]
        raise FaultSpecError(
            f"unknown fault {word!r} in {item!r}; known: drop, corrupt, split, delay, silence, "
            "disconnect, seed (see devices.faults)")
    return m.group("name"), m.group("value"), m.group("pos")


def _int(item: str, text: str, what: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        value = int(text.strip(), 0)
    except ValueError:
        raise FaultSpecError(f"fault {item!r}: {what} must be an integer, not {text.strip()!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise FaultSpecError(f"fault {item!r}: {what} must be {bound}, not {value}")
    return value


def _seconds(item: str, text: str) -> float:
    try:
        value = float(text.strip().removesuffix("s"))
    except ValueError:
        raise FaultSpecError(f"fault {item!r}: expected seconds, such as 0.05, not {text.strip()!r}") from None
    if not value >= 0 or value == float("inf"):
        raise FaultSpecError(f"fault {item!r}: seconds must be a finite number >= 0")
    return value


def _probability(item: str, text: str) -> float:
    text = text.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise FaultSpecError(
            f"fault {item!r}: expected a probability such as 0.01 or 1%, or @POSITION for one byte"
        ) from None
    if not 0 < value <= 1:
        raise FaultSpecError(f"fault {item!r}: a probability must be in (0, 1], not {text}")
    return value


class _Builder:
    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.drop_at: set[int] = set()
        self.corrupt_at: dict[int, int] = {}
        self.silence: dict[int, tuple[float, bool]] = {}
        self.scalars: dict[str, object] = {}

    def _once(self, item: str, key: str, value: object) -> None:
        if key in self.scalars:
            raise FaultSpecError(f"fault {item!r}: {key} given twice for {self.direction}")
        self.scalars[key] = value

    def add(self, item: str, name: str, value: str | None, position: str | None, both: bool) -> None:
        pos = _int(item, position, "the position") if position is not None else None
        if name == "drop":
            if pos is not None and value is None:
                self.drop_at.add(pos)
            elif value is not None and pos is None:
                self._once(item, "drop_probability", _probability(item, value))
            else:
                raise FaultSpecError(f"fault {item!r}: expected drop@POSITION or drop=PROBABILITY")
        elif name == "corrupt":
            if pos is not None:
                mask = 0xFF if value is None else _int(item, value, "the XOR mask", 1, 255)
                if pos in self.corrupt_at:
                    raise FaultSpecError(f"fault {item!r}: position {pos} corrupted twice in {self.direction}")
                self.corrupt_at[pos] = mask
            elif value is not None:
                self._once(item, "corrupt_probability", _probability(item, value))
            else:
                raise FaultSpecError(
                    f"fault {item!r}: expected corrupt@POSITION, corrupt=MASK@POSITION or corrupt=PROBABILITY")
        elif name == "split":
            if value is None or pos is not None:
                raise FaultSpecError(f"fault {item!r}: expected split=BYTES")
            self._once(item, "split", _int(item, value, "the piece size", minimum=1))
        elif name == "delay":
            if value is None or pos is not None:
                raise FaultSpecError(f"fault {item!r}: expected delay=SECONDS")
            self._once(item, "delay", _seconds(item, value))
        elif name == "silence":
            if value is None or pos is None:
                raise FaultSpecError(f"fault {item!r}: expected silence=SECONDS@POSITION")
            if pos in self.silence:
                raise FaultSpecError(f"fault {item!r}: silence at position {pos} given twice in {self.direction}")
            self.silence[pos] = (_seconds(item, value), both)
        elif name == "disconnect":
            if pos is None or value is not None:
                raise FaultSpecError(f"fault {item!r}: expected disconnect@POSITION")
            self._once(item, "disconnect_at", pos)

    def build(self) -> DirectionFaults:
        return DirectionFaults(
            drop_at=frozenset(self.drop_at),
            corrupt_at=tuple(sorted(self.corrupt_at.items())),
            silence=tuple((pos, seconds, line) for pos, (seconds, line) in sorted(self.silence.items())),
            **self.scalars,  # type: ignore[arg-type]  # each parsed to its field's type by add()
        )


@dataclass(frozen=True)
class InjectedFault:
    """One fault that happened: ``kind`` is drop, corrupt, silence, disconnect; ``position`` the byte."""

    direction: Direction
    kind: str
    position: int
    detail: str = ""


class _Stream:
    """The per-byte faults of one direction; positions advance over every byte offered."""

    def __init__(self, direction: Direction, faults: DirectionFaults, seed: int,
                 log: Callable[[InjectedFault], None]) -> None:
        self.direction = direction
        self.faults = faults
        self.position = 0
        self._log = log
        self._corrupt_at: Mapping[int, int] = dict(faults.corrupt_at)
        self._silence_at: Mapping[int, tuple[float, bool]] = {p: (s, line) for p, s, line in faults.silence}
        self._random = random.Random(f"{seed}/{direction}")  # str seeds hash stably across runs
        self._per_byte = bool(faults.drop_probability or faults.corrupt_probability)
        # Positions where something happens, in order: bytes between them pass in bulk.
        self._events = sorted(set(faults.drop_at) | set(self._corrupt_at) | set(self._silence_at)
                              | ({faults.disconnect_at} if faults.disconnect_at is not None else set()))
        self.silent_until = float("-inf")
        self.disconnect_spent = False  # a whole-line disconnect already fired (on a listener)

    def process(self, data: bytes, now: float, line: _Line) -> tuple[bytes, bool]:
        """Apply the faults to ``data``; returns (bytes to pass on, disconnect reached)."""
        start, end = self.position, self.position + len(data)
        self.position = end
        if self._per_byte:
            return self._each_byte(data, start, now, line)
        first = bisect.bisect_left(self._events, start)
        last = bisect.bisect_left(self._events, end, first)
        if first == last and not self._silent(now, line):
            return data, False  # the common case: nothing happens in this chunk
        out = bytearray()
        cursor = start
        for pos in self._events[first:last]:
            if not self._silent(now, line):
                out += data[cursor - start:pos - start]
            byte, disconnect = self._at(pos, data[pos - start], now, line, 1.0, 1.0, 0)
            if disconnect:
                return bytes(out), True
            if byte is not None:
                out.append(byte)
            cursor = pos + 1
        if not self._silent(now, line):
            out += data[cursor - start:]
        return bytes(out), False

    def _silent(self, now: float, line: _Line) -> bool:
        return now < self.silent_until or now < line.silent_until

    def _each_byte(self, data: bytes, start: int, now: float, line: _Line) -> tuple[bytes, bool]:
        f = self.faults
        out = bytearray()
        for i, byte in enumerate(data):
            # Random draws happen for every byte, so each byte's fate depends only on its position.
            drop_draw = self._random.random() if f.drop_probability else 1.0
            corrupt_draw = self._random.random() if f.corrupt_probability else 1.0
            random_mask = self._random.randrange(1, 256) if f.corrupt_probability else 0
            result, disconnect = self._at(start + i, byte, now, line, drop_draw, corrupt_draw, random_mask)
            if disconnect:
                return bytes(out), True
            if result is not None:
                out.append(result)
        return bytes(out), False

    def _at(self, pos: int, byte: int, now: float, line: _Line, drop_draw: float, corrupt_draw: float,
            random_mask: int) -> tuple[int | None, bool]:
        """The fate of one byte: (byte to pass on or None, disconnect now)."""
        f = self.faults
        if pos == f.disconnect_at and not self.disconnect_spent:
            self._log(InjectedFault(self.direction, "disconnect", pos))
            return None, True
        silence = self._silence_at.get(pos)
        if silence is not None:
            seconds, whole_line = silence
            self._log(InjectedFault(self.direction, "silence", pos, f"{seconds:g} s"))
            if whole_line:
                line.silent_until = max(line.silent_until, now + seconds)
            else:
                self.silent_until = max(self.silent_until, now + seconds)
        if self._silent(now, line):
            return None, False
        if pos in f.drop_at or drop_draw < f.drop_probability:
            self._log(InjectedFault(self.direction, "drop", pos, f"0x{byte:02x}"))
            return None, False
        mask = self._corrupt_at.get(pos) or (random_mask if corrupt_draw < f.corrupt_probability else 0)
        if mask:
            self._log(InjectedFault(self.direction, "corrupt", pos, f"0x{byte:02x}^0x{mask:02x}"))
            byte ^= mask
        return byte, False


class _Line:
    """State both directions share: a whole-line silence."""

    silent_until: float = float("-inf")


class Superseded(Exception):
    """Raised by the read of a :class:`FaultyDevice` that was :meth:`~FaultyDevice.retire` d: its faults
    no longer apply. ``data``: the bytes that read took from the line after that, untouched by them."""

    def __init__(self, data: bytes) -> None:
        super().__init__(f"faults replaced ({len(data)} bytes handed on)")
        self.data = data


class FaultyDevice(Device):
    """``inner`` seen through a :class:`FaultPlan` (see the module docstring for the faults).

    Reads stay cancellation-safe: bytes taken from ``inner`` wait in this device until a read
    returns them. ``injected`` lists the faults that happened, in order; ``positions`` gives how
    many bytes each direction has offered so far. ``clock`` (monotonic seconds) times silences.
    """

    def __init__(
        self,
        inner: Device,
        faults: FaultPlan | str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.plan = FaultPlan.coerce(faults)
        self.url = inner.url
        self.clock = clock
        self.injected: deque[InjectedFault] = deque(maxlen=MAX_LOG)
        self._line = _Line()
        self._tx = _Stream("tx", self.plan.tx, self.plan.seed, self.injected.append)
        self._rx = _Stream("rx", self.plan.rx, self.plan.seed, self.injected.append)
        self._ready: deque[tuple[float, bytes]] = deque()  # (readable from, bytes) after rx faults
        self._write_lock = asyncio.Lock()
        self._disconnected: str | None = None
        self._retired = False

    @property
    def positions(self) -> dict[Direction, int]:
        """Bytes offered so far per direction (the next byte's position)."""
        return {"tx": self._tx.position, "rx": self._rx.position}

    def injected_kinds(self) -> list[str]:
        """``"tx:drop@12"``-style names of the faults that happened (for assertions and logs)."""
        return [f"{f.direction}:{f.kind}@{f.position}" for f in self.injected]

    @property
    def reconnects(self) -> bool:
        """As the wrapped device (a listener serves the next peer after a disconnect fault too)."""
        return self.inner.reconnects

    @property
    def own_stream(self) -> bool:
        """As the wrapped device."""
        return self.inner.own_stream

    @property
    def waiting_peers(self) -> bool:
        """As the wrapped device (False for devices that have no backlog)."""
        return bool(getattr(self.inner, "waiting_peers", False))

    @property
    def peer_since(self) -> float | None:
        return getattr(self.inner, "peer_since", None)

    @property
    def connected(self) -> bool:
        return bool(getattr(self.inner, "connected", False))

    def drop_peer(self, reason: str = "dropped") -> bool:
        """Hang up on the wrapped listener's peer (see ``TcpListenDevice.drop_peer``)."""
        drop = getattr(self.inner, "drop_peer", None)
        return bool(drop(reason)) if drop is not None else False

    async def _disconnect(self, direction: Direction, position: int) -> None:
        reason = f"{self.url}: disconnected by the fault layer ({direction}:disconnect@{position})"
        if self.reconnects:
            # A pulled cable on a listener: that peer is gone (what it sent after POS with it), the
            # listener serves the next one. The inner device reports the departure once. A
            # whole-line disconnect (the same POS both ways) happens once, not once per direction.
            if self.plan.tx.disconnect_at == self.plan.rx.disconnect_at:
                self._tx.disconnect_spent = self._rx.disconnect_spent = True
            self.drop_peer(reason)
            self.inner.discard_input()
            return
        if self._disconnected is None:
            self._disconnected = reason
            await self.inner.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosed(f"{self.url}: device closed")
        if self._disconnected is not None:
            raise DeviceClosed(self._disconnected)

    async def write(self, data: bytes) -> None:
        self._check_open()
        async with self._write_lock:  # keeps delayed and split writes in order
            self._check_open()
            out, disconnect = self._tx.process(bytes(data), self.clock(), self._line)
            faults = self.plan.tx
            if faults.delay:
                await asyncio.sleep(faults.delay)
            step = faults.split or len(out) or 1
            for i in range(0, len(out), step):
                if i:
                    await asyncio.sleep(0)  # let the pieces travel separately where the transport allows
                await self.inner.write(out[i:i + step])
            if disconnect:
                await self._disconnect("tx", self.plan.tx.disconnect_at or 0)
                raise DeviceClosed(self._disconnected or f"{self.url}: disconnected by the fault layer")

    async def read(self, max_bytes: int = 4096) -> bytes:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
        faults = self.plan.rx
        limit = min(max_bytes, faults.split) if faults.split else max_bytes
        while True:
            if self._closed:
                raise DeviceClosed(f"{self.url}: device closed")
            if self._ready:
                wait = self._ready[0][0] - self.clock()
                if wait > 0:
                    await asyncio.sleep(wait)  # cancelled here: the chunk stays queued
                    continue
                return self._take(limit)
            if self._disconnected is not None:
                raise DeviceClosed(self._disconnected)
            if self._retired:
                raise Superseded(b"")
            data = await self.inner.read(max_bytes)
            if self._retired:  # the faults were replaced while this read waited: not theirs to see
                raise Superseded(data)
            await self.take_in(data)

    async def take_in(self, data: bytes) -> None:
        """Pass ``data`` (bytes from ``inner``) through the receive faults, as a read does; what
        survives is returned by the next reads (a replacement device takes a retired one's bytes
        this way)."""
        now = self.clock()
        faults = self.plan.rx
        out, disconnect = self._rx.process(data, now, self._line)
        if out:
            self._ready.append((now + faults.delay, out))
        if disconnect:
            await self._disconnect("rx", faults.disconnect_at or 0)

    def retire(self) -> bytes:
        """These faults are replaced: a read waiting on the line (a silence swallowing bytes may
        wait for ever) raises :class:`Superseded` with the next bytes instead of applying them.
        Returns the bytes these faults already let through and still hold (the rest of a ``split``
        chunk, a ``delay`` not yet over), in order: the replacement hands them on first. Dropping
        them lost the tail of a frame whose head a read had already taken."""
        self._retired = True
        held = b"".join(chunk for _, chunk in self._ready)
        self._ready.clear()
        return held

    def _take(self, limit: int) -> bytes:
        taken = bytearray()
        now = self.clock()
        while self._ready and len(taken) < limit and self._ready[0][0] <= now:
            ready_at, chunk = self._ready.popleft()
            room = limit - len(taken)
            taken += chunk[:room]
            if len(chunk) > room:
                self._ready.appendleft((ready_at, chunk[room:]))
        return bytes(taken)

    def discard_input(self) -> int:
        dropped = sum(len(chunk) for _, chunk in self._ready)
        self._ready.clear()
        if not self._closed and self._disconnected is None:
            dropped += self.inner.discard_input()
        return dropped

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ready.clear()
        await self.inner.close()

    def __repr__(self) -> str:
        return f"<FaultyDevice {self.plan.spec() or 'no faults'} around {self.inner!r}>"


def with_faults(device: Device, faults: FaultPlan | str | None) -> Device:
    """``device`` wrapped in a :class:`FaultyDevice`, or ``device`` itself when there are no faults."""
    plan = FaultPlan.coerce(faults)
    return FaultyDevice(device, plan) if plan else device

