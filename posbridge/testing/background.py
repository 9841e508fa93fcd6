"""A virtual terminal running in a thread of its own, for cash-register code that is not posbridge's.

The register's code — blocking pyserial code, a serial library, an asyncio client — opens
:attr:`BackgroundTerminal.port` exactly as it would open a real terminal; nothing else talks on the
line. The test steers the terminal through :attr:`BackgroundTerminal.control` (cards, outcome rules,
delays, faults, settle, reset) and asserts on its journaled operations and batch::

    with BackgroundTerminal("inpas", transport="pty") as terminal:
        terminal.control.decline_next("51")
        my_register.pay(port=terminal.port, amount=150_00)       # pyserial.Serial(terminal.port)
        [op] = terminal.operations()
        assert op.code == "51"

Transports: ``"pty"`` (a real pseudo-terminal; ``.port`` is its path), ``"tcp"`` (``.port`` is
pyserial's ``socket://127.0.0.1:PORT``), ``"virtual"`` (in-memory; ``.port`` is a
``virtual://NAME`` URL that posbridge's own devices open, e.g. ``EcrClient(terminal.port)``).
The pytest plugin's ``posbridge_terminal`` fixture is this class.

Every control call runs on the terminal's event loop (it is thread-safe and blocks for
milliseconds), so sync and async tests use the same calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from posbridge.devices import Device, open_device
from posbridge.devices.faults import FaultPlan
from posbridge.emulator.cards import Card
from posbridge.emulator.host import FAULTS, HostDecision
from posbridge.emulator.rules import card_from_name, rule_from_dict
from posbridge.emulator.scenario import Scenario, load_scenario, scenario_from_dict
from posbridge.emulator.terminal import SwitchableFaults, VirtualTerminal
from posbridge.journal import OperationRecord
from posbridge.model import Operation, Request, Totals

T = TypeVar("T")

BACKGROUND_TRANSPORTS = ("pty", "tcp", "virtual")
START_TIMEOUT = 10.0  # seconds for the terminal's thread to open its line
CALL_TIMEOUT = 30.0  # a control call runs on the terminal's loop; it never takes this long


class BackgroundTerminalError(RuntimeError):
    """The background terminal could not start, or was used after it stopped."""


class TerminalControl:
    """Steer a running :class:`BackgroundTerminal` (from any thread).

    Cards and rules act on the next operations in order; see
    :mod:`posbridge.emulator.rules` for the rule vocabulary (the same as scenarios' ``[[rules]]``
    and ``posbridge emulate --control``'s ``POST /rules``).
    """

    def __init__(self, owner: BackgroundTerminal) -> None:
        self._owner = owner

    @property
    def _terminal(self) -> VirtualTerminal:
        return self._owner.terminal

    def cards(self, *cards: str, expiry: str = "3012") -> int:
        """Queue cards (numbers or test-card names such as ``"insufficient_funds"``) for the next card
        operations, in order; returns how many are queued."""
        pans = [card_from_name(card, f"cards[{i}]") for i, card in enumerate(cards)]
        queued = [Card(pan, expiry) for pan in pans]  # built here: a bad expiry fails in the test's thread

        def present() -> int:
            self._terminal.cards.present(*queued)
            return self._terminal.cards.pending()
        return self._owner.call(present)

    def rule(self, **fields: Any) -> None:
        """Add one outcome rule, e.g. ``rule(amount_ends="05", code="05")`` or
        ``rule(card="over_limit", host_delay=2.0, once=True)``; a bad key raises
        :class:`~posbridge.emulator.rules.RuleError` naming it."""
        built = rule_from_dict(fields)
        self._owner.call(lambda: self._terminal.rules.add(built))

    def decline_next(self, code: str = "05", *, operation: str | None = "sale", text: str | None = None) -> None:
        """Decline the next ``operation`` (``None``: the next operation of any kind) with ``code``."""
        fields: dict[str, Any] = {"code": code, "once": True}
        if operation is not None:
            fields["operation"] = operation
        if text is not None:
            fields["text"] = text
        self.rule(**fields)

    def clear_rules(self) -> None:
        """Forget every outcome rule."""
        self._owner.call(self._terminal.rules.clear)

    def rules(self) -> list[dict[str, Any]]:
        """The rules in force, in order, as data (card numbers masked)."""
        return self._owner.call(lambda: [r.to_dict() for r in self._terminal.rules.rules()])

    def delays(self, *, card: float | None = None, pin: float | None = None, host: float | None = None) -> None:
        """Seconds the card holder takes to present the card, to enter the PIN, and the host takes
        to answer, for every operation from now (the terminal sends WAIT packets meanwhile)."""
        for name, value in (("card", card), ("pin", pin), ("host", host)):
            if value is not None and not 0 <= value <= 3600:
                raise ValueError(f"{name} delay must be 0..3600 seconds, not {value!r}")

        def apply() -> None:
            if card is not None:
                self._terminal.config.card_delay = card
            if pin is not None:
                self._terminal.config.pin_delay = pin
            if host is not None:
                self._terminal.host_config.latency = host
        self._owner.call(apply)

    def host_fault(self, fault: str | None) -> None:
        """A transaction-level host fault for every operation from now: ``"no_connection"``,
        ``"answer_lost"``, ``"request_not_sent"``, or ``None``."""
        if fault not in FAULTS:
            raise ValueError(f"host fault must be one of {', '.join(f for f in FAULTS if f)} or None, not {fault!r}")

        def apply() -> None:
            self._terminal.host_config.fault = fault
        self._owner.call(apply)

    def line_faults(self, spec: str | None) -> None:
        """Byte-level faults on the line from now on (devices/faults.py grammar, e.g.
        ``"rx:corrupt@5,seed=1"``; ``rx`` is what the terminal receives); ``None``: none."""
        FaultPlan.parse(spec or "")  # a bad spec fails here, in the test's thread
        line = self._owner.line
        self._owner.call(lambda: line.set_faults(spec))

    def ask_last_digits(self, on: bool = True) -> None:
        """Card operations ask the cashier for the card's last 4 digits (the cashier dialog)."""
        def apply() -> None:
            self._terminal.config.ask_last_digits = on
        self._owner.call(apply)

    def settle(self) -> HostDecision:
        """Close the open batch at the host, as the ECR's settlement would."""
        self._owner.wait_idle()
        return self._owner.call(lambda: self._terminal.host.process(Request(Operation.SETTLEMENT)))

    def reset(self) -> None:
        """Forget rules, queued cards, delays and faults (the journal and its batches stay)."""
        def apply() -> None:
            terminal = self._terminal
            terminal.forget_steering()
            terminal.host_config.latency = 0.0
            terminal.config.card_delay = terminal.config.pin_delay = 0.0
            terminal.config.ask_last_digits = False
            self._owner.line.set_faults(None)
        self._owner.call(apply)


class BackgroundTerminal:
    """A :class:`~posbridge.emulator.terminal.VirtualTerminal` serving one line from a thread and
    event loop of its own (see the module docstring).

    ``scenario``: a :class:`~posbridge.emulator.scenario.Scenario`, a TOML file's path, or the
    scenario as a mapping (the TOML's keys). ``cards``: cards queued first (numbers or test-card
    names). ``faults``: line faults from the start. ``control_address``: also serve the HTTP control
    API (``"127.0.0.1:0"`` picks a port; :attr:`control_url`) for code that steers it over HTTP.
    """

    def __init__(
        self,
        protocol: str = "inpas",
        *,
        transport: str = "pty",
        scenario: Scenario | str | Path | Mapping[str, Any] | None = None,
        cards: Iterable[str] = (),
        seed: int | None = None,
        faults: str | None = None,
        journal_path: str | Path | None = None,
        control_address: str | None = None,
    ) -> None:
        if transport not in BACKGROUND_TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(BACKGROUND_TRANSPORTS)}, not {transport!r}")
        if isinstance(scenario, (str, Path)):
            scenario = load_scenario(scenario)
        elif isinstance(scenario, Mapping):
            scenario = scenario_from_dict(dict(scenario))
        FaultPlan.parse(faults or "")
        self.protocol = protocol
        self.transport = transport
        self.scenario = scenario
        self.terminal = VirtualTerminal.from_scenario(
            scenario, protocol=protocol, journal_path=str(journal_path) if journal_path else None, seed=seed)
        self.control = TerminalControl(self)
        if cards:  # read before the scenario's cards; checked here, in the test's thread
            first = [Card(card_from_name(card, f"cards[{i}]")) for i, card in enumerate(cards)]
            then = list(scenario.cards) if scenario else []
            self.terminal.cards.clear()
            self.terminal.cards.present(*first, *then)
        self._faults = faults if faults is not None else (scenario.faults if scenario else None)
        self._control_address = control_address
        self.port = ""  #: what the register opens: a pty path, socket://127.0.0.1:PORT, or virtual://NAME
        self.url = ""  #: the same line as a posbridge device URL (serial://, tcp://, virtual://)
        self.control_url: str | None = None
        self._line: SwitchableFaults | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # --- life ---------------------------------------------------------------------------------------
    def start(self) -> BackgroundTerminal:
        """Open the line and start serving; returns when :attr:`port` can be opened."""
        if self._thread is not None:
            raise BackgroundTerminalError("this background terminal was already started")
        self._thread = threading.Thread(target=self._thread_main, name=f"posbridge-terminal-{self.protocol}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise BackgroundTerminalError(f"the virtual terminal did not open its {self.transport} line "
                                          f"within {START_TIMEOUT:g} s")
        if self._error is not None:
            error, self._error = self._error, None
            self.stop()
            raise BackgroundTerminalError(f"the virtual terminal could not start: {error}") from error
        return self

    def stop(self) -> None:
        """Stop serving, close the line and the journal; idempotent."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is not None and loop is not None and stop is not None and thread.is_alive():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop already closed
                pass
        if thread is not None:
            thread.join(CALL_TIMEOUT)
        self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self.terminal.journal.close()

    def __enter__(self) -> BackgroundTerminal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # pragma: no cover - _main reports its own start failures
            if not self._ready.is_set():
                self._error = error
                self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        control_runner = None
        try:
            device = await self._open_line()
            self._line = self.terminal.line = SwitchableFaults(device, self._faults)
            if self._control_address is not None:
                from posbridge.http.control import start_control

                control_runner, self.control_url = await start_control(self.terminal, self._control_address)
        except BaseException as error:
            self._error = error
            self._ready.set()
            if self._line is not None:
                await self._line.close()
            return
        serving = asyncio.get_running_loop().create_task(self.terminal.serve(self._line, keep_open=True),
                                                         name="posbridge-background-terminal")
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            serving.cancel()
            try:
                await serving
            except asyncio.CancelledError:
                pass
            if control_runner is not None:
                await control_runner.cleanup()
            await self._line.close()

    async def _open_line(self) -> Device:
        if self.transport == "pty":
            self._tmp = tempfile.TemporaryDirectory(prefix="posbridge-")
            link = Path(self._tmp.name) / "ttyPOS"
            device = await open_device(f"pty://{link}")
            self.port, self.url = str(link), f"serial://{link}?baudrate=115200"
        elif self.transport == "tcp":
            from posbridge.devices.tcp import TcpListenDevice

            device = await open_device("tcp-listen://127.0.0.1:0")
            assert isinstance(device, TcpListenDevice)
            self.port, self.url = f"socket://127.0.0.1:{device.port}", f"tcp://127.0.0.1:{device.port}"
        else:
            name = f"posbridge-terminal-{uuid.uuid4().hex}"
            device = await open_device(f"virtual://{name}")
            self.port = self.url = f"virtual://{name}"
        return device

    # --- calls into the terminal's loop -------------------------------------------------------------
    @property
    def line(self) -> SwitchableFaults:
        """The terminal's line (its faults can change)."""
        if self._line is None:
            raise BackgroundTerminalError("the background terminal is not running")
        return self._line

    @property
    def running(self) -> bool:
        """Serving (started, not stopped)."""
        return self._thread is not None and self._thread.is_alive() and self._loop is not None

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the terminal's loop and return its result (or raise its exception)."""
        async def run() -> Any:
            return fn()
        return self._run(run())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None or not self.running:
            coro.close()
            raise BackgroundTerminalError("the background terminal is not running (start() it, or it stopped)")
        if threading.current_thread() is self._thread:
            coro.close()
            raise BackgroundTerminalError("control calls come from the test, not from the terminal's own thread")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(CALL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BackgroundTerminalError(f"the terminal's loop did not answer within {CALL_TIMEOUT:g} s") from None

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no operation is in hand and its books are kept (the ledger says whether its
        result was delivered). The ECR gets its answer a moment before the terminal's books close."""
        deadline = time.monotonic() + timeout
        while self.call(lambda: self.terminal.busy):
            if time.monotonic() > deadline:
                raise BackgroundTerminalError(f"the terminal is still busy after {timeout:g} s "
                                              f"({self.terminal.state})")
            time.sleep(0.01)

    # --- what happened ------------------------------------------------------------------------------
    def operations(self, batch: int | None = None) -> list[OperationRecord]:
        """Every journaled operation of the terminal, in order (``batch``: that batch's), once the
        operation in hand (if any) has finished."""
        self.wait_idle()
        terminal = self.terminal
        return self.call(lambda: terminal.journal.ledger.operations(terminal.host_config.terminal_id, batch))

    def batch(self) -> Totals:
        """The open batch's totals (``.sale_count``, ``.sale_amount``, ``.net_amount``, ...)."""
        self.wait_idle()
        return self.call(self.terminal.host.totals)

    @property
    def batch_number(self) -> int:
        """The open batch's number."""
        return self.call(lambda: self.terminal.host.batch_number)
