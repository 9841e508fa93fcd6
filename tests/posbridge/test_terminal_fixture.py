"""posbridge_terminal: a cash-register project's own code (here: a blocking INPAS register written
with nothing but pyserial) tested against the virtual terminal, each case in a fresh pytest run
without pytest-asyncio."""

import pytest

pytest_plugins = ["pytester"]

# A register of a project that is not posbridge's: pyserial and the standard library only.
REGISTER = r'''
import time

import serial

STX, ACK, EOT = 0x02, 0x06, 0x04


def crc16_buypass(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def sale_frame(amount, stan):
    """An INPAS SA sale: amount (tag 0), RUB (4), ECR time (21), operation 1 (25), STAN (26), ECR id (89)."""
    body = b""
    for tag, value in ((0, str(amount)), (4, "643"), (21, "20261122091500"), (25, "1"), (26, stan),
                       (89, "MYREGISTER;1.0")):
        body += bytes([tag]) + len(value).to_bytes(2, "little") + value.encode()
    covered = bytes([STX]) + len(body).to_bytes(2, "little") + body
    return covered + crc16_buypass(covered).to_bytes(2, "big")


SALE_1005 = sale_frame(1005, "596493000")


def tags(body):
    """TLV: tag (1 byte), length (2 bytes, little-endian), value."""
    found, i = {}, 0
    while i + 3 <= len(body):
        tag, length = body[i], int.from_bytes(body[i + 1:i + 3], "little")
        found[tag] = body[i + 3:i + 3 + length]
        i += 3 + length
    return found


def pay(port_name, frame=SALE_1005, timeout=20.0):
    """Send the sale, acknowledge the answer; return (status tag 39, response code tag 15)."""
    port = serial.serial_for_url(port_name, baudrate=115200, timeout=0.1)
    try:
        port.write(frame)
        buffer, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            buffer += port.read(4096)
            while buffer and buffer[0] != STX:  # ACK of our frame, EOT, noise
                buffer = buffer[1:]
            if len(buffer) >= 5:
                size = int.from_bytes(buffer[1:3], "little")
                if len(buffer) >= size + 5:
                    fields = tags(buffer[3:3 + size])
                    buffer = buffer[size + 5:]
                    port.write(bytes([ACK]))
                    if 39 in fields:  # the result (WAIT packets carry no status)
                        port.write(bytes([EOT]))
                        return fields[39].decode(), fields.get(15, b"").decode("cp1251")
        raise TimeoutError("no result from the terminal")
    finally:
        port.close()
'''


def _run(pytester: pytest.Pytester, tests: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(register=REGISTER, test_register=tests)
    # -p no:asyncio: the fixture must not need pytest-asyncio (installed here for posbridge's own suite)
    return pytester.runpytest_subprocess("-p", "no:asyncio", "-p", "no:cacheprovider", *args)


def test_blocking_pyserial_register_completes_a_sale_on_a_pty(pytester: pytest.Pytester) -> None:
    result = _run(pytester, """
        import os, stat
        from register import pay

        def test_sale(posbridge_terminal):
            assert posbridge_terminal.transport == "pty"
            assert stat.S_ISCHR(os.stat(posbridge_terminal.port).st_mode)  # a real terminal device
            assert pay(posbridge_terminal.port) == ("1", "001")  # 1: approved
            [op] = posbridge_terminal.operations()
            assert (op.operation.value, op.status.value, op.amount) == ("sale", "approved", 1005)
            assert op.result_delivered
            batch = posbridge_terminal.batch()
            assert (batch.sale_count, batch.sale_amount) == (1, 1005)
    """)
    result.assert_outcomes(passed=1)


def test_the_control_handle_declines_the_next_sale_with_a_chosen_code(pytester: pytest.Pytester) -> None:
    result = _run(pytester, """
        from register import pay, sale_frame

        def test_decline(posbridge_terminal):
            posbridge_terminal.control.decline_next("51", text="NO FUNDS")
            status, code = pay(posbridge_terminal.port)
            assert (status, code) == ("16", "51")  # 16: declined
            [op] = posbridge_terminal.operations()
            assert (op.status.value, op.code) == ("declined", "51")
            assert posbridge_terminal.batch().sale_count == 0
            # the same STAN again is a retry: the first outcome, nothing new (host-rules.md)
            assert pay(posbridge_terminal.port) == ("16", "51")
            # the rule was for one sale: the next sale (a new STAN) is approved
            assert pay(posbridge_terminal.port, sale_frame(1005, "596493001")) == ("1", "001")
            assert [o.status.value for o in posbridge_terminal.operations()] == ["declined", "approved"]
    """)
    result.assert_outcomes(passed=1)


def test_the_marker_picks_arcus2_over_tcp(pytester: pytest.Pytester) -> None:
    result = _run(pytester, """
        import pytest
        from posbridge.ecr import BlockingEcrClient
        from posbridge.journal import Journal

        @pytest.mark.posbridge(protocol="arcus2", transport="tcp", card="insufficient_funds")
        def test_arcus2(posbridge_terminal, tmp_path):
            assert posbridge_terminal.protocol == "arcus2"
            assert posbridge_terminal.port.startswith("socket://127.0.0.1:")
            # the test asks for posbridge's own client; nothing else is on the line
            client = BlockingEcrClient(posbridge_terminal.url, "arcus2", journal=Journal(str(tmp_path / "j.db")))
            try:
                declined = client.sale(150_00)
                approved = client.sale(200_00)
            finally:
                client.close()
            assert not declined.approved and declined.response_code == "116"  # the marker's card
            assert approved.approved
            assert [o.amount for o in posbridge_terminal.operations()] == [150_00, 200_00]
            assert posbridge_terminal.batch().sale_amount == 200_00
    """)
    result.assert_outcomes(passed=1)


def test_control_scenario_and_settle_through_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", slow_host='[host]\nlatency = 0.3\n[[rules]]\namount_ends = "05"\ncode = "05"\n')
    result = _run(pytester, """
        import pytest
        from register import pay, sale_frame

        @pytest.mark.posbridge(scenario="slow_host.toml", control=True)
        def test_scenario(posbridge_terminal):
            assert pay(posbridge_terminal.port) == ("16", "05")  # the scenario's rule: amount ends in 05
            posbridge_terminal.control.clear_rules()
            posbridge_terminal.control.delays(host=0)
            assert pay(posbridge_terminal.port, sale_frame(1005, "2"))[0] == "1"
            assert posbridge_terminal.batch().sale_amount == 1005
            decision = posbridge_terminal.control.settle()
            assert decision.totals.sale_amount == 1005
            assert posbridge_terminal.batch_number == 2 and posbridge_terminal.batch().sale_count == 0
            assert posbridge_terminal.control_url.startswith("http://127.0.0.1:")

        @pytest.mark.posbridge(card="bad card")
        def test_bad_card(posbridge_terminal):
            pass

        @pytest.mark.posbridge(colour="red")
        def test_bad_key(posbridge_terminal):
            pass
    """)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*posbridge_terminal: card*", "*colour is not a setting*"])


def test_async_tests_use_the_same_fixture(pytester: pytest.Pytester) -> None:
    """An asyncio register (here: posbridge's own EcrClient over the line's URL) in an async test."""
    pytester.makepyfile(test_async="""
        import asyncio
        from posbridge.ecr import EcrClient
        from posbridge.journal import Journal

        def test_async(posbridge_terminal):
            posbridge_terminal.control.cards("over_limit")

            async def main():
                async with EcrClient(posbridge_terminal.url, journal=Journal()) as client:
                    return await client.sale(100)
            result = asyncio.run(main())
            assert not result.approved and posbridge_terminal.operations()[0].code == "123"
    """)
    result = pytester.runpytest_subprocess("-p", "no:asyncio", "-p", "no:cacheprovider",
                                           "--posbridge-transport", "virtual")
    result.assert_outcomes(passed=1)


def test_posbridge_link_without_pytest_asyncio_says_what_to_install(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("async def test_link(posbridge_link):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:asyncio", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*posbridge_link is an async fixture*pip install pytest-asyncio*"])


def test_thirty_pty_runs_without_a_race(pytester: pytest.Pytester) -> None:
    result = _run(pytester, """
        import pytest
        from register import pay

        @pytest.mark.parametrize("run", range(30))
        def test_sale(posbridge_terminal, run):
            assert pay(posbridge_terminal.port) == ("1", "001")
            [op] = posbridge_terminal.operations()
            assert op.status.value == "approved" and op.result_delivered
    """)
    result.assert_outcomes(passed=30)


def test_a_capture_from_the_field_becomes_a_regression_test(pytester: pytest.Pytester, tmp_path) -> None:
    """A sale recorded by a client (EcrClient(record=...)) replays through the posbridge_replay fixture;
    the same capture edited to say another amount fails, naming the field."""
    import asyncio
    import json

    from posbridge.testing import TerminalLink

    capture = pytester.path / "captures" / "monday.jsonl"
    capture.parent.mkdir()

    async def record() -> None:
        async with TerminalLink("inpas", client_options={"record": capture}) as link:
            assert (await link.client.sale(150_00)).approved
    asyncio.run(record())
    edited = pytester.path / "captures" / "edited.jsonl"
    rows = capture.read_text(encoding="utf-8").splitlines()
    for index, row in enumerate(rows[1:], start=1):
        entry = json.loads(row)
        for frame in (d for d in entry["decoded"] if d["kind"] == "frame" and entry["dir"] == "terminal->ecr"):
            for item in frame.get("fields", []):
                if item["name"] == "amount":
                    item["value"] = "99999"
        rows[index] = json.dumps(entry, ensure_ascii=False)
    edited.write_text("\n".join(rows) + "\n", encoding="utf-8")
    pytester.makepyfile(test_field="""
        def test_monday(posbridge_replay):
            posbridge_replay("captures/monday.jsonl")

        def test_edited(posbridge_replay):
            posbridge_replay("captures/edited.jsonl")
    """)
    result = pytester.runpytest_subprocess("-p", "no:asyncio", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*amount*recorded '99999'*"])


def test_the_control_handle_reset_forgets_rules_cards_delays_and_faults() -> None:
    from posbridge.testing.background import BackgroundTerminal

    with BackgroundTerminal("inpas", transport="virtual") as terminal:
        control = terminal.control
        control.decline_next("51")
        control.cards("insufficient_funds")
        control.delays(card=1.5, pin=0.5, host=2.0)
        control.host_fault("no_connection")
        control.line_faults("rx:corrupt@5")
        control.ask_last_digits()
        control.reset()
        vt = terminal.terminal
        assert control.rules() == [] and vt.cards.pending() == 0
        assert (vt.config.card_delay, vt.config.pin_delay, vt.host_config.latency) == (0.0, 0.0, 0.0)
        assert vt.host_config.fault is None and not vt.config.ask_last_digits and not terminal.line.spec
