"""The service behind ``posbridge serve``: terminals, their queues, the command store, recovery.

One :class:`Service` owns every configured terminal through one long-lived
:class:`~posbridge.ecr.EcrClient` each (so it holds each terminal's cross-process lock: the
service is the terminal's one owner). Operations on a terminal run one at a time from a bounded
queue (:class:`QueueFull` past the limit); terminals run in parallel, all in one asyncio loop with
the HTTP server.

The truth about a command is the ECR journal's. The command store only maps command ids to
journal entries (linked in :class:`LinkingJournal` the moment the operation is journaled, before
its first byte) and keeps what the journal does not (the slip). An outcome the service did not see
is ``unknown`` until the client's recovery resolves it — at start for every terminal, at once
after an exchange that lost its answer, and before a money operation while anything is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from uuid import uuid4

from filelock import FileLock, Timeout

from posbridge.devices import DeviceError
from posbridge.ecr import EcrClient, Recovery
from posbridge.ecr.ownership import TerminalBusy
from posbridge.journal import EcrEntry, EcrLog, Journal, JournalError, Storage, default_journal_path
from posbridge.model import Operation, PosbridgeError, Request, Result, Status, mask_card_numbers
from posbridge.protocols.common.errors import LinkError

from posbridge.http.config import ServiceConfig, TerminalSettings
from posbridge.http.logs import CommandLog
from posbridge.http.operations import (
    APPROVED_STATUSES,
    OPERATIONS,
    CommandSpec,
    FieldError,
    result_fields,
)
from posbridge.http.store import CommandRow, CommandStore, commands_path_for

__all__ = ["LinkingJournal", "QueueFull", "Service", "ServiceBusy", "TerminalWorker", "Unavailable"]

log = logging.getLogger("posbridge.http")

_CURRENT_COMMAND: ContextVar[str | None] = ContextVar("posbridge_http_command", default=None)
_OPEN_STATES = ("pending", "sent", "unknown")
MAX_RECOVERY_RETRY = 600.0
"""Seconds at most between two recovery attempts of an outcome that stays open."""
_SIX_KINDS = ("Pay", "ReturnPayment", "CancelPayment", "Authorisation", "AuthConfirmation", "CancelAuthorisation")


class Unavailable(PosbridgeError):
    """The service cannot take the command now (HTTP 503); nothing was stored, journaled or sent."""


class QueueFull(Unavailable):
    """The terminal's queue is full: the command was not accepted."""

    def __init__(self, terminal: str, waiting: int) -> None:
        super().__init__(f"terminal {terminal} has {waiting} operations waiting, the most it queues: "
                         "try again when one has finished")
        self.terminal = terminal


class ServiceBusy(PosbridgeError):
    """Another ``posbridge serve`` uses this command store (so this journal): the service does not
    start. Two services on one store would each call the other's running commands "stopped" at
    start, and answer for commands the other runs."""


class StoreLock:
    """The one-service-per-command-store lock: a file lock beside the store, held from start to stop
    (the kernel releases it if the service dies, even by SIGKILL); the holder's pid is written in it."""

    def __init__(self, store_path: str) -> None:
        self.path = f"{store_path}.lock"
        # As the terminal lock (posbridge/ecr/ownership.py): flock, never a soft lock, the file kept.
        self._lock = FileLock(self.path, timeout=0, thread_local=False, fallback_to_soft=False,
                              preserve_lock_file=True)

    def acquire(self) -> None:
        """Take the lock at once, or raise :class:`ServiceBusy` naming the holder."""
        try:
            self._lock.acquire()
        except Timeout:
            holder = ""
            with contextlib.suppress(OSError):
                holder = Path(self.path).read_text(encoding="utf-8").strip()
            raise ServiceBusy(f"another posbridge serve{f' (pid {holder})' if holder.isdigit() else ''} uses the "
                              f"command store {self.path[:-5]}: one service per journal") from None
        with contextlib.suppress(OSError):  # who holds it, for the next one's message (flock: not released)
            Path(self.path).write_text(str(os.getpid()), encoding="utf-8")

    def release(self) -> None:
        """Give the lock up."""
        self._lock.release()


class _LinkingEcrLog(EcrLog):
    """The ECR log, linking each entry it begins to the command being run (if any)."""

    def __init__(self, storage: Storage, clock: Callable[[], datetime], store: CommandStore) -> None:
        super().__init__(storage, clock)
        self.store = store

    def begin(self, request: Request, terminal: str, *, port: str | None = None, owner: str | None = None) -> int:
        """See :meth:`EcrLog.begin`; links the entry to the command being run, if any."""
        entry_id = super().begin(request, terminal, port=port, owner=owner)
        command_id = _CURRENT_COMMAND.get()
        if command_id is not None:
            self.store.link_entry(command_id, entry_id)
        return entry_id


class LinkingJournal(Journal):
    """The ECR journal, telling the command store which journal entry carries which command.

    The link is written inside ``journal.ecr.begin``, before the client marks the entry ``sent``
    and writes its first byte: a command with no link was never sent (if the store cannot record
    the link, ``begin`` fails and the client sends nothing).
    """

    def __init__(self, path: str, *, store: CommandStore, clock: Callable[[], datetime] = datetime.now) -> None:
        super().__init__(path, clock=clock)
        self.ecr = _LinkingEcrLog(self.storage, clock, store)


@dataclass
class Job:
    """An accepted command waiting for, or in, its terminal's worker."""

    spec: CommandSpec
    origin: str
    done: asyncio.Event = field(default_factory=asyncio.Event)
    started: float | None = None


class TerminalWorker:
    """One terminal: its client, its queue of jobs, what it is doing (see the module docstring)."""

    def __init__(self, settings: TerminalSettings, service: Service) -> None:
        self.settings = settings
        self.name = settings.name
        self.service = service
        self.client = EcrClient(settings.port, settings.protocol, journal=service.journal,
                                terminal_id=settings.terminal_id, timers=dict(settings.timers),
                                deadline=settings.deadline, lock_wait=settings.lock_wait,
                                gateway=settings.gateway)
        self.waiting: deque[Job] = deque()
        self._wake = asyncio.Event()
        self.current: Job | None = None
        self.activity = "starting"
        self.since = service.clock()
        self.connected = False
        self.last_error: str | None = None
        self.recoveries: list[Recovery] = []
        self.task: asyncio.Task[None] | None = None

    # --- what it is doing ---------------------------------------------------------------------
    def _doing(self, activity: str) -> None:
        self.activity, self.since = activity, self.service.clock()

    def state(self) -> dict[str, Any]:
        """For ``GET /v1/terminals``: idle or busy with what, the queue, unresolved operations."""
        unresolved = []
        for entry in self.client.unresolved():
            unresolved.append({
                "journal_entry": entry.id, "operation": _operation_value(entry), "amount": entry.request.amount,
                "transaction_id": entry.request.transaction_id, "journal_state": entry.state,
                "since": entry.created_at.isoformat(timespec="seconds"),
                "note": mask_card_numbers(entry.error) if entry.error else None,
            })
        current = self.current
        return {
            "name": self.name, "port": self.settings.port, "protocol": self.settings.protocol,
            "terminal_id": self.settings.terminal_id, "num_device": self.settings.num_device,
            "state": "busy" if current is not None else self.activity,
            "operation": current.spec.operation if current is not None else None,
            "command_id": current.spec.command_id if current is not None else None,
            "since": self.since.isoformat(timespec="seconds"),
            "connected": self.connected, "queued": len(self.waiting), "queue_limit": self.service.config.queue_limit,
            "unresolved": unresolved, "last_error": self.last_error,
            "last_recovery": [r.describe() for r in self.recoveries],
        }

    # --- the worker -----------------------------------------------------------------------------
    async def take(self) -> None:
        """Open the terminal, at the service's start. TerminalBusy propagates: another program owns
        the terminal, and a service that cannot own it must not start (it would accept commands it
        can only fail, each after ``lock_wait``). Any other failure (unplugged, no such port) is
        recorded: the client opens the line again for the next operation."""
        self._doing("recovering")
        try:
            await self.client.open()
            self.connected = True
        except TerminalBusy:
            raise
        except (PosbridgeError, DeviceError, OSError) as error:
            self._failed(f"cannot open the terminal: {error}")

    async def run(self) -> None:
        """Resolve what an earlier run left unknown, then serve the queue (after :meth:`take`)."""
        if self.client.unresolved():
            await self.recover("at start")
        self._doing("idle")
        while True:
            await self._wait_for_work()
            job = self.waiting.popleft()
            try:
                await self._run(job)
            except Exception:  # the queue must outlive any one command: a bug, a store that cannot write
                log.exception("terminal %s: command %s failed", self.name, mask_card_numbers(job.spec.command_id))
            finally:
                self.current = None
                self._doing("idle")
                self.service.job_done(job)
            try:
                self.service.log_command(job.spec.command_id, time.monotonic() - (job.started or time.monotonic()))
            except (PosbridgeError, OSError) as error:
                log.error("terminal %s: no log line for command %s: %s", self.name,
                          mask_card_numbers(job.spec.command_id), mask_card_numbers(str(error)))

    async def _wait_for_work(self) -> None:
        """Wait for a job; while an operation's outcome stays open, try recovery again meanwhile,
        backing off (a terminal still delivering the lost answer refuses a reversal for a while)."""
        retry_in = self.settings.recovery_retry
        while not self.waiting:
            self._wake.clear()
            if not self.client.unresolved():
                await self._wake.wait()
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), retry_in)
            except asyncio.TimeoutError:
                await self.recover("retried")
                retry_in = min(retry_in * 2, MAX_RECOVERY_RETRY)

    def enqueue(self, job: Job) -> None:
        """Put ``job`` at the end of the queue."""
        self.waiting.append(job)
        self._wake.set()

    def position(self, job: Job) -> int | None:
        """Where ``job`` waits (1: next), None if it does not."""
        return self.waiting.index(job) + 1 if job in self.waiting else None

    def _failed(self, text: str) -> None:
        self.last_error = mask_card_numbers(text)
        log.warning("terminal %s: %s", self.name, self.last_error)

    async def recover(self, why: str) -> None:
        """Run the client's recovery (docs/recovery.md); what it did is kept for ``GET /v1/terminals``."""
        previous = self.activity
        self._doing("recovering")
        try:
            self.recoveries = await self.client.recover()
            self.connected = True
            for recovery in self.recoveries:
                log.warning("terminal %s: recovery %s: %s", self.name, why, recovery.describe())
        except (PosbridgeError, DeviceError, OSError) as error:
            self._failed(f"recovery {why} failed: {error}")
        finally:
            self._doing(previous)

    async def _run(self, job: Job) -> None:
        spec, service = job.spec, self.service
        self.current = job
        self._doing(spec.operation)
        job.started = time.monotonic()
        outcome: dict[str, Any] | None = None
        error: str | None = None
        try:
            if spec.kind.money and self.client.unresolved():
                await self.recover(f"before {spec.operation}")
            token = _CURRENT_COMMAND.set(spec.command_id)
            try:
                result = await self._execute(spec)
            finally:
                _CURRENT_COMMAND.reset(token)
            outcome = result_fields(result, spec.receipt_number)
            self.connected, self.last_error = True, None
        except asyncio.CancelledError:
            with contextlib.suppress(JournalError):  # the journal holds the truth either way
                service.store.finish(spec.command_id, now=service.clock(),
                                     error="the service stopped during the operation")
            raise
        except (PosbridgeError, DeviceError, OSError, ValueError) as failure:
            error = f"{type(failure).__name__}: {failure}"
            self._failed(error)
            if isinstance(failure, (DeviceError, OSError)):
                self.connected = False
        except Exception as failure:  # a bug must not stop the terminal's queue; said in the log
            error = f"internal error: {type(failure).__name__}: {failure}"
            log.exception("terminal %s: %s failed", self.name, spec.operation)
        try:
            service.store.finish(spec.command_id, now=service.clock(), outcome=outcome, error=error)
        except JournalError as failure:
            # Disk full, say: the journal has the outcome (GET tells it, without the slip); the
            # terminal's queue goes on.
            log.error("terminal %s: the outcome of command %s could not be stored (the journal has it): %s",
                      self.name, mask_card_numbers(spec.command_id), mask_card_numbers(str(failure)))
        if self._left_open(spec.command_id):
            await self.recover(f"after {spec.operation} lost its outcome")  # resolved now, not at the next sale

    def _left_open(self, command_id: str) -> bool:
        row = self.service.store.get(command_id)
        if row is None or row.entry_id is None:
            return False
        entry = self.service.journal.ecr.entry(row.entry_id)
        return entry is not None and entry.state in _OPEN_STATES

    async def _execute(self, spec: CommandSpec) -> Result:
        if spec.operation != "EmergencyReversal":
            return await self.client.execute(spec.request())
        if spec.rrn is None:
            return await self.client.reverse_last()
        original = self.service.original_of(spec)
        return await self.client.emergency_reversal(original.request)


class Service:
    """The terminals, the store and the journal of one ``posbridge serve`` (module docstring)."""

    def __init__(self, config: ServiceConfig, *, clock: Callable[[], datetime] = datetime.now) -> None:
        self.config = config
        self.clock = clock
        self.instance = uuid4().hex
        self.started_at = clock()
        self.store: CommandStore
        self.journal: LinkingJournal
        self.log: CommandLog
        self.workers: dict[str, TerminalWorker] = {}
        self._jobs: dict[str, Job] = {}
        self._running = False
        self._files_open = False
        self._store_lock: StoreLock | None = None

    # --- life -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store, the journal and the log; start every terminal's worker (recovery first)."""
        config = self.config
        if config.journal == str(default_journal_path()):
            Path(config.journal).parent.mkdir(parents=True, exist_ok=True)
        store_path = config.commands or commands_path_for(config.journal)
        if store_path != ":memory:":
            self._store_lock = StoreLock(store_path)
            self._store_lock.acquire()  # before the store is touched: another service's rows are its own
        try:
            self.store = CommandStore(store_path)
        except BaseException:
            self._release_store()
            raise
        try:
            self.journal = LinkingJournal(config.journal, store=self.store)
        except BaseException:
            self.store.close()
            self._release_store()
            raise
        log_file = config.log_file
        if log_file is None and config.journal not in ("", ":memory:"):
            log_file = str(Path(config.journal).with_name("serve.log"))
        self.log = CommandLog(log_file, max_bytes=config.log_max_bytes, backups=config.log_backups)
        self._files_open = True
        for row in self.store.unfinished(other_than=self.instance):  # left by a run that was killed
            self.store.finish(row.command_id, now=self.clock(),
                              error="the service stopped before this command finished")
        try:
            for settings in config.terminals:
                worker = TerminalWorker(settings, self)
                self.workers[settings.name] = worker
                await worker.take()
        except BaseException:  # a terminal another program owns: give back what was taken, do not start
            for worker in self.workers.values():
                with contextlib.suppress(Exception):
                    await worker.client.close()
            self.workers.clear()
            await self.close()
            raise
        for worker in self.workers.values():
            worker.task = asyncio.get_running_loop().create_task(worker.run(), name=f"posbridge-serve-{worker.name}")
        self._running = True

    def _release_store(self) -> None:
        if self._store_lock is not None:
            self._store_lock.release()
            self._store_lock = None

    async def stop(self, grace: float = 30.0) -> None:
        """Stop the terminals: waiting commands end as not sent; a running operation gets ``grace``
        seconds to finish (then it is interrupted and journaled unknown, for the next start's
        recovery); each terminal is closed and its lock given up. :meth:`close` closes the files."""
        if not self._running:
            return
        self._running = False
        for worker in self.workers.values():
            while worker.waiting:
                job = worker.waiting.popleft()
                self.store.finish(job.spec.command_id, now=self.clock(),
                                  error="the service stopped before the operation was sent")
                self.job_done(job)
        running = [asyncio.ensure_future(w.current.done.wait()) for w in self.workers.values()
                   if w.current is not None]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for waiter in late:
                waiter.cancel()
        for worker in self.workers.values():
            if worker.task is not None:
                worker.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await worker.task
            with contextlib.suppress(Exception):
                await worker.client.close()

    async def close(self) -> None:
        """After :meth:`stop` and once no request is being answered: close the log, the journal
        and the store."""
        await self.stop()
        if not self._files_open:
            return
        self._files_open = False
        self.log.close()
        self.journal.close()
        self.store.close()
        self._release_store()

    # --- commands -------------------------------------------------------------------------------
    def worker(self, name: str, field_name: str = "terminal") -> TerminalWorker:
        """The terminal called ``name``; FieldError 404 if there is none."""
        worker = self.workers.get(name)
        if worker is None:
            known = ", ".join(self.workers) or "none"
            raise FieldError(field_name, f"no terminal {name!r} (terminals: {known})", 404)
        return worker

    def worker_by_device(self, number: int, field_name: str = "NumDevice") -> TerminalWorker:
        """KKM's NumDevice: 0 the first terminal that is idle (else the first), n the terminal with
        that ``num_device``."""
        workers = list(self.workers.values())
        if number == 0:
            idle = [w for w in workers if w.current is None and not w.waiting]
            return (idle or workers)[0]
        for worker in workers:
            if worker.settings.num_device == number:
                return worker
        raise FieldError(field_name, f"no device {number} (devices: "
                                     f"{', '.join(str(w.settings.num_device) for w in workers)})", 404)

    def original_of(self, spec: CommandSpec) -> EcrEntry:
        """The journal entry an EmergencyReversal by reference undoes (FieldError 422 if unknown)."""
        row = self.store.find_by_rrn(spec.terminal, spec.rrn or "")
        entry = self.journal.ecr.entry(row.entry_id) if row is not None and row.entry_id is not None else None
        if entry is None or not entry.request.transaction_id:
            raise FieldError("rrn", f"no operation with RRN {spec.rrn} on terminal {spec.terminal} is known to "
                                    "this service")
        return entry

    def _check_runnable(self, spec: CommandSpec, worker: TerminalWorker) -> None:
        if spec.operation != "EmergencyReversal":
            return
        if spec.rrn is not None:
            entry = self.original_of(spec)
        else:
            last = self.journal.ecr.last_money_operation(worker.client.journal_key)
            if last is None:
                raise FieldError("operation", f"terminal {worker.name} has no operation to reverse")
            entry = last
        original = entry.request
        if spec.amount is not None and spec.amount != original.amount:
            raise FieldError("amount", f"the operation to reverse was for {original.amount}, not {spec.amount}")
        # Said before anything is stored: a second EmergencyReversal of one payment runs nothing.
        if entry.state == "done" and entry.result is not None and not entry.result.approved:
            raise FieldError("operation", f"the {original.operation.value} with transaction "
                                          f"{original.transaction_id} was {entry.result.status.value}: nothing was charged, "
                                          "nothing to reverse", 409)
        reversed_already = original.operation is Operation.EMERGENCY_REVERSAL or bool(
            original.transaction_id
            and self.journal.ecr.reversal_of(worker.client.journal_key, original.transaction_id, entry.id))
        if reversed_already:
            # (The reference may name the reversal itself: it carries the payment's RRN too.)
            raise FieldError("operation", f"the operation with transaction {original.transaction_id} was already "
                                          "reversed", 409)

    async def submit(self, spec: CommandSpec, *, origin: str, wait: float | None) -> dict[str, Any]:
        """Accept ``spec`` (or find the command already accepted under its id) and wait up to
        ``wait`` seconds (None: until it is over) for its outcome; returns :meth:`view`.

        Raises FieldError (404 unknown terminal, 409 the id names another request, 422 nothing to
        reverse) and QueueFull — in every such case nothing is stored, journaled or sent.
        """
        if not self._running:
            raise Unavailable("the service is stopping")
        row = self.store.get(spec.command_id)
        if row is not None:
            if row.fingerprint != spec.fingerprint():
                raise FieldError("command_id", f"command id {spec.command_id!r} was already used for another "
                                               f"request ({row.operation} on {row.terminal}): use a new id", 409)
        else:
            worker = self.worker(spec.terminal)
            self._check_runnable(spec, worker)
            if len(worker.waiting) >= self.config.queue_limit:
                raise QueueFull(worker.name, len(worker.waiting))
            self.store.accept(spec.command_id, terminal=spec.terminal, operation=spec.operation,
                              fingerprint=spec.fingerprint(), params=spec.params(), origin=origin,
                              instance=self.instance, now=self.clock())
            job = Job(spec, origin)
            self._jobs[spec.command_id] = job
            worker.enqueue(job)
        job_running = self._jobs.get(spec.command_id)
        if job_running is not None and wait != 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(job_running.done.wait(), wait)
        view = self.view(spec.command_id)
        assert view is not None
        return view

    def job_done(self, job: Job) -> None:
        """A job is over (or dropped at shutdown): wake whoever waits for it."""
        self._jobs.pop(job.spec.command_id, None)
        job.done.set()

    def log_command(self, command_id: str, seconds: float) -> None:
        """The command's one log line, with its outcome as :meth:`view` tells it."""
        view = self.view(command_id)
        if view is None:
            return
        self.log.command(at=self.clock().isoformat(timespec="milliseconds"), command_id=command_id,
                         terminal=view["terminal"], operation=view["operation"], origin=view["origin"],
                         amount=view["request"].get("amount"),
                         currency=view["request"].get("currency") if "amount" in view["request"] else None,
                         status=view["status"], response_code=view.get("response_code"),
                         rrn=view.get("rrn"), card=view.get("card"), journal_entry=view.get("journal_entry"),
                         recovery=(view.get("recovery") or {}).get("outcome"), error=view.get("error"),
                         duration_ms=round(seconds * 1000))

    # --- what is known ----------------------------------------------------------------------------
    def view(self, command_id: str) -> dict[str, Any] | None:
        """The command's state and outcome from the store and the journal (None: never accepted).

        ``status``: ``running`` (queued or in progress here), ``approved``, ``declined`` (the
        terminal's definite answer), ``error`` (it did not happen: nothing was sent, or recovery
        proved nothing was charged — ``recovery`` says how) or ``unknown`` (the outcome was lost
        and is not resolved yet, or needs a person: ``error`` says which).
        """
        row = self.store.get(command_id)
        if row is None:
            return None
        entry = self.journal.ecr.entry(row.entry_id) if row.entry_id is not None else None
        view: dict[str, Any] = {
            "command_id": row.command_id, "terminal": row.terminal, "operation": row.operation,
            "origin": row.origin, "request": {k: v for k, v in row.params.items()
                                              if v not in (None, False) and k not in ("terminal", "operation")},
            "accepted_at": row.accepted_at.isoformat(timespec="milliseconds"),
            "finished_at": row.finished_at.isoformat(timespec="milliseconds") if row.finished_at else None,
            "journal_entry": entry.id if entry is not None else None,
            "journal_state": entry.state if entry is not None else None,
        }
        job = self._jobs.get(command_id)
        if job is not None:
            worker = self.workers.get(row.terminal)
            queued = job.started is None
            view.update(status="running", queued=queued,
                        position=worker.position(job) if worker is not None else None)
            return view
        status, error, recovery = _judge(row, entry)
        view.update(status=status, error=error, recovery=recovery)
        fields = row.outcome if row.outcome is not None and (entry is None or entry.state == "done") else None
        if fields is None and entry is not None and entry.state == "done" and entry.result is not None:
            fields = result_fields(entry.result, row.params.get("receipt_number"))
            fields["slip"] = ""  # slips are not journaled: SlipCopy prints the last one again
            view["note"] = "the slip was lost with the service's restart; SlipCopy prints it again"
        if fields is not None:
            view.update(fields)
            if status in ("approved", "declined"):
                view["status"] = "approved" if Status(fields["terminal_status"]) in APPROVED_STATUSES \
                    else "declined"
        return view

    def terminals_view(self) -> list[dict[str, Any]]:
        """Every terminal's state (``GET /v1/terminals``)."""
        return [worker.state() for worker in self.workers.values()]

    # --- operations answered by the service itself ---------------------------------------------------
    def answer_locally(self, spec: CommandSpec) -> dict[str, Any]:
        """TerminalParameters and GetOperationByCards: from the settings and the journal, the terminal
        is not asked (nothing stored: they change nothing)."""
        worker = self.worker(spec.terminal)
        started = time.monotonic()
        base: dict[str, Any] = {"command_id": spec.command_id, "terminal": worker.name, "operation": spec.operation,
                                "status": "approved"}
        if spec.operation == "TerminalParameters":
            base.update(terminal_id=worker.settings.terminal_id, protocol=worker.settings.protocol,
                        print_slip_on_terminal=False, short_slip=False, partial_cancellation=False,
                        list_card_transactions=True, consumer_display=False)
        else:
            base["operations"] = self._card_operations(worker)
        self.log.command(at=self.clock().isoformat(timespec="milliseconds"), command_id=spec.command_id,
                         terminal=worker.name, operation=spec.operation, status="approved",
                         duration_ms=round((time.monotonic() - started) * 1000))
        return base

    def _card_operations(self, worker: TerminalWorker) -> list[dict[str, Any]]:
        table = []
        for row in self.store.since(worker.name, self.store.last_settlement(worker.name)):
            if row.operation not in (*_SIX_KINDS, "EmergencyReversal"):
                continue
            view = self.view(row.command_id)
            if view is None or view["status"] != "approved":
                continue
            table.append({"TypeOperation": row.operation, "CardNumber": view.get("card"),
                          "Amount": view.get("amount"), "AuthorizationCode": view.get("auth_code"),
                          "RRNCode": view.get("rrn"), "DateTime": view.get("host_datetime"),
                          "command_id": row.command_id, "universal_id": view.get("universal_id")})
        return table


def _operation_value(entry: EcrEntry) -> str:
    operation = entry.request.operation
    return str(getattr(operation, "value", operation))


_RESOLVED = {
    "not_sent": "nothing was sent to the terminal",
    "not_charged": "the outcome was lost; recovery proved the host never saw it: nothing was charged",
    "reversed": "the outcome was lost; recovery reversed it: nothing is charged",
    "reversal_approved": "the outcome was lost; recovery reversed it (the terminal approved the reversal): "
                         "nothing is charged",
    "superseded": "resolved by a later recovery",
    "no_money_moved": "the terminal's answer was lost; this operation moves no money: run it again if needed",
}


def _judge(row: CommandRow, entry: EcrEntry | None) -> tuple[str, str | None, dict[str, Any] | None]:
    """(status, error, recovery) of a command that is not running here (see Service.view)."""
    if entry is None:
        # Never journaled, so never sent: LinkingJournal links before the first byte.
        if row.outcome is not None:
            return "approved", None, None  # replaced below by the stored result's own verdict
        return "error", mask_card_numbers(row.error or "nothing was sent to the terminal"), None
    if entry.state == "done":
        return "approved", None, None  # the verdict comes from the result (Service.view)
    if entry.state == "pending":
        return "error", "nothing was sent to the terminal (journaled, never written to the line)", None
    if entry.state == "refund_needed":
        note = entry.error or "check the settlement report; refund if the customer was charged"
        return "unknown", mask_card_numbers(note), {"outcome": "refund_needed", "note": mask_card_numbers(note)}
    if entry.state == "resolved":
        how = entry.how or ""
        text = _RESOLVED.get(how, f"resolved by recovery ({how})")
        if how == "not_sent" and row.error:  # the line could not be opened: say why
            return "error", mask_card_numbers(f"{row.error}; {text}"), None
        return "error", text, {"outcome": how, "note": text}
    why = mask_card_numbers(row.error or entry.error or "the outcome was lost")
    return "unknown", f"{why}; the outcome is unknown until recovery resolves it", None
