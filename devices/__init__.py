"""Byte transports: async byte streams opened from URLs.

    async with await open_device("serial:///dev/ttyACM0?baudrate=115200") as dev:
        await dev.write(frame)
        reply = await asyncio.wait_for(dev.read(), 1.0)   # cancellation-safe

Schemes: ``virtual://NAME`` (in-memory pair), ``serial://PATH?…`` and pyserial URLs
(``socket://``, ``loop://``, ``rfc2217://``…), ``pty:///path/link``, ``tcp://host:port``,
``tcp-listen://127.0.0.1:PORT``. Devices know nothing of protocols.
"""

from .base import Device, DeviceClosed, DeviceError
from .pair import open_pair
from .url import open_device, supported_schemes

__all__ = ["Device", "DeviceClosed", "DeviceError", "open_device", "open_pair", "supported_schemes"]
