"""Typed errors shared by every protocol. Nothing posbridge does on bad input raises anything else."""

from __future__ import annotations


class PosbridgeError(Exception):
    """Base of every error posbridge raises on purpose."""


class InvalidRequest(PosbridgeError, ValueError):
    """A request that cannot be sent: missing or bad amount, currency, RRN, unknown operation."""


class UnsupportedMessage(PosbridgeError, ValueError):
    """A well-framed message that maps to no request (unknown operation, a number field that is
    not digits); ``reason`` says why in words, ``operation_code`` is the code as received."""

    def __init__(self, reason: str, operation_code: str = "") -> None:
        self.reason = reason
        self.operation_code = operation_code
        super().__init__(reason)


class NotSupported(PosbridgeError, NotImplementedError):
    """The protocol has no such thing (an ECR-side abort in INPAS SA, a cashier dialog in Arcus);
    ``ProtocolSpec.capabilities`` says so beforehand."""


class DecodeError(PosbridgeError):
    """Bytes that are not a valid frame or message.

    ``offset`` is the position in the decoded input where the problem was found; ``reason`` is a
    short machine-readable word (``crc``, ``incomplete``, ``length``, ``record``, ``field``, …).
    """

    def __init__(self, reason: str, offset: int, detail: str = "") -> None:
        self.reason = reason
        self.offset = offset
        self.detail = detail
        super().__init__(f"{reason} at offset {offset}" + (f": {detail}" if detail else ""))


class IncompleteFrame(DecodeError):
    """The input ends before the frame does: wait for more bytes."""

    def __init__(self, offset: int, detail: str = "") -> None:
        super().__init__("incomplete", offset, detail)


class ChecksumError(DecodeError):
    """The frame's CRC or LRC does not match its bytes: the receiver answers NAK."""

    def __init__(self, offset: int, detail: str = "") -> None:
        super().__init__("crc", offset, detail)


class LinkError(PosbridgeError):
    """An exchange failed on the link: the outcome of the operation is unknown to the sender.

    ``reason`` is one of ``no_ack``, ``nak_limit``, ``timeout``, ``aborted``, ``protocol``,
    ``disconnected``, ``mismatch``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason + (f": {detail}" if detail else ""))


class NoAck(LinkError):
    """The peer did not acknowledge a frame within the ACK timer (WAITACK / T1)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("no_ack", detail)


class NakLimit(LinkError):
    """The peer rejected a frame on every try (3 in all)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("nak_limit", detail)


class ExchangeTimeout(LinkError):
    """No packet arrived within the packet/result timer."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("timeout", detail)


class ExchangeAborted(LinkError):
    """The peer aborted the exchange (INPAS: a lone EOT from the terminal)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("aborted", detail)


class Disconnected(LinkError):
    """The byte stream closed under the exchange."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("disconnected", detail)


class AnswerMismatch(LinkError):
    """The terminal's final answer cannot be taken as the answer to the request that was sent: it
    names another operation, amount, currency, transaction number or terminal, or lacks what a
    result must carry (a status or response code, a settlement's totals). The outcome is unknown
    and must be resolved by recovery, never reported as approved.

    ``answer`` is the answer as decoded (a :class:`~posbridge.protocols.common.model.Result`, or None when it
    could not be decoded at all); ``problems`` lists what did not match, in words.
    """

    def __init__(self, problems: "list[str] | tuple[str, ...]", answer: object | None = None) -> None:
        self.problems = tuple(problems)
        self.answer = answer
        super().__init__("mismatch", "; ".join(self.problems))
