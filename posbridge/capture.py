"""Record the bytes of a link to a capture file, and replay a capture's ECR side against a terminal.

A capture is JSON lines. The first line is a header::

    {"capture": "posbridge", "format": 1, "protocol": "inpas", "posbridge": "0.1.0",
     "side": "ecr", "link": {"port": "pty:///tmp/ttyPOS"}, "started": "2026-12-03T09:20:00+00:00"}

then one line per frame (or control byte, or run of noise) as it crossed the line::

    {"t": 0.0132, "wall": "2026-12-03T09:20:00.013+00:00", "dir": "ecr->terminal",
     "hex": "02...", "decoded": [{"kind": "frame", ...}], "masked": false}

``t`` is monotonic seconds since the capture started, ``wall`` the wall clock, ``decoded`` the
protocol's :func:`describe` of the bytes (card numbers masked by the describer, and once more by
:func:`mask_decoded`: a noise entry carries its raw bytes in hex).

A full card number is never written: before a line is written, every card number in its bytes (the
masked values the describer reported, and any Luhn-valid run of 13 to 19 digits that starts as a
card number does) is replaced by its
masked form (``411111******1111``, the same length) and the line says ``"masked": true``. Such a
line's bytes no longer pass the frame's check; that is harmless for answers (replay compares the
decoded fields, masked on both sides) and makes a request that carried a card number unreplayable
(:func:`recorded_exchanges` says so, naming the line). A 12-digit RRN is not a card number and stays.

Replay (:func:`posbridge.testing.capture.replay`, ``posbridge replay``) does not send the bytes blindly: the recorded requests are decoded by a terminal session of
the protocol and re-issued through an :class:`~posbridge.ecr.client.EcrClient`, so ACK/NAK and
timers work as on a live line; each answer frame the terminal sends is compared with the recorded
one field by field, ignoring :data:`VOLATILE_FIELDS` (values that legitimately differ per run).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Literal

from posbridge import __version__, protocols
from posbridge.protocols import FrameDescription
from posbridge.protocols.common.describe import EntryKind
from posbridge.protocols.common.model import Request, mask_bytes, mask_decoded
from posbridge.protocols.common.parts import DescribedStream, Piece, joined, masked_values
from posbridge.protocols.common.session import (CashierPrompt, Completed, EcrSession, Failed, PromptAnswered,
                                                RequestReceived, RequestRejected)

__all__ = ["CAPTURE_FORMAT", "VOLATILE_FIELDS", "Capture", "CaptureError", "CaptureLine", "CaptureWriter", "chain_traces",
           "Difference", "RecordedExchange", "compare_answers", "frames", "mask_bytes", "mask_decoded", "masked_line_bytes", "read_capture",
           "recorded_exchanges"]

CAPTURE_FORMAT = 1
ECR_TO_TERMINAL = "ecr->terminal"
TERMINAL_TO_ECR = "terminal->ecr"
Side = Literal["ecr", "terminal"]

VOLATILE_FIELDS: frozenset[str] = frozenset({
    "host_datetime", "ecr_datetime", "date", "time",  # clocks (INPAS; Arcus2 date and time)
    "rrn", "auth_code",  # issued by the host per operation
    "stan", "transaction_id",  # the ECR's sequence number, echoed (STAN-derived)
    "receipt_data", "slip",  # the slip text prints all of the above
})
"""Field names whose values legitimately differ between a recording and its replay: date and time,
the host's RRN and authorization code, the STAN / transaction id the ECR numbers its requests with
(echoed in the answer) and the slip text, which prints all of them. Matched against a field's
``name`` or ``key``; everything else (operation, amounts, currency, response code and text, masked
card number, terminal and merchant ids, settlement totals) must be identical."""



class CaptureError(ValueError):
    """A capture that cannot be read or replayed; the message is one line naming where."""


def masked_line_bytes(data: bytes, entries: Iterable[FrameDescription]) -> bytes:
    """``data`` fit to show or write, given its description: :func:`mask_bytes` with the card
    numbers the describer found in it."""
    return mask_bytes(data, masked_values(entries))


class CaptureWriter:
    """A pump :data:`~posbridge.pump.Trace` that writes a capture (see the module docstring).

    ``side`` is which end of the line the traced pump is ("ecr": its tx goes ecr->terminal;
    "terminal": its tx goes terminal->ecr). Bytes are gathered per direction until they end on a
    frame boundary, so one line holds whole frames (a half frame is held at most ``limit`` bytes).
    The parts of a split message (INPAS SOH frames) are held until its final part and written in
    one line, the final part with the whole message's fields: a card number cut between two parts
    is masked in both (:class:`~posbridge.protocols.common.parts.DescribedStream`). ``target`` is a
    path or an open text file.
    """

    def __init__(self, target: str | Path | IO[str], protocol: str | protocols.ProtocolSpec, *, side: Side,
                 link: Mapping[str, object] | None = None, clock: Any = time.monotonic, limit: int = 70_000) -> None:
        self.spec = protocol if isinstance(protocol, protocols.ProtocolSpec) else protocols.get(protocol)
        self.side = side
        self.clock = clock
        self.limit = limit
        self._owns = not hasattr(target, "write")
        self._file: IO[str] = open(target, "w", encoding="utf-8") if self._owns else target  # type: ignore[arg-type,assignment]
        self._start = clock()
        self._streams: dict[str, DescribedStream] = {}
        header = {"capture": "posbridge", "format": CAPTURE_FORMAT, "protocol": self.spec.name,
                  "posbridge": __version__, "side": side, "link": dict(link or {}),
                  "started": datetime.now(timezone.utc).isoformat()}
        self._write(header)

    def _write(self, record: Mapping[str, object]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def _direction(self, pump_direction: str) -> str:
        ecr_sends = (pump_direction == "tx") == (self.side == "ecr")
        return ECR_TO_TERMINAL if ecr_sends else TERMINAL_TO_ECR

    def __call__(self, direction: str, data: bytes) -> None:
        stream = self._streams.get(direction)
        if stream is None:
            stream = self._streams[direction] = DescribedStream(self.spec.describe, limit=self.limit)
        self._line(direction, stream.feed(data))

    def _line(self, direction: str, pieces: list[Piece]) -> None:
        if not pieces:
            return
        safe, entries = joined(pieces)
        self._write({"t": round(self.clock() - self._start, 6), "wall": datetime.now(timezone.utc).isoformat(),
                     "dir": self._direction(direction), "hex": safe.hex(),
                     "decoded": [mask_decoded(entry.to_dict()) for entry in entries],
                     "masked": safe != b"".join(piece.data for piece in pieces)})

    def close(self) -> None:
        """Write what is still gathered (a half frame as it is, the parts of a split message whose
        final part never came) and close a file this writer opened."""
        for direction, stream in self._streams.items():
            self._line(direction, stream.flush())
        self._streams = {}
        if self._owns:
            self._file.close()
        else:
            self._file.flush()


@dataclass(frozen=True)
class CaptureLine:
    """One recorded line: where in the file, when, which way, the bytes and their description."""

    number: int
    t: float
    direction: str
    data: bytes
    decoded: list[dict[str, Any]]
    masked: bool


@dataclass(frozen=True)
class Capture:
    """A capture file read back: its header and its lines."""

    path: str
    header: dict[str, Any]
    lines: list[CaptureLine]

    @property
    def protocol(self) -> str:
        return str(self.header["protocol"])


def read_capture(path: str | Path) -> Capture:
    """Read and check a capture; any problem is a one-line :class:`CaptureError` naming the line."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CaptureError(f"{name}: cannot read: {error}") from None
    rows = text.splitlines()
    if not rows:
        raise CaptureError(f"{name}: empty, no header line")
    header = _json_line(name, 1, rows[0])
    if header.get("capture") != "posbridge":
        raise CaptureError(f"{name}:1: not a posbridge capture header (no \"capture\": \"posbridge\")")
    if header.get("format") != CAPTURE_FORMAT:
        raise CaptureError(f"{name}:1: capture format {header.get('format')!r}, this posbridge reads {CAPTURE_FORMAT}")
    if not isinstance(header.get("protocol"), str):
        raise CaptureError(f"{name}:1: the header names no protocol")
    lines = []
    for number, row in enumerate(rows[1:], start=2):
        if not row.strip():
            continue
        record = _json_line(name, number, row)
        direction = record.get("dir")
        if direction not in (ECR_TO_TERMINAL, TERMINAL_TO_ECR):
            raise CaptureError(f"{name}:{number}: \"dir\" must be {ECR_TO_TERMINAL!r} or {TERMINAL_TO_ECR!r}, "
                               f"not {direction!r}")
        t = record.get("t")
        if not isinstance(t, (int, float)) or isinstance(t, bool):
            raise CaptureError(f"{name}:{number}: \"t\" must be seconds, not {t!r}")
        hex_text = record.get("hex")
        try:
            data = bytes.fromhex(hex_text) if isinstance(hex_text, str) else None
        except ValueError:
            data = None
        if data is None:
            raise CaptureError(f"{name}:{number}: \"hex\" is not hex digits")
        decoded = record.get("decoded", [])
        if not isinstance(decoded, list) or not all(isinstance(item, dict) for item in decoded):
            raise CaptureError(f"{name}:{number}: \"decoded\" must be a list of frame descriptions")
        lines.append(CaptureLine(number, float(t), direction, data, decoded, bool(record.get("masked", False))))
    return Capture(name, header, lines)


def _json_line(name: str, number: int, row: str) -> dict[str, Any]:
    try:
        record = json.loads(row)
    except ValueError as error:
        raise CaptureError(f"{name}:{number}: not JSON: {error}") from None
    if not isinstance(record, dict):
        raise CaptureError(f"{name}:{number}: a line must be a JSON object")
    return record


@dataclass
class RecordedExchange:
    """One request found in a capture, the answer frames the terminal sent until the next one, and
    what the cashier answered to the terminal's dialog meanwhile."""

    line: int
    request: Request
    answers: list[dict[str, Any]] = field(default_factory=list)
    prompt_answers: list[tuple[str, bool]] = field(default_factory=list)  # the cashier's, in order


def frames(decoded: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(entry) for entry in decoded if entry.get("kind") == EntryKind.FRAME.value]


def recorded_exchanges(capture: Capture, protocol: str | None = None) -> list[RecordedExchange]:
    """The capture's requests, decoded by a terminal session of the protocol, each with its answers
    and the cashier's answers to the terminal's dialog.

    The ECR's bytes go into one terminal session in order (its own replies are dropped); a
    :class:`RequestReceived` starts an exchange. The terminal's bytes go into an ECR session started
    with that request: a :class:`CashierPrompt` it reports is put to the terminal session
    (``send_prompt``), so that the ECR's reply comes out as a :class:`PromptAnswered`, kept for
    replay; its Completed or Failed ends the exchange and the terminal session is reset.
    """
    spec = protocols.get(protocol or capture.protocol)
    terminal = spec.terminal_session(None)
    ecr: EcrSession | None = None
    exchanges: list[RecordedExchange] = []
    for line in capture.lines:
        if line.direction == TERMINAL_TO_ECR:
            if exchanges:
                exchanges[-1].answers.extend(frames(line.decoded))
            if ecr is not None:
                for ecr_event in ecr.receive(line.data, line.t):
                    if isinstance(ecr_event, CashierPrompt):
                        terminal.send_prompt(ecr_event.prompt, ecr_event.timeout, line.t)
                        terminal.data_to_send()
                    elif isinstance(ecr_event, (Completed, Failed)):  # the exchange is over
                        terminal.reset()
                        ecr = None
                        break
                if ecr is not None:
                    ecr.data_to_send()
            continue
        if line.masked:
            raise CaptureError(f"{capture.path}:{line.number}: the ECR's bytes carried a card number, masked "
                               f"in the capture: this request cannot be replayed")
        events = terminal.receive(line.data, line.t)
        if any(isinstance(event, RequestRejected) for event in events):
            # A request the session took for one sent while the last is still in hand (an answer
            # it never saw end, e.g. masked): the last exchange is over, take this one afresh.
            terminal.reset()
            events = terminal.receive(line.data, line.t)
        for event in events:
            if isinstance(event, RequestReceived):
                exchanges.append(RecordedExchange(line.number, event.request))
                ecr = spec.ecr_session(None)
                ecr.start(event.request, line.t)
                ecr.data_to_send()  # the request itself, already on the terminal's side
            elif isinstance(event, PromptAnswered) and exchanges:
                exchanges[-1].prompt_answers.append((event.answer, event.ok))
        terminal.data_to_send()
    return exchanges


@dataclass(frozen=True)
class Difference:
    """Where a replayed answer differs from the recorded one."""

    request_line: int
    frame: int
    key: str
    recorded: object
    replayed: object

    def __str__(self) -> str:
        return (f"request at line {self.request_line}, answer frame {self.frame + 1}: {self.key}: "
                f"recorded {self.recorded!r}, replayed {self.replayed!r}")


def _comparable(frame: Mapping[str, Any], ignore: frozenset[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for key in ("message", "message_kind"):
        if frame.get(key):
            values[key] = frame[key]
    for item in frame.get("fields", []) or []:
        name = str(item.get("name") or item.get("key"))
        if name in ignore or str(item.get("key")) in ignore:
            continue
        values[name] = item.get("value")
    return values


def compare_answers(request_line: int, recorded: list[dict[str, Any]], replayed: list[dict[str, Any]],
                    ignore: frozenset[str] = VOLATILE_FIELDS) -> list[Difference]:
    """Field-by-field differences between recorded and replayed answer frames (``ignore`` by name)."""
    differences = []
    if len(recorded) != len(replayed):
        differences.append(Difference(request_line, min(len(recorded), len(replayed)), "number of answer frames",
                                      len(recorded), len(replayed)))
    for index, (old, new) in enumerate(zip(recorded, replayed)):
        before, after = _comparable(old, ignore), _comparable(new, ignore)
        for key in sorted(set(before) | set(after), key=lambda k: (k not in before, k)):
            if before.get(key, "<absent>") != after.get(key, "<absent>"):
                differences.append(Difference(request_line, index, key, before.get(key, "<absent>"),
                                              after.get(key, "<absent>")))
    return differences


def chain_traces(*traces: Callable[[str, bytes], None] | None) -> Callable[[str, bytes], None]:
    """One trace calling each of ``traces`` (None skipped) in order: a capture beside a wire log."""
    present = [trace for trace in traces if trace is not None]

    def both(direction: str, data: bytes) -> None:
        for trace in present:
            trace(direction, data)

    return both
