"""A null modem on a virtual clock: an ECR session and a terminal session of one protocol, joined
back to back by two lines that can drop or corrupt bytes, driven in one loop with no real waiting.

Sessions are sans-IO: they take the time as an argument and report their next deadline. So the
driver here keeps a virtual ``now``, moves bytes between the sessions (each write arrives
:data:`LATENCY` later, in the chunks the run asks for), plays a minimal terminal application (it
answers every request after a working time, with a progress message half way), and when nothing is
in flight jumps the clock straight to the earliest deadline. A run of a whole exchange with a few
timeouts in it takes about a millisecond.

:class:`ExchangeRun` records what each side saw; :func:`check_invariants` says whether a run kept
the promises every protocol makes (see there).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from posbridge.protocols.common.model import Request, Result, Status
from posbridge.protocols.common.session import (
    AbortRequested,
    CashierPrompt,
    Completed,
    Failed,
    PromptAnswered,
    RequestReceived,
    RequestRejected,
    ResultDelivered,
    ResultUndelivered,
)

Direction = Literal["tx", "rx"]  # tx: ECR -> terminal, rx: terminal -> ECR (the ECR device's view)
FaultKind = Literal["drop", "corrupt"]

#: Seconds a write takes to reach the other side. Not zero, so two sides that write at the same
#: moment really cross on the line (an ENQ collision), as they do on a serial cable.
LATENCY = 0.001
#: A run whose ECR has no outcome after this much virtual time hangs (the longest default timer
#: of any protocol, Arcus's 120 s result timer, fits more than twice).
EXCHANGE_LIMIT = 600.0
#: Steps of the loop (deliveries and clock jumps) after which a run is declared stuck.
STEP_LIMIT = 100_000


@dataclass(frozen=True)
class LineFault:
    """One fault on the line: ``kind`` applied to byte ``position`` (counted from 0) of ``direction``."""

    direction: Direction
    kind: FaultKind
    position: int

    def __str__(self) -> str:
        return f"{self.direction}:{self.kind}@{self.position}"


class Line:
    """One direction of the null modem: counts the bytes it carries and applies its fault.

    ``corrupt`` XORs the byte with 0xFF, as the devices' fault layer does (``corrupt@N``).
    """

    def __init__(self, fault: LineFault | None = None) -> None:
        self.fault = fault
        self.carried = 0  # bytes offered to the line so far
        self.injected = False

    def carry(self, data: bytes) -> bytes:
        """The bytes that reach the far end of ``data`` (the fault applied when its byte passes)."""
        start, self.carried = self.carried, self.carried + len(data)
        fault = self.fault
        if fault is None or not start <= fault.position < self.carried:
            return data
        at = fault.position - start
        self.injected = True
        if fault.kind == "drop":
            return data[:at] + data[at + 1:]
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@dataclass
class TerminalApp:
    """The smallest terminal application: answers each request ``work`` seconds after it arrives.

    ``result_for(request)`` gives the answer; half way through, a progress message is sent when
    ``progress`` is set. A request it cannot read (:class:`RequestRejected`) gets a decline at once.
    It checks ``current_exchange`` right before it sends, as posbridge's pump does, so it never
    answers an exchange the ECR has given up on. ``prompt`` makes it ask the cashier a question
    first (protocols with a cashier dialog) and answer only once the cashier has answered.
    """

    result_for: Callable[[Request], Result]
    work: float = 0.5
    progress: bool = True
    prompt: str | None = None
    abort_result: Callable[[Request], Result] | None = None


@dataclass
class ExchangeRun:
    """What one run saw, in order: ``(time, side, event)`` with side ``"ecr"`` or ``"terminal"``."""

    request: Request
    events: list[tuple[float, str, object]] = field(default_factory=list)
    sent_results: list[tuple[int | None, Result]] = field(default_factory=list)  # (exchange, result)
    ecr_outcome: Completed | Failed | None = None
    ecr_outcome_at: int | None = None  # index in ``events``
    end_time: float = 0.0
    quiet: bool = False  # both sessions idle, nothing in flight, no deadline left
    stuck: str = ""  # why the loop stopped early, if it did
    lines: dict[str, Line] = field(default_factory=dict)

    def of(self, side: str, *types: type) -> list[object]:
        """The events of ``side`` of the given types, in order."""
        return [event for _, s, event in self.events if s == side and isinstance(event, types)]

    def terminal_outcomes(self) -> list[ResultDelivered | ResultUndelivered]:
        return self.of("terminal", ResultDelivered, ResultUndelivered)  # type: ignore[return-value]


class NullModem:
    """Drive ``ecr`` and ``terminal`` against each other on a virtual clock (see the module docstring).

    ``chunk`` cuts every write into pieces of that many bytes (0: as written; -1: two halves);
    ``faults`` are applied by the two lines.
    """

    def __init__(self, ecr: Any, terminal: Any, app: TerminalApp, *, faults: Sequence[LineFault] = (),
                 chunk: int = 0, latency: float = LATENCY) -> None:
        self.ecr, self.terminal, self.app = ecr, terminal, app
        self.chunk, self.latency = chunk, latency
        self.now = 0.0
        self.lines = {d: Line(next((f for f in faults if f.direction == d), None)) for d in ("tx", "rx")}
        self._queue: list[tuple[float, int, str, Any]] = []  # (time, order, kind, payload)
        self._order = itertools.count()
        self._requests: dict[int | None, Request] = {}
        self.run: ExchangeRun | None = None

    # --- scheduling -------------------------------------------------------------------------------
    def _at(self, when: float, kind: str, payload: Any) -> None:
        heapq.heappush(self._queue, (when, next(self._order), kind, payload))

    def _pieces(self, data: bytes) -> list[bytes]:
        if self.chunk == -1 and len(data) > 1:
            return [data[: len(data) // 2], data[len(data) // 2:]]
        if self.chunk > 0:
            return [data[i: i + self.chunk] for i in range(0, len(data), self.chunk)]
        return [data]

    def _flush(self) -> None:
        """Put what each session wants to send on its line."""
        for direction, session in (("tx", self.ecr), ("rx", self.terminal)):
            data = session.data_to_send()
            if data:
                arrived = self.lines[direction].carry(data)
                for piece in self._pieces(arrived):
                    if piece:
                        self._at(self.now + self.latency, direction, piece)

    # --- events -----------------------------------------------------------------------------------
    def _record(self, side: str, events: list[object]) -> None:
        run = self.run
        assert run is not None
        for event in events:
            run.events.append((self.now, side, event))
            if side == "ecr":
                if isinstance(event, (Completed, Failed)) and run.ecr_outcome is None:
                    run.ecr_outcome, run.ecr_outcome_at = event, len(run.events) - 1
                elif isinstance(event, CashierPrompt):
                    self._at(self.now + 0.2, "answer_prompt", "1111")
            else:
                self._on_terminal_event(event)

    def _on_terminal_event(self, event: object) -> None:
        app = self.app
        if isinstance(event, RequestReceived):
            self._requests[event.exchange] = event.request
            if app.prompt is not None:
                self._at(self.now + app.work / 4, "prompt", event.exchange)
                return
            if app.progress:
                self._at(self.now + app.work / 2, "progress", event.exchange)
            self._at(self.now + app.work, "result", event.exchange)
        elif isinstance(event, RequestRejected):
            self._requests[event.exchange] = self.run.request  # type: ignore[union-attr]
            self._at(self.now, "refusal", event.exchange)
        elif isinstance(event, PromptAnswered):
            if app.progress:
                self._at(self.now + app.work / 2, "progress", event.exchange)
            self._at(self.now + app.work, "result", event.exchange)
        elif isinstance(event, AbortRequested) and app.abort_result is not None:
            self._at(self.now, "abort_result", event.exchange)

    def _act(self, kind: str, payload: Any) -> None:
        terminal, now = self.terminal, self.now
        if kind == "tx":
            self._record("terminal", terminal.receive(payload, now))
        elif kind == "rx":
            self._record("ecr", self.ecr.receive(payload, now))
        elif kind == "answer_prompt":
            if self.ecr.busy:
                self.ecr.answer_prompt(payload, True, now)
        elif terminal.current_exchange != payload or payload is None:
            return  # the ECR gave up on that exchange: nothing more is sent for it
        elif kind == "progress":
            terminal.send_progress("", now)
        elif kind == "prompt":
            terminal.send_prompt(self.app.prompt, 30.0, now)
        elif kind in ("result", "refusal", "abort_result"):
            request = self._requests[payload]
            if kind == "result":
                result = self.app.result_for(request)
            elif kind == "abort_result":
                assert self.app.abort_result is not None
                result = self.app.abort_result(request)
            else:
                result = Result(request.operation, Status.DECLINED, "913", "НЕВЕРНЫЙ ЗАПРОС")
            terminal.send_result(result, now)
            self.run.sent_results.append((payload, result))  # type: ignore[union-attr]

    # --- the loop ---------------------------------------------------------------------------------
    def exchange(self, request: Request, *, abort_at: float | None = None) -> ExchangeRun:
        """Run one exchange for ``request`` until both sides are quiet (or it is clearly stuck)."""
        run = self.run = ExchangeRun(request, lines=self.lines)
        self.ecr.start(request, self.now)
        if abort_at is not None:
            self._at(self.now + abort_at, "abort", None)
        for _ in range(STEP_LIMIT):
            self._flush()
            if not self._queue and self._idle():
                run.quiet, run.end_time = True, self.now
                return run
            due = [d for d in (self.ecr.next_deadline(), self.terminal.next_deadline()) if d is not None]
            next_action = self._queue[0][0] if self._queue else None
            deadline = min(due) if due else None
            if next_action is None and deadline is None:
                run.stuck = "no bytes in flight, no deadline, yet a session is busy"
                break
            if next_action is not None and (deadline is None or next_action <= deadline):
                when, _, kind, payload = heapq.heappop(self._queue)
                self.now = max(self.now, when)
                if kind == "abort":
                    if self.ecr.busy:
                        self.ecr.abort(self.now)
                else:
                    self._act(kind, payload)
            else:
                assert deadline is not None
                self.now = max(self.now, deadline)
                self._record("ecr", self.ecr.poll(self.now))
                self._record("terminal", self.terminal.poll(self.now))
            if self.now > EXCHANGE_LIMIT and run.ecr_outcome is None:
                run.stuck = f"the ECR has no outcome after {EXCHANGE_LIMIT:g} virtual seconds"
                break
        else:
            run.stuck = f"still going after {STEP_LIMIT} steps"
        run.end_time = self.now
        return run

    def _idle(self) -> bool:
        return (not self.ecr.busy and not self.terminal.busy
                and self.ecr.next_deadline() is None and self.terminal.next_deadline() is None)


def _answers(result: Result, request: Request) -> bool:
    """True when ``result`` is for ``request``: same operation, and the same amount, currency and
    transaction id wherever the result carries one."""
    return not _mismatches(result, request)


def _mismatches(got: Result, request: Request) -> list[str]:
    return [f"{name} {theirs!r} for {ours!r}" for name, theirs, ours in (
        ("operation", got.operation, request.operation), ("amount", got.amount, request.amount),
        ("currency", got.currency if request.amount is not None else None, request.currency),
        ("transaction_id", got.transaction_id, request.transaction_id)) if theirs is not None and theirs != ours]


def check_invariants(run: ExchangeRun, clean: Result | None = None) -> list[str]:
    """What a run did that no protocol may do; empty when it kept every promise:

    1. nothing hangs: the ECR reaches an outcome, and both sessions end idle with nothing pending;
    2. a definite outcome is the terminal's: a :class:`Completed` result is one the terminal sent
       for that request (equal to ``clean``, the result of the same exchange without faults, when
       given), answers that request (its operation, and its amount, currency and transaction id
       wherever the result carries one), and the terminal learns it was delivered — never that it
       was not;
    3. a result the ECR acknowledged while it still waited is the result it reports: the ECR may
       fail (outcome unknown) only when the terminal's result for its request was not delivered
       to it in time;
    4. the terminal reports the request once: a resend never opens a second exchange.
    """
    problems: list[str] = []
    if run.stuck:
        problems.append(f"stuck: {run.stuck}")
    elif not run.quiet:
        problems.append("the sessions never went quiet")
    outcome = run.ecr_outcome
    if outcome is None:
        problems.append("the ECR has no outcome")
        return problems
    request = run.request
    received = run.of("terminal", RequestReceived, RequestRejected)
    if len(received) > 1:
        problems.append(f"the terminal reported the request {len(received)} times")
    terminal_outcomes = run.terminal_outcomes()
    if isinstance(outcome, Completed):
        got = outcome.result
        sent = [result for _, result in run.sent_results]
        if not sent:
            problems.append(f"the ECR completed with a result the terminal never sent: {got}")
        mismatches = _mismatches(got, request)
        if mismatches:
            problems.append("the ECR's result does not answer its request: " + ", ".join(mismatches))
        if clean is not None and got != clean:
            problems.append(f"the ECR's result differs from the clean run's: {got} != {clean}")
        if any(isinstance(o, ResultUndelivered) for o in terminal_outcomes):
            problems.append("the ECR has the result, the terminal believes it undelivered")
        if not any(isinstance(o, ResultDelivered) for o in terminal_outcomes):
            problems.append("the ECR has the result, the terminal never learnt it was delivered")
    else:
        assert run.ecr_outcome_at is not None
        delivered_before = [event for i, (_, side, event) in enumerate(run.events)
                            if side == "terminal" and isinstance(event, ResultDelivered) and i < run.ecr_outcome_at
                            and _answers(event.result, request)]
        if delivered_before:
            problems.append(f"the terminal's result was delivered, yet the ECR failed: {outcome.error!r}")
    return problems


__all__ = [
    "LATENCY", "EXCHANGE_LIMIT", "LineFault", "Line", "TerminalApp", "ExchangeRun", "NullModem",
    "check_invariants",
]
