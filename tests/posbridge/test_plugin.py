"""The installed pytest plugin: a cash-register project's test gets a running virtual terminal."""

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
