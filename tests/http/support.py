"""Helpers for the HTTP service's tests: an in-process service over in-memory virtual terminals,
and real processes (``posbridge serve``, ``posbridge emulate`` on a pty) driven with curl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from posbridge.devices import open_device
from posbridge.emulator.terminal import VirtualTerminal
from posbridge.http.app import make_app, runner_options
from posbridge.http.config import ServiceConfig, TerminalSettings
from posbridge.http.service import Service


class ServeLikeTestServer(TestServer):
    """aiohttp's test server as ``posbridge serve`` runs the application (``runner_options``): a
    client that hangs up does not cancel its handler (aiohttp's test server cancels it; the real
    runner does not, so a test would not see what production does); the same idle timeout."""

    async def _make_runner(self, **kwargs: Any) -> Any:
        return await super()._make_runner(**{**kwargs, **runner_options()})


@dataclass
class InProcess:
    """A running service (``client`` speaks HTTP to it) and the virtual terminals behind it."""

    client: TestClient
    service: Service
    terminals: dict[str, VirtualTerminal] = field(default_factory=dict)

    async def post(self, path: str, body: Any = None, *, raw: bytes | None = None, **headers: str) -> tuple[int, Any]:
        """POST JSON (or ``raw`` bytes) and return (HTTP status, decoded JSON)."""
        data = raw if raw is not None else json.dumps(body).encode()
        response = await self.client.post(path, data=data, headers={"Content-Type": "application/json", **headers})
        return response.status, await response.json()

    async def get(self, path: str, **headers: str) -> tuple[int, Any]:
        """GET and return (HTTP status, decoded JSON)."""
        response = await self.client.get(path, headers=headers)
        return response.status, await response.json()

    async def get_rezult(self, id_command: str, tries: int = 100) -> tuple[int, Any]:
        """KKM ``GetRezult`` for ``id_command`` until its Status is no longer running (1) or
        queued (4), at most ``tries`` times 50 ms; the last (HTTP status, decoded JSON)."""
        for _ in range(tries):
            status, answer = await self.post("/Execute", {"Command": "GetRezult", "IdCommand": id_command})
            if answer["Status"] not in (1, 4):
                break
            await asyncio.sleep(0.05)
        return status, answer


@contextlib.asynccontextmanager
async def in_process(names: tuple[str, ...] = ("kassa1",), *, journal: str = ":memory:", log_file: str | None = None,
                     queue_limit: int = 8, auth: tuple[str, str] | None = None,
                     terminal_options: dict[str, Any] | None = None) -> AsyncIterator[InProcess]:
    """A :class:`Service` over in-memory ``virtual://`` terminals, served by aiohttp's test server."""
    terminals: dict[str, VirtualTerminal] = {}
    devices, tasks, settings = [], [], []
    for number, name in enumerate(names, 1):
        link = f"posbridge-http-test-{uuid.uuid4().hex}"
        device = await open_device(f"virtual://{link}")
        terminal = VirtualTerminal("inpas", **(terminal_options or {}))
        terminals[name] = terminal
        devices.append(device)
        tasks.append(asyncio.get_running_loop().create_task(terminal.serve(device, keep_open=True)))
        settings.append(TerminalSettings(name, f"virtual://{link}", num_device=number, deadline=30.0))
    config = ServiceConfig(terminals=tuple(settings), journal=journal, log_file=log_file, queue_limit=queue_limit,
                           auth=auth)
    service = Service(config)
    client = TestClient(ServeLikeTestServer(make_app(service)))
    try:
        await client.start_server()
        yield InProcess(client, service, terminals)
    finally:
        await client.close()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for device in devices:
            await device.close()
        for terminal in terminals.values():
            terminal.journal.close()
