"""Gateway mode, the ECR's part: carry a terminal's connection to its bank host ("pinpad - cash
register - host"; INPAS operation 63, sub-commands 16 and 17) while an operation runs.

The terminal asks (:class:`~posbridge.protocols.common.session.GatewayCommand`): ``open`` a TCP
connection to the first reachable address of ``ip;port[;ip;port]``, ``send`` bytes to the host,
``receive`` what the host sent, ``close``. :class:`GatewayRelay` does it over asyncio streams, each
step bounded by its timeout, and answers ``(ok, data)``; every failure (unreachable host, a host that
closed, a connect or write timeout, a bad address list, a command with no connection open) is an
answer with ok False, never an exception that ends the operation (a ``receive`` that finds nothing
yet is ok with no data): the terminal then reports "no connection" (34)
or decides itself. The bytes are opaque host traffic: logged as a length (and, at DEBUG, hex with
any card number masked), never decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from posbridge.protocols.common.model import mask_card_bytes
from posbridge.protocols.common.session import GatewayCommand

log = logging.getLogger("posbridge.gateway")



class GatewayAddressError(ValueError):
    """The terminal's address list is not ``ip;port[;ip;port]``."""


@dataclass(frozen=True)
class GatewaySettings:
    """How the ECR carries the terminal's host connection.

    ``enabled`` False: every gateway command is refused (67 = 1), as an ECR without gateway mode
    answers. ``connect_timeout`` per address tried; ``write_timeout`` for one ``send``;
    ``receive_wait``: how long one ``receive`` waits for the host's bytes before it answers "nothing
    yet" (ok, no data) — a slow host is the terminal's to wait for: it asks again, and keeps the
    register waiting with WAIT packets meanwhile."""

    enabled: bool = True
    connect_timeout: float = 10.0
    receive_wait: float = 5.0
    write_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "receive_wait", "write_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value <= 600):
                raise ValueError(f"gateway {name} must be 0 < seconds <= 600, not {value!r}")


def parse_addresses(data: bytes) -> list[tuple[str, int]]:
    """``b"10.0.0.1;7100;10.0.0.2;7100"`` -> ``[("10.0.0.1", 7100), ("10.0.0.2", 7100)]``."""
    try:
        text = data.decode("ascii").strip().strip(";")
    except UnicodeDecodeError:
        raise GatewayAddressError("the host address list is not ASCII") from None
    parts = [part.strip() for part in text.split(";")] if text else []
    if not parts or len(parts) % 2:
        raise GatewayAddressError(f"the host address list must be ip;port[;ip;port], not {text[:64]!r}")
    addresses = []
    for host, port_text in zip(parts[::2], parts[1::2]):
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise GatewayAddressError(f"bad host address {host[:32]!r}:{port_text[:8]!r} in the list")
        addresses.append((host, int(port_text)))
    return addresses


class GatewayRelay:
    """One operation's host connection, carried for the terminal (see the module docstring)."""

    def __init__(self, settings: GatewaySettings | None = None, *, max_data: int) -> None:
        """``max_data``: the most bytes one ``receive`` answers with -- what one answer to the
        terminal carries, the protocol's ``capabilities.gateway_data`` (the terminal asks again
        for the rest); 0 (a protocol without gateway mode) refuses every command."""
        self.settings = settings or GatewaySettings()
        self.max_data = max_data
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.peer: str | None = None
        self.sent = 0  # bytes relayed to the host, and back, in this relay's life
        self.received = 0

    @property
    def connected(self) -> bool:
        """A host connection is open."""
        return self._writer is not None and not self._writer.is_closing()

    async def handle(self, command: GatewayCommand) -> tuple[bool, bytes]:
        """Carry out ``command``: ``(ok, data)`` for the terminal's answer (data only for ``receive``)."""
        if not self.settings.enabled or self.max_data <= 0:
            log.info("gateway %s refused: gateway mode is off", command.action)
            return False, b""
        try:
            if command.action == "open":
                return await self._open(command.data), b""
            if command.action == "close":
                await self.close()
                return True, b""
            if command.action == "send":
                return await self._send(command.data), b""
            if command.action == "receive":
                return await self._receive()
        except Exception as error:  # never the end of the operation: the terminal gets a refusal
            log.warning("gateway %s failed: %s: %.200s", command.action, type(error).__name__, error)
            await self.close()
            return False, b""
        log.warning("gateway: unknown action %r refused", command.action)
        return False, b""

    async def _open(self, data: bytes) -> bool:
        await self.close()  # a second open replaces the first connection
        try:
            addresses = parse_addresses(data)
        except GatewayAddressError as error:
            log.warning("gateway open refused: %s", error)
            return False
        for host, port in addresses:
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), self.settings.connect_timeout)
            except (OSError, asyncio.TimeoutError) as error:
                log.info("gateway: host %s:%d unreachable (%s)", host, port,
                         type(error).__name__ if isinstance(error, asyncio.TimeoutError) else error)
                continue
            self.peer = f"{host}:{port}"
            log.info("gateway: connected to host %s", self.peer)
            return True
        log.warning("gateway: no host address of %d reachable", len(addresses))
        return False

    async def _send(self, data: bytes) -> bool:
        writer = self._writer
        if writer is None or writer.is_closing():
            log.warning("gateway send refused: no host connection is open")
            return False
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.settings.write_timeout)
        self.sent += len(data)
        log.info("gateway: %d bytes to host %s", len(data), self.peer)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("gateway -> host: %s", mask_card_bytes(data).hex(" "))
        return True

    async def _receive(self) -> tuple[bool, bytes]:
        reader = self._reader
        if reader is None or not self.connected:
            log.warning("gateway receive refused: no host connection is open")
            return False, b""
        try:
            data = await asyncio.wait_for(reader.read(self.max_data), self.settings.receive_wait)
        except asyncio.TimeoutError:
            log.debug("gateway: nothing from host %s within %g s yet", self.peer, self.settings.receive_wait)
            return True, b""  # still connected: the terminal asks again
        if not data:
            log.warning("gateway: host %s closed the connection", self.peer)
            await self.close()
            return False, b""
        self.received += len(data)
        log.info("gateway: %d bytes from host %s", len(data), self.peer)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("gateway <- host: %s", mask_card_bytes(data).hex(" "))
        return True, data

    async def close(self) -> None:
        """Close the host connection, if one is open."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            log.info("gateway: connection to host %s closed", self.peer)
