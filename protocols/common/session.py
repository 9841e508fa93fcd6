"""Protocol-neutral, sans-IO exchange sessions: what the ECR client and the virtual terminal drive.

Every protocol package provides subclasses of :class:`EcrSession` and :class:`TerminalSession`
(abstract bases: every method the application calls is declared here, typed). A driver
(posbridge's runner) moves bytes between a device and the session and hands in the current time;
the session never reads a clock, sleeps or touches I/O. Timers are deadlines: the driver waits for
input at most until :meth:`next_deadline` and then calls :meth:`poll`.

Code above ``protocols/`` sees only these events and the domain model, so the terminal state
machine, the host, the journal and the slips are shared by every protocol.

Exchanges (terminal side). A terminal session numbers the exchanges it accepts: every request it
reports (:class:`RequestReceived` or :class:`RequestRejected`) opens a new exchange with a number
unique in the process (:func:`new_exchange_id`), and ``TerminalSession.current_exchange`` names the
one the ECR is waiting on now (None once it is answered, abandoned by the ECR or the line reset).
Events that belong to an exchange carry its number in ``exchange`` (not compared: two events say
the same thing whatever exchange they belong to). A driver checks ``current_exchange`` right before
it sends anything for an exchange, so a result is only ever sent to the exchange that asked for it.
"""

from __future__ import annotations

import abc
import itertools
from dataclasses import dataclass, field
from typing import Generic, TypeVar, Union

from .errors import LinkError, NotSupported
from .model import Request, Result


# --- events an ECR session reports ---------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """The terminal is still working (INPAS WAIT, Arcus intermediate ``I``); the timer restarted."""

    text: str = ""


@dataclass(frozen=True)
class CashierPrompt:
    """The terminal asks the cashier something; answer with ``EcrSession.answer_prompt``."""

    prompt: str
    timeout: float | None = None
    kind: int = 0


GATEWAY_ACTIONS = ("open", "close", "send", "receive")
"""What a terminal in gateway mode asks its ECR to do with its bank-host connection."""


@dataclass(frozen=True)
class GatewayCommand:
    """The terminal asks the ECR to carry its connection to the bank host ("pinpad - cash register -
    host"; INPAS operation 63, sub-commands 16 and 17). ``action``: ``"open"`` (``data`` is the
    address list ``ip;port[;ip;port]``, tried in order), ``"close"``, ``"send"`` (``data`` goes to the
    host as it is), ``"receive"`` (answer with what the host sent). Answer with
    ``EcrSession.answer_gateway``; ``data`` is opaque host traffic: never decode it as card data."""

    action: str
    data: bytes = b""

    def __repr__(self) -> str:  # host traffic may carry card data: its size only, never its bytes
        return f"GatewayCommand(action={self.action!r}, data=<{len(self.data)} bytes>)"


@dataclass(frozen=True)
class Completed:
    """The final result arrived and was acknowledged; the exchange is over."""

    result: Result


# --- events a terminal session reports -----------------------------------------------------------
@dataclass(frozen=True)
class RequestReceived:
    """The ECR asked for an operation. ``raw`` is the protocol's own view of it, for logs."""

    request: Request
    raw: str = ""
    exchange: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RequestRejected:
    """The ECR sent a well-framed message that is not a valid request (unknown operation, bad amount).

    The terminal answers it with ``TerminalSession.send_result``, as a real one prints a refusal.
    """

    reason: str
    operation_code: str = ""
    exchange: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PromptAnswered:
    """The cashier answered a :class:`CashierPrompt`."""

    answer: str
    ok: bool
    exchange: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AbortRequested:
    """The ECR asked to abort the operation in progress (Arcus ``A``; INPAS: its EOT, after which
    the exchange is over for the ECR and ``current_exchange`` is None: the abort is silent)."""

    exchange: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ResultDelivered:
    """The final result was acknowledged by the ECR (and the exchange ended)."""

    result: Result
    exchange: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ResultUndelivered:
    """The final result could not be delivered (no ACK, NAKs): the ECR does not know the outcome."""

    result: Result
    error: LinkError
    exchange: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class GatewayAnswered:
    """The ECR answered the terminal's gateway command (``TerminalSession.send_gateway``): ``ok``
    (the ECR did it), ``data`` (for ``receive``: what the host sent)."""

    action: str
    ok: bool
    data: bytes = b""
    exchange: int | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return f"GatewayAnswered(action={self.action!r}, ok={self.ok}, data=<{len(self.data)} bytes>)"


# --- events both sides report --------------------------------------------------------------------
@dataclass(frozen=True)
class Failed:
    """The exchange failed on the link; the session is idle again."""

    error: LinkError
    exchange: int | None = field(default=None, compare=False)


_exchange_ids = itertools.count(1)


def new_exchange_id() -> int:
    """A number for a new terminal-side exchange, unique in this process (never reused, so a late
    event of an old exchange can never be taken for a new one, across sessions too)."""
    return next(_exchange_ids)


EcrEvent = Union[Progress, CashierPrompt, GatewayCommand, Completed, Failed]
"""Every event an ECR session reports."""
TerminalEvent = Union[
    RequestReceived, RequestRejected, PromptAnswered, GatewayAnswered, AbortRequested, ResultDelivered,
    ResultUndelivered, Failed,
]
"""Every event a terminal session reports."""
SessionEvent = Union[EcrEvent, TerminalEvent]
"""An event of either side."""

EventT = TypeVar("EventT", bound=SessionEvent)


class Session(abc.ABC, Generic[EventT]):
    """What a driver (posbridge's pump) needs of any session, whichever side and protocol.

    A session is a sans-IO state object: the driver feeds it the bytes it reads with the current
    time, writes what :meth:`data_to_send` returns, and calls :meth:`poll` at :meth:`next_deadline`.
    """

    @abc.abstractmethod
    def receive(self, data: bytes, now: float) -> list[EventT]:
        """Feed bytes read from the device; returns the events they complete."""

    @abc.abstractmethod
    def poll(self, now: float) -> list[EventT]:
        """Let timers expire; returns the events that follow (timeouts, resends)."""

    @abc.abstractmethod
    def next_deadline(self) -> float | None:
        """The time at which :meth:`poll` must be called next, or None if no timer runs."""

    @abc.abstractmethod
    def data_to_send(self) -> bytes:
        """Bytes the session wants written to the device (and forgets them)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything: partial frames, queued messages, timers, the exchange in hand (the
        connection was lost, or the driver gave the exchange up)."""

    @property
    @abc.abstractmethod
    def busy(self) -> bool:
        """True while an exchange is in progress."""

    @property
    def current_exchange(self) -> int | None:
        """The number of the exchange the peer waits on now, or None.

        Terminal sessions number their exchanges (module docstring); an ECR session runs one
        unnumbered exchange at a time, so its value is always None.
        """
        return None


class EcrSession(Session[EcrEvent]):
    """The cash register's side of one protocol."""

    @abc.abstractmethod
    def start(self, request: Request, now: float) -> None:
        """Begin an exchange for ``request`` (already validated); RuntimeError if one is in progress."""

    @abc.abstractmethod
    def answer_prompt(self, answer: str, ok: bool, now: float) -> None:
        """Answer the terminal's :class:`CashierPrompt` (protocols without a cashier dialog raise
        :class:`~posbridge.protocols.common.errors.NotSupported`)."""

    @abc.abstractmethod
    def abort(self, now: float) -> None:
        """Ask the terminal to abort the operation in progress; protocols without an ECR-side abort
        (``Capabilities.abort`` False) raise :class:`~posbridge.protocols.common.errors.NotSupported`."""

    def answer_gateway(self, ok: bool, data: bytes, now: float) -> None:
        """Answer the terminal's :class:`GatewayCommand` (``data``: what the host sent, for
        ``receive``); protocols without gateway mode (``Capabilities.gateway`` False) raise
        :class:`~posbridge.protocols.common.errors.NotSupported`."""
        raise NotSupported("this protocol has no gateway mode")

    @property
    @abc.abstractmethod
    def settle_time(self) -> float:
        """Seconds the line must stay quiet after a failed exchange before the next one starts."""


class TerminalSession(Session[TerminalEvent]):
    """The terminal's side of one protocol."""

    @property
    @abc.abstractmethod
    def current_exchange(self) -> int | None:
        """The number of the exchange the ECR waits on now, or None (see the module docstring)."""

    @abc.abstractmethod
    def send_progress(self, text: str, now: float) -> None:
        """Tell the ECR the terminal is still busy (keeps its timer alive)."""

    @abc.abstractmethod
    def send_prompt(self, prompt: str, timeout: float | None, now: float) -> None:
        """Ask the cashier a question through the ECR (protocols without a cashier dialog raise
        :class:`~posbridge.protocols.common.errors.NotSupported`)."""

    @abc.abstractmethod
    def send_result(self, result: Result, now: float) -> None:
        """Send the final result of the request in progress."""

    def send_gateway(self, action: str, data: bytes, now: float) -> None:
        """Ask the ECR to carry the bank-host connection (:class:`GatewayCommand`'s actions); the
        answer comes as :class:`GatewayAnswered`. Protocols without gateway mode raise
        :class:`~posbridge.protocols.common.errors.NotSupported`."""
        raise NotSupported("this protocol has no gateway mode")
