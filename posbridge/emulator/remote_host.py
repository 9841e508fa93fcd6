"""The simulated bank host as a TCP service of its own (``posbridge host``), and the virtual
terminal's client of it, for gateway mode: every host message crosses the cash register.

Wire format ("PBH1", posbridge's own; docs/host-protocol.md): each message is a 4-byte big-endian
length and that many bytes of UTF-8 JSON. One request, one answer, on one connection:

- request ``{"v": 1, "kind": "process", "request": {...}, "card": {...} | null, "forced": {...} | null}``
  (a settlement or full report adds ``"report": {"listing": N | null}``: the terminal's own journal
  is empty in gateway mode, so the host sends the report's lines)
- answer ``{"v": 1, "decision": {...}}`` (and ``"report": {...}`` when asked: :class:`BatchReport`)
  or ``{"v": 1, "error": "one line"}``

The card travels sealed: ``{"sealed": HEX, "nonce": HEX, "expiry": "YYMM"}``, the number XORed
with a SHA-256 keystream of a key the terminal and the host share (``--host-key``; a fixed test
key by default). It is no cryptography for money — this host is a simulator — but the cash register
carrying the bytes, its trace and its logs never see a card number.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import struct
from dataclasses import asdict
from datetime import datetime
from typing import Any

from posbridge.emulator.cards import Card
from posbridge.emulator.host import BankHost, Forced, HostDecision
from posbridge.emulator.reports import REPORT_OPERATIONS, BatchReport, batch_report
from posbridge.model import Operation, Request, Status, Totals

log = logging.getLogger("posbridge.host")

VERSION = 1
MAX_MESSAGE = 1 << 20  # a decision is a few hundred bytes; anything near this is not ours
DEFAULT_KEY = b"posbridge virtual terminal test key (not a secret)"
_LENGTH = struct.Struct(">I")


class HostProtocolError(ValueError):
    """A message that is not PBH1 (bad length, not JSON, a missing or wrong field)."""


# --- the card, sealed -----------------------------------------------------------------------------------
def _keystream(key: bytes, nonce: bytes, size: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(key + nonce + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:size]


def seal_card(card: Card, key: bytes | None = None) -> dict[str, str]:
    """The card as it crosses the ECR: its number sealed (see the module docstring)."""
    key = key or DEFAULT_KEY
    nonce = secrets.token_bytes(16)
    pan = card.pan.encode("ascii")
    sealed = bytes(a ^ b for a, b in zip(pan, _keystream(key, nonce, len(pan))))
    return {"sealed": sealed.hex(), "nonce": nonce.hex(), "expiry": card.expiry}


def open_card(data: dict[str, Any], key: bytes = DEFAULT_KEY) -> Card:
    """The card back from :func:`seal_card`'s form."""
    try:
        sealed, nonce = bytes.fromhex(data["sealed"]), bytes.fromhex(data["nonce"])
        pan = bytes(a ^ b for a, b in zip(sealed, _keystream(key, nonce, len(sealed)))).decode("ascii")
        return Card(pan, str(data.get("expiry", "3012")))
    except (KeyError, TypeError, ValueError, UnicodeDecodeError):
        raise HostProtocolError("card: not a sealed card (wrong --host-key?)") from None


# --- values to JSON and back ----------------------------------------------------------------------------
def _request_to_json(request: Request) -> dict[str, Any]:
    data = asdict(request)
    data["operation"] = request.operation.value
    if request.original_operation is not None:
        data["original_operation"] = request.original_operation.value
    for name in ("ecr_datetime", "original_datetime"):
        value = getattr(request, name)
        data[name] = value.isoformat() if value is not None else None
    return data


def _request_from_json(data: dict[str, Any]) -> Request:
    try:
        fields = dict(data)
        fields["operation"] = Operation(fields["operation"])
        if fields.get("original_operation") is not None:
            fields["original_operation"] = Operation(fields["original_operation"])
        for name in ("ecr_datetime", "original_datetime"):
            if fields.get(name) is not None:
                fields[name] = datetime.fromisoformat(fields[name])
        return Request(**fields)
    except (KeyError, TypeError, ValueError) as error:
        raise HostProtocolError(f"request: {error}") from None


def decision_to_json(decision: HostDecision) -> dict[str, Any]:
    """A host decision as JSON-ready data."""
    data = asdict(decision)
    data["status"] = decision.status.value
    data["host_datetime"] = decision.host_datetime.isoformat()
    return data


def decision_from_json(data: dict[str, Any]) -> HostDecision:
    """The decision back (``operation_id`` names a row of the *host's* journal)."""
    try:
        fields = dict(data)
        fields["status"] = Status(fields["status"])
        fields["host_datetime"] = datetime.fromisoformat(fields["host_datetime"])
        if fields.get("totals") is not None:
            fields["totals"] = Totals(**fields["totals"])
        return HostDecision(**fields)
    except (KeyError, TypeError, ValueError) as error:
        raise HostProtocolError(f"decision: {error}") from None


def encode_message(data: dict[str, Any]) -> bytes:
    """One PBH1 message: length, then UTF-8 JSON."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _LENGTH.pack(len(body)) + body


def process_request(request: Request, card: Card | None, forced: Forced | None, key: bytes | None = None, *,
                    listing: int | None = None) -> bytes:
    """The PBH1 request asking the host to decide ``request``; for a settlement or full report, it
    asks for the report's lines too (``listing``: how many operations a full report lists)."""
    message: dict[str, Any] = {"v": VERSION, "kind": "process", "request": _request_to_json(request),
                               "card": seal_card(card, key) if card is not None else None,
                               "forced": asdict(forced) if forced is not None else None}
    if request.operation in REPORT_OPERATIONS:
        message["report"] = {"listing": listing}
    return encode_message(message)


def report_from_json(data: Any) -> BatchReport:
    """The report lines of a PBH1 answer; HostProtocolError (one line) when they are not that."""
    if not isinstance(data, dict):
        raise HostProtocolError("report: not an object")
    try:
        return BatchReport.from_json(data)
    except ValueError as error:
        raise HostProtocolError(str(error)) from None


class MessageReader:
    """Splits a byte stream into PBH1 messages (bytes may arrive in any pieces)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> dict[str, Any] | None:
        """Add bytes; the first whole message, once there is one (the rest stays buffered)."""
        self._buffer += data
        if len(self._buffer) < _LENGTH.size:
            return None
        (size,) = _LENGTH.unpack_from(self._buffer)
        if size > MAX_MESSAGE:
            raise HostProtocolError(f"a message of {size} bytes is over the {MAX_MESSAGE} limit")
        if len(self._buffer) < _LENGTH.size + size:
            return None
        body, self._buffer = self._buffer[_LENGTH.size:_LENGTH.size + size], self._buffer[_LENGTH.size + size:]
        try:
            message = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise HostProtocolError("a message that is not UTF-8 JSON") from None
        if not isinstance(message, dict) or message.get("v") != VERSION:
            raise HostProtocolError(f"not a PBH{VERSION} message")
        return message


# --- the service ----------------------------------------------------------------------------------------
class HostService:
    """``posbridge host``: a :class:`BankHost` answering PBH1 requests on a TCP port."""

    def __init__(self, host: BankHost, *, key: bytes = DEFAULT_KEY, timeout: float = 30.0,
                 latency: float = 0.0) -> None:
        self.host = host
        self.key = key
        self.timeout = timeout  # a connection silent this long is closed
        self.latency = latency  # a slow host: each answer this many seconds late
        self.requests = 0
        self._lock = asyncio.Lock()  # one decision at a time: the journal's batch is one sequence

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection: requests in, decisions out, until the peer closes."""
        peer = writer.get_extra_info("peername")
        incoming = MessageReader()
        try:
            while True:
                message = None
                while message is None:
                    data = await asyncio.wait_for(reader.read(65536), self.timeout)
                    if not data:
                        return
                    message = incoming.feed(data)
                writer.write(encode_message(await self._answer(message)))
                await writer.drain()
        except HostProtocolError as error:
            log.warning("host: %s from %s; connection closed", error, peer)
            with contextlib.suppress(Exception):
                writer.write(encode_message({"v": VERSION, "error": str(error)}))
                await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        if message.get("kind") != "process":
            raise HostProtocolError(f"kind must be 'process', not {message.get('kind')!r}")
        request = _request_from_json(message.get("request") or {})
        card = open_card(message["card"], self.key) if message.get("card") else None
        forced_data = message.get("forced")
        try:
            forced = Forced(**forced_data) if forced_data else None
        except (TypeError, ValueError) as error:
            raise HostProtocolError(f"forced: {error}") from None
        report_asked = request.operation in REPORT_OPERATIONS and isinstance(message.get("report"), dict)
        listing = message["report"].get("listing") if report_asked else None
        if listing is not None and (not isinstance(listing, int) or isinstance(listing, bool) or listing < 0):
            raise HostProtocolError(f"report: listing must be a count, not {listing!r}")
        async with self._lock:  # the report read with its decision: no other operation in between
            decision = await asyncio.to_thread(self.host.process, request, card, forced)
            report = await asyncio.to_thread(self._report, decision, listing) if report_asked else None
        self.requests += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        log.info("host: %s %s -> %s %s", request.operation.value, request.amount if request.amount is not None else "",
                 decision.status.value, decision.code)
        answer = {"v": VERSION, "decision": decision_to_json(decision)}
        if report is not None:
            answer["report"] = report.to_json()
        return answer

    def _report(self, decision: HostDecision, listing: int | None) -> BatchReport | None:
        """The report lines of the batch ``decision`` reported on or closed (approved only)."""
        if not decision.approved:
            return None
        config = self.host.config
        records = self.host.journal.ledger.operations(config.terminal_id, decision.batch_number)
        return batch_report(records, config.currency, listing=listing)


async def start_host_service(service: HostService, host: str, port: int) -> asyncio.Server:
    """Listen for PBH1 connections on ``host:port`` (0: any free port)."""
    return await asyncio.start_server(service.handle, host, port)
