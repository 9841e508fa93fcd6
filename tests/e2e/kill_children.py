"""Child processes of the kill matrix (``tests/e2e/kill_matrix.py``): an ECR and a virtual terminal
that SIGKILL themselves at a named step of an exchange.

Both use the public API only and are started by the harness with multiprocessing's ``forkserver``
start method: a clean process that has imported posbridge once forks each child, so a child costs
a few milliseconds, and it is still a real process that dies of a real ``SIGKILL``
(``os.kill(os.getpid(), signal.SIGKILL)``: no ``finally``, no ``atexit``, no journal close, no
socket shutdown; the kernel closes what the process held, as it would after a crash).

How each step is reached, deterministically:

* the ECR (:func:`ecr_child`) kills itself from ``EcrClient(trace=…)`` — called with ``("tx",
  bytes)`` *before* bytes are written and ``("rx", bytes)`` *before* received bytes are processed —
  from ``on_progress`` (a WAIT / intermediate packet) or from :class:`KillingEcrLog`, whose
  ``finish`` kills before the outcome is journaled. The trace's bytes are decoded with the
  protocol's own describer (``ProtocolSpec.describe``, what ``posbridge decode`` prints), gathered
  per direction so a frame split over several reads is seen once, whole.
* the terminal (:func:`emulator_child`) is ``posbridge emulate`` (``cli._run_emulate``) with a
  ``trace`` hook on its :class:`~posbridge.emulator.terminal.VirtualTerminal`.

Before dying a child sends one message on its pipe saying where it is (and, for the ECR, what its
journal holds at that moment): the harness checks that the step it asked for was the one reached.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sys
import time
from typing import Any

from posbridge import protocols
from posbridge.protocols.common.describe import EntryKind, FrameDescription
from posbridge.ecr.client import EcrClient
from posbridge.journal import EcrLog, Journal

# Steps at which the ECR kills itself (kill_matrix.ECR_STEPS has the words for people).
ECR_STEPS = ("journaled", "acked", "wait", "final", "finished")
# Steps at which the terminal kills itself (kill_matrix.EMULATOR_STEPS).
EMULATOR_STEPS = ("received", "decided", "result_sent")


# --- the wire, as the protocol's describer sees it ------------------------------------------------
class Wire:
    """Frames seen in one direction, whole: bytes are gathered until the describer finds frames."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.buffer = b""

    def feed(self, data: bytes) -> list[FrameDescription]:
        """The complete entries (frames and control bytes) that ``data`` completes."""
        self.buffer += data
        try:
            entries = self.spec.describe(self.buffer)
        except Exception:  # a describer bug must not hide a step: drop what we have
            self.buffer = b""
            return []
        cut = len(self.buffer)
        if entries and entries[-1].kind is EntryKind.INCOMPLETE:
            cut = entries[-1].offset
            entries = entries[:-1]
        self.buffer = self.buffer[cut:]
        return entries


def _fields(entry: FrameDescription) -> dict[str, str]:
    """A frame's fields as name -> text, and as ``tag<key>`` -> text (INPAS tags by number)."""
    out: dict[str, str] = {}
    for field in entry.fields:
        out[field.name] = field.value
        out[f"tag{field.key}"] = field.value
    return out


def is_frame(entry: FrameDescription) -> bool:
    """A sound frame with a whole message (a split message's on its final part)."""
    return entry.kind is EntryKind.FRAME and entry.ok and bool(entry.fields)


def has_control(entries: list[FrameDescription], name: str) -> bool:
    return any(e.kind is EntryKind.CONTROL and e.name == name for e in entries)


class Frames:
    """What a frame is, per protocol: request, progress (WAIT / ``I``) or final answer (``R``)."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol

    def operation_code(self, entry: FrameDescription) -> str | None:
        f = _fields(entry)
        return f.get("tag25") if self.protocol == "inpas" else f.get("operation")

    def stan(self, entry: FrameDescription) -> str | None:
        f = _fields(entry)
        return f.get("tag26") if self.protocol == "inpas" else f.get("transaction_id")

    def amount(self, entry: FrameDescription) -> str | None:
        f = _fields(entry)
        return f.get("tag0") if self.protocol == "inpas" else f.get("amount")

    def is_request(self, entry: FrameDescription) -> bool:
        """A request frame (ECR to terminal)."""
        if not is_frame(entry):
            return False
        if self.protocol == "inpas":
            return self.operation_code(entry) not in (None, "21", "52", "63")
        return entry.message == "Q"

    def is_progress(self, entry: FrameDescription) -> bool:
        """A WAIT (INPAS operation code 21) or an intermediate ``I`` (Arcus2)."""
        if not is_frame(entry):
            return False
        if self.protocol == "inpas":
            return self.operation_code(entry) == "21"
        return entry.message == "I"

    def is_final(self, entry: FrameDescription, request_code: str | None) -> bool:
        """The final answer to a request with operation code ``request_code``."""
        if not is_frame(entry):
            return False
        if self.protocol == "inpas":
            if entry.part is not None and not entry.part.final:
                return False
            return request_code is not None and self.operation_code(entry) == request_code
        return entry.message == "R"


def _die(conn: Any, message: dict[str, Any]) -> None:
    """Say where we are, then SIGKILL ourselves (nothing after this line runs)."""
    message = {**message, "pid": os.getpid(), "at": time.time()}
    try:
        conn.send(("killing", message))
    finally:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # pragma: no cover - SIGKILL is not delivered later than this


def _redirect_output(path: str | None) -> None:
    """Send this child's stdout/stderr (log lines, warnings) to ``path``: evidence, not noise."""
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)


# --- the ECR --------------------------------------------------------------------------------------
class KillingEcrLog(EcrLog):
    """The ECR's write-ahead log; with ``killer.step == "finished"`` its ``finish`` kills the process
    before the outcome of the armed operation is journaled (step e: the ACK has been written)."""

    killer: EcrKiller | None = None

    def finish(self, entry_id: int, result: Any) -> None:
        killer = self.killer
        if killer is not None and killer.armed and killer.step == "finished":
            killer.kill("finished", entry_id=entry_id, result_status=getattr(result.status, "value", None),
                        result_rrn=result.rrn, ack_traced=killer.exchange.get("ack_after_final"))
        super().finish(entry_id, result)


class EcrKiller:
    """Watches the ECR's side of the wire and kills the process at its step once armed."""

    def __init__(self, conn: Any, protocol: str, step: str | None, journal: Journal) -> None:
        self.conn = conn
        self.protocol = protocol
        self.step = step
        self.journal = journal
        self.frames = Frames(protocol)
        spec = protocols.get(protocol)
        self.tx, self.rx = Wire(spec), Wire(spec)
        self.armed = False
        self.client: EcrClient | None = None
        self.exchange: dict[str, Any] = {}
        self.write_ahead: list[dict[str, Any]] = []  # journal state at each exchange's first byte

    def begin(self, operation: str, armed: bool) -> None:
        """A new exchange starts (``armed``: the one to kill)."""
        self.armed = armed and self.step is not None
        self.exchange = {"operation": operation, "first_tx": True, "request_sent": False,
                         "request_code": None, "final_seen": False, "ack_after_final": False}
        self.tx.buffer = self.rx.buffer = b""

    def _entry_state(self) -> dict[str, Any]:
        client = self.client
        if client is None:
            return {}
        entry = self.journal.ecr.last(client.journal_key)
        if entry is None:
            return {"entry": None}
        return {"entry": entry.id, "entry_operation": getattr(entry.request.operation, "value",
                                                              str(entry.request.operation)),
                "entry_state": entry.state, "transaction_id": entry.request.transaction_id}

    def kill(self, step: str, **details: Any) -> None:
        _die(self.conn, {"side": "ecr", "step": step, **self._entry_state(), **details,
                         "write_ahead": self.write_ahead})

    def trace(self, direction: str, data: bytes) -> None:
        ex = self.exchange
        if not ex:
            return
        if direction == "tx":
            if ex["first_tx"]:
                ex["first_tx"] = False
                # The write-ahead rule: the entry is durably "sent" before its first byte is written.
                self.write_ahead.append({"operation": ex["operation"], **self._entry_state()})
                if self.armed and self.step == "journaled":
                    self.kill("journaled", first_bytes=data[:16].hex())
            if ex["final_seen"]:
                # The first bytes after the final answer are the ECR's ACK of it (and EOT).
                if self.armed and self.step == "final":
                    self.kill("final", ack_bytes=data.hex())
                ex["ack_after_final"] = True
            for entry in self.tx.feed(data):
                if self.frames.is_request(entry):
                    ex["request_sent"] = True
                    ex["request_code"] = self.frames.operation_code(entry)
            return
        entries = self.rx.feed(data)
        if self.armed and self.step == "acked" and ex["request_sent"] and has_control(entries, "ACK"):
            self.kill("acked", rx=data[:16].hex())
        if any(self.frames.is_final(e, ex["request_code"]) for e in entries):
            ex["final_seen"] = True

    def progress(self, event: Any) -> None:
        if self.armed and self.step == "wait":
            self.kill("wait", text=getattr(event, "text", ""))


async def _run_operation(client: EcrClient, operation: str, amount: int,
                         original: dict[str, Any] | None) -> Any:
    if operation == "sale":
        return await client.sale(amount)
    if operation == "preauth":
        return await client.preauth(amount)
    assert original is not None, f"{operation} needs an original operation"
    rrn, auth = original["rrn"], original.get("auth_code")
    if operation == "refund":
        return await client.refund(amount, rrn, auth_code=auth)
    if operation == "cancel":
        return await client.cancel(amount, rrn, auth_code=auth)
    if operation == "completion":
        return await client.completion(amount, rrn, auth_code=auth)
    if operation == "cancel_preauth":
        return await client.cancel_preauth(amount, rrn, auth_code=auth)
    raise ValueError(f"unknown operation {operation}")


def _summary(result: Any) -> dict[str, Any]:
    return {"operation": result.operation.value, "status": result.status.value,
            "response_code": result.response_code, "host_code": result.host_code, "rrn": result.rrn,
            "auth_code": result.auth_code, "amount": result.amount, "transaction_id": result.transaction_id}


def ecr_child(conn: Any, params: dict[str, Any]) -> None:
    """An ECR: an optional clean setup operation, then the operation under test, killed at
    ``params["step"]`` (None: not killed; with ``recover_in_process`` it then waits for the
    harness's "go" and runs ``EcrClient.recover()`` itself, on the same client)."""
    _redirect_output(params.get("output"))
    os.environ["POSBRIDGE_LOCK_DIR"] = params["lock_dir"]
    try:
        code = asyncio.run(_ecr_main(conn, params))
    except BaseException as error:  # reported, then a distinct exit code
        try:
            conn.send(("error", {"error": f"{type(error).__name__}: {error}"}))
        finally:
            os._exit(70)
    os._exit(code)


async def _ecr_main(conn: Any, p: dict[str, Any]) -> int:
    journal = Journal(p["ecr_journal"])
    killer = EcrKiller(conn, p["protocol"], p.get("step"), journal)
    journal.ecr = killing = KillingEcrLog(journal.storage)
    killing.killer = killer
    options = {"deadline": p.get("deadline", 20.0), "lock_wait": p.get("lock_wait", 10.0)}
    accepted = inspect.signature(EcrClient).parameters  # older clients lack some (checking old commits)
    client = EcrClient(p["port"], p["protocol"], journal=journal, trace=killer.trace,
                       on_progress=killer.progress, timers=p.get("timers") or {},
                       **{k: v for k, v in options.items() if k in accepted})
    killer.client = client
    await client.open()
    original = None
    setup = p.get("setup")
    if setup:
        killer.begin(setup, armed=False)
        result = await _run_operation(client, setup, p["amount"], None)
        original = _summary(result)
        conn.send(("setup", original))
        if not result.approved:
            return 3
    killer.begin(p["operation"], armed=True)
    conn.send(("start", {"operation": p["operation"], "amount": p["amount"]}))
    try:
        result = await _run_operation(client, p["operation"], p["amount"], original)
    except Exception as error:  # a link failure: the journal holds the operation as unknown
        conn.send(("failed", {"error": f"{type(error).__name__}: {error}", "write_ahead": killer.write_ahead}))
    else:
        conn.send(("done", {**_summary(result), "write_ahead": killer.write_ahead}))
    if p.get("step"):
        conn.send(("not_killed", {"step": p["step"]}))  # the step was never reached
        return 4
    if p.get("recover_in_process"):
        conn.send(("waiting", {}))
        if not conn.poll(p.get("go_timeout", 60.0)):
            return 5
        conn.recv()
        try:
            recoveries = await client.recover()
        except Exception as error:
            conn.send(("recover_failed", {"error": f"{type(error).__name__}: {error}"}))
            await client.close()
            return 6
        conn.send(("recovered", [{"entry": getattr(getattr(r, "entry", None), "id", None),
                                  "outcome": getattr(r, "outcome", repr(r)), "note": getattr(r, "note", ""),
                                  "resolved": getattr(r, "resolved", None)} for r in recoveries]))
    await client.close()
    journal.close()
    return 0


# --- the terminal ---------------------------------------------------------------------------------
class EmulatorKiller:
    """Watches the terminal's side of the wire; kills it at its step of the ``nth`` request
    (counted by distinct transaction number, so a resend does not count twice)."""

    def __init__(self, conn: Any, protocol: str, step: str, nth: int) -> None:
        self.conn = conn
        self.step = step
        self.nth = nth
        self.frames = Frames(protocol)
        spec = protocols.get(protocol)
        self.tx, self.rx = Wire(spec), Wire(spec)
        self.stans: list[str | None] = []
        self.target: dict[str, Any] | None = None  # the request to kill at
        self.result_sent = False
        self.terminal: Any = None

    def kill(self, step: str, **details: Any) -> None:
        _die(self.conn, {"side": "terminal", "step": step, "request": self.target, **details})

    def _decided(self) -> list[dict[str, Any]]:
        """The terminal journal's rows of the target request (the host's decision)."""
        terminal, target = self.terminal, self.target
        if terminal is None or target is None:
            return []
        rows = terminal.journal.ledger.operations(terminal.host_config.terminal_id)
        return [{"id": r.id, "operation": r.operation.value, "status": r.status.value, "code": r.code,
                 "amount": r.amount} for r in rows if r.transaction_id == target["stan"]]

    def trace(self, direction: str, data: bytes) -> None:
        if direction == "rx":
            if self.target is not None and self.step == "result_sent" and self.result_sent:
                self.kill("result_sent", rx=data[:16].hex(), decided=self._decided())
            for entry in self.rx.feed(data):
                if not self.frames.is_request(entry):
                    continue
                stan = self.frames.stan(entry)
                if stan in self.stans:
                    continue  # the request in hand, resent
                self.stans.append(stan)
                if len(self.stans) == self.nth:
                    self.target = {"stan": stan, "code": self.frames.operation_code(entry),
                                   "amount": self.frames.amount(entry)}
                    if self.step == "received":
                        self.kill("received", decided=self._decided())
            return
        if self.target is None:
            return
        for entry in self.tx.feed(data):
            if self.step == "decided" and self.frames.is_progress(entry):
                decided = self._decided()
                if decided:
                    self.kill("decided", decided=decided)
            if self.frames.is_final(entry, self.target["code"]):
                self.result_sent = True


def emulator_child(conn: Any, params: dict[str, Any]) -> None:
    """``posbridge emulate`` (as ``cli._run_emulate`` runs it) with a kill hook on its trace."""
    _redirect_output(params.get("output"))
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(_emulator_main(conn, params))
    except BaseException as error:
        try:
            conn.send(("error", {"error": f"{type(error).__name__}: {error}"}))
        finally:
            os._exit(70)
    os._exit(0)


async def _emulator_main(conn: Any, p: dict[str, Any]) -> None:
    from posbridge.emulator.scenario import load_scenario
    from posbridge.emulator.terminal import VirtualTerminal

    killer = EmulatorKiller(conn, p["protocol"], p["step"], p["nth"])
    scenario = load_scenario(p["scenario"])
    terminal = VirtualTerminal.from_scenario(scenario, protocol=p["protocol"], journal_path=p["journal"],
                                             seed=p.get("seed"), trace=killer.trace)
    killer.terminal = terminal

    def ready(device: Any) -> None:
        where = getattr(device, "link_path", None) or device.url
        conn.send(("ready", {"where": where, "port": getattr(device, "port", None)}))

    await terminal.run(p["port"], ready=ready)


if __name__ == "__main__":  # pragma: no cover
    print(__doc__)
