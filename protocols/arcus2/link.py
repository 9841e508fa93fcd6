"""Arcus2-style link layer, sans-IO: ENQ/ACK turns, framed messages, ACK/NAK, EOT, T1 deadlines.

One :class:`Arcus2Link` per side. Feed it received bytes and the current time; it returns
message-level events and queues the bytes to send. It never reads a clock or sleeps: timers are
deadlines the driver honours by calling :meth:`Arcus2Link.poll` at :meth:`Arcus2Link.next_deadline`.

The rules (arcus2.md, "Arcus2-style link"; docs/protocols/arcus2.md states them fully):

- Frames are link version 2 (SOH ... ETX CRC-32) unless the side is configured for version 1
  (``Arcus2Options(link_version=1)``, the ``link_version`` option): a version 1 side sends version 1
  (STX ... ETX LRC) and accepts both, answering in the version its peer last spoke; a version 2
  side answers a version 1 frame with NAK.

- A side with something to say sends ENQ and waits T1 for the answer: ACK = "go ahead", NAK = "busy".
  A try fails on NAK or silence; the next ENQ goes ``enq_interval`` (500 ms) after the failure; after
  the 3rd failed try every queued message is undelivered with :class:`NoAck` ("no connection").
- In its turn the side sends its queued messages one frame at a time; each frame is answered ACK, or
  NAK on a bad check/ETX, a refused version or a malformed body (resent at once), or nothing
  (resent after T1): 3 sends in all, then the message is undelivered. After the last ACK the side sends EOT: the turn is over.
- ENQ collision: the terminal wins. An ECR waiting for the answer to its own ENQ answers the
  terminal's ENQ with ACK and tries again after the terminal's EOT; the terminal answers the ECR's
  ENQ with NAK (busy). A side answers NAK to an ENQ during its own turn.
- Receiving is lenient: a good frame is ACKed whenever it arrives (the peer's ENQ or our ACK may
  have been lost); an ENQ during the peer's turn is ACKed again. A peer turn that goes silent for
  ``turn_timeout`` is over.
- Noise outside frames is skipped; a frame whose start never completes is dropped after T1.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Literal, Union

from ..common.errors import DecodeError, NakLimit, NoAck
from ..common.link import (
    BadFrame,
    Control,
    FrameRejected,
    MessageDelivered,
    MessageReceived,
    MessageUndelivered,
    Noise,
    PacketTimeout,
)

from .constants import ACK, ENQ, EOT, NAK
from .fields import Message
from .frame import FrameScanner, FrameToken, encode_frame
from .options import Arcus2Options

Role = Literal["ecr", "terminal"]


LinkTimers = Arcus2Options
"""The link's settings are the protocol's options (its former name, kept for the link's own tests)."""


LinkEvent = Union[MessageReceived, MessageDelivered, MessageUndelivered, PacketTimeout, FrameRejected]


class Phase(enum.Enum):
    """Where the link is in the turn cycle."""

    IDLE = "idle"  # nobody's turn
    ENQ_SENT = "enq_sent"  # our ENQ is out, waiting T1 for ACK/NAK
    ENQ_PAUSE = "enq_pause"  # a try failed, waiting enq_interval before the next ENQ
    SENDING = "sending"  # our turn: a frame is out, waiting T1 for its ACK
    RECEIVING = "receiving"  # the peer's turn


@dataclass
class _Outgoing:
    message: Message
    frame: bytes
    sends: int = 0


class Arcus2Link:
    """Turns, frames and acknowledgements for one side of an Arcus2-style link (module docstring)."""

    def __init__(self, role: Role, timers: Arcus2Options | None = None) -> None:
        if role not in ("ecr", "terminal"):
            raise ValueError(f"role must be 'ecr' or 'terminal', not {role!r}")
        self.role: Role = role
        self.timers = timers or Arcus2Options()
        self.phase = Phase.IDLE
        self.version = self.timers.link_version
        self._scanner = FrameScanner(self.timers.accepted_versions)
        self._queue: deque[_Outgoing] = deque()
        self._out = bytearray()
        self._enq_tries = 0
        self._turn_deadline: float | None = None  # ENQ answer, ENQ pause, frame ACK or peer silence
        self._packet_deadline: float | None = None
        self._partial_deadline: float | None = None  # a started frame must complete by then
        self.frames_rejected = 0
        self.noise_bytes = 0

    # --- sending ----------------------------------------------------------------------------------
    def send(self, message: Message, now: float) -> None:
        """Queue ``message``; it goes out in our next turn (one is asked for at once if idle).

        Raises InvalidRequest if the message cannot be encoded (nothing is queued then).
        """
        self._queue.append(_Outgoing(message, encode_frame(message.encode_body(), self.version)))
        if self.phase is Phase.IDLE:
            self._start_turn(now)

    @property
    def sending(self) -> bool:
        """True while a message waits to be sent or ACKed."""
        return bool(self._queue)

    def discard_outgoing(self) -> None:
        """Forget queued messages; a turn we have asked for or hold ends with EOT."""
        self._queue.clear()
        if self.phase in (Phase.ENQ_SENT, Phase.SENDING):
            self._out.append(EOT)
        if self.phase is not Phase.RECEIVING:
            self._idle()

    def end_peer_turn(self, now: float) -> None:
        """Take the peer's turn as over without waiting for its EOT (its last message was final)."""
        if self.phase is Phase.RECEIVING:
            self._idle()
            if self._queue:
                self._start_turn(now)

    def reset_receiver(self) -> None:
        """Forget a partial frame (a new exchange must not inherit line damage)."""
        self.noise_bytes += self._scanner.pending
        self._scanner.reset()
        self._partial_deadline = None

    def _idle(self) -> None:
        self.phase = Phase.IDLE
        self._turn_deadline = None

    def _start_turn(self, now: float) -> None:
        self._enq_tries = 0
        self._send_enq(now)

    def _send_enq(self, now: float) -> None:
        self._out.append(ENQ)
        self._enq_tries += 1
        self.phase = Phase.ENQ_SENT
        self._turn_deadline = now + self.timers.ack_timeout

    def _enq_failed(self, why: str, now: float) -> list[LinkEvent]:
        if self._enq_tries < self.timers.tries:
            self.phase = Phase.ENQ_PAUSE
            self._turn_deadline = now + self.timers.enq_interval
            return []
        error = NoAck(f"no connection: {why} on {self._enq_tries} ENQ tries")
        events: list[LinkEvent] = [MessageUndelivered(item.message, error) for item in self._queue]
        self._queue.clear()
        self._idle()
        return events

    def _transmit_head(self, now: float) -> None:
        head = self._queue[0]
        self._out += head.frame
        head.sends += 1
        self.phase = Phase.SENDING
        self._turn_deadline = now + self.timers.ack_timeout

    def _frame_acknowledged(self, now: float) -> list[LinkEvent]:
        head = self._queue.popleft()
        self._next_frame_or_eot(now)
        return [MessageDelivered(head.message)]

    def _frame_failed(self, error: NoAck | NakLimit, now: float) -> list[LinkEvent]:
        head = self._queue.popleft()
        self._next_frame_or_eot(now)
        return [MessageUndelivered(head.message, error)]

    def _next_frame_or_eot(self, now: float) -> None:
        if self._queue:
            self._transmit_head(now)
        else:
            self._out.append(EOT)
            self._idle()

    # --- receiving --------------------------------------------------------------------------------
    def expect_packet(self, now: float, timeout: float | None = None) -> None:
        """Start (or restart) the result timer: a packet must arrive within ``packet_timeout``."""
        self._packet_deadline = now + (self.timers.packet_timeout if timeout is None else timeout)

    def stop_packet_timer(self) -> None:
        """No packet is expected any more."""
        self._packet_deadline = None

    def receive(self, data: bytes, now: float) -> list[LinkEvent]:
        """Feed bytes read from the device; returns the events they complete."""
        events: list[LinkEvent] = []
        for token in self._scanner.feed(data):
            if isinstance(token, Control):
                events += self._on_control(token.byte, now)
            elif isinstance(token, FrameToken):
                events += self._on_frame(token, now)
            elif isinstance(token, BadFrame):
                events.append(self._reject(token.error, now))
            elif isinstance(token, Noise):
                self.noise_bytes += len(token.data)
        # A stray STX followed by a large bogus length would otherwise swallow the next real
        # frames: a frame that has not completed within T1 is dropped as noise.
        if self._scanner.pending == 0:
            self._partial_deadline = None
        elif self._partial_deadline is None:
            self._partial_deadline = now + self.timers.ack_timeout
        return events

    def _on_control(self, byte: int, now: float) -> list[LinkEvent]:
        phase = self.phase
        if byte == ENQ:
            if phase is Phase.SENDING or (phase is Phase.ENQ_SENT and self.role == "terminal"):
                self._out.append(NAK)  # busy: our own turn, or the terminal wins a collision
            else:
                self._out.append(ACK)  # idle, pausing, collision lost (ECR) or the peer retrying
                self._peer_turn(now)
        elif byte == ACK:
            if phase is Phase.ENQ_SENT:
                self._transmit_head(now)
            elif phase is Phase.SENDING:
                return self._frame_acknowledged(now)
        elif byte == NAK:
            if phase is Phase.ENQ_SENT:
                return self._enq_failed("peer busy (NAK)", now)
            if phase is Phase.SENDING:
                head = self._queue[0]
                if head.sends >= self.timers.tries:
                    hint = " (a version 2 peer refuses version 1 frames: link_version)" if self.version == 1 else ""
                    return self._frame_failed(NakLimit(f"frame NAKed {head.sends} times{hint}"), now)
                self._transmit_head(now)
        elif byte == EOT and phase is Phase.RECEIVING:
            self._idle()
            if self._queue:
                self._start_turn(now)
        return []

    def _peer_turn(self, now: float) -> None:
        self.phase = Phase.RECEIVING
        self._turn_deadline = now + self.timers.peer_turn_limit

    def _on_frame(self, frame: FrameToken, now: float) -> list[LinkEvent]:
        try:
            message = Message.decode_body(frame.body)
        except DecodeError as error:
            return [self._reject(error, now)]
        # A version 1 side speaks the version its peer last spoke (it takes both): a version 2
        # peer's request must not be performed and its answer then sent in a version the peer
        # refuses (the operation done, its outcome lost, the recovery's reversal lost the same way).
        self.version = frame.version
        self._out.append(ACK)
        if self.phase in (Phase.IDLE, Phase.RECEIVING):
            self._peer_turn(now)
        return [MessageReceived(message)]

    def _reject(self, error: DecodeError, now: float) -> FrameRejected:
        self.frames_rejected += 1
        self._out.append(NAK)
        if self.phase is Phase.RECEIVING:
            self._peer_turn(now)
        return FrameRejected(error)

    # --- timers -----------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest running timer, or None."""
        deadlines = [d for d in (self._turn_deadline, self._packet_deadline, self._partial_deadline)
                     if d is not None]
        return min(deadlines) if deadlines else None

    def poll(self, now: float) -> list[LinkEvent]:
        """Expire timers that are due at ``now``."""
        events: list[LinkEvent] = []
        if self._partial_deadline is not None and now >= self._partial_deadline:
            self.reset_receiver()
        if self._turn_deadline is not None and now >= self._turn_deadline:
            phase = self.phase
            if phase is Phase.ENQ_SENT:
                events += self._enq_failed(f"no answer within {self.timers.ack_timeout:g} s", now)
            elif phase is Phase.ENQ_PAUSE:
                self._send_enq(now)
            elif phase is Phase.SENDING:
                head = self._queue[0]
                if head.sends < self.timers.tries:
                    self._transmit_head(now)
                else:
                    events += self._frame_failed(
                        NoAck(f"no ACK within {self.timers.ack_timeout:g} s after {head.sends} send(s)"), now)
            elif phase is Phase.RECEIVING:
                self._idle()  # the peer went silent: its turn is over
                if self._queue:
                    self._start_turn(now)
        if self._packet_deadline is not None and now >= self._packet_deadline:
            self._packet_deadline = None
            events.append(PacketTimeout())
        return events

    def data_to_send(self) -> bytes:
        """Bytes to write to the device now (and forget)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def reset(self) -> None:
        """Drop all state: partial frames, queued messages, timers (after a disconnect)."""
        self._scanner.reset()
        self._queue.clear()
        self._out.clear()
        self._idle()
        self._packet_deadline = None
        self._partial_deadline = None
