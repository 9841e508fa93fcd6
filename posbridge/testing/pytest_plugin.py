"""pytest plugin (installed with posbridge): fixtures for testing cash-register code against the
virtual terminal. A thin layer over :class:`posbridge.testing.TerminalLink`.

    async def test_my_register(posbridge_link):
        result = await posbridge_link.client.sale(150_00)
        assert result.approved

Choose the protocol and transport with ``--posbridge-protocol`` and ``--posbridge-transport``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator

from posbridge.testing import TRANSPORTS, TerminalLink

if TYPE_CHECKING:
    import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """The options that choose the ``posbridge_link`` fixture's protocol and transport."""
    group = parser.getgroup("posbridge")
    group.addoption("--posbridge-protocol", default="inpas", help="protocol of the posbridge_link fixture")
    group.addoption("--posbridge-transport", default="virtual", choices=TRANSPORTS,
                    help="transport of the posbridge_link fixture")


try:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def posbridge_link(request: pytest.FixtureRequest) -> AsyncIterator[TerminalLink]:
        """A running virtual terminal with a connected ECR client (``.terminal``, ``.client``)."""
        config = request.config
        async with TerminalLink(config.getoption("--posbridge-protocol"),
                                transport=config.getoption("--posbridge-transport")) as link:
            yield link
except ImportError:  # pragma: no cover - the fixture needs pytest-asyncio
    pass
