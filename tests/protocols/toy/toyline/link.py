"""The toyline link layer, sans-IO: one frame in flight, ACK/NAK, resends, deadlines handed in.

Either side sends a message as one frame and waits ``ack_timeout`` for the peer's ACK; NAK or
silence resends it, ``tries`` sends in all, then the message is undelivered. Every good frame
received is answered ACK (a resend too: the peer's ACK may have been lost), a bad one NAK. A frame
that does not complete within ``ack_timeout`` is dropped. The ECR side runs a packet timer while it
waits for the terminal.
"""

from __future__ import annotations

from collections import deque
from typing import Union

from posbridge.protocols.common.errors import DecodeError, NakLimit, NoAck
from posbridge.protocols.common.link import (
    BadFrame,
    Control,
    FrameRejected,
    MessageDelivered,
    MessageReceived,
    MessageUndelivered,
    PacketTimeout,
)

from .frame import ACK, NAK, FrameScanner, FrameToken, encode_frame
from .mapping import Message
from .options import ToyOptions

LinkEvent = Union[MessageReceived, MessageDelivered, MessageUndelivered, PacketTimeout, FrameRejected]


class ToyLink:
    """One side of a toyline link (module docstring)."""

    def __init__(self, options: ToyOptions) -> None:
        self.options = options
        self._scanner = FrameScanner()
        self._queue: deque[tuple[Message, bytes]] = deque()
        self._sends = 0
        self._out = bytearray()
        self._ack_deadline: float | None = None
        self._packet_deadline: float | None = None
        self._partial_deadline: float | None = None

    # --- sending ----------------------------------------------------------------------------------
    def send(self, message: Message, now: float) -> None:
        """Queue ``message`` (InvalidRequest, nothing queued, if it cannot be framed)."""
        self._queue.append((message, encode_frame(message.encode())))
        if len(self._queue) == 1:
            self._transmit(now)

    @property
    def sending(self) -> bool:
        """True while a message waits to be sent or acknowledged."""
        return bool(self._queue)

    def head(self) -> Message | None:
        """The message in flight, if any."""
        return self._queue[0][0] if self._queue else None

    def discard_outgoing(self) -> None:
        """Forget queued messages (the exchange is over)."""
        self._queue.clear()
        self._ack_deadline = None

    def assume_delivered(self, now: float) -> list[LinkEvent]:
        """The peer answered, so it has our frame: take its lost ACK as received."""
        return self._acknowledged(now) if self._queue else []

    def _transmit(self, now: float) -> None:
        self._out += self._queue[0][1]
        self._sends += 1
        self._ack_deadline = now + self.options.ack_timeout

    def _next(self, now: float) -> None:
        self._sends = 0
        self._ack_deadline = None
        if self._queue:
            self._transmit(now)

    def _acknowledged(self, now: float) -> list[LinkEvent]:
        message, _ = self._queue.popleft()
        self._next(now)
        return [MessageDelivered(message)]

    def _give_up(self, error: NoAck | NakLimit, now: float) -> list[LinkEvent]:
        message, _ = self._queue.popleft()
        self._next(now)
        return [MessageUndelivered(message, error)]

    # --- receiving --------------------------------------------------------------------------------
    def expect_packet(self, now: float) -> None:
        """Start (or restart) the packet timer."""
        self._packet_deadline = now + self.options.packet_timeout

    def stop_packet_timer(self) -> None:
        self._packet_deadline = None

    def receive(self, data: bytes, now: float) -> list[LinkEvent]:
        """Feed bytes read from the line; returns the events they complete."""
        events: list[LinkEvent] = []
        for token in self._scanner.feed(data):
            if isinstance(token, FrameToken):
                try:
                    message = Message.decode(token.body)
                except DecodeError as error:
                    self._out.append(NAK)
                    events.append(FrameRejected(error))
                    continue
                self._out.append(ACK)
                if self._packet_deadline is not None:
                    self.expect_packet(now)
                events.append(MessageReceived(message))
            elif isinstance(token, BadFrame):
                self._out.append(NAK)
                events.append(FrameRejected(token.error))
            elif isinstance(token, Control) and self._queue:
                if token.byte == ACK:
                    events += self._acknowledged(now)
                elif self._sends >= self.options.tries:
                    events += self._give_up(NakLimit(f"frame NAKed {self._sends} times"), now)
                else:
                    self._transmit(now)
        self._partial_deadline = None if not self._scanner.pending else \
            self._partial_deadline or now + self.options.ack_timeout
        return events

    # --- timers -----------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest running timer, or None."""
        deadlines = [d for d in (self._ack_deadline, self._packet_deadline, self._partial_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def poll(self, now: float) -> list[LinkEvent]:
        """Expire the timers due at ``now``."""
        events: list[LinkEvent] = []
        if self._partial_deadline is not None and now >= self._partial_deadline:
            self._scanner.reset()
            self._partial_deadline = None
        if self._ack_deadline is not None and now >= self._ack_deadline:
            if self._sends < self.options.tries:
                self._transmit(now)
            else:
                events += self._give_up(NoAck(f"no ACK within {self.options.ack_timeout:g} s "
                                              f"after {self._sends} sends"), now)
        if self._packet_deadline is not None and now >= self._packet_deadline:
            self._packet_deadline = None
            events.append(PacketTimeout())
        return events

    def data_to_send(self) -> bytes:
        """Bytes to write now (and forget)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def reset(self) -> None:
        """Drop everything: partial frame, queue, timers."""
        self._scanner.reset()
        self._queue.clear()
        self._out.clear()
        self._sends = 0
        self._ack_deadline = self._packet_deadline = self._partial_deadline = None
