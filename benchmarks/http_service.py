"""The HTTP service's overhead per sale, beside the direct ECR client (a ratio). Run on demand.

    python benchmarks/http_service.py              # 300 sales each way
    python benchmarks/http_service.py --sales 50   # quicker
    python benchmarks/http_service.py --json

Both ways run the same sales against the same kind of virtual terminal (in-memory ``virtual://``
link, INPAS SA, default card), with the ECR journal in a file (WAL, ``synchronous=FULL``) as in
production:

- **direct**: ``await EcrClient.sale(amount)``;
- **service**: ``POST /v1/terminals/kassa1/Pay`` with a new ``command_id`` over real TCP on
  127.0.0.1 to ``posbridge serve``'s application (aiohttp ``AppRunner``/``TCPSite``), from an aiohttp
  client with keep-alive in the same process and event loop (so the client's own cost is counted
  in the service's figure: the overhead is an upper bound).

The service's extra work per sale: HTTP parsing and JSON, the checks, the command store's two
durable writes (accepted, finished) and the journal link, the queue hand-off, the slip joined.
Figures move ±25% with the neighbours' load on a shared machine; the ratio is steadier.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from posbridge.devices import open_device  # noqa: E402
from posbridge.ecr import EcrClient  # noqa: E402
from posbridge.emulator.terminal import VirtualTerminal  # noqa: E402
from posbridge.http.app import make_app  # noqa: E402
from posbridge.http.config import ServiceConfig, TerminalSettings  # noqa: E402
from posbridge.http.service import Service  # noqa: E402
from posbridge.journal import Journal  # noqa: E402

AMOUNT = 150_00


@contextlib.asynccontextmanager
async def virtual_terminal() -> Any:
    """A virtual terminal serving one ``virtual://`` link; yields the ECR side's URL."""
    name = f"posbridge-bench-{uuid.uuid4().hex}"
    device = await open_device(f"virtual://{name}")
    terminal = VirtualTerminal("inpas")
    task = asyncio.get_running_loop().create_task(terminal.serve(device, keep_open=True))
    try:
        yield f"virtual://{name}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await device.close()
        terminal.journal.close()


async def direct(sales: int, folder: Path) -> list[float]:
    """Seconds per sale through the ECR client itself."""
    times = []
    async with virtual_terminal() as url:
        journal = Journal(folder / "direct.sqlite3")
        try:
            async with EcrClient(url, "inpas", journal=journal) as client:
                await client.sale(AMOUNT)  # warm up: connection, first journal pages
                for _ in range(sales):
                    start = time.perf_counter()
                    result = await client.sale(AMOUNT)
                    times.append(time.perf_counter() - start)
                    assert result.approved, result
        finally:
            journal.close()
    return times


async def service(sales: int, folder: Path) -> list[float]:
    """Seconds per sale through ``posbridge serve``'s application over TCP."""
    times = []
    async with virtual_terminal() as url:
        config = ServiceConfig(terminals=(TerminalSettings("kassa1", url),), journal=str(folder / "serve.sqlite3"),
                               log_file=str(folder / "serve.log"))
        runner = web.AppRunner(make_app(Service(config)), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            endpoint = f"http://{host}:{port}/v1/terminals/kassa1/Pay"
            async with aiohttp.ClientSession() as session:
                for number in range(sales + 1):
                    start = time.perf_counter()
                    async with session.post(endpoint, json={"command_id": f"bench-{number}", "amount": AMOUNT}) as r:
                        body = await r.json()
                    if number:  # the first is the warm-up
                        times.append(time.perf_counter() - start)
                    assert body["status"] == "approved", body
        finally:
            await runner.cleanup()
    return times


def summary(times: list[float]) -> dict[str, float]:
    """Mean, median and p95 in milliseconds."""
    ordered = sorted(times)
    return {"mean_ms": statistics.fmean(times) * 1000, "median_ms": statistics.median(times) * 1000,
            "p95_ms": ordered[int(len(ordered) * 0.95) - 1] * 1000}


async def measure(sales: int) -> dict[str, Any]:
    """Both ways, direct first then the service, in fresh journals."""
    with tempfile.TemporaryDirectory(prefix="posbridge-bench-") as tmp:
        folder = Path(tmp)
        direct_times = await direct(sales, folder)
        service_times = await service(sales, folder)
    d, s = summary(direct_times), summary(service_times)
    return {
        "sales": sales, "python": platform.python_version(), "machine": platform.machine(),
        "direct": d, "service": s,
        "overhead_ms_per_sale": s["median_ms"] - d["median_ms"],
        "ratio_median": s["median_ms"] / d["median_ms"],
    }


def main() -> int:
    """Run and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sales", type=int, default=300, help="sales each way (default 300)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    report = asyncio.run(measure(args.sales))
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"HTTP service overhead per sale ({report['sales']} sales each way, Python {report['python']})")
    print(f"{'':10} {'mean ms':>9} {'median ms':>10} {'p95 ms':>8}")
    for way in ("direct", "service"):
        figures = report[way]
        print(f"{way:10} {figures['mean_ms']:9.2f} {figures['median_ms']:10.2f} {figures['p95_ms']:8.2f}")
    print(f"overhead: {report['overhead_ms_per_sale']:.2f} ms per sale; service / direct (median): "
          f"{report['ratio_median']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
