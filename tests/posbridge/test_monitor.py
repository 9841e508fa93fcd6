"""``posbridge monitor`` (issue 13, item 4): a relay between a register and a terminal that passes
every byte unchanged, at once, both ways, while it shows the frames of both directions decoded.

Real sockets, pseudo-terminals and processes throughout: the claims are about them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posbridge import protocols
from posbridge.capture import ECR_TO_TERMINAL, TERMINAL_TO_ECR, read_capture, recorded_exchanges
from posbridge.cli.monitor import LinkMonitor, MonitorReport, StreamDecoder, _Printer
from posbridge.devices import open_device
from posbridge.ecr.client import EcrClient
from posbridge.journal import Journal
from posbridge.model import Operation, Request
from posbridge.protocols.common.describe import EntryKind
from posbridge.protocols.inpas.fields import Message
from posbridge.protocols.inpas.frame import encode_frame
from posbridge.protocols.inpas.multipart import split_message
from posbridge.testing.background import BackgroundTerminal
from posbridge.testing.capture import replay_against_virtual_terminal

ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = ("inpas", "arcus2")
FULL_PAN = "4111111111111111"
STAMP = r"\d\d:\d\d:\d\d\.\d{3}"



def request_frame(protocol: str, amount: int = 150_00) -> bytes:
    """The bytes an ECR session of ``protocol`` sends for a sale."""
    session = protocols.get(protocol).ecr_session()
    session.start(Request(Operation.SALE, amount=amount, transaction_id="000042").validated(), 0.0)
    sent = session.data_to_send()
    if sent == b"\x05":  # Arcus2 asks first (ENQ); the terminal's ACK lets the frame go
        session.receive(b"\x06", 0.0)
        sent = session.data_to_send()
    assert len(sent) > 10 and sent[0] in (0x01, 0x02), sent
    return sent


def decoded_bytes(reports: list[MonitorReport], direction: str) -> bytes:
    return b"".join(bytes.fromhex(r.hex) for r in reports if r.event == "frame" and r.direction == direction)


# --- the stream decoder ---------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_decoder_gives_every_byte_once_and_each_frame_whole_however_it_is_cut(protocol, data):
    frame = request_frame(protocol)
    # Noise here holds no start or control byte, so the frames are the only frames.
    quiet_noise = st.binary(min_size=1, max_size=40).map(lambda b: bytes(x for x in b if x > 0x20) or b"x")
    parts = data.draw(st.lists(st.one_of(st.just(frame), quiet_noise, st.just(b"\x06")), max_size=12))
    stream = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    decoder = StreamDecoder(protocols.get(protocol).describe)
    pieces = []
    for begin, end in zip([0, *cuts], [*cuts, len(stream)]):
        pieces += decoder.feed(stream[begin:end])
    pieces += decoder.flush()
    assert b"".join(piece.data for piece in pieces) == stream
    frames = [piece for piece in pieces if piece.entry.kind is EntryKind.FRAME]
    assert len(frames) == parts.count(frame)
    assert all(piece.entry.ok and piece.data.endswith(frame) for piece in frames)
    assert sum(piece.entry.kind is EntryKind.CONTROL for piece in pieces) == parts.count(b"\x06")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(max_examples=60, deadline=None)
@given(stream=st.binary(max_size=3000), seed=st.integers(0, 2**32))
def test_the_decoder_never_raises_nor_loses_a_byte_on_any_input(protocol, stream, seed):
    rng = random.Random(seed)
    decoder = StreamDecoder(protocols.get(protocol).describe, eager=64)
    pieces, at = [], 0
    while at < len(stream):
        step = rng.randint(1, 300)
        pieces += decoder.feed(stream[at:at + step])
        if rng.random() < 0.2:
            pieces += decoder.flush()
        at += step
    pieces += decoder.flush()
    assert decoder.pending == 0
    assert b"".join(piece.data for piece in pieces) == stream


def test_a_stray_start_byte_in_noise_does_not_swallow_the_frames_after_it():
    frame = request_frame("inpas")
    decoder = StreamDecoder(protocols.get("inpas").describe)
    # STX then a length of 0xFFFF: a frame of 65 KB announced, which never comes.
    assert decoder.feed(b"\x02\xff\xff" + frame + frame) == []
    pieces = decoder.flush()  # what the monitor does after half a second of quiet
    kinds = [(piece.entry.kind, piece.entry.ok) for piece in pieces]
    assert kinds[0] == (EntryKind.INCOMPLETE, False)
    assert "taken for noise" in pieces[0].entry.problems[0].detail
    # the announced length's two bytes are noise before the first real frame (its ``skipped``)
    assert [piece.data for piece in pieces if piece.entry.kind is EntryKind.FRAME] == [b"\xff\xff" + frame, frame]
    assert pieces[1].entry.skipped == 2 and pieces[1].entry.ok
    assert b"".join(piece.data for piece in pieces) == b"\x02\xff\xff" + frame + frame


def test_a_frame_cut_short_is_shown_as_the_incomplete_frame_it_is():
    frame = request_frame("arcus2")
    decoder = StreamDecoder(protocols.get("arcus2").describe)
    assert decoder.feed(frame[:10]) == []
    [piece] = decoder.flush()
    assert piece.entry.kind is EntryKind.INCOMPLETE and piece.data == frame[:10]
    assert "have 10" in piece.entry.problems[0].detail


def test_a_message_split_into_parts_is_shown_whole_on_its_final_part():
    body = Message({0: 15000, 4: 643, 25: 1, 90: "slip line " * 30}).encode_body()
    frames = split_message(body, 64)
    assert len(frames) > 2
    decoder = StreamDecoder(protocols.get("inpas").describe)
    pieces = []
    for frame in frames:  # one read each: the receiver ACKs every part before the next is sent
        pieces += decoder.feed(frame)
    assert [piece.data for piece in pieces] == frames
    *first, final = pieces
    assert all(not piece.entry.fields for piece in first)
    assert final.entry.part is not None and final.entry.part.final
    assert final.entry.field("amount").value == "15000" and final.entry.field("90").value.startswith("slip line")


def parts_splitting_a_card_number() -> list[bytes]:
    """An INPAS answer in SOH parts, the boundary between two parts inside its full card number."""
    body = Message({0: 15000, 10: FULL_PAN, 25: 1, 90: "slip " * 20}).encode_body()
    at = body.index(FULL_PAN.encode())
    frames = split_message(body, at + 7)  # the first part ends 7 digits into the card number
    assert FULL_PAN.encode() not in b"".join(frames)
    assert FULL_PAN[:7].encode() in frames[0] and FULL_PAN[7:].encode() in frames[1]
    return frames


def test_a_card_number_split_between_two_parts_of_a_message_is_masked_in_both():
    frames = parts_splitting_a_card_number()
    decoder = StreamDecoder(protocols.get("inpas").describe)
    pieces = []
    for frame in frames:
        pieces += decoder.feed(frame)
    assert [piece.data for piece in pieces] == frames  # held until the final part, then all, in order
    assert pieces[0].shown is not None and pieces[1].shown is not None
    shown = b"".join(piece.shown or piece.data for piece in pieces)
    assert FULL_PAN[:7].encode() not in pieces[0].shown and FULL_PAN[7:].encode() not in pieces[1].shown
    assert len(shown) == len(b"".join(frames))
    assert FULL_PAN[:7].encode().hex() not in pieces[0].entry.part.chunk
    assert pieces[-1].entry.field("pan").value == "411111******1111"


def test_a_card_number_split_over_two_reads_is_held_and_masked_whole():
    decoder = StreamDecoder(protocols.get("inpas").describe)
    pieces = decoder.feed(b"noise " + FULL_PAN[:9].encode())
    pieces += decoder.feed(FULL_PAN[9:].encode() + b" more")
    pieces += decoder.flush()
    assert b"".join(piece.data for piece in pieces) == b"noise " + FULL_PAN.encode() + b" more"
    shown = b"".join(bytes.fromhex(piece.entry.data) for piece in pieces)  # noise as the describer shows it
    assert shown == b"noise 411111******1111 more"


def test_a_describer_that_raises_costs_a_noise_piece_not_the_stream():
    def broken(data: bytes) -> list:
        raise RuntimeError("describer bug")

    decoder = StreamDecoder(broken)
    [piece] = decoder.feed(b"\x02abc")
    assert piece.data == b"\x02abc" and piece.entry.kind is EntryKind.NOISE
    assert piece.entry.problems[0].reason == "describe"


# --- the relay -------------------------------------------------------------------------------------------
async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("tcp-listen://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def read_exactly(reader: asyncio.StreamReader, size: int, timeout: float = 30.0) -> bytes:
    return await asyncio.wait_for(reader.readexactly(size), timeout)


async def send_in_random_chunks(write, data: bytes, rng: random.Random) -> None:
    at = 0
    while at < len(data):
        step = rng.randint(1, 16) if rng.random() < 0.5 else rng.randint(1, 9000)  # bytes and bursts
        await write(data[at:at + step])
        at += step
        if rng.random() < 0.1:
            await asyncio.sleep(0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("ecr_side", ["tcp-listen", "pty"])
async def test_random_traffic_passes_both_ways_byte_for_byte_while_it_is_decoded(protocol, ecr_side, tmp_path):
    """200 KB of random bytes each way at once, in random chunks: what comes out of each side is
    exactly what went into the other, and every byte was decoded (shown as frame, control byte or
    noise) once."""
    size = 200_000
    rng = random.Random(f"{protocol}-{ecr_side}")
    to_terminal, to_ecr = rng.randbytes(size), rng.randbytes(size)
    reports: list[MonitorReport] = []
    link = tmp_path / "ttyECR"
    ecr_url = "tcp-listen://127.0.0.1:0" if ecr_side == "tcp-listen" else f"pty://{link}"
    async with LinkMonitor(ecr_url, "tcp-listen://127.0.0.1:0", protocol, report=reports.append,
                           quiet_flush=0.05) as monitor:
        terminal_reader, terminal_writer = await connect(monitor.terminal.device.url)
        if ecr_side == "tcp-listen":
            ecr_reader, ecr_writer = await connect(monitor.ecr.device.url)

            async def ecr_write(chunk: bytes) -> None:
                ecr_writer.write(chunk)
                await ecr_writer.drain()

            async def ecr_read(n: int) -> bytes:
                return await read_exactly(ecr_reader, n)
        else:
            register = await open_device(f"serial://{link}")  # the register opens the pty's link

            async def ecr_write(chunk: bytes) -> None:
                await register.write(chunk)

            async def ecr_read(n: int) -> bytes:
                got = bytearray()
                while len(got) < n:
                    got += await asyncio.wait_for(register.read(65536), 30)
                return bytes(got)

        async def terminal_write(chunk: bytes) -> None:
            terminal_writer.write(chunk)
            await terminal_writer.drain()

        started = time.monotonic()
        _, _, at_terminal, at_ecr = await asyncio.gather(
            send_in_random_chunks(ecr_write, to_terminal, rng),
            send_in_random_chunks(terminal_write, to_ecr, random.Random(rng.random())),
            read_exactly(terminal_reader, size), ecr_read(size))
        elapsed = time.monotonic() - started
        assert at_terminal == to_terminal
        assert at_ecr == to_ecr
        assert monitor.counts == {ECR_TO_TERMINAL: size, TERMINAL_TO_ECR: size}
        terminal_writer.close()
        if ecr_side == "tcp-listen":
            ecr_writer.close()
        else:
            await register.close()
    assert elapsed < 20, f"400 KB through the monitor took {elapsed:.1f} s"
    # stop() shows what was still held: every byte of both directions was decoded once, in order
    # (a masked card number keeps its length, and random bytes hold none that could be one here).
    assert decoded_bytes(reports, ECR_TO_TERMINAL) == to_terminal
    assert decoded_bytes(reports, TERMINAL_TO_ECR) == to_ecr
    kinds = {r.decoded["kind"] for r in reports if r.event == "frame"}
    assert {"noise", "control"} <= kinds
    assert all(re.match(STAMP + " ", r.to_text()) for r in reports)
    assert max(len(r.to_text()) for r in reports if r.decoded and r.decoded["kind"] == "noise") < 200
    assert reports[-1].event == "stopped"


async def test_a_half_frame_is_forwarded_at_once_while_the_decoder_waits_for_the_rest():
    frame = request_frame("inpas")
    reports: list[MonitorReport] = []
    async with LinkMonitor("tcp-listen://127.0.0.1:0", "tcp-listen://127.0.0.1:0", "inpas",
                           report=reports.append, quiet_flush=30) as monitor:
        terminal_reader, terminal_writer = await connect(monitor.terminal.device.url)
        ecr_reader, ecr_writer = await connect(monitor.ecr.device.url)
        ecr_writer.write(frame[:9])
        assert await read_exactly(terminal_reader, 9, timeout=2) == frame[:9]  # not held for decoding
        assert monitor._decoders[ECR_TO_TERMINAL].pending == 9
        assert not [r for r in reports if r.event == "frame"]
        ecr_writer.write(frame[9:])
        assert await read_exactly(terminal_reader, len(frame) - 9, timeout=2) == frame[9:]
        for _ in range(50):
            if any(r.event == "frame" for r in reports):
                break
            await asyncio.sleep(0.01)
        [shown] = [r for r in reports if r.event == "frame"]
        assert bytes.fromhex(shown.hex) == frame and shown.decoded["check_ok"] is True  # once, whole
        ecr_writer.close()
        terminal_writer.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_sale_through_the_monitor_is_approved_and_both_directions_are_shown_decoded(protocol, tmp_path):
    reports: list[MonitorReport] = []
    with BackgroundTerminal(protocol, transport="tcp") as terminal:
        async with LinkMonitor("tcp-listen://127.0.0.1:0", terminal.url, protocol, report=reports.append) as monitor:
            port = monitor.ecr.device.port
            async with EcrClient(f"tcp://127.0.0.1:{port}", protocol, journal=Journal()) as client:
                result = await client.sale(150_00)
            assert result.approved, result
            await asyncio.sleep(0.2)  # the client's last ACK/EOT crossing
    lines = [report.to_text() for report in reports]
    text = "\n".join(lines)
    frames = [r for r in reports if r.event == "frame" and r.decoded["kind"] == "frame"]
    requests = [r for r in frames if r.direction == ECR_TO_TERMINAL]
    answers = [r for r in frames if r.direction == TERMINAL_TO_ECR]
    assert requests and answers
    fields = {f["name"]: f["value"] for r in requests for f in r.decoded.get("fields", [])}
    answer_fields = {f["name"]: f["value"] for r in answers for f in r.decoded.get("fields", [])}
    if protocol == "inpas":
        assert fields["amount"] == "15000" and fields["operation_code"] == "1"
        assert answer_fields["rrn"] == result.rrn and answer_fields["pan"] == "411111******1111"
    else:
        assert requests[0].decoded["message_kind"] == "request" and fields["amount"] == "15000"
        assert any(r.decoded["message_kind"] == "result" for r in answers)
        assert result.rrn in answer_fields.values()
    assert re.search(rf"^{STAMP} ecr->terminal +\S", text, re.M)
    assert re.search(rf"^{STAMP} terminal->ecr +\S", text, re.M)
    assert re.search(rf"^{STAMP} \[ecr\] peer connected", text, re.M)
    assert re.search(rf"^{STAMP} \[ecr\] closed: .*waiting for the next peer", text, re.M)
    assert FULL_PAN not in text


@pytest.mark.parametrize("transport", ["tcp", "pty", "virtual"])
async def test_a_register_on_the_monitors_pty_gets_its_sales_approved_whatever_the_terminals_line(transport, tmp_path):
    """The register opens the monitor's pty (twice: a program closing it leaves it to the next);
    the terminal is on tcp://, serial:// (a pty) or virtual://."""
    link = tmp_path / "ttyPOS"
    reports: list[MonitorReport] = []
    with BackgroundTerminal("inpas", transport=transport) as terminal:
        async with LinkMonitor(f"pty://{link}", terminal.url, "inpas", report=reports.append):
            async with EcrClient(f"serial://{link}", "inpas", journal=Journal()) as client:
                assert (await client.sale(99_00)).approved
            async with EcrClient(f"serial://{link}", "inpas", journal=Journal()) as client:
                assert (await client.sale(12_34)).approved
    requests = [r for r in reports if r.event == "frame" and r.direction == ECR_TO_TERMINAL
                and r.decoded["kind"] == "frame"]
    assert [f["value"] for r in requests for f in r.decoded["fields"] if f["name"] == "amount"] == ["9900", "1234"]


async def test_a_side_whose_peer_leaves_is_reported_and_the_next_peer_is_served():
    reports: list[MonitorReport] = []
    async with LinkMonitor("tcp-listen://127.0.0.1:0", "tcp-listen://127.0.0.1:0", "inpas",
                           report=reports.append) as monitor:
        terminal_reader, terminal_writer = await connect(monitor.terminal.device.url)
        first_reader, first = await connect(monitor.ecr.device.url)
        first.write(b"\x05")  # ENQ
        assert await read_exactly(terminal_reader, 1) == b"\x05"
        first.close()
        await first.wait_closed()
        second_reader, second = await connect(monitor.ecr.device.url)
        second.write(b"\x04")  # EOT
        assert await read_exactly(terminal_reader, 1) == b"\x04"
        terminal_writer.write(b"\x06")
        assert await read_exactly(second_reader, 1) == b"\x06"
        second.close()
        terminal_writer.close()
        await asyncio.sleep(0.1)
        # the register is gone: what the terminal says now cannot be delivered, and is said so
    states = [(r.side, r.state) for r in reports if r.event == "link"]
    assert states.count(("ecr", "peer connected")) == 2
    assert ("ecr", "closed") in states and ("terminal", "closed") in states
    shown = [(r.direction, r.decoded["name"]) for r in reports if r.event == "frame"]
    assert shown == [(ECR_TO_TERMINAL, "ENQ"), (ECR_TO_TERMINAL, "EOT"), (TERMINAL_TO_ECR, "ACK")]


async def test_bytes_for_a_side_with_no_peer_are_reported_dropped_not_queued():
    reports: list[MonitorReport] = []
    async with LinkMonitor("tcp-listen://127.0.0.1:0", "tcp-listen://127.0.0.1:0", "inpas",
                           report=reports.append) as monitor:
        _, terminal_writer = await connect(monitor.terminal.device.url)
        terminal_writer.write(b"\x06\x06\x06")
        await terminal_writer.drain()
        for _ in range(100):
            if monitor.dropped[TERMINAL_TO_ECR]:
                break
            await asyncio.sleep(0.02)
        terminal_writer.close()
    [dropped] = [r for r in reports if r.event == "dropped"]
    assert dropped.direction == TERMINAL_TO_ECR and dropped.size == 3 and "no peer" in dropped.detail
    assert monitor.counts[TERMINAL_TO_ECR] == 0


async def test_a_connecting_side_that_is_hung_up_on_is_opened_again():
    accepted: list[asyncio.StreamWriter] = []

    async def terminal(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(terminal, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reports: list[MonitorReport] = []
    try:
        async with LinkMonitor("tcp-listen://127.0.0.1:0", f"tcp://127.0.0.1:{port}", "inpas",
                               report=reports.append):
            for _ in range(100):
                if accepted:
                    break
                await asyncio.sleep(0.02)
            accepted[0].close()  # the terminal hangs up
            for _ in range(200):
                if len(accepted) == 2:
                    break
                await asyncio.sleep(0.02)
            assert len(accepted) == 2
            accepted[1].close()
    finally:
        server.close()
        await server.wait_closed()
    states = [(r.side, r.state) for r in reports if r.event == "link"]
    assert ("terminal", "closed") in states and ("terminal", "open again") in states


async def test_output_that_fails_and_a_describer_that_raises_cost_the_relay_nothing():
    def broken_describe(data: bytes) -> list:
        raise RuntimeError("describer bug")

    spec = dataclasses.replace(protocols.get("inpas"), describe=broken_describe)

    def broken_screen(report: MonitorReport) -> None:
        raise BrokenPipeError("the screen is gone")

    async with LinkMonitor("tcp-listen://127.0.0.1:0", "tcp-listen://127.0.0.1:0", spec,
                           report=broken_screen) as monitor:
        terminal_reader, terminal_writer = await connect(monitor.terminal.device.url)
        ecr_reader, ecr_writer = await connect(monitor.ecr.device.url)
        frame = request_frame("inpas")
        ecr_writer.write(frame)
        assert await read_exactly(terminal_reader, len(frame)) == frame
        terminal_writer.write(b"\x06")
        assert await read_exactly(ecr_reader, 1) == b"\x06"
        ecr_writer.close()
        terminal_writer.close()


async def test_a_full_card_number_on_the_line_reaches_neither_the_screen_nor_the_capture(tmp_path):
    """The terminal side sends a frame carrying a full card number and noise holding one split over
    two reads; the register gets them unchanged, the screen and the capture only masked."""
    capture = tmp_path / "line.jsonl"
    # tag 90 (receipt text): a card number where the one-line summary clips a long value (80 characters)
    frame = encode_frame(Message({0: 15000, 10: FULL_PAN, 25: 1, 39: 1,
                                  90: "x" * 70 + FULL_PAN + " slip"}).encode_body())
    reports: list[MonitorReport] = []
    async with LinkMonitor("tcp-listen://127.0.0.1:0", "tcp-listen://127.0.0.1:0", "inpas",
                           report=reports.append, record=capture) as monitor:
        terminal_reader, terminal_writer = await connect(monitor.terminal.device.url)
        ecr_reader, ecr_writer = await connect(monitor.ecr.device.url)
        ecr_writer.write(b"\x05")
        await read_exactly(terminal_reader, 1)  # the register's side is connected now
        sent = b""
        for chunk in (frame[:20], frame[20:], b"card " + FULL_PAN[:7].encode(), FULL_PAN[7:].encode() + b" end",
                      *parts_splitting_a_card_number()):
            terminal_writer.write(chunk)
            await terminal_writer.drain()
            sent += chunk
            assert await read_exactly(ecr_reader, len(chunk)) == chunk  # one read each, unchanged
        ecr_writer.close()
        terminal_writer.close()
    screen = "\n".join(report.to_text(show_hex=True) for report in reports)
    lines = "\n".join(json.dumps(report.to_json()) for report in reports)
    recorded = capture.read_text(encoding="utf-8")
    for shown in (screen, lines, recorded):
        assert FULL_PAN not in shown
        assert FULL_PAN.encode().hex() not in shown.replace(" ", "")
        assert "411111******1111" in shown or "411111******1111".encode().hex() in shown.replace(" ", "")
    assert len(decoded_bytes(reports, TERMINAL_TO_ECR)) == len(sent)
    assert FULL_PAN[:10] not in screen  # no more than the first 6 digits, even of a clipped value
    for fragment in (FULL_PAN[:7], FULL_PAN[7:]):  # the halves a split message carried
        assert fragment.encode().hex() not in screen.replace(" ", "") + recorded
    assert any(r.decoded.get("part", {}).get("final") and {"name": "pan", "key": "10", "value": "411111******1111"}
               in r.decoded["fields"] for r in reports if r.event == "frame")


# --- --json, --record and the command as a process -----------------------------------------------------
class Process:
    """``python -m posbridge monitor ...`` with its standard output read by a thread, line by line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "posbridge", "monitor", *args], cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r} in {self.lines!r}; stderr: "
                             f"{self.process.stderr.read() if self.process.poll() is not None else ''}")

    def terminate(self, timeout: float = 15.0) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        assert self.process.stderr is not None
        error = self.process.stderr.read()
        self.process.stderr.close()
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code, error


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_monitor_command_json_lines_parse_its_capture_replays_and_sigterm_exits_0(protocol, tmp_path):
    capture = tmp_path / "through-monitor.jsonl"
    with BackgroundTerminal(protocol, transport="tcp") as terminal:
        monitor = Process("--ecr", "tcp-listen://127.0.0.1:0", "--terminal", terminal.url, "--protocol", protocol,
                          "--json", "--record", str(capture))
        try:
            port = int(monitor.wait_for(r"connect to tcp://127\.0\.0\.1:(\d+)").group(1))
            monitor.wait_for(r'"side": "terminal", "state": "open"')

            async def sales() -> None:
                async with EcrClient(f"tcp://127.0.0.1:{port}", protocol, journal=Journal()) as client:
                    sale = await client.sale(150_00)
                    assert sale.approved
                    assert (await client.refund(50_00, sale.rrn)).approved

            asyncio.run(sales())
            monitor.wait_for(r'"state": "closed"')  # the register hung up: everything it caused is shown
        finally:
            code, error = monitor.terminate()
    assert code == 0, error
    records = [json.loads(line) for line in monitor.lines]  # every line is JSON: nothing else on stdout
    assert records[-1]["event"] == "stopped" and records[-1]["bytes"][ECR_TO_TERMINAL] > 0
    frames = [r for r in records if r["event"] == "frame" and r["decoded"]["kind"] == "frame"]
    assert {r["dir"] for r in frames} == {ECR_TO_TERMINAL, TERMINAL_TO_ECR}
    assert all(isinstance(r["t"], float) and r["wall"].endswith("+00:00") for r in records)
    assert FULL_PAN not in "\n".join(monitor.lines)
    # the capture: the monitor's format is posbridge.capture's; it replays, with identical answers
    text = capture.read_text(encoding="utf-8")
    assert FULL_PAN not in text and FULL_PAN.encode().hex() not in text
    recorded = read_capture(capture)
    assert recorded.protocol == protocol and recorded.header["link"]["recorder"] == "posbridge monitor"
    assert [e.request.operation for e in recorded_exchanges(recorded)] == [Operation.SALE, Operation.REFUND]
    assert asyncio.run(replay_against_virtual_terminal(capture)) == []


def test_the_monitor_command_prints_text_with_timestamps_and_ends_on_sigterm(tmp_path):
    with BackgroundTerminal("inpas", transport="tcp") as terminal:
        monitor = Process("--ecr", "tcp-listen://127.0.0.1:0", "--terminal", terminal.url, "--hex")
        try:
            port = int(monitor.wait_for(r"connect to tcp://127\.0\.0\.1:(\d+)").group(1))

            async def sale() -> None:
                async with EcrClient(f"tcp://127.0.0.1:{port}", "inpas", journal=Journal()) as client:
                    assert (await client.sale(10_00)).approved

            asyncio.run(sale())
            monitor.wait_for(r"\[ecr\] closed")
        finally:
            code, error = monitor.terminate()
    assert code == 0, error
    text = "\n".join(monitor.lines)
    assert re.search(rf"^{STAMP} ecr->terminal +STX length \d+ crc ok: 0:amount=1000", text, re.M)
    assert re.search(rf"^{STAMP} terminal->ecr +STX .*14:rrn=\d{{12}}", text, re.M)
    assert re.search(r"^ {13} 02 ", text, re.M)  # --hex: the frame's bytes below it
    assert re.search(rf"^{STAMP} \[monitor\] stopped: ecr->terminal \d+ bytes", text, re.M)


def test_ctrl_c_ends_the_monitor_cleanly(tmp_path):
    monitor = Process("--ecr", f"pty://{tmp_path}/ttyECR", "--terminal", "tcp-listen://127.0.0.1:0")
    monitor.wait_for(r"\[terminal\] open: listening on")
    assert (tmp_path / "ttyECR").is_symlink()
    monitor.process.send_signal(signal.SIGINT)
    code = monitor.process.wait(15)
    _, error = monitor.terminate()
    assert code == 0, error
    assert "Traceback" not in error and "KeyboardInterrupt" not in error
    assert re.search(rf"^{STAMP} \[monitor\] stopped: ecr->terminal 0 bytes", "\n".join(monitor.lines), re.M)
    assert not (tmp_path / "ttyECR").exists()  # the pty's link is removed on the way out


def test_a_closed_output_is_said_once_and_the_relay_goes_on(tmp_path):
    """``posbridge monitor ... | head -1``: the screen is gone, the line is not."""
    with BackgroundTerminal("inpas", transport="tcp") as terminal:
        process = subprocess.Popen([sys.executable, "-m", "posbridge", "monitor", "--ecr", "tcp-listen://127.0.0.1:0",
                                    "--terminal", terminal.url], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            first = process.stdout.readline()
            port = int(re.search(r"connect to tcp://127\.0\.0\.1:(\d+)", first).group(1))
            process.stdout.close()  # what head does after its line

            async def sales() -> None:
                async with EcrClient(f"tcp://127.0.0.1:{port}", "inpas", journal=Journal()) as client:
                    for amount in (10_00, 20_00):
                        assert (await client.sale(amount)).approved

            asyncio.run(sales())
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(15)
            error = process.stderr.read()
            process.stderr.close()
    assert code == 0, error
    assert error.count("the output closed; still relaying") == 1
    assert "Traceback" not in error and "Exception ignored" not in error


def test_a_side_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "posbridge", "monitor", "--ecr", "tcp-listen://127.0.0.1:0",
                             "--terminal", f"serial://{tmp_path}/no-such-port"], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("posbridge: ")
    assert "no-such-port" in result.stderr


def test_text_is_in_colour_only_when_asked_or_on_a_terminal(monkeypatch):
    wall = datetime.now(timezone.utc)
    good = MonitorReport("frame", 0.1, wall, direction=ECR_TO_TERMINAL, hex="06", text="ACK",
                         decoded={"kind": "control", "name": "ACK"})
    bad = MonitorReport("frame", 0.2, wall, direction=TERMINAL_TO_ECR, hex="02", text="STX [incomplete]",
                        decoded={"kind": "incomplete", "problems": [{"reason": "incomplete"}]})
    out = io.StringIO()
    printer = _Printer(out, as_json=False, show_hex=False, colour="always")
    printer(good)
    printer(bad)
    first, second = out.getvalue().splitlines()
    assert "\x1b[36mecr->terminal" in first and first.endswith(" ACK")
    assert "\x1b[33mterminal->ecr" in second and "\x1b[31mSTX [incomplete]\x1b[0m" in second
    plain = io.StringIO()
    _Printer(plain, as_json=False, show_hex=False)(good)  # auto, not a terminal: no escapes
    assert "\x1b" not in plain.getvalue()
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert _Printer(Terminal(), as_json=False, show_hex=False).colour
    monkeypatch.setenv("NO_COLOR", "1")
    assert not _Printer(Terminal(), as_json=False, show_hex=False).colour
    assert not _Printer(io.StringIO(), as_json=True, show_hex=False, colour="always").colour


def test_the_printer_writes_json_lines_and_survives_a_closed_output():
    out = io.StringIO()
    printer = _Printer(out, as_json=True, show_hex=False)
    report = MonitorReport("link", 0.5, datetime.now(timezone.utc), side="ecr", state="open", detail="x")
    printer(report)
    assert json.loads(out.getvalue())["state"] == "open"
    out.close()
    printer(report)  # a closed output: said once on stderr, never raised
    assert printer.broken
