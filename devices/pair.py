"""Both ends of a fresh ``virtual://`` pair in one call (tests, demos, in-process wiring)."""

from __future__ import annotations

import uuid

from .base import Device
from .virtual import open_virtual_pair

__all__ = ["open_pair"]


async def open_pair(name: str | None = None) -> tuple[Device, Device]:
    """Open ends A and B of ``virtual://name`` (a unique name when None).

    Raises DeviceError if ``name`` is already in use, rather than handing out a half-foreign pair.
    """
    if name is None:
        name = f"pair-{uuid.uuid4().hex}"
    return open_virtual_pair(name)
