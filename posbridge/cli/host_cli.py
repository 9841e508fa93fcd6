"""``posbridge host``: the virtual terminal's bank host as a TCP service of its own, for gateway mode.

    posbridge host --listen 127.0.0.1:7100 --journal host.sqlite3
    posbridge emulate --port pty:///tmp/ttyPOS --host-via-ecr 127.0.0.1:7100

The terminal then reaches this host only through the cash register (INPAS operation 63), and the
host's batch lives in the host's journal. Wire format: docs/host-protocol.md. Loopback only: the
service has no authentication.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from posbridge.emulator.terminal import VirtualTerminal


def parse_listen_address(text: str) -> tuple[str, int]:
    """``127.0.0.1:7100`` -> ("127.0.0.1", 7100); loopback only (the service has no authentication)."""
    from posbridge.http.control import parse_loopback_address

    return parse_loopback_address(text, "--listen", "posbridge host")


def add_host_arguments(host: argparse.ArgumentParser) -> None:
    """The ``posbridge host`` options."""
    host.add_argument("--listen", required=True, metavar="127.0.0.1:PORT",
                      help="loopback address to serve on (port 0: any free port, printed at start)")
    host.add_argument("--journal", help="the host's journal (SQLite file; default in memory)")
    host.add_argument("--terminal-id", default="00344224", help="the terminal id whose batch this host keeps")
    host.add_argument("--key-file", metavar="FILE",
                      help="key sealing card numbers between terminal and host (default: the built-in test key; "
                           "give emulate the same with --host-key-file)")
    host.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                      help="a slow host: answer this many seconds late")
    host.add_argument("--seed", type=int, default=None, help="seed for RRNs and authorization codes")


def read_key_file(path: str | None) -> bytes | None:
    """The key in ``path`` (its bytes, surrounding whitespace stripped), or None."""
    if path is None:
        return None
    key = Path(path).read_bytes().strip()
    if len(key) < 16:
        raise ValueError(f"{path}: a key of at least 16 bytes is needed")
    return key


def run_host(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C."""
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from posbridge.emulator.host import BankHost, HostConfig
    from posbridge.emulator.remote_host import DEFAULT_KEY, HostService, start_host_service
    from posbridge.journal import Journal

    listen_host, listen_port = parse_listen_address(args.listen)
    if not 0 <= args.latency <= 3600:
        raise ValueError(f"--latency must be 0..3600 seconds, not {args.latency}")
    key = read_key_file(args.key_file) or DEFAULT_KEY
    journal = Journal(args.journal) if args.journal else Journal()
    config = HostConfig(terminal_id=args.terminal_id, seed=args.seed or 0)
    service = HostService(BankHost(journal, config), key=key, latency=args.latency)
    try:
        server = await start_host_service(service, listen_host, listen_port)
    except OSError as error:
        journal.close()
        raise OSError(f"cannot listen on {listen_host}:{listen_port}: {error.strerror or error}") from None
    bound = server.sockets[0].getsockname()
    print(f"posbridge host listening on {bound[0]}:{bound[1]} (journal {args.journal or 'in memory'})", flush=True)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await server.serve_forever()
    except asyncio.CancelledError:
        print(f"posbridge host stopped after {service.requests} request(s)", flush=True)
    finally:
        server.close()
        journal.close()
    return 0


def configure_gateway(terminal: VirtualTerminal, address: str | None, key_file: str | None) -> None:
    """``emulate --host-via-ecr HOST:PORT [--host-key-file FILE]``: the terminal reaches its host
    through the ECR (a one-line ValueError for a bad address, key or protocol)."""
    if address:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--host-via-ecr must be HOST:PORT, e.g. 127.0.0.1:7100, not {address!r}")
        if not terminal.protocol.capabilities.gateway:
            raise ValueError(f"{terminal.protocol.title} has no gateway mode: --host-via-ecr needs --protocol inpas")
        terminal.config.host_via_ecr = address
    key = read_key_file(key_file)
    if key is not None:
        terminal.config.host_key = key
