"""The control API of `posbridge emulate`: in process (aiohttp test client) and a shell-script client
(bash, printf, curl; no Python) against a real `posbridge emulate --control` process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from posbridge.devices import Device, open_device
from posbridge.ecr.client import EcrClient
from posbridge.journal import Journal
from posbridge.protocols.common.errors import LinkError
from posbridge.emulator.terminal import SwitchableFaults, VirtualTerminal
from posbridge.http.control import ROUTES, ControlAddressError, make_control_app, parse_control_address
from posbridge.model import Status
from posbridge.testing import TerminalLink

HERE = Path(__file__).resolve().parent


async def _client(terminal: VirtualTerminal) -> TestClient:
    client = TestClient(TestServer(make_control_app(terminal)))
    await client.start_server()
    return client


def test_control_listens_on_loopback_only():
    assert parse_control_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_control_address("[::1]:8080") == ("::1", 8080)
    for bad in ("0.0.0.0:8080", "192.168.1.5:80", "example.com:80", "127.0.0.1", "127.0.0.1:99999"):
        with pytest.raises(ControlAddressError) as error:
            parse_control_address(bad)
        assert "\n" not in str(error.value)


async def test_openapi_lists_exactly_the_routes():
    client = await _client(VirtualTerminal("inpas"))
    try:
        document = await (await client.get("/openapi.json")).json()
        listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
        assert listed == set(ROUTES)
        served = {(r.method, r.resource.canonical) for r in client.app.router.routes() if r.method != "HEAD"}
        assert served == set(ROUTES)
    finally:
        await client.close()


async def test_rules_cards_faults_batch_settle_reset_through_the_api():
    async with TerminalLink("inpas") as link:
        client = await _client(link.terminal)
        try:
            answer = await client.post("/rules", json={"operation": "sale", "code": "05", "once": True})
            assert answer.status == 200
            declined = await link.client.sale(10_00)
            assert (declined.status, declined.response_code) == (Status.DECLINED, "05")
            assert (await client.post("/cards", json={"cards": ["insufficient_funds"]})).status == 200
            assert (await link.client.sale(10_00)).response_code == "116"
            assert (await client.post("/faults", json={"host": "request_not_sent"})).status == 200
            assert (await link.client.sale(10_00)).response_code == "151018"
            assert (await client.post("/reset")).status == 200
            assert (await link.client.sale(25_00)).approved
            batch = await (await client.get("/batch")).json()
            assert (batch["sale_count"], batch["sale_amount"]) == (1, 25_00)
            operations = (await (await client.get("/operations")).json())["operations"]
            assert [(o["status"], o["code"]) for o in operations][:2] == [("declined", "05"), ("declined", "116")]
            settled = await (await client.post("/settle")).json()
            assert (settled["sale_count"], settled["sale_amount"]) == (1, 25_00)
            assert (await (await client.get("/batch")).json())["batch"] == batch["batch"] + 1
            assert (await (await client.get("/health")).json())["status"] == "ok"
        finally:
            await client.close()


@pytest.mark.parametrize(("path", "body", "field", "status"), [
    ("/rules", {"outcome": "maybe"}, "outcome", 422),
    ("/rules", {"rules": [{"code": "05"}, {"nth": 0, "code": "05"}]}, "rules[1].nth", 422),
    ("/cards", {"cards": ["12"]}, "cards[0]", 422),
    ("/cards", {"card": "approved"}, "card", 400),
    ("/faults", {"host": "fire"}, "host", 422),
    ("/faults", {"line": "rx:drop@3"}, "line", 409),  # this terminal's line is not switchable
    ("/faults", {}, "host", 422),
])
async def test_bad_input_is_json_naming_the_field(path, body, field, status):
    client = await _client(VirtualTerminal("inpas"))
    try:
        answer = await client.post(path, json=body)
        assert answer.status == status
        assert (await answer.json())["field"] == field
        missing = await client.get("/nowhere")
        assert missing.status == 404 and (await missing.json())["field"] == "path"
    finally:
        await client.close()


def test_emulate_refuses_a_control_address_that_is_not_loopback():
    done = subprocess.run([sys.executable, "-m", "posbridge", "emulate", "--port", "tcp-listen://127.0.0.1:0",
                           "--control", "0.0.0.0:0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "loopback" in done.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="the shell client needs curl")
def test_a_shell_script_declines_the_next_sale_through_the_control_api():
    emulator = subprocess.Popen(
        [sys.executable, "-m", "posbridge", "emulate", "--port", "tcp-listen://127.0.0.1:0",
         "--control", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert emulator.stdout is not None
        control_line = emulator.stdout.readline()
        terminal_line = emulator.stdout.readline()
        control = re.search(r"on (http://127\.0\.0\.1:\d+)", control_line)
        port = re.search(r"listening on \S*127\.0\.0\.1:(\d+)", terminal_line)
        assert control and port, (control_line, terminal_line)
        done = subprocess.run(["bash", str(HERE / "sale_client.sh"), port.group(1), control.group(1)],
                              capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]})
        assert done.returncode == 0, done.stderr
        wire = bytes.fromhex(done.stdout.strip())
        assert wire[:1] == b"\x06"  # the request's ACK, then the answer frame
        frame = wire[1:]
        assert frame[:1] == b"\x02"
        decoded = subprocess.run([sys.executable, "-m", "posbridge", "decode", frame.hex()],
                                 capture_output=True, text=True, timeout=60)
        answer = json.loads(decoded.stdout.splitlines()[0])
        assert answer["check_ok"] is True
        fields = {f["name"]: f["value"] for f in answer["fields"]}
        assert (fields["host_response_code"], fields["response_text"], fields["amount"]) == ("05", "OTKAZ", "1005")
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


async def test_line_faults_change_while_the_terminal_runs():
    name = f"virtual://control-{uuid.uuid4().hex}"
    terminal = VirtualTerminal("inpas")
    line = terminal.line = SwitchableFaults(await open_device(name))
    serving = asyncio.get_running_loop().create_task(terminal.serve(line, keep_open=True))
    client = await _client(terminal)
    try:
        async with EcrClient(name, "inpas") as ecr:
            assert (await ecr.sale(10_00)).approved
            bad = await client.post("/faults", json={"line": "rx:explode@1"})
            assert bad.status == 422 and (await bad.json())["field"] == "line"
            answer = await client.post("/faults", json={"line": "tx:corrupt@5,seed=1"})
            assert (await answer.json())["line"] == "tx:corrupt@5,seed=1"
            assert (await ecr.sale(20_00)).approved  # the ECR NAKs the corrupted answer, the terminal resends
            assert [f.kind for f in line._current.injected] == ["corrupt"]  # type: ignore[attr-defined]
            assert (await (await client.post("/faults", json={"line": None})).json())["line"] is None
            assert line._current is line.inner
            assert (await ecr.sale(30_00)).approved
    finally:
        await client.close()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await line.close()


async def test_clearing_an_rx_silence_makes_the_terminal_hear_at_once_not_when_the_silence_runs_out():
    # Before: the read already waiting went on swallowing bytes under the old silence (here
    # 600 s), so the terminal stayed deaf to every ECR after the fault was cleared.
    name = f"virtual://control-{uuid.uuid4().hex}"
    terminal = VirtualTerminal("inpas")
    line = terminal.line = SwitchableFaults(await open_device(name))
    serving = asyncio.get_running_loop().create_task(terminal.serve(line, keep_open=True))
    try:
        timers = {"ack_timeout": 0.3}
        async with EcrClient(name, "inpas", timers=timers, journal=Journal()) as ecr:
            assert (await ecr.sale(10_00)).approved
            line.set_faults("rx:silence=600@0")
            with pytest.raises(LinkError):
                await asyncio.wait_for(ecr.sale(20_00), 10)
            line.set_faults(None)
            started = asyncio.get_running_loop().time()
            await ecr.recover()  # the lost sale was never heard: the host never saw it
            assert (await asyncio.wait_for(ecr.sale(30_00), 10)).approved
            assert asyncio.get_running_loop().time() - started < 8
        assert [(op.amount, op.status.value) for op in terminal.journal.ledger.operations()
                if op.operation.value == "sale"] == [(10_00, "approved"), (30_00, "approved")]
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await line.close()


@contextlib.asynccontextmanager
async def switchable_pair() -> AsyncIterator[tuple[Device, SwitchableFaults]]:
    """Two ends of one ``virtual://`` line: the peer's, and the terminal's behind SwitchableFaults."""
    name = f"virtual://control-{uuid.uuid4().hex}"
    peer = await open_device(name)
    line = SwitchableFaults(await open_device(name))
    try:
        yield peer, line
    finally:
        await line.close()
        await peer.close()


async def test_faults_changed_while_a_read_waits_apply_to_the_bytes_it_takes_next():
    async with switchable_pair() as (peer, line):
        line.set_faults("rx:silence=600@0")
        reading = asyncio.ensure_future(line.read())
        await peer.write(b"swallowed")
        await asyncio.sleep(0.05)
        assert not reading.done()
        line.set_faults("rx:drop@0")  # the next bytes: their first one dropped by the new faults
        await peer.write(b"XYZ")
        assert await asyncio.wait_for(reading, 2) == b"YZ"
        line.set_faults(None)
        reading = asyncio.ensure_future(line.read())
        await asyncio.sleep(0.05)
        line.set_faults("rx:corrupt@0,seed=3")
        line.set_faults(None)  # two changes while one read waits: the last one rules
        await peer.write(b"plain")
        assert await asyncio.wait_for(reading, 2) == b"plain"


async def test_bytes_the_old_faults_let_through_are_not_lost_when_the_faults_change():
    # rx:split=2 hands a chunk on two bytes a read; the rest of the chunk was already through the
    # faults, waiting for the next reads. Changing the faults between two reads lost it: the
    # terminal heard the first two bytes of a frame and never the rest.
    async with switchable_pair() as (peer, line):
        line.set_faults("rx:split=2")
        await peer.write(b"ABCDEFG")
        assert await asyncio.wait_for(line.read(), 2) == b"AB"
        line.set_faults("rx:drop@0")  # the new faults: the first byte read after the change dropped
        line.set_faults(None)  # and changed again before any read
        await peer.write(b"HI")
        heard = b""
        while len(heard) < 7:
            heard += await asyncio.wait_for(line.read(), 2)
        assert heard == b"CDEFGHI"


async def test_a_read_cancelled_at_a_fault_change_loses_and_repeats_nothing():
    # The terminal's pump cancels its waiting read; a change of faults may fall between.
    async with switchable_pair() as (peer, line):
        line.set_faults("rx:delay=30")
        await peer.write(b"held")
        waiting = asyncio.ensure_future(line.read())
        await asyncio.sleep(0.05)
        line.set_faults("rx:silence=600@0")  # "held" was already through the delay: it is not silenced
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        waiting = asyncio.ensure_future(line.read())
        assert await asyncio.wait_for(waiting, 2) == b"held"
        waiting = asyncio.ensure_future(line.read())
        await asyncio.sleep(0.05)
        line.set_faults(None)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await peer.write(b"next")
        assert await asyncio.wait_for(line.read(), 2) == b"next"
