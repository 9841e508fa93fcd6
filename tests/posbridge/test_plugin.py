"""The installed pytest plugin: a cash-register project's test gets a running virtual terminal."""

import pytest

from posbridge.ecr import EcrClient
from posbridge.journal import Journal

pytest_plugins = ["pytester"]


async def test_posbridge_link_fixture(posbridge_link):
    result = await posbridge_link.client.sale(150_00)
    assert result.approved and posbridge_link.terminal.host.totals().sale_amount == 150_00


def test_plugin_options_choose_protocol_and_transport(pytester):
    pytester.makepyfile(
        """
        async def test_sale(posbridge_link):
            assert posbridge_link.protocol == "arcus2" and posbridge_link.transport == "pty"
            assert (await posbridge_link.client.sale(100)).approved
        """
    )
    result = pytester.runpytest_subprocess("-p", "asyncio", "--posbridge-protocol", "arcus2",
                                           "--posbridge-transport", "pty", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=1)


@pytest.mark.posbridge(transport="tcp", card="over_limit")
async def test_posbridge_terminal_in_an_async_test(posbridge_terminal):
    """The same fixture under pytest-asyncio: an asyncio register (here posbridge's EcrClient) on the
    line while the terminal runs in its own thread and loop."""
    async with EcrClient(posbridge_terminal.url, journal=Journal()) as client:
        declined = await client.sale(100)
        posbridge_terminal.control.delays(host=0.2)
        approved = await client.sale(200)
    assert (declined.response_code, approved.approved) == ("123", True)
    assert [op.amount for op in posbridge_terminal.operations()] == [100, 200]
