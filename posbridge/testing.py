"""Test harness: a virtual terminal and an ECR client joined over a real transport.

Public, so that cash-register projects can test against posbridge the way posbridge tests itself
(the pytest plugin's fixtures are built on it)::

    async with TerminalLink("inpas", transport="pty") as link:
        result = await link.client.sale(150_00)
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from pathlib import Path
from typing import Any

from devices import Device, open_device

from .client import EcrClient
from .journal import Journal
from .terminal import VirtualTerminal

TRANSPORTS = ("virtual", "pty")


class TerminalLink:
    """A running :class:`VirtualTerminal` and a connected :class:`EcrClient`.

    ``transport`` is ``"virtual"`` (in-memory pair) or ``"pty"`` (a real pseudo-terminal; the
    client opens it through pyserial as it would a USB-serial terminal). Keyword arguments go to
    :class:`VirtualTerminal`; ``client_options`` to :class:`EcrClient`.
    """

    def __init__(
        self,
        protocol: str = "inpas",
        *,
        transport: str = "virtual",
        client_options: dict[str, Any] | None = None,
        **terminal_options: Any,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        self.protocol = protocol
        self.transport = transport
        self.terminal = VirtualTerminal(protocol, **terminal_options)
        self.client_options = dict(client_options or {})
        self.client_options.setdefault("journal", Journal())
        self.client: EcrClient
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._terminal_device: Device | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TerminalLink:
        if self.transport == "virtual":
            name = f"virtual://posbridge-test-{uuid.uuid4().hex}"
            self._terminal_device = await open_device(name)
            client_port = name
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="posbridge-")
            link = Path(self._tmp.name) / "ttyPOS"
            self._terminal_device = await open_device(f"pty://{link}")
            client_port = f"serial://{link}?baudrate=115200"
        self._task = asyncio.get_running_loop().create_task(
            self.terminal.serve(self._terminal_device, keep_open=True))
        self.client = EcrClient(client_port, self.protocol, **self.client_options)
        await self.client.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._terminal_device is not None:
            await self._terminal_device.close()
        if self._tmp is not None:
            self._tmp.cleanup()
