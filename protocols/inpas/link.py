"""INPAS SA link layer, sans-IO: frames, ACK/NAK, resends, WAITACK and WAITPACKET deadlines.

One :class:`InpasLink` per side. Feed it received bytes and the current time; it returns
message-level events and queues the bytes to send. It never reads a clock or sleeps: timers are
deadlines the driver honours by calling :meth:`InpasLink.poll` at :meth:`InpasLink.next_deadline`.

Handled here once, for every transport (inpas-sa.md, "Link layer"):
- noise before a frame is skipped; a frame with a bad CRC or body gets NAK;
- every valid frame (each SOH part too) gets one ACK; multi-part messages are reassembled;
- a NAKed frame is resent, 3 sends in all; ENQ while waiting for ACK restarts the ACK timer;
- a valid frame from the peer while we wait for an ACK is reported as it is; the session decides
  whether it proves the peer got our frame (:meth:`InpasLink.assume_delivered`) or is a stale
  resend of an earlier exchange, which the link cannot tell.
"""

from __future__ import annotations

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
    PeerEndOfTransmission,
)

from .constants import ACK, ENQ, EOT, MAX_BODY, NAK
from .fields import Message
from .frame import FrameScanner, FrameToken
from .multipart import Reassembler, split_message
from .options import InpasOptions

Role = Literal["ecr", "terminal"]


LinkTimers = InpasOptions
"""The link's settings are the protocol's options (its former name, kept for the link's own tests)."""


LinkEvent = Union[
    MessageReceived, MessageDelivered, MessageUndelivered, PeerEndOfTransmission, PacketTimeout,
    FrameRejected,
]


@dataclass
class _Outgoing:
    message: Message
    frames: list[bytes]
    index: int = 0  # frame waiting for ACK
    sends: int = 0  # sends of that frame so far


class InpasLink:
    """ACK/NAK framing for one side of an SA link. See the module docstring for the rules."""

    def __init__(
        self,
        role: Role,
        timers: InpasOptions | None = None,
        part_size: int = MAX_BODY,
        max_message: int = 1 << 20,
    ) -> None:
        if role not in ("ecr", "terminal"):
            raise ValueError(f"role must be 'ecr' or 'terminal', not {role!r}")
        if not 16 <= part_size <= MAX_BODY:
            raise ValueError(f"part_size must be 16..{MAX_BODY}, got {part_size}")
        self.role: Role = role
        self.timers = timers or InpasOptions()
        self.part_size = part_size
        self._scanner = FrameScanner()
        self._reassembler = Reassembler(max_message=max_message)
        self._queue: deque[_Outgoing] = deque()
        self._out = bytearray()
        self._ack_deadline: float | None = None
        self._packet_deadline: float | None = None
        self._partial_deadline: float | None = None  # a started frame must complete by then
        self._after_noise = False  # the last thing seen on the line was noise
        self.frames_rejected = 0
        self.noise_bytes = 0

    # --- sending ----------------------------------------------------------------------------------
    def send(self, message: Message, now: float) -> None:
        """Queue ``message``; its frames go out one at a time, each after the previous one's ACK."""
        body = message.encode_body()
        self._queue.append(_Outgoing(message, split_message(body, self.part_size)))
        if len(self._queue) == 1:
            self._transmit_head(now)

    def send_control(self, byte: int) -> None:
        """Queue a single control byte (EOT, ACK)."""
        self._out.append(byte)

    @property
    def sending(self) -> bool:
        """True while a message waits to be sent or ACKed."""
        return bool(self._queue)

    def discard_outgoing(self) -> None:
        """Forget queued messages (the exchange is over)."""
        self._queue.clear()
        self._ack_deadline = None

    def _transmit_head(self, now: float) -> None:
        head = self._queue[0]
        self._out += head.frames[head.index]
        head.sends += 1
        self._ack_deadline = now + self.timers.ack_timeout
        # A control byte after our own frame answers it, whatever noise came before: without this,
        # one corrupted ACK made every later ACK (of the resends too) count as noise until the
        # peer's next frame, and a delivered result was believed undelivered.
        self._after_noise = False

    def _acknowledged(self, now: float) -> list[LinkEvent]:
        head = self._queue[0]
        head.index += 1
        head.sends = 0
        if head.index < len(head.frames):
            self._transmit_head(now)
            return []
        self._queue.popleft()
        self._ack_deadline = None
        if self._queue:
            self._transmit_head(now)
        return [MessageDelivered(head.message)]

    def assume_delivered(self, now: float) -> list[LinkEvent]:
        """The peer answered our message, so it has it: treat its ACK, lost on the line, as received.

        Only the last frame of a message can be assumed; a peer does not answer half a message.
        """
        if not self._queue or self._queue[0].index != len(self._queue[0].frames) - 1:
            return []
        return self._acknowledged(now)

    def reset_receiver(self) -> None:
        """Forget a partial frame or message (a new exchange must not inherit line damage)."""
        self._scanner.reset()
        self._reassembler.reset()
        self._partial_deadline = None

    def _give_up_head(self, error: NoAck | NakLimit, now: float) -> list[LinkEvent]:
        head = self._queue.popleft()
        self._ack_deadline = None
        events: list[LinkEvent] = [MessageUndelivered(head.message, error)]
        if self._queue:
            self._transmit_head(now)
        return events

    # --- receiving --------------------------------------------------------------------------------
    def expect_packet(self, now: float, timeout: float | None = None) -> None:
        """Start (or restart) the packet timer: a packet must arrive within WAITPACKET."""
        self._packet_deadline = now + (self.timers.packet_timeout if timeout is None else timeout)

    def stop_packet_timer(self) -> None:
        """No packet is expected any more."""
        self._packet_deadline = None

    def receive(self, data: bytes, now: float) -> list[LinkEvent]:
        """Feed bytes read from the device; returns the events they complete."""
        events: list[LinkEvent] = []
        for token in self._scanner.feed(data):
            if isinstance(token, Noise):
                self.noise_bytes += len(token.data)
                self._after_noise = True
                continue
            if isinstance(token, Control) and self._after_noise:
                # A control value right after noise is most likely the inside of a frame whose start
                # was lost (e.g. tag 4 reads as EOT): acting on it would abort a healthy exchange.
                self.noise_bytes += 1
                continue
            self._after_noise = False
            if isinstance(token, FrameToken):
                events += self._on_frame(token, now)
            elif isinstance(token, Control):
                events += self._on_control(token.byte, now)
            elif isinstance(token, BadFrame):
                self.frames_rejected += 1
                self._out.append(NAK)
                events.append(FrameRejected(token.error))
        # A stray start byte followed by a large bogus length would otherwise swallow the next real
        # frames: a frame that has not completed within the ACK timer is dropped as noise.
        if self._scanner.pending == 0:
            self._partial_deadline = None
        elif self._partial_deadline is None:
            self._partial_deadline = now + self.timers.ack_timeout
        return events

    def _on_control(self, byte: int, now: float) -> list[LinkEvent]:
        if byte == EOT:
            return [PeerEndOfTransmission()]
        if not self._queue:
            return []  # stray ACKs (DualConnector's TRIPLEACK), ENQ or NAK with nothing in flight
        if byte == ACK:
            return self._acknowledged(now)
        if byte == ENQ:
            self._ack_deadline = now + self.timers.ack_timeout  # "still busy, keep waiting"
            return []
        # NAK: resend, 3 sends in all
        head = self._queue[0]
        if head.sends >= self.timers.tries:
            return self._give_up_head(NakLimit(f"frame NAKed {head.sends} times"), now)
        self._transmit_head(now)
        return []

    def _on_frame(self, token: FrameToken, now: float) -> list[LinkEvent]:
        events: list[LinkEvent] = []
        try:
            body = self._reassembler.add(token.start, token.body)
            message = Message.decode_body(body) if body is not None else None
        except DecodeError as error:
            self._reassembler.reset()
            self.frames_rejected += 1
            self._out.append(NAK)
            return events + [FrameRejected(error)]
        self._out.append(ACK)
        if self._packet_deadline is not None:
            self.expect_packet(now)  # every packet (each part too) restarts WAITPACKET
        if message is None:
            return events  # a part of a multi-part message
        return events + [MessageReceived(message)]

    # --- timers -----------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest running timer, or None."""
        deadlines = [d for d in (self._ack_deadline, self._packet_deadline, self._partial_deadline)
                     if d is not None]
        return min(deadlines) if deadlines else None

    def poll(self, now: float) -> list[LinkEvent]:
        """Expire timers that are due at ``now``."""
        events: list[LinkEvent] = []
        if self._partial_deadline is not None and now >= self._partial_deadline:
            self.noise_bytes += self._scanner.pending
            self._scanner.reset()
            self._partial_deadline = None
            self._after_noise = True
        if self._ack_deadline is not None and now >= self._ack_deadline:
            head = self._queue[0]
            if self.timers.resend_on_ack_timeout and head.sends < self.timers.tries:
                self._transmit_head(now)
            else:
                events += self._give_up_head(
                    NoAck(f"no ACK within {self.timers.ack_timeout:g} s after {head.sends} send(s)"),
                    now,
                )
        if self._packet_deadline is not None and now >= self._packet_deadline:
            self._packet_deadline = None
            self._scanner.reset()
            self._reassembler.reset()
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
        self._reassembler.reset()
        self._queue.clear()
        self._out.clear()
        self._ack_deadline = None
        self._packet_deadline = None
        self._partial_deadline = None
        self._after_noise = False

