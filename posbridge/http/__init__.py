"""The local HTTP service, ``posbridge serve``: a terminal for cash registers that are not Python.

- :mod:`posbridge.http.service` — terminals, their queues, the command store, recovery;
- :mod:`posbridge.http.native` — the ``/v1`` API in 1C's vocabulary;
- :mod:`posbridge.http.kkm` — KKM Server's ``POST /Execute``;
- :mod:`posbridge.http.openapi` — ``GET /openapi.json``;
- :mod:`posbridge.http.logs` — one line per command, rotating files;
- :mod:`posbridge.http.config` — settings (command line, TOML);
- :mod:`posbridge.http.app` — the aiohttp application and ``posbridge serve``.

``docs/http-service.md`` describes the API and its choices. Importing this package does not import
aiohttp; :mod:`posbridge.http.app` does.
"""

from posbridge.http.config import ConfigError, ServiceConfig, TerminalSettings

__all__ = ["ConfigError", "ServiceConfig", "TerminalSettings"]
