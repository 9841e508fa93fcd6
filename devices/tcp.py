"""``tcp://host:port[?timeout=S]`` (connect) and ``tcp-listen://127.0.0.1:PORT`` (one peer at a time).

A connect gives up after ``timeout`` seconds (10 by default): a terminal that is switched off on
another subnet would otherwise hold ``open`` for the kernel's two minutes of SYN retries.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from urllib.parse import urlsplit

from ._fd import FdDevice, FdPump
from .base import DeviceClosed, DeviceError

__all__ = ["TcpDevice", "TcpListenDevice", "open_tcp", "open_tcp_listen"]

DEFAULT_LISTEN_HOST = "127.0.0.1"  # listeners stay local unless the URL says otherwise
DEFAULT_CONNECT_TIMEOUT = 10.0
_BACKLOG = 8


def _host_port(url: str, default_host: str | None, default_port: int | None) -> tuple[str, int]:
    scheme = url.partition("://")[0]
    example = f"{scheme}://127.0.0.1:{'0' if default_port == 0 else '5000'}"
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise DeviceError(f"{url}: expected {scheme}://host:port, e.g. {example}")
    try:
        port = parts.port
    except ValueError:
        raise DeviceError(f"{url}: bad port (0-65535), e.g. {example}") from None
    host = parts.hostname or default_host
    if port is None:
        port = default_port
    if not host or port is None:
        raise DeviceError(f"{url}: expected {scheme}://host:port, e.g. {example}")
    return host, port


def _reason(exc: OSError) -> str:
    # asyncio's sock_connect words ECONNREFUSED as "Connect call failed (addr)"; use the OS words.
    if exc.errno is not None and exc.errno > 0:
        return f"[Errno {exc.errno}] {os.strerror(exc.errno)}"
    return str(exc)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # Frames are small and latency-bound; Nagle would hold them back.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class TcpDevice(FdDevice):
    """A connected TCP socket (``socket`` attribute); DeviceClosed once the peer closes."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        super().__init__(url, loop)
        self.socket = sock
        self.peer = sock.getpeername()
        self._pump = FdPump(
            loop, sock.fileno(), sock.recv, sock.send, self._inbox, self._inbox.feed_eof, url
        )
        self._pump.start()

    @property
    def own_stream(self) -> bool:
        """A connection of its own: an earlier connection's bytes never arrive on it."""
        return True

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        reason = f"{self.url}: device closed"
        assert self._pump is not None
        self._pump.stop(reason)
        self._inbox.close(reason)
        self.socket.close()


def _connect_timeout(url: str) -> tuple[str, float]:
    """Split ``?timeout=S`` off a tcp:// URL; returns (url without it, seconds)."""
    base, _, query = url.partition("?")
    timeout = DEFAULT_CONNECT_TIMEOUT
    for segment in filter(None, query.split("&")):
        key, _, value = segment.partition("=")
        if key != "timeout":
            raise DeviceError(f"{url}: unknown parameter {key} (supported: timeout)")
        try:
            timeout = float(value)
            if not 0 < timeout <= 3600:
                raise ValueError
        except ValueError:
            raise DeviceError(f"{url}: bad value for timeout: {value!r} (seconds, e.g. timeout=5)") from None
    return base, timeout


async def open_tcp(url: str) -> TcpDevice:
    """Connect to ``tcp://host:port[?timeout=S]`` with TCP_NODELAY."""
    base, timeout = _connect_timeout(url)
    host, port = _host_port(base, None, None)
    try:
        return await asyncio.wait_for(_connect(url, host, port), timeout)
    except asyncio.TimeoutError:
        raise DeviceError(f"cannot connect to {_netloc(host, port)}: no answer within {timeout:g} s "
                          "(is the terminal on, and is the address right?)") from None


async def _connect(url: str, host: str, port: int) -> TcpDevice:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DeviceError(f"cannot connect to {_netloc(host, port)}: {exc}") from exc
    error: OSError | None = None
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        _nodelay(sock)
        return TcpDevice(url, loop, sock)
    reason = _reason(error) if error is not None else "no address found"
    raise DeviceError(f"cannot connect to {_netloc(host, port)}: {reason}") from error


class TcpListenDevice(FdDevice):
    """A listening socket serving one peer at a time.

    ``read`` waits for a peer to connect and send. When the peer disconnects, ``read`` returns what
    it sent, then raises DeviceClosed *once* (the user resets its state) and only then is the
    next peer accepted; further peers wait in the listen backlog meanwhile. A peer that connects
    and leaves without a byte is reported the same way (DeviceClosed once), however many come.
    ``write`` with no peer connected raises DeviceClosed. ``port`` is the bound port, ``peer`` the
    peer's address or None, ``peer_since`` when it was accepted (``time.monotonic``).

    For an idle policy: ``waiting_peers`` says whether another peer waits in the backlog, and
    :meth:`drop_peer` hangs up on the current one (it is then reported as gone, as if it had left).
    """

    @property
    def reconnects(self) -> bool:
        """True: after a peer leaves, ``read`` waits for the next one."""
        return True

    def __init__(self, loop: asyncio.AbstractEventLoop, listener: socket.socket) -> None:
        host, port = listener.getsockname()[:2]
        super().__init__(f"tcp-listen://{_netloc(host, port)}", loop)
        self.host: str = host
        self.port: int = port
        self.peer: tuple | None = None
        self.peer_since: float | None = None
        self._listener = listener
        self._conn: socket.socket | None = None
        self._accepting = False
        self._start_accepting()

    def _start_accepting(self) -> None:
        if not self._accepting and not self._closed and self._conn is None:
            self._loop.add_reader(self._listener.fileno(), self._on_acceptable)
            self._accepting = True

    def _stop_accepting(self) -> None:
        if self._accepting:
            self._loop.remove_reader(self._listener.fileno())
            self._accepting = False

    def _on_acceptable(self) -> None:
        try:
            conn, addr = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError:
            # E.g. out of file descriptors: the listener stays readable, so back off, don't spin.
            self._stop_accepting()
            self._loop.call_later(0.5, self._start_accepting)
            return
        self._stop_accepting()
        conn.setblocking(False)
        _nodelay(conn)
        self._conn = conn
        self.peer = addr
        self.peer_since = time.monotonic()
        self._pump = FdPump(
            self._loop, conn.fileno(), conn.recv, conn.send, self._inbox, self._on_peer_gone,
            f"{self.url} (peer {_netloc(*addr[:2])})",
        )
        self._pump.start()

    @property
    def connected(self) -> bool:
        """True while a peer is connected (accepted and not yet gone)."""
        return self._conn is not None

    @property
    def waiting_peers(self) -> bool:
        """True if a connection waits in the listen backlog (checked without accepting it)."""
        if self._closed:
            return False
        try:
            readable, _, _ = select.select([self._listener], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def drop_peer(self, reason: str = "dropped") -> bool:
        """Hang up on the connected peer (it is reported by ``read`` as gone); False if none."""
        if self._conn is None:
            return False
        self._on_peer_gone(f"{self.url}: {reason}")
        return True

    def _on_peer_gone(self, reason: str) -> None:
        pump, conn = self._pump, self._conn
        self._pump = self._conn = self.peer = None
        self.peer_since = None
        if pump is not None:
            pump.stop(reason)
        if conn is not None:
            conn.close()
        self._inbox.feed_eof(reason)

    async def read(self, max_bytes: int = 4096) -> bytes:
        try:
            return await super().read(max_bytes)
        except DeviceClosed:
            if self._closed:
                raise
            # The disconnect has now been reported: get ready for the next peer.
            self._inbox.reset_eof()
            self._start_accepting()
            raise

    async def write(self, data: bytes) -> None:
        self._check_usable()
        if not self._closed and self._pump is None:
            raise DeviceClosed(f"{self.url}: no peer connected")
        await super().write(data)

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        reason = f"{self.url}: device closed"
        self._stop_accepting()
        if self._pump is not None:
            self._pump.stop(reason)
        if self._conn is not None:
            self._conn.close()
        self._pump = self._conn = self.peer = None
        self._inbox.close(reason)
        self._listener.close()


async def open_tcp_listen(url: str) -> TcpListenDevice:
    """Listen on ``tcp-listen://host:port`` (host defaults to 127.0.0.1, port 0 picks a free one)."""
    host, port = _host_port(url, DEFAULT_LISTEN_HOST, 0)
    loop = asyncio.get_running_loop()
    where = _netloc(host, port)
    try:
        infos = await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise DeviceError(f"cannot listen on {where}: {_reason(exc)}") from exc
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        if os.name == "posix":
            # Restarting the emulator must not fail on the previous run's TIME_WAIT sockets.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise DeviceError(f"cannot listen on {where}: {_reason(exc)}") from exc
    return TcpListenDevice(loop, sock)
