"""``posbridge_link``, registered by the posbridge pytest plugin where pytest-asyncio runs."""

from __future__ import annotations

from typing import AsyncIterator

import pytest
import pytest_asyncio

from posbridge.testing.harness import TerminalLink
from posbridge.testing.pytest_plugin import marker_settings


@pytest_asyncio.fixture
async def posbridge_link(request: pytest.FixtureRequest) -> AsyncIterator[TerminalLink]:
    """A running virtual terminal with a connected ECR client (``.terminal``, ``.client``) for tests
    of posbridge's own :class:`~posbridge.ecr.EcrClient`; the marker's protocol and transport apply."""
    settings = marker_settings(request)
    config = request.config
    async with TerminalLink(settings.get("protocol") or config.getoption("--posbridge-protocol"),
                            transport=settings.get("transport") or config.getoption("--posbridge-transport")
                            or "virtual") as link:
        yield link
