"""One description schema for the bytes of any protocol: what ``ProtocolSpec.describe`` returns.

A describer walks bytes as a receiver would and returns one :class:`FrameDescription` per thing it
finds, in order: a control byte outside a frame, a run of noise, a frame (good or bad), or the
incomplete frame that ends the input. It never raises: problems are data (:class:`Problem`), a card
number is masked before it gets here, and :meth:`FrameDescription.to_dict` gives the JSON that
``posbridge decode`` prints.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .model import mask_card_bytes

__all__ = ["EntryKind", "FieldDescription", "FrameDescription", "FrameDescriber", "PartDescription", "Problem",
           "describe_stream"]


class EntryKind(str, enum.Enum):
    """What a :class:`FrameDescription` describes."""

    CONTROL = "control"  # one control byte outside a frame (ACK, NAK, ENQ, EOT)
    NOISE = "noise"  # bytes outside a frame that are neither control nor start bytes
    FRAME = "frame"  # a complete frame, whether its check and body are good or not
    INCOMPLETE = "incomplete"  # a frame the input ends in the middle of (always the last entry)


@dataclass(frozen=True)
class Problem:
    """Something wrong with an entry: ``reason`` is the short word of
    :class:`~posbridge.protocols.common.errors.DecodeError` (``crc``, ``etx``, ``record``, ``field``,
    ``part``, ``incomplete``…), ``offset`` the position in the described bytes where known."""

    reason: str
    detail: str = ""
    offset: int | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (``offset`` only where known)."""
        out: dict[str, object] = {"reason": self.reason, "detail": self.detail}
        if self.offset is not None:
            out["offset"] = self.offset
        return out


@dataclass(frozen=True)
class FieldDescription:
    """One field of a decoded message.

    ``key`` is the field as the wire names it (an INPAS tag number such as ``"25"``, an Arcus key
    such as ``"amount"``), ``name`` what it means (``"operation_code"``); ``value`` is the value as
    shown: a card number masked, bytes as hex (then ``binary`` is True). ``problem`` says why a value
    cannot be what its field holds (a 5,000-digit amount), else None.
    """

    key: str
    name: str
    value: str
    binary: bool = False
    problem: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (``binary`` and ``problem`` only when set)."""
        out: dict[str, object] = {"key": self.key, "name": self.name, "value": self.value}
        if self.binary:
            out["binary"] = True
        if self.problem is not None:
            out["problem"] = self.problem
        return out


@dataclass(frozen=True)
class PartDescription:
    """A part of a message split over several frames (INPAS SOH frames): its number, whether it is
    the final one, and its chunk of the message body in hex."""

    number: int
    final: bool
    chunk: str


@dataclass(frozen=True)
class FrameDescription:
    """One entry of a describer's walk over bytes (see the module docstring).

    Every entry has ``kind``, ``offset`` (its first byte in the described input) and ``size`` (the
    input bytes it covers). ``name`` is the control byte's name (``"ACK"``) or the frame's start
    byte (``"STX"``, ``"SOH"``); ``data`` the noise bytes in hex. A frame adds ``skipped`` (noise
    bytes directly before it, not listed separately), ``version`` (where the protocol has link
    versions), ``length`` (body length from its header), ``check`` (``"crc"``, ``"lrc"``) and
    ``check_ok`` (None when the frame was not checked, e.g. a bad ETX), ``message``/``message_kind``
    (the protocol's message class and what it is, where it has them: ``"Q"``/``"request"``),
    ``part`` (one part of a split message) and ``fields`` (for a split message: on its final part,
    the fields of the whole). ``problems`` lists what is wrong with the entry itself.
    """

    kind: EntryKind
    offset: int
    size: int
    name: str = ""
    data: str = ""
    skipped: int = 0
    version: int | None = None
    length: int | None = None
    check: str = ""
    check_ok: bool | None = None
    message: str = ""
    message_kind: str = ""
    part: PartDescription | None = None
    fields: tuple[FieldDescription, ...] = ()
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the entry itself has no problem (a field's own ``problem`` does not count)."""
        return not self.problems

    def field(self, key: str) -> FieldDescription | None:
        """The field whose wire key or name is ``key``, else None."""
        return next((f for f in self.fields if key in (f.key, f.name)), None)

    def summary(self) -> str:
        """One line for people: ``STX v2 length 27 crc ok request(Q): 25:operation_code=1, …`` (values
        with line breaks escaped, long ones clipped: :meth:`to_dict` has them whole)."""
        if self.kind is EntryKind.CONTROL:
            return self.name
        if self.kind is EntryKind.NOISE:
            return f"noise {self.data}"
        words = [self.name or self.kind.value]
        if self.version is not None:
            words.append(f"v{self.version}")
        if self.length is not None:
            words.append(f"length {self.length}")
        if self.check:
            words.append(f"{self.check} {'unchecked' if self.check_ok is None else 'ok' if self.check_ok else 'bad'}")
        if self.message_kind or self.message:
            words.append(f"{self.message_kind}({self.message})" if self.message_kind else self.message)
        if self.part is not None:
            words.append(f"part {self.part.number}{' final' if self.part.final else ''}")
        text = " ".join(words)
        if self.fields:
            text += ": " + ", ".join(
                (f"{f.key}:{f.name}" if f.key != f.name else f.key) + f"={_one_line(f.value)}" for f in self.fields)
        for problem in self.problems:
            text += f" [{problem.reason}{': ' + problem.detail if problem.detail else ''}]"
        return text

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form: ``kind``, ``offset`` and ``size`` always, other fields when set."""
        out: dict[str, object] = {"kind": self.kind.value, "offset": self.offset, "size": self.size}
        for name in ("name", "data", "skipped", "version", "length", "check", "check_ok", "message",
                     "message_kind"):
            value = getattr(self, name)
            if value not in ("", None) and not (name == "skipped" and value == 0):
                out[name] = value
        if self.part is not None:
            out["part"] = {"number": self.part.number, "final": self.part.final, "chunk": self.part.chunk}
        if self.fields:
            out["fields"] = [f.to_dict() for f in self.fields]
        if self.problems:
            out["problems"] = [p.to_dict() for p in self.problems]
        return out


def _one_line(value: str, limit: int = 80) -> str:
    """A value for a one-line summary: line breaks and other control characters escaped, a long
    value (a slip, a hostile 5,000-digit field) shown by its head and its length."""
    text = value if value.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
    return text if len(text) <= limit else f"{text[:limit]}…({len(value)} characters)"


FrameDescriber = Callable[[bytes, int, int], tuple[FrameDescription, int]]
"""``describe_frame(data, at, skipped)``: the entry for the frame whose start byte is ``data[at]``
(``skipped`` noise bytes directly before it) and the position where the walk resumes."""


@functools.lru_cache(maxsize=8)
def _patterns(start_bytes: bytes, control_bytes: bytes) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    starts = b"".join(b"\\x%02x" % b for b in start_bytes)
    controls = b"".join(b"\\x%02x" % b for b in control_bytes)
    # Outside a frame: one control byte, or a run of bytes that are neither control nor start.
    return re.compile(b"[" + starts + b"]"), re.compile(b"([" + controls + b"])|[^" + starts + controls + b"]+")


def describe_stream(data: bytes, *, start_bytes: bytes, control_names: Mapping[int, str],
                    describe_frame: FrameDescriber) -> list[FrameDescription]:
    """Walk ``data`` as a receiver of a start-byte framed protocol would: control bytes and noise
    between frames become entries of their own (noise directly before a frame is counted in that
    frame's ``skipped``), each frame is described by ``describe_frame``. Never raises on any input
    (``describe_frame`` must not either)."""
    data = bytes(data)
    start_re, outside_re = _patterns(bytes(start_bytes), bytes(sorted(control_names)))
    entries: list[FrameDescription] = []
    pos = 0
    while pos < len(data):
        match = start_re.search(data, pos)
        stop = match.start() if match else len(data)
        skipped = 0
        for run in outside_re.finditer(data, pos, stop):
            if run.group(1) is not None:
                entries.append(FrameDescription(EntryKind.CONTROL, run.start(), 1,
                                                name=control_names[data[run.start()]]))
            elif match is not None and run.end() == stop:
                skipped = run.end() - run.start()
            else:
                entries.append(FrameDescription(EntryKind.NOISE, run.start(), run.end() - run.start(),
                                                data=mask_card_bytes(run.group()).hex()))
        if match is None:
            break
        entry, pos = describe_frame(data, stop, skipped)
        entries.append(entry)
    return entries
