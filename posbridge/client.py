"""The ECR client: what cash-register software calls to run operations on a terminal.

:class:`EcrClient` is the asyncio core; :class:`BlockingEcrClient` wraps it for plain, blocking
cash-register code. Both own a write-ahead :class:`~posbridge.journal.Journal`: an operation is
journaled before its first byte is sent and its outcome after. An operation whose outcome was lost
(link failure after sending) stays "unknown" until :meth:`EcrClient.recover` resolves it by an
emergency reversal, so it is never charged twice and never forgotten.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from datetime import datetime
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

import protocols
from devices import Device, open_device
from protocols.common.errors import Disconnected, LinkError
from protocols.common.session import CashierPrompt, Completed, Failed, Progress

from .journal import Journal
from .model import RUB, Operation, Request, Result, Status
from .pump import LinkClosed, SessionPump, Trace

PromptHandler = Callable[[CashierPrompt], "tuple[str, bool] | Awaitable[tuple[str, bool]]"]
ProgressHandler = Callable[[Progress], None]
T = TypeVar("T")


class EcrClient:
    """Runs operations on one terminal over one device (see the module docstring).

    ``port`` is a device URL (``serial:///dev/ttyACM0``, ``tcp://…``, ``virtual://NAME``…) or an
    open :class:`~devices.Device`. ``on_prompt`` answers the terminal's cashier dialog: it gets the
    :class:`CashierPrompt` and returns ``(answer, ok)``; without it a dialog is declined.
    """

    def __init__(
        self,
        port: str | Device,
        protocol: str | protocols.ProtocolSpec = "inpas",
        *,
        journal: Journal | None = None,
        terminal_id: str | None = None,
        timers: dict[str, float] | None = None,
        on_prompt: PromptHandler | None = None,
        on_progress: ProgressHandler | None = None,
        clock: Callable[[], datetime] = datetime.now,
        monotonic: Callable[[], float] = time.monotonic,
        trace: Trace | None = None,
    ) -> None:
        self.port = port
        # A ProtocolSpec too: e.g. protocols.arcus2.spec.spec_for_installation(ops.ini, rc_res.ini)
        self.protocol = protocol if isinstance(protocol, protocols.ProtocolSpec) else protocols.get(protocol)
        self.journal = journal if journal is not None else Journal()
        self.terminal_id = terminal_id
        self.timers = timers or {}
        self.on_prompt = on_prompt
        self.on_progress = on_progress
        self.clock = clock
        self.monotonic = monotonic
        self.trace = trace
        self._device: Device | None = None
        self._owns_device = False
        self._pump: SessionPump | None = None
        self._lock = asyncio.Lock()
        self._line_suspect = False  # the last exchange failed: the terminal may still be resending
        self._failed_at = float("-inf")

    @property
    def journal_key(self) -> str:
        """How the journal names this terminal (its id, else the port URL)."""
        if self.terminal_id:
            return self.terminal_id
        return self.port if isinstance(self.port, str) else self.port.url

    async def open(self) -> None:
        """Open the device (if given a URL) and start the link."""
        if self._pump is not None:
            return
        if isinstance(self.port, str):
            self._device, self._owns_device = await open_device(self.port), True
        else:
            self._device = self.port
        session = self.protocol.ecr_session(timers=self.timers)
        self._pump = SessionPump(self._device, session, clock=self.monotonic, trace=self._trace)
        self._pump.start()

    def _trace(self, direction: str, data: bytes) -> None:
        if self.trace is not None:  # looked up per call: a console may switch tracing on later
            self.trace(direction, data)

    async def close(self) -> None:
        """Stop the link and close the device if the client opened it."""
        if self._pump is not None:
            await self._pump.stop()
            self._pump = None
        if self._device is not None and self._owns_device:
            await self._device.close()
        self._device = None

    async def __aenter__(self) -> EcrClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the core -------------------------------------------------------------------------------
    async def execute(self, request: Request) -> Result:
        """Run one operation and return the terminal's result (declines are results, not errors).

        Raises InvalidRequest before anything is journaled or sent, and a LinkError subclass when
        the exchange fails; the journal then holds the operation as "unknown" for :meth:`recover`.
        """
        request.validated()  # before anything is journaled or numbered
        filled: dict[str, object] = {}
        if request.transaction_id is None and request.operation is not Operation.EMERGENCY_REVERSAL:
            filled["transaction_id"] = self.journal.next_transaction_id()
        if request.ecr_datetime is None:
            filled["ecr_datetime"] = self.clock().replace(microsecond=0)
        if request.terminal_id is None and self.terminal_id:
            filled["terminal_id"] = self.terminal_id
        if filled:
            request = request.with_changes(**filled)
        async with self._lock:
            if self._pump is not None and not self._pump.reading and self._owns_device:
                await self.close()  # the terminal hung up (TCP): connect again, as ECRs do
            await self.open()
            entry = self.journal.ecr_begin(request, self.journal_key)
            try:
                result = await self._exchange(request, entry)
            except LinkError as error:
                self._line_suspect, self._failed_at = True, self.monotonic()
                self.journal.ecr_unknown(entry, str(error))
                raise
            except BaseException as error:  # cancelled mid-exchange: the outcome is unknown too
                self._line_suspect, self._failed_at = True, self.monotonic()
                self.journal.ecr_unknown(entry, f"interrupted: {error!r}")
                raise
            self.journal.ecr_finish(entry, result)
            return result

    async def _exchange(self, request: Request, entry: int) -> Result:
        pump = self._pump
        assert pump is not None and self._device is not None
        if self._line_suspect:
            await self._wait_for_quiet_line(pump)
            self._line_suspect = False
        self._device.discard_input()  # stale bytes of an earlier exchange must not answer this one
        while not pump.events.empty():
            pump.events.get_nowait()
        pump.act(lambda now: pump.session.start(request, now))
        self.journal.ecr_sent(entry)
        while True:
            event = await pump.next_event()
            if isinstance(event, Completed):
                return event.result
            if isinstance(event, Failed):
                raise event.error
            if isinstance(event, LinkClosed):
                raise Disconnected("the device closed during the exchange")
            if isinstance(event, Progress) and self.on_progress:
                self.on_progress(event)
            if isinstance(event, CashierPrompt):
                answer, ok = await self._answer(event)
                pump.act(lambda now: pump.session.answer_prompt(answer, ok, now))

    def abort(self) -> None:
        """Ask the terminal to abort the operation in progress (Arcus ``A``: it answers 998 while it
        waits for the card or PIN). NotImplementedError for protocols without one (INPAS SA)."""
        pump = self._pump
        if pump is not None:
            pump.act(pump.session.abort)

    async def _wait_for_quiet_line(self, pump: SessionPump) -> None:
        """After a failed exchange, wait until the terminal's resends of its old answer have died
        out and its own timers have dropped any half frame (bounded: a line that never goes quiet
        delays us at most four settle times)."""
        quiet = float(getattr(pump.session, "settle_time", 0.0))
        give_up = self.monotonic() + 4 * quiet
        while (now := self.monotonic()) < give_up:
            silent_for = now - max(pump.last_rx, self._failed_at)
            if silent_for >= quiet:
                return
            await asyncio.sleep(quiet - silent_for)

    async def _answer(self, prompt: CashierPrompt) -> tuple[str, bool]:
        if self.on_prompt is None:
            return "", False
        answer = self.on_prompt(prompt)
        if inspect.isawaitable(answer):
            answer = await answer
        text, ok = answer  # type: ignore[misc]
        return str(text), bool(ok)

    async def recover(self) -> list[Result]:
        """Resolve every operation whose outcome was lost, oldest first, by emergency reversal.

        A reversal of an operation the host never saw is answered "approved" and changes nothing,
        so this is always safe. Entries journaled but never sent are simply closed.
        """
        results = []
        for entry in self.journal.ecr_unresolved(self.journal_key):
            original = entry.request
            if entry.state == "pending" or not original.operation.moves_money:
                self.journal.ecr_resolve(entry.id, Result(original.operation, Status.UNDEFINED),
                                         how="not_sent" if entry.state == "pending" else "no_money_moved")
                continue
            reversal = original.with_changes(operation=Operation.EMERGENCY_REVERSAL,
                                             original_operation=original.operation)
            result = await self.execute(reversal)
            self.journal.ecr_resolve(entry.id, result, how="emergency_reversal")
            results.append(result)
        return results

    # --- one method per operation ----------------------------------------------------------------
    async def sale(self, amount: int, currency: int = RUB) -> Result:
        """Оплата: charge ``amount`` minor units."""
        return await self.execute(Request(Operation.SALE, amount, currency))

    async def refund(self, amount: int, rrn: str, currency: int = RUB, auth_code: str | None = None) -> Result:
        """Возврат: return ``amount`` (all or part) of the purchase with RRN ``rrn``."""
        return await self.execute(Request(Operation.REFUND, amount, currency, rrn=rrn, auth_code=auth_code))

    async def cancel(self, amount: int, rrn: str, auth_code: str | None = None, currency: int = RUB,
                     original: Operation = Operation.SALE) -> Result:
        """Отмена: void an operation of the open batch (whole amount)."""
        return await self.execute(Request(Operation.CANCEL, amount, currency, rrn=rrn, auth_code=auth_code,
                                          original_operation=original))

    async def preauth(self, amount: int, currency: int = RUB) -> Result:
        """Предавторизация: hold ``amount``."""
        return await self.execute(Request(Operation.PREAUTH, amount, currency))

    async def completion(self, amount: int, rrn: str, auth_code: str | None = None, currency: int = RUB) -> Result:
        """Завершение расчёта: charge ``amount`` (at most the held sum) of the hold with RRN ``rrn``."""
        return await self.execute(Request(Operation.COMPLETION, amount, currency, rrn=rrn, auth_code=auth_code))

    async def cancel_preauth(self, amount: int, rrn: str, auth_code: str | None = None,
                             currency: int = RUB) -> Result:
        """Отмена предавторизации: release the hold with RRN ``rrn``."""
        return await self.execute(Request(Operation.CANCEL_PREAUTH, amount, currency, rrn=rrn,
                                          auth_code=auth_code, original_operation=Operation.PREAUTH))

    async def emergency_reversal(self, original: Request) -> Result:
        """Аварийная отмена: resend ``original`` (with its transaction id) as a reversal."""
        if not original.transaction_id:
            raise ValueError("an emergency reversal needs the original request's transaction id")
        return await self.execute(original.with_changes(operation=Operation.EMERGENCY_REVERSAL,
                                                        original_operation=original.operation))

    async def settlement(self) -> Result:
        """Сверка итогов: close the batch; the report is in the result's slips and totals."""
        return await self.execute(Request(Operation.SETTLEMENT))

    async def short_report(self) -> Result:
        """Краткий отчёт of the open batch."""
        return await self.execute(Request(Operation.SHORT_REPORT))

    async def full_report(self) -> Result:
        """Полный отчёт of the open batch."""
        return await self.execute(Request(Operation.FULL_REPORT))

    async def slip_copy(self) -> Result:
        """Копия последнего чека."""
        return await self.execute(Request(Operation.SLIP_COPY))

    async def test_connection(self) -> Result:
        """Проверка связи."""
        return await self.execute(Request(Operation.TEST_CONNECTION))


class BlockingEcrClient:
    """The same operations as :class:`EcrClient`, as plain blocking calls.

    Runs its own event loop in a background thread; safe to call from any one thread at a time.
    Every keyword of :class:`EcrClient` is accepted; ``on_prompt`` may be a plain function.
    """

    def __init__(self, port: str | Device, protocol: str = "inpas", **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="posbridge-ecr", daemon=True)
        self._thread.start()
        self._client = self._call(self._make(port, protocol, kwargs))

    @staticmethod
    async def _make(port: str | Device, protocol: str, kwargs: dict[str, Any]) -> EcrClient:
        return EcrClient(port, protocol, **kwargs)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def journal(self) -> Journal:
        return self._client.journal

    def close(self) -> None:
        """Close the link and stop the background loop."""
        if self._loop.is_closed():
            return
        self._call(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> BlockingEcrClient:
        self._call(self._client.open())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, request: Request) -> Result:
        return self._call(self._client.execute(request))

    def recover(self) -> list[Result]:
        return self._call(self._client.recover())

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(EcrClient, name, None)
        if method is None or name.startswith("_") or not inspect.iscoroutinefunction(method):
            raise AttributeError(name)
        bound = getattr(self._client, name)

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._call(bound(*args, **kwargs))

        blocking.__doc__ = method.__doc__
        blocking.__name__ = name
        return blocking
