"""posbridge benchmarks: codec, transactions, scale, wire budget. Run on demand, not as tests.

    python benchmarks/run.py            # full run (a few minutes)
    python benchmarks/run.py --quick    # under 45 s
    python benchmarks/run.py --json     # one JSON object on stdout

Every figure is printed beside a baseline measured in the same run (these machines are shared and
noisy): the codec beside a minimal hand-written ``struct`` codec of the same frames, transactions
beside raw round trips of the same bytes over the same transport.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import crcmod.predefined  # noqa: E402

from posbridge.devices import open_device  # noqa: E402
from posbridge.journal import Journal  # noqa: E402
from posbridge.model import Operation, Result, Slips, Status, Totals  # noqa: E402
from posbridge.emulator.terminal import TerminalConfig  # noqa: E402
from posbridge.testing import TerminalLink  # noqa: E402
from posbridge.protocols.arcus2 import fields as arcus_fields  # noqa: E402
from posbridge.protocols.arcus2 import frame as arcus_frame  # noqa: E402
from posbridge.protocols.arcus2 import mapping as arcus_mapping  # noqa: E402
from posbridge.protocols.arcus2.ops import default_ops_table  # noqa: E402
from posbridge.protocols.inpas.fields import Message  # noqa: E402
from posbridge.protocols.inpas.frame import decode_frame, encode_frame  # noqa: E402
from posbridge.protocols.inpas.mapping import RequestContext, request_to_message, result_to_message  # noqa: E402
from posbridge.protocols.common.model import Request  # noqa: E402

PROTOCOLS = ("inpas", "arcus2")
TARGETS = {
    "codec_ratio": 3.0,  # posbridge codec within 3x of the struct codec
    "virtual_sales_per_s": 1500,
    "transport_ratio": 2.0,  # sales over pty/TCP within 2x of raw round trips
    "scale_p99_ms": 100.0,
    "scale_rss_mb": 300.0,
    "wire_share": 0.01,
}


# --- timing helpers ------------------------------------------------------------------------------
def best_of(fn: Callable[[], Any], *, repeat: int, number: int) -> float:
    """Seconds per call: the best of ``repeat`` runs of ``number`` calls (least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- 1. codec ---------------------------------------------------------------------------------------
_crc = crcmod.predefined.mkPredefinedCrcFun("crc-16-buypass")
_HEAD = struct.Struct("<BH")
_REC = struct.Struct("<BH")


def struct_parse(frame: bytes) -> dict[int, bytes]:
    """Baseline: the least a correct SA parser does (header, CRC check, records)."""
    start, length = _HEAD.unpack_from(frame, 0)
    body_end = 3 + length
    if _crc(frame[:body_end]) != int.from_bytes(frame[body_end:body_end + 2], "big"):
        raise ValueError("crc")
    fields, pos = {}, 3
    while pos < body_end:
        tag, size = _REC.unpack_from(frame, pos)
        fields[tag] = frame[pos + 3:pos + 3 + size]
        pos += 3 + size
    return fields


def struct_build(fields: dict[int, bytes]) -> bytes:
    """Baseline: records, header, CRC."""
    body = b"".join(_REC.pack(tag, len(value)) + value for tag, value in sorted(fields.items()))
    head = _HEAD.pack(0x02, len(body))
    return head + body + _crc(head + body).to_bytes(2, "big")


def sample_results() -> tuple[Request, Result, Result]:
    """A sale request, an approved response with a ~300-byte slip, a ~2 KB settlement report."""
    request = Request(Operation.SALE, 15000, 643, transaction_id="17", terminal_id="00344224",
                      ecr_datetime=datetime(2026, 11, 22, 12, 30))
    slip = "\n".join(f"{'СТРОКА ЧЕКА':<20}{i:>12}" for i in range(9))  # 9 x 32 = ~300 bytes
    approved = Result(Operation.SALE, Status.APPROVED, "00", "ОДОБРЕНО", amount=15000, currency=643,
                      rrn="333109189729", auth_code="454583", masked_pan="411111******1111",
                      terminal_id="00344224", transaction_id="17", slips=Slips(slip))
    report_lines = "\n".join(f"{i:04d} ОПЛАТА  411111******1111  {i * 100:>9}" for i in range(48))
    settlement = Result(Operation.SETTLEMENT, Status.APPROVED, "00", "ИТОГИ СОВПАЛИ",
                        totals=Totals(643, 48, 117_600, 2, 5_000, 1, 2_000), terminal_id="00344224",
                        slips=Slips(report_lines))
    return request, approved, settlement


def sample_frames(protocol: str = "inpas") -> dict[str, bytes]:
    """The three sample messages as ``protocol`` frames them."""
    request, approved, settlement = sample_results()
    if protocol == "inpas":
        messages = [request_to_message(request), result_to_message(approved, RequestContext(1)),
                    result_to_message(settlement, RequestContext(59))]
        frames = [encode_frame(m.encode_body()) for m in messages]
    else:
        ops = default_ops_table()
        messages = [arcus_mapping.request_to_message(request, ops),
                    arcus_mapping.result_to_message(approved, arcus_mapping.RequestContext("1", "17")),
                    arcus_mapping.result_to_message(settlement, arcus_mapping.RequestContext("7", "18"))]
        frames = [arcus_frame.encode_frame(m.encode_body()) for m in messages]
    return dict(zip(("sale request", "approved + 300 B slip", "2 KB settlement report"), frames))


# The Arcus2-style baseline: STX, LEN big-endian, "C" + key=value fields split by FS, ETX, LRC.
def arcus_struct_parse(frame: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    length = int.from_bytes(frame[1:3], "big")
    if frame[3 + length] != 0x03 or arcus_frame.lrc(frame[1:4 + length]) != frame[4 + length]:
        raise ValueError("frame")
    body = frame[3:3 + length]
    return body[:1], dict(item.split(b"=", 1) for item in body[1:].split(b"\x1c"))


def arcus_struct_build(parsed: tuple[bytes, dict[bytes, bytes]]) -> bytes:
    klass, fields = parsed
    body = klass + b"\x1c".join(k + b"=" + v for k, v in fields.items())
    core = len(body).to_bytes(2, "big") + body + b"\x03"
    return b"\x02" + core + bytes([arcus_frame.lrc(core)])


def bench_codec(quick: bool) -> list[dict[str, Any]]:
    repeat, number = (3, 300) if quick else (7, 2000)
    rows = []
    for protocol in PROTOCOLS:
        if protocol == "inpas":
            ours_decode = lambda frame: Message.decode_body(decode_frame(frame).body)  # noqa: E731
            ours_encode = lambda message: encode_frame(message.encode_body())  # noqa: E731
            base_parse, base_build = struct_parse, struct_build
        else:
            ours_decode = lambda frame: arcus_fields.Message.decode_body(  # noqa: E731
                arcus_frame.decode_frame(frame).body)
            ours_encode = lambda message: arcus_frame.encode_frame(message.encode_body())  # noqa: E731
            base_parse, base_build = arcus_struct_parse, arcus_struct_build
        for name, frame in sample_frames(protocol).items():
            parsed = base_parse(frame)
            message = ours_decode(frame)
            assert ours_encode(message) == frame and base_build(parsed) == frame
            parse = best_of(lambda: ours_decode(frame), repeat=repeat, number=number)
            parse_base = best_of(lambda: base_parse(frame), repeat=repeat, number=number)
            build = best_of(lambda: ours_encode(message), repeat=repeat, number=number)
            build_base = best_of(lambda: base_build(parsed), repeat=repeat, number=number)
            rows.append({"protocol": protocol, "frame": name, "bytes": len(frame),
                         "parse_us": parse * 1e6, "parse_struct_us": parse_base * 1e6,
                         "parse_ratio": parse / parse_base, "build_us": build * 1e6,
                         "build_struct_us": build_base * 1e6, "build_ratio": build / build_base})
    return rows


# --- 2. transactions --------------------------------------------------------------------------------
async def _sales(link: TerminalLink, seconds: float) -> tuple[int, float]:
    for _ in range(20):  # warm-up
        await link.client.sale(100)
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        await link.client.sale(100)
        count += 1
    return count, elapsed


async def sales_per_second(protocol: str, transport: str, seconds: float, journal_dir: str | None) -> float:
    options: dict[str, Any] = {}
    client_options: dict[str, Any] = {}
    if journal_dir:
        options["journal"] = Journal(Path(journal_dir) / f"terminal-{uuid.uuid4().hex}.sqlite3")
        client_options["journal"] = Journal(Path(journal_dir) / f"ecr-{uuid.uuid4().hex}.sqlite3")
    async with TerminalLink(protocol, transport=transport, client_options=client_options, **options) as link:
        count, elapsed = await _sales(link, seconds)
    return count / elapsed


async def _open_raw_pair(transport: str, tmp: str) -> tuple[Any, Any, Callable[[], Any]]:
    if transport == "virtual":
        name = f"virtual://raw-{uuid.uuid4().hex}"
        a = await open_device(name)
        b = await open_device(name)
        return a, b, lambda: None
    if transport == "pty":
        link = Path(tmp) / f"raw-{uuid.uuid4().hex}"
        a = await open_device(f"pty://{link}")
        b = await open_device(f"serial://{link}?baudrate=115200")
        return a, b, lambda: None
    a = await open_device("tcp-listen://127.0.0.1:0")
    b = await open_device(f"tcp://127.0.0.1:{a.port}")
    return a, b, lambda: None


async def raw_exchanges_per_second(transport: str, seconds: float, tmp: str) -> float:
    """The same bytes as a sale, over the same transport, with no protocol work at all."""
    frames = sample_frames()
    request, response = frames["sale request"], frames["approved + 300 B slip"]
    ack_response = b"\x06" + response
    terminal, ecr, _ = await _open_raw_pair(transport, tmp)

    async def read_exact(device: Any, n: int) -> None:
        got = 0
        while got < n:
            got += len(await device.read(n - got))

    async def serve() -> None:
        while True:
            await read_exact(terminal, len(request))
            await terminal.write(ack_response)
            await read_exact(terminal, 2)  # ACK + EOT

    server = asyncio.get_running_loop().create_task(serve())

    async def one() -> None:
        await ecr.write(request)
        await read_exact(ecr, len(ack_response))
        await ecr.write(b"\x06\x04")

    try:
        for _ in range(20):
            await one()
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            await one()
            count += 1
    finally:
        server.cancel()
        await ecr.close()
        await terminal.close()
    return count / elapsed


async def bench_transactions(quick: bool) -> list[dict[str, Any]]:
    seconds = 1.0 if quick else 4.0
    rows = []
    with tempfile.TemporaryDirectory(prefix="posbridge-bench-") as tmp:
        for transport in ("virtual", "pty", "tcp"):
            raw = await raw_exchanges_per_second(transport, seconds, tmp)
            for protocol in PROTOCOLS:
                memory = await sales_per_second(protocol, transport, seconds, None)
                on_disk = await sales_per_second(protocol, transport, seconds, tmp)
                rows.append({"protocol": protocol, "transport": transport, "sales_per_s": memory,
                             "sales_per_s_file_journal": on_disk, "raw_per_s": raw, "ratio": raw / memory})
    return rows


# --- 3. scale ----------------------------------------------------------------------------------------
async def scale_worker(terminals: int, seconds: float, pace: float | None) -> dict[str, Any]:
    """``terminals`` terminal+ECR pairs in this process; each runs sales back to back (pace None)
    or one sale every ``pace`` seconds. Latency = one sale, request to result."""
    latencies: list[float] = []
    links = [TerminalLink("inpas", config=TerminalConfig()) for _ in range(terminals)]
    for link in links:
        await link.__aenter__()
    stop_at = time.perf_counter() + seconds

    async def drive(link: TerminalLink, offset: float) -> None:
        if pace:
            await asyncio.sleep(offset)
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            result = await link.client.sale(100)
            assert result.approved
            latencies.append(time.perf_counter() - began)
            if pace:
                await asyncio.sleep(max(0.0, pace - (time.perf_counter() - began)))

    start = time.perf_counter()
    await asyncio.gather(*(drive(link, i * (pace or 0) / terminals) for i, link in enumerate(links)))
    elapsed = time.perf_counter() - start
    for link in links:
        await link.__aexit__(None, None, None)
    ordered = sorted(latencies)
    return {"terminals": terminals, "mode": f"one sale / {pace:g} s each" if pace else "back to back",
            "sales_per_s": len(ordered) / elapsed,
            "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
            "peak_rss_mb": peak_rss_mb()}


def bench_scale(quick: bool) -> list[dict[str, Any]]:
    counts = (1, 16, 128, 512)
    seconds = 2.0 if quick else 8.0
    rows = []
    for pace in (None, 1.0):
        for n in counts:
            if quick and pace is None and n == 512:
                continue
            # Each size in its own process, so peak RSS is that size's own.
            cmd = [sys.executable, __file__, "--scale-worker", str(n), "--seconds", str(seconds)]
            if pace:
                cmd += ["--pace", str(pace)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                rows.append({"terminals": n, "error": done.stderr.strip().splitlines()[-1:]})
                continue
            rows.append(json.loads(done.stdout))
    return rows


# --- 4. wire budget ---------------------------------------------------------------------------------
def bench_wire(codec_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for row in codec_rows:
        codec_s = (row["parse_us"] + row["build_us"]) / 1e6
        for baud in (9600, 115200):
            wire_s = row["bytes"] * 10 / baud  # 8N1: ten bit times a byte
            rows.append({"protocol": row["protocol"], "frame": row["frame"], "baud": baud, "wire_ms": wire_s * 1000,
                         "codec_us": codec_s * 1e6, "share": codec_s / wire_s})
    return rows


# --- report ------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "processor": _cpu_model(), "calibration_ns": calibration_ns()}


def calibration_ns() -> float:
    """ns per iteration of a plain Python loop, best of 5: how fast this (shared) machine is right
    now. Figures from runs with different calibrations are not comparable one to one."""
    def loop() -> None:
        total = 0
        for i in range(200_000):
            total += i
    return best_of(loop, repeat=5, number=1) / 200_000 * 1e9


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_report(data: dict[str, Any]) -> None:
    m = data["machine"]
    print(f"posbridge benchmarks — Python {m['python']}, {m['cpu_count']} cores, {m['processor']};"
          f" calibration: {m['calibration_ns']:.1f} ns per Python loop iteration (lower is faster)")
    print("\n1. Codec, µs per frame; baseline: minimal hand-written struct codec of the same frame (target ≤ 3×)")
    print(f"   {'protocol':<8} {'frame':<24}{'bytes':>6}{'parse':>9}{'struct':>9}{'ratio':>7}{'build':>9}"
          f"{'struct':>9}{'ratio':>7}")
    for r in data["codec"]:
        print(f"   {r['protocol']:<8} {r['frame']:<24}{r['bytes']:>6}{r['parse_us']:>9.1f}{r['parse_struct_us']:>9.1f}"
              f"{r['parse_ratio']:>6.1f}×{r['build_us']:>9.1f}{r['build_struct_us']:>9.1f}{r['build_ratio']:>6.1f}×")
    print("\n2. Transactions: complete sales/s (request, ACK, response, ACK+EOT), ECR client + virtual"
          " terminal in one process;\n   baseline: raw round trips of the same bytes over the same transport"
          " (targets: ≥ 1500/s virtual, ≤ 2× raw)")
    for r in data["transactions"]:
        print(f"   {r['protocol']:<7} {r['transport']:<8}{r['sales_per_s']:>8.0f} sales/s (file journals: {r['sales_per_s_file_journal']:.0f}/s)"
              f"   raw {r['raw_per_s']:>7.0f}/s   raw/sales {r['ratio']:.1f}×")
    print("\n3. Scale: N terminal+ECR pairs in one process (target: 512 with p99 < 100 ms, < 300 MB)")
    for r in data["scale"]:
        if "error" in r:
            print(f"   N={r['terminals']}: failed: {r['error']}")
            continue
        print(f"   N={r['terminals']:<4} {r['mode']:<22}{r['sales_per_s']:>8.0f} sales/s  p50 {r['p50_ms']:>7.1f} ms"
              f"  p99 {r['p99_ms']:>7.1f} ms  peak RSS {r['peak_rss_mb']:>6.1f} MB")
    print("\n4. Wire budget: codec (parse + build) share of the frame's time on the wire (target < 1%)")
    for r in data["wire"]:
        print(f"   {r['protocol']:<7} {r['frame']:<24}{r['baud']:>7} baud  wire {r['wire_ms']:>8.2f} ms  codec {r['codec_us']:>6.1f} µs"
              f"  share {r['share'] * 100:.3f}%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="finish within 45 seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--scale-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    parser.add_argument("--pace", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_worker:
        print(json.dumps(asyncio.run(scale_worker(args.scale_worker, args.seconds, args.pace))))
        return 0
    started = time.perf_counter()
    codec = bench_codec(args.quick)
    data = {"machine": machine(), "codec": codec, "transactions": asyncio.run(bench_transactions(args.quick)),
            "scale": bench_scale(args.quick), "wire": bench_wire(codec), "targets": TARGETS}
    data["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        print_report(data)
        print(f"\n({data['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
