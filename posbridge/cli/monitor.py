"""``posbridge monitor``: sit between a cash register and a terminal and show what crosses the line.

    posbridge monitor --ecr tcp-listen://127.0.0.1:9000 --terminal serial:///dev/ttyACM0 [--protocol inpas]
                      [--json] [--hex] [--color auto|always|never] [--record FILE]

The register talks to the ECR side (any device URL :func:`posbridge.devices.open_device` opens: a
``pty://`` link or ``tcp-listen://`` port it connects to, or ``tcp://``/``serial://``/``virtual://``),
the terminal sits on the terminal side. Every byte read on one side is written to the other at
once and unchanged -- forwarding never waits for decoding -- and only then is a copy decoded by the
protocol's :func:`describe` for the screen (one line per frame, control byte or run of noise, with
the time and the direction; JSON lines with ``--json``) and, with ``--record``, for a capture
(:mod:`posbridge.capture`'s format, replayable by ``posbridge replay``).

Decoding is per direction by a :class:`StreamDecoder`: a frame split over reads is shown once,
whole; bytes that are no frame are shown as noise; nothing a describer could meet stops the relay.
A card number reaches neither the screen nor the capture (masked like the capture masks it).

A side whose peer leaves is reported; a listening side (``tcp-listen://``) serves the next peer, a
pseudo-terminal stays open for the next program, a connecting side (``tcp://``, ``serial://``) is
opened again with a growing pause. Bytes that arrive while the other side has no peer cannot be
delivered: they are reported as dropped, never queued for a later peer. SIGTERM and Ctrl-C end the
monitor cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TextIO

from posbridge import protocols
from posbridge.capture import ECR_TO_TERMINAL, TERMINAL_TO_ECR, CaptureWriter, mask_decoded
from posbridge.devices import Device, DeviceClosed, open_device
from posbridge.protocols.common.describe import EntryKind, FrameDescription, Problem
from posbridge.protocols.common.parts import DescribedStream, Piece, masked_entry, pieces_of
from posbridge.pump import QUIET_FLUSH, QuietTimers, summarize_error

__all__ = ["DIRECTIONS", "LinkMonitor", "MonitorReport", "Piece", "StreamDecoder", "add_monitor_arguments",
           "run_monitor"]

log = logging.getLogger("posbridge.monitor")

DIRECTIONS = (ECR_TO_TERMINAL, TERMINAL_TO_ECR)
_REOPEN_FIRST, _REOPEN_MAX = 0.2, 2.0  # back-off opening a connecting side again, seconds
_DIRECTION_COLOURS = {ECR_TO_TERMINAL: "36", TERMINAL_TO_ECR: "33"}  # cyan, yellow
_NOISE_SHOWN = 32  # bytes of a longer run of noise shown in its text line (--hex and JSON have them all)


# --- decoding a stream -----------------------------------------------------------------------------
class StreamDecoder(DescribedStream):
    """One direction's bytes, fed in any chunks, as :class:`Piece` s: a
    :class:`~posbridge.protocols.common.parts.DescribedStream` (whole frames, a split message's
    parts held until its final part and masked together, digits that end the noise held, every
    byte fed given out once, in order) that resynchronises when it is flushed.

    The monitor flushes after :data:`QUIET_FLUSH` seconds of silence and when a side closes. A held
    frame whose start byte was stray noise (what follows it holds good frames) is then given out
    as a one-byte incomplete frame and the rest described afresh, as a receiver resynchronises;
    otherwise it is given out as the incomplete frame it is.
    """

    def flush(self) -> list[Piece]:
        """Everything held, as pieces (see the class docstring): nothing stays pending."""
        pieces = self._cut(hold=True)
        while self._buffer:
            entries = self._describe(self._buffer)
            last = entries[-1] if entries else None
            if last is None or last.kind is not EntryKind.INCOMPLETE:  # held digits (or a describer's whim)
                pieces += self._cut(hold=False)
                break
            start = last.offset
            rest = self._buffer[start + 1:]
            if any(entry.kind is EntryKind.FRAME and entry.ok for entry in self._describe(rest)):
                detail = "; ".join(problem.detail for problem in last.problems)
                stray = replace(last, size=1, problems=(Problem(
                    "incomplete", f"{detail}: no such frame came, good frames did; taken for noise", start),))
                pieces += self.split.hold(pieces_of(self._buffer[:start + 1], [*entries[:-1], stray]))
                self._buffer = rest
                pieces += self._cut(hold=True)
            else:
                pieces += self._cut(hold=False)
        self._next_try = 0
        return pieces + self.split.release()


# --- what the monitor reports ----------------------------------------------------------------------
@dataclass(frozen=True)
class MonitorReport:
    """One thing the monitor saw, fit to show (card numbers masked).

    ``event``: ``"frame"`` (a piece of one direction: ``direction``, ``hex``, ``decoded`` -- the
    description as JSON --, ``text``, ``masked``), ``"link"`` (a side opened, listening, closed,
    reopened: ``side``, ``state``, ``detail``), ``"dropped"`` (``size`` bytes of ``direction`` the
    other side could not take: ``detail``), ``"error"`` (the capture could not be written: the relay
    goes on without it) or ``"stopped"`` (``counts``: bytes relayed each way; ``detail`` says so).
    ``t`` is seconds since the monitor started (monotonic), ``wall`` the wall clock.
    """

    event: str
    t: float
    wall: datetime
    direction: str = ""
    side: str = ""
    state: str = ""
    detail: str = ""
    hex: str = ""
    decoded: dict[str, Any] | None = None
    text: str = ""
    masked: bool = False
    size: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The report as one JSON object (keys as the capture format names them where it has them)."""
        out: dict[str, Any] = {"event": self.event, "t": round(self.t, 6), "wall": self.wall.isoformat()}
        if self.event == "frame":
            out.update({"dir": self.direction, "hex": self.hex, "decoded": self.decoded, "masked": self.masked})
        elif self.event == "link":
            out.update({"side": self.side, "state": self.state, "detail": self.detail})
        elif self.event == "dropped":
            out.update({"dir": self.direction, "size": self.size, "detail": self.detail})
        elif self.event == "stopped":
            out.update({"bytes": dict(self.counts), "detail": self.detail})
        else:
            out["detail"] = self.detail
        return out

    def to_text(self, *, show_hex: bool = False, colour: bool = False) -> str:
        """One line for people (two with ``show_hex``): local time, direction or side, what happened.
        ``colour``: ANSI colours (each direction its own, what is wrong in red, link news dimmed)."""
        def paint(text: str, code: str) -> str:
            return f"\x1b[{code}m{text}\x1b[0m" if colour else text

        stamp = self.wall.astimezone().strftime("%H:%M:%S.%f")[:-3]
        if self.event == "frame":
            wrong = bool(self.decoded and (self.decoded.get("problems") or self.decoded.get("kind") == "noise"))
            line = (f"{stamp} {paint(f'{self.direction:<13}', _DIRECTION_COLOURS.get(self.direction, '0'))} "
                    f"{paint(self.text, '31') if wrong else self.text}")
            return f"{line}\n{'':13} {bytes.fromhex(self.hex).hex(' ')}" if show_hex and self.hex else line
        if self.event == "link":
            return paint(f"{stamp} [{self.side}] {self.state}{': ' + self.detail if self.detail else ''}", "2")
        if self.event == "dropped":
            return paint(f"{stamp} {self.direction:<13} {self.size} byte(s) dropped: {self.detail}", "31")
        return f"{stamp} [monitor] {self.event}{': ' + self.detail if self.detail else ''}"


Reporter = Callable[[MonitorReport], None]


class _MonitorCapture(CaptureWriter):
    """A capture written from the monitor's pieces (already cut on frame boundaries, card-number
    digits never split), one line per piece, in the capture format of :mod:`posbridge.capture`."""

    def write_piece(self, direction: str, piece: Piece, safe: bytes, at: float, wall: datetime) -> None:
        """One capture line for ``piece`` (``safe``: its bytes with card numbers masked; ``at``: when
        its last byte came, on this writer's clock), keyed as :meth:`CaptureWriter._line` keys its lines."""
        self._write({"t": round(max(0.0, at - self._start), 6), "wall": wall.isoformat(), "dir": direction,
                     "hex": safe.hex(), "decoded": [mask_decoded(piece.entry.to_dict())],
                     "masked": safe != piece.data})


# --- the relay ----------------------------------------------------------------------------------------
class _Side:
    """One end of the monitor: its URL, its device (replaced when a connecting side is reopened)."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.device: Device | None = None
        self.fresh = True  # no bytes read since it opened or its last peer left

    @property
    def listening(self) -> bool:
        """Serves one peer after another (tcp-listen); a pty stays open for the next program too."""
        device = self.device
        return device is not None and (device.reconnects or getattr(device, "slave_name", None) is not None)

    def where(self) -> str:
        """What a register or terminal opens to reach this side."""
        device = self.device
        if device is None:
            return self.url
        link = getattr(device, "link_path", None) or getattr(device, "slave_name", None)
        if link:
            return f"pseudo-terminal {link} (open it as a serial port)"
        port = getattr(device, "port", None)
        if device.reconnects and port:
            return f"listening on {device.url} (connect to tcp://{getattr(device, 'host', '127.0.0.1')}:{port})"
        return f"connected to {device.url}"


class LinkMonitor:
    """Relays bytes between an ECR side and a terminal side and reports what crosses (see the module
    docstring). ``report`` receives every :class:`MonitorReport` (it must not block; whatever it
    raises is logged, and the relay goes on). ``record`` writes a capture.

        async with LinkMonitor("tcp-listen://127.0.0.1:0", "tcp://127.0.0.1:9999", "inpas",
                               report=print) as monitor:
            ...   # monitor.ecr.device.port: where the register connects
    """

    def __init__(self, ecr: str, terminal: str, protocol: str | protocols.ProtocolSpec = "inpas", *,
                 report: Reporter, record: str | Path | IO[str] | None = None, quiet_flush: float = QUIET_FLUSH,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = protocol if isinstance(protocol, protocols.ProtocolSpec) else protocols.get(protocol)
        self.ecr = _Side("ecr", ecr)
        self.terminal = _Side("terminal", terminal)
        self.report = report
        self.record = record
        self.clock = clock
        self.counts = dict.fromkeys(DIRECTIONS, 0)  # bytes relayed each way
        self.dropped = dict.fromkeys(DIRECTIONS, 0)
        self._decoders = {direction: StreamDecoder(self.spec.describe) for direction in DIRECTIONS}
        self._quiet = QuietTimers(quiet_flush, self._quiet_flush)
        # When each direction's last bytes came: a piece is stamped with the arrival of its last byte
        # (one shown after the quiet period too).
        self._arrival: dict[str, tuple[float, datetime]] = {}
        self._capture: _MonitorCapture | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._start = clock()
        self._report_failures = 0
        self._stopped = False

    # --- life ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open both sides (a side that cannot be opened raises DeviceError, nothing left open) and
        the capture, then start relaying."""
        try:
            for side in (self.ecr, self.terminal):
                side.device = await open_device(side.url)
                self._link(side, "open", side.where())
            if self.record is not None:
                self._capture = _MonitorCapture(
                    self.record, self.spec, side="ecr",
                    link={"ecr": self.ecr.url, "terminal": self.terminal.url, "recorder": "posbridge monitor"},
                    clock=self.clock)
        except BaseException:
            await self._close_devices()
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._relay(self.ecr, self.terminal, ECR_TO_TERMINAL), name="monitor-ecr"),
                       loop.create_task(self._relay(self.terminal, self.ecr, TERMINAL_TO_ECR), name="monitor-terminal")]

    async def stop(self) -> None:
        """Stop relaying: show what is still held, close the capture and both sides. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._quiet.cancel()
        for direction in DIRECTIONS:
            self._show(direction, self._decoders[direction].forget())
        if self._capture is not None:
            with contextlib.suppress(Exception):
                self._capture.close()
        await self._close_devices()
        self._emit(MonitorReport("stopped", self._t(), _now(), counts=dict(self.counts), detail=", ".join(
            f"{direction} {self.counts[direction]} bytes" + (f" ({self.dropped[direction]} dropped)"
                                                             if self.dropped[direction] else "")
            for direction in DIRECTIONS)))

    async def run(self) -> None:
        """Start, relay until cancelled (SIGTERM, Ctrl-C), stop."""
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()

    async def __aenter__(self) -> LinkMonitor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _close_devices(self) -> None:
        for side in (self.ecr, self.terminal):
            if side.device is not None:
                with contextlib.suppress(Exception):
                    await side.device.close()

    # --- relaying --------------------------------------------------------------------------------
    async def _relay(self, source: _Side, target: _Side, direction: str) -> None:
        """Read ``source``, write ``target`` at once, then decode a copy; forever (until cancelled)."""
        failures = 0
        while True:
            device = source.device
            if device is None or device.closed:
                await self._reopen(source)
                continue
            try:
                data = await device.read(65536)
            except DeviceClosed as closed:
                self._closed(source, direction, str(closed) or "closed")
                if not source.listening:
                    await self._reopen(source)
                continue
            except Exception as error:  # a read error: report it, wait, try again (or reopen)
                failures += 1
                if failures == 1:
                    self._link(source, "read failed", summarize_error(error))
                await asyncio.sleep(min(_REOPEN_FIRST * failures, _REOPEN_MAX))
                continue
            arrived = (self._t(), _now())  # before forwarding: the time the bytes crossed
            failures = 0
            if source.fresh:
                source.fresh = False
                peer = getattr(device, "peer", None) if device.reconnects else None
                if peer:
                    self._link(source, "peer connected", f"{peer[0]}:{peer[1]}")
            await self._forward(target, direction, data)
            self._observe(direction, data, arrived)

    async def _forward(self, target: _Side, direction: str, data: bytes) -> None:
        device = target.device
        try:
            if device is None or device.closed:
                raise DeviceClosed(f"{target.name} side is being opened again")
            await device.write(data)
        except Exception as error:  # a side without a peer cannot take bytes: say so, never queue them
            self.dropped[direction] += len(data)
            self._emit(MonitorReport("dropped", self._t(), _now(), direction=direction, size=len(data),
                                     detail=summarize_error(error)))
        else:
            self.counts[direction] += len(data)

    def _closed(self, side: _Side, direction: str, why: str) -> None:
        """``side``'s peer left: show what it sent that is still held, then say so."""
        side.fresh = True
        self._quiet.cancel(direction)
        self._show(direction, self._decoders[direction].forget())
        self._link(side, "closed", why + ("; waiting for the next peer" if side.listening else "; opening it again"))

    async def _reopen(self, side: _Side) -> None:
        """Open a connecting side again, with a growing pause between tries (until cancelled)."""
        if side.device is not None:
            with contextlib.suppress(Exception):
                await side.device.close()
            side.device = None
        delay, tries = _REOPEN_FIRST, 0
        while True:
            await asyncio.sleep(delay)
            tries += 1
            try:
                device = await open_device(side.url)
            except Exception as error:
                if tries == 1:
                    self._link(side, "cannot open", f"{summarize_error(error)}; trying again")
                delay = min(delay * 2, _REOPEN_MAX)
                continue
            side.device, side.fresh = device, True
            self._link(side, "open again", side.where())
            return

    # --- decoding and showing ----------------------------------------------------------------------
    def _observe(self, direction: str, data: bytes, arrived: tuple[float, datetime]) -> None:
        self._arrival[direction] = arrived
        decoder = self._decoders[direction]
        self._show(direction, decoder.feed(data))
        self._quiet.restart(direction, bool(decoder.pending))

    def _quiet_flush(self, direction: str) -> None:
        self._show(direction, self._decoders[direction].flush())

    def _show(self, direction: str, pieces: list[Piece]) -> None:
        for piece in pieces:
            entry = piece.entry
            safe = piece.safe()  # a card number masked, one straddling a split message's parts too
            text = masked_entry(entry).summary()  # masked before summary() clips a long value
            if entry.kind is EntryKind.NOISE and len(safe) > _NOISE_SHOWN:  # the line, not 64 KB of hex
                text = f"noise {safe[:_NOISE_SHOWN].hex()}…({len(safe)} bytes)" + "".join(
                    f" [{problem.reason}: {problem.detail}]" for problem in entry.problems)
            if entry.skipped:
                text += f" (after {entry.skipped} byte(s) of noise)"
            t, wall = self._arrival.get(direction) or (self._t(), _now())
            self._emit(MonitorReport("frame", t, wall, direction=direction, hex=safe.hex(),
                                     decoded=mask_decoded(entry.to_dict()), text=mask_decoded(text),
                                     masked=safe != piece.data))
            if self._capture is not None:
                try:
                    self._capture.write_piece(direction, piece, safe, self._start + t, wall)
                except Exception as error:  # a full disk costs the capture, never the relay
                    self._capture = None
                    self._emit(MonitorReport("error", self._t(), _now(),
                                             detail=f"the capture stopped: {summarize_error(error)}"))

    def _link(self, side: _Side, state: str, detail: str = "") -> None:
        self._emit(MonitorReport("link", self._t(), _now(), side=side.name, state=state, detail=detail))

    def _emit(self, report: MonitorReport) -> None:
        try:
            self.report(report)
        except Exception as error:  # a screen that cannot print must not cost the line anything
            self._report_failures += 1
            if self._report_failures == 1:
                log.warning("the monitor's output failed: %s (the relay goes on)", summarize_error(error))

    def _t(self) -> float:
        return self.clock() - self._start


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- the command ----------------------------------------------------------------------------------------
def add_monitor_arguments(p: argparse.ArgumentParser) -> None:
    """The ``monitor`` command's options."""
    p.add_argument("--ecr", required=True, metavar="URL",
                   help="the register's side, e.g. tcp-listen://127.0.0.1:9000 or pty:///tmp/ttyPOS")
    p.add_argument("--terminal", required=True, metavar="URL",
                   help="the terminal's side, e.g. serial:///dev/ttyACM0 or tcp://127.0.0.1:9999")
    p.add_argument("--protocol", default="inpas", choices=protocols.names(), help="wire protocol (default inpas)")
    p.add_argument("--json", action="store_true", help="one JSON object a line instead of text")
    p.add_argument("--hex", action="store_true", help="text: each frame's bytes in hex below it")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="text in colour (default: on a terminal, unless NO_COLOR is set)")
    p.add_argument("--record", metavar="FILE", help="write a capture (JSON lines, card numbers masked) for "
                   "`posbridge replay`")


class _Printer:
    """Writes reports to ``out`` a line each; a closed output is said once on stderr, then ignored
    (the relay goes on: the line matters more than the screen)."""

    def __init__(self, out: TextIO, *, as_json: bool, show_hex: bool, colour: str = "auto") -> None:
        self.out = out
        self.as_json = as_json
        self.show_hex = show_hex
        self.colour = not as_json and (colour == "always" or (colour == "auto" and _is_terminal(out)
                                                              and not os.environ.get("NO_COLOR")))
        self.broken = False

    def __call__(self, report: MonitorReport) -> None:
        if self.broken:
            return
        line = (json.dumps(report.to_json(), ensure_ascii=False) if self.as_json
                else report.to_text(show_hex=self.show_hex, colour=self.colour))
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.broken = True
            with contextlib.suppress(Exception):  # no "Exception ignored" from the flush at exit
                _to_devnull(self.out.fileno())
            with contextlib.suppress(Exception):
                print("posbridge monitor: the output closed; still relaying (Ctrl-C or SIGTERM to end)",
                      file=sys.stderr, flush=True)


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (ValueError, OSError):
        return False


def _to_devnull(fd: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


async def _monitor(args: argparse.Namespace, out: TextIO) -> int:
    monitor = LinkMonitor(args.ecr, args.terminal, args.protocol, record=args.record,
                          report=_Printer(out, as_json=args.json, show_hex=args.hex, colour=args.color))
    task = asyncio.current_task()
    assert task is not None  # asyncio.run made one for this coroutine
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await monitor.run()
    except asyncio.CancelledError:
        pass  # SIGTERM or Ctrl-C: run() has stopped the monitor and said so
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0


def run_monitor(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run ``posbridge monitor`` until SIGTERM or Ctrl-C (exit 0). A side that cannot be opened at
    the start raises DeviceError, which ``main`` prints as one line (exit 2)."""
    return asyncio.run(_monitor(args, out))
