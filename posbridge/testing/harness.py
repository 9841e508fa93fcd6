"""Test harness: a virtual terminal and an ECR client joined over a real transport.

Public, so that cash-register projects can test against posbridge the way posbridge tests itself
(the pytest plugin's fixtures are built on it)::

    async with TerminalLink("inpas", transport="pty") as link:
        result = await link.client.sale(150_00)

    async with TerminalLink("inpas", transport="usb", client_faults="rx:corrupt@40") as link:
        ...  # the ECR talks usb:// through a fake USB backend; byte 40 it receives is damaged

ECR code written for pyserial: ``transport="pty"`` (or ``posbridge emulate --port pty:///tmp/ttyPOS``)
gives it a real terminal device to open with ``serial.Serial("/tmp/ttyPOS")``, unchanged — the
common way such code opens a port, which a pyserial URL handler could not serve (``serial.Serial``
does not look at URL handlers; only ``serial_for_url`` does). Code that does use
``serial_for_url`` reaches the emulator on any OS with pyserial's own ``socket://127.0.0.1:PORT``
against ``posbridge emulate --port tcp-listen://127.0.0.1:PORT``. So posbridge ships no pyserial
URL handler: it would only add a second way to do what these two do.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posbridge.devices import Device, FaultPlan, open_device
from posbridge.devices.faults import with_faults

from posbridge.ecr.client import EcrClient
from posbridge.journal import Journal
from posbridge.emulator.terminal import VirtualTerminal

if TYPE_CHECKING:
    from posbridge.devices.fakeusb import FakeUsbBackend  # needs pyusb: imported where used

TRANSPORTS = ("virtual", "pty", "tcp", "usb")
# pid.codes' test ids (VID 0x1209, PID 0x0001 is reserved for testing): no real terminal has them.
FAKE_USB_IDS = (0x1209, 0x0001)


class TerminalLink:
    """A running :class:`VirtualTerminal` and a connected :class:`EcrClient`.

    ``transport``:

    - ``"virtual"``: an in-memory ``virtual://`` pair;
    - ``"pty"``: a real pseudo-terminal; the client opens it through pyserial as it would a
      USB-serial terminal;
    - ``"tcp"``: the terminal listens on ``tcp-listen://127.0.0.1:0``, the client connects to
      ``tcp://127.0.0.1:PORT``;
    - ``"usb"``: the client opens ``usb://1209:0001`` through a fake pyusb backend
      (:class:`posbridge.devices.fakeusb.FakeUsbBackend`, ``usb_backend``) whose bulk endpoints lead to the
      terminal's ``virtual://`` end.

    ``terminal_faults`` / ``client_faults`` (a :class:`posbridge.devices.FaultPlan` or its textual spec) put
    that side's device in a :class:`posbridge.devices.FaultyDevice` (``terminal_device`` / ``client_device``
    then expose its ``injected`` faults). Keyword arguments go to :class:`VirtualTerminal`;
    ``client_options`` to :class:`EcrClient`.
    """

    def __init__(
        self,
        protocol: str = "inpas",
        *,
        transport: str = "virtual",
        client_options: dict[str, Any] | None = None,
        terminal_faults: FaultPlan | str | None = None,
        client_faults: FaultPlan | str | None = None,
        **terminal_options: Any,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        self.protocol = protocol
        self.transport = transport
        # Parsed now: a bad spec fails here, not half-way through __aenter__.
        self.terminal_faults = FaultPlan.coerce(terminal_faults)
        self.client_faults = FaultPlan.coerce(client_faults)
        self.terminal = VirtualTerminal(protocol, **terminal_options)
        self.client_options = dict(client_options or {})
        self.client_options.setdefault("journal", Journal())
        self.client: EcrClient
        self.client_url = ""
        self.terminal_device: Device | None = None
        self.client_device: Device | None = None  # set when the link opened it (usb, faults)
        self.usb_backend: FakeUsbBackend | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TerminalLink:
        try:
            await self._open()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _open(self) -> None:
        terminal_faults = self.terminal_faults or None
        if self.transport in ("virtual", "usb"):
            name = f"posbridge-test-{uuid.uuid4().hex}"
            self.terminal_device = await open_device(f"virtual://{name}", faults=terminal_faults)
            if self.transport == "virtual":
                self.client_url = f"virtual://{name}"
            else:
                from posbridge.devices.fakeusb import FakeUsbBackend, FakeUsbTerminal

                serial = name[-12:].upper()
                self.usb_backend = FakeUsbBackend([FakeUsbTerminal(
                    *FAKE_USB_IDS, virtual_name=name, serial_number=serial,
                    product=f"posbridge virtual terminal ({self.protocol})")])
                self.client_url = f"usb://{FAKE_USB_IDS[0]:04x}:{FAKE_USB_IDS[1]:04x}?serial={serial}"
        elif self.transport == "pty":
            self._tmp = tempfile.TemporaryDirectory(prefix="posbridge-")
            link = Path(self._tmp.name) / "ttyPOS"
            self.terminal_device = await open_device(f"pty://{link}", faults=terminal_faults)
            self.client_url = f"serial://{link}?baudrate=115200"
        else:
            from posbridge.devices.tcp import TcpListenDevice

            listener = await open_device("tcp-listen://127.0.0.1:0")
            assert isinstance(listener, TcpListenDevice)  # what open_device makes of tcp-listen://
            self.terminal_device = with_faults(listener, terminal_faults)
            self.client_url = f"tcp://127.0.0.1:{listener.port}"
        self._task = asyncio.get_running_loop().create_task(
            self.terminal.serve(self.terminal_device, keep_open=True))
        port_or_device: str | Device = self.client_url
        if self.transport == "usb" or self.client_faults:
            # EcrClient opens URLs itself without a backend or faults: hand it the device instead.
            self.client_device = await open_device(
                self.client_url, faults=self.client_faults or None, usb_backend=self.usb_backend)
            port_or_device = self.client_device
        self.client = EcrClient(port_or_device, self.protocol, **self.client_options)
        await self.client.open()

    async def __aexit__(self, *exc: object) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            await client.close()
        if self.client_device is not None:
            await self.client_device.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.terminal_device is not None:
            await self.terminal_device.close()
        if self.usb_backend is not None:
            self.usb_backend.close()
        if self._tmp is not None:
            self._tmp.cleanup()

