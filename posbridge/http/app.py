"""The aiohttp application of ``posbridge serve`` and the command that runs it.

Why aiohttp (``docs/http-service.md``): it is asyncio-native like the ECR client, so the HTTP server
runs inside the service's own event loop (``AppRunner`` / ``TCPSite``) beside the terminals' queues
and recovery — no ASGI server layer, no thread hand-offs; basic auth is a middleware; it is mature
and well kept.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import logging
import signal
import ssl
import sys
from typing import Any, Awaitable, Callable

from aiohttp import web

from posbridge.http import kkm, native
from posbridge.http.config import ConfigError, ServiceConfig, config_from_args
from posbridge.http.native import SERVICE, ClientGone, answer_and_hang_up, json_response
from posbridge.http.openapi import openapi_document
from posbridge.http.operations import FieldError
from posbridge.http.service import Service, Unavailable
from posbridge.journal import JournalError
from posbridge.model import mask_card_numbers

__all__ = ["IDLE_TIMEOUT", "make_app", "run_serve", "runner_options", "serve", "tls_context"]

log = logging.getLogger("posbridge.http")

MAX_BODY = 64 * 1024
"""Bytes a request body may have: an operation's JSON is a few hundred."""
OPEN_PATHS = frozenset({"/health"})
"""Paths served without authentication (they tell nothing about operations)."""
IDLE_TIMEOUT = 15.0
"""Seconds a connection may go without a whole request (headers sent too slowly, or an idle
keep-alive connection) before it is closed. aiohttp has no header timeout of its own: its keep-alive
timer (default an hour) is the one clock that runs from the connection's start until a request's
headers are in, so it is set to this. A request being handled is never cut by it."""


def runner_options() -> dict[str, Any]:
    """How ``serve`` (and the control API, and the tests' server) run the application."""
    # handler_cancellation off (aiohttp's default, said aloud): a client that hangs up does not
    # cancel its request's handler; the operation is the terminal worker's and finishes anyway.
    return {"access_log": None, "handle_signals": False, "handler_cancellation": False,
            "keepalive_timeout": IDLE_TIMEOUT}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, field: str, message: str, **headers: str) -> web.Response:
    # Masked: both may quote what the client sent (an unknown field, a path), a card number too.
    return json_response({"status": "error", "field": mask_card_numbers(field), "error": mask_card_numbers(message)},
                         status=status, headers=headers or None)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as JSON naming the field: bad input 4xx, a full queue 503, a bug 500."""
    try:
        return await handler(request)
    except ClientGone:
        log.info("%s %s: the client hung up before its request was read", request.method,
                 mask_card_numbers(request.path))
        return _error(400, "body", "the connection closed before the body arrived")  # nobody reads it
    except FieldError as error:
        response = _error(error.http_status, error.field, str(error))
        return await answer_and_hang_up(request, response) if error.http_status == 408 else response
    except Unavailable as error:
        return _error(503, "terminal", str(error), **{"Retry-After": "5"})
    except JournalError as error:
        log.error("journal: %s", error)
        return _error(503, "journal", str(error), **{"Retry-After": "30"})
    except web.HTTPException as error:
        if error.status == 404:
            return _error(404, "path", f"no such path: {request.path} (GET /openapi.json lists them)")
        if error.status == 405:
            return _error(405, "method", f"{request.method} is not served on {request.path}",
                          Allow=error.headers.get("Allow", ""))
        if error.status == 413:
            return _error(413, "body", f"the body is larger than {MAX_BODY} bytes")
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, mask_card_numbers(request.path))
        return _error(500, "server", "internal error (the service's log has the details)")


def basic_auth(user: str, password: str) -> Any:
    """Middleware: HTTP basic auth on every path but :data:`OPEN_PATHS` (KKM Server's scheme)."""
    expected_user, expected_password = user.encode(), password.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        given_user, given_password = b"", b""
        if scheme.lower() == "basic":
            try:
                given_user, _, given_password = base64.b64decode(token.strip(), validate=True).partition(b":")
            except (binascii.Error, ValueError):
                pass
        # Both compared in constant time, and both always: no hint which one was wrong.
        user_ok = hmac.compare_digest(given_user, expected_user)
        password_ok = hmac.compare_digest(given_password, expected_password)
        if not (user_ok and password_ok):
            return _error(401, "authorization", "HTTP basic authentication required",
                          **{"WWW-Authenticate": 'Basic realm="posbridge", charset="UTF-8"'})
        return await handler(request)

    return check


async def get_openapi(request: web.Request) -> web.Response:
    """The whole API as OpenAPI 3.1, with examples."""
    return json_response(openapi_document())


def make_app(service: Service) -> web.Application:
    """The application: the native API, ``/Execute``, ``/openapi.json``; the service is started
    with the application and stopped with it."""
    middlewares: list[Any] = [json_errors]
    if service.config.auth is not None:
        middlewares.insert(0, basic_auth(*service.config.auth))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[SERVICE] = service
    app.add_routes(native.routes)
    app.add_routes(kkm.routes)
    app.router.add_get("/openapi.json", get_openapi)

    async def start(app: web.Application) -> None:
        await service.start()

    async def stop(app: web.Application) -> None:
        await service.stop()

    async def close(app: web.Application) -> None:
        await service.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)  # before aiohttp waits for the requests in flight
    app.on_cleanup.append(close)
    return app


def tls_context(tls: tuple[str, str] | None) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2 at least, the ssl module's default ciphers) for
    ``(certificate file, key file)``; None serves plain HTTP. A file that cannot be used is a
    one-line ConfigError before anything listens."""
    if tls is None:
        return None
    cert, key = tls
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    def no_passphrase() -> bytes:
        # Without a callback OpenSSL prompts for an encrypted key's passphrase on the controlling
        # terminal: a service started from a shell hung there before listening.
        raise ConfigError(f"the TLS key {key} is encrypted: posbridge does not ask for a passphrase; "
                          "give it an unencrypted key readable by posbridge only")

    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or error
        raise ConfigError(f"cannot use the TLS certificate {cert} with key {key}: {reason}") from None
    return context


class _TlsSite(web.TCPSite):
    """aiohttp's TCPSite with the TLS handshake bounded by :data:`IDLE_TIMEOUT`. The idle clock
    (aiohttp's keep-alive timer) starts only once the handshake is done, and aiohttp passes no
    handshake limit to asyncio, whose default is 60 s: a client that connected and said nothing
    held its connection four times as long as :data:`IDLE_TIMEOUT` promises. Same as
    ``TCPSite.start`` but for ``ssl_handshake_timeout``."""

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port, ssl_handshake_timeout=IDLE_TIMEOUT)
        self._bound_port = self._server.sockets[0].getsockname()[1]


async def serve(config: ServiceConfig, *, ready: Callable[[str], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run the service until ``stop`` is set (or SIGTERM / SIGINT when ``stop`` is None)."""
    context = tls_context(config.tls)  # a bad certificate stops here, before any journal is opened
    service = Service(config)
    runner = web.AppRunner(make_app(service), shutdown_timeout=10.0, **runner_options())
    await runner.setup()
    try:
        site = (_TlsSite if context is not None else web.TCPSite)(runner, config.host, config.port,
                                                                  ssl_context=context)
        try:
            await site.start()
        except OSError as error:
            raise OSError(f"cannot listen on {config.host}:{config.port}: {error.strerror or error}") from None
        host, port = runner.addresses[0][:2]
        scheme = "https" if config.tls else "http"
        where = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"
        if ready is not None:
            ready(where)
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def run_serve(args: argparse.Namespace) -> int:
    """``posbridge serve``: settings from the command line (and ``--config``); one line on stdout
    when it listens; runs until SIGTERM or Ctrl-C."""
    config = config_from_args(args)

    def ready(where: str) -> None:
        names = ", ".join(f"{t.name}={t.port}" for t in config.terminals)
        print(f"posbridge serve listening on {where} (terminals: {names}; journal: {config.journal})", flush=True)

    logging.getLogger("posbridge.http").setLevel(logging.INFO)
    asyncio.run(serve(config, ready=ready))
    print("posbridge serve stopped", file=sys.stderr, flush=True)
    return 0
