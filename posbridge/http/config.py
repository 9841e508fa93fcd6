"""``posbridge serve`` settings: from the command line or a TOML file.

```toml
listen = "127.0.0.1:8765"          # another address only with [auth]
journal = "/var/lib/posbridge/ecr.sqlite3"
# commands = "/var/lib/posbridge/ecr.commands.sqlite3"   (default: beside the journal)
log_file = "/var/log/posbridge/serve.log"                 # (default: beside the journal)
log_max_bytes = 10485760
log_backups = 10
queue_limit = 8                    # operations waiting per terminal; one more is 503

[auth]                             # HTTP basic auth (KKM Server's too); required off 127.0.0.1
user = "kassa"
password = "secret"                # or password_file = "/etc/posbridge/password"

[tls]                              # serve HTTPS (TLS 1.2+): the password then never crosses a network in clear
cert = "/etc/posbridge/serve.crt"  # PEM: the certificate, then any intermediates
key = "/etc/posbridge/serve.key"   # PEM private key (unencrypted; keep it readable by posbridge only)

[[terminals]]
name = "kassa1"
port = "serial:///dev/ttyACM0?baudrate=115200"
protocol = "inpas"
terminal_id = "00344224"
num_device = 1                     # KKM's NumDevice (default: its place in this list, from 1)
deadline = 300                     # seconds one operation may take
lock_wait = 30
recovery_retry = 5                 # seconds before recovery tries again an outcome it left open (doubling)
[terminals.timers]                 # protocol timers, seconds
ack_timeout = 5.0
[terminals.gateway]                # INPAS gateway mode: carrying the terminal's host connection
enabled = true                     # false: refuse it (the terminal then reports no connection)
connect_timeout = 10.0             # per host address tried
receive_wait = 5.0                 # a receive finding nothing yet answers "nothing yet" after this
write_timeout = 10.0
```
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from posbridge import protocols
from posbridge.ecr import DEFAULT_DEADLINE
from posbridge.ecr.gateway import GatewaySettings
from posbridge.ecr.ownership import DEFAULT_LOCK_WAIT
from posbridge.journal import default_journal_path

__all__ = [
    "DEFAULT_PORT", "DEFAULT_QUEUE_LIMIT", "ConfigError", "ServiceConfig", "TerminalSettings",
    "add_serve_arguments", "config_from_args", "load_config",
]

DEFAULT_PORT = 8765
DEFAULT_QUEUE_LIMIT = 8
DEFAULT_RECOVERY_RETRY = 5.0
"""Seconds before recovery is tried again when it left an outcome open (doubling each time)."""
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class ConfigError(ValueError):
    """Settings ``posbridge serve`` cannot run with; the message is one line naming the setting."""


@dataclass(frozen=True)
class TerminalSettings:
    """One terminal the service owns."""

    name: str
    port: str
    protocol: str = "inpas"
    terminal_id: str | None = None
    num_device: int = 0  # KKM's NumDevice; 0: the terminal's place in the configuration, from 1
    deadline: float = DEFAULT_DEADLINE
    lock_wait: float = DEFAULT_LOCK_WAIT
    recovery_retry: float = DEFAULT_RECOVERY_RETRY
    timers: dict[str, float] = field(default_factory=dict)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)


@dataclass(frozen=True)
class ServiceConfig:
    """Everything ``posbridge serve`` needs (see the module docstring)."""

    terminals: tuple[TerminalSettings, ...]
    journal: str = field(default_factory=lambda: str(default_journal_path()))
    commands: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    auth: tuple[str, str] | None = None
    log_file: str | None = None
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 10
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    tls: tuple[str, str] | None = None
    """(certificate file, key file), PEM: serve HTTPS."""

    def __post_init__(self) -> None:
        if not self.terminals:
            raise ConfigError("no terminal configured: give --terminal NAME=URL or [[terminals]] in --config")
        if any(t.num_device == 0 for t in self.terminals):  # unnumbered: KKM's NumDevice is the place, from 1
            numbered = tuple(replace(t, num_device=t.num_device or i) for i, t in enumerate(self.terminals, 1))
            object.__setattr__(self, "terminals", numbered)
        names = [t.name for t in self.terminals]
        if len(set(names)) != len(names):
            raise ConfigError(f"terminal names must differ: {', '.join(names)}")
        devices = [t.num_device for t in self.terminals]
        if len(set(devices)) != len(devices):
            raise ConfigError("terminals' num_device numbers must differ")
        if not 1 <= self.queue_limit <= 1000:
            raise ConfigError(f"queue_limit must be 1-1000, got {self.queue_limit}")
        if not is_loopback(self.host) and self.auth is None:
            raise ConfigError(f"refusing to listen on {self.host}: anything but 127.0.0.1 needs authentication "
                              "([auth] in --config, or --auth-file)")

    def __repr__(self) -> str:  # the password never reaches a log or a traceback
        auth = "(user, ***)" if self.auth else None
        return f"ServiceConfig(listen={self.host}:{self.port}, terminals={len(self.terminals)}, auth={auth})"


def is_loopback(host: str) -> bool:
    """True for an address that only this machine reaches (127.0.0.0/8, ::1, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ``:PORT`` is 127.0.0.1."""
    host, colon, port_text = text.strip().rpartition(":")
    if not colon or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"listen must be HOST:PORT such as 127.0.0.1:{DEFAULT_PORT}, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def _terminal(data: dict[str, Any], index: int) -> TerminalSettings:
    where = f"terminals[{index}]"
    unknown = sorted(set(data) - {"name", "port", "protocol", "terminal_id", "num_device", "deadline",
                                  "lock_wait", "recovery_retry", "timers", "gateway"})
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(unknown)}")
    name, port = data.get("name"), data.get("port")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}.name must be 1-32 letters, digits, '.', '_' or '-', got {name!r}")
    if not isinstance(port, str) or "://" not in port:
        raise ConfigError(f"{where}.port must be a device URL such as serial:///dev/ttyACM0, got {port!r}")
    protocol = data.get("protocol", "inpas")
    if protocol not in protocols.names():
        raise ConfigError(f"{where}.protocol must be one of {', '.join(protocols.names())}, got {protocol!r}")
    terminal_id = data.get("terminal_id")
    if terminal_id is not None and not (isinstance(terminal_id, (str, int)) and str(terminal_id).isalnum()):
        raise ConfigError(f"{where}.terminal_id must be letters and digits, got {terminal_id!r}")
    num_device = data.get("num_device", index + 1)
    if isinstance(num_device, bool) or not isinstance(num_device, int) or not 1 <= num_device <= 999:
        raise ConfigError(f"{where}.num_device must be 1-999, got {num_device!r}")
    seconds = {}
    for key, default in (("deadline", DEFAULT_DEADLINE), ("lock_wait", DEFAULT_LOCK_WAIT),
                         ("recovery_retry", DEFAULT_RECOVERY_RETRY)):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86_400:
            raise ConfigError(f"{where}.{key} must be seconds above 0, at most 86400, got {value!r}")
        seconds[key] = float(value)
    timers = data.get("timers", {})
    if not isinstance(timers, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in timers.values()):
        raise ConfigError(f"{where}.timers must be a table of seconds")
    return TerminalSettings(name=name, port=port, protocol=protocol,
                            terminal_id=None if terminal_id is None else str(terminal_id), num_device=num_device,
                            timers={str(k): float(v) for k, v in timers.items()},
                            gateway=_gateway(data.get("gateway", {}), f"{where}.gateway"), **seconds)


def _gateway(data: Any, where: str) -> GatewaySettings:
    """``[terminals.gateway]``: how the service carries an INPAS terminal's host connection."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table (enabled, connect_timeout, receive_wait, write_timeout)")
    unknown = sorted(set(data) - {"enabled", "connect_timeout", "receive_wait", "write_timeout"})
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(unknown)}")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled must be true or false, got {enabled!r}")
    seconds = {key: data[key] for key in ("connect_timeout", "receive_wait", "write_timeout") if key in data}
    for key, value in seconds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}.{key} must be seconds, got {value!r}")
    try:
        return GatewaySettings(enabled=enabled, **{k: float(v) for k, v in seconds.items()})
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def _auth(data: Any, where: str) -> tuple[str, str]:
    if not isinstance(data, dict) or set(data) - {"user", "password", "password_file"}:
        raise ConfigError(f"{where} takes user and password (or password_file)")
    user, password = data.get("user"), data.get("password")
    if "password_file" in data:
        password = _read_secret(str(data["password_file"]), f"{where}.password_file")
    if not isinstance(user, str) or not user or ":" in user:
        raise ConfigError(f"{where}.user must be a name without ':'")
    if not isinstance(password, str) or not password:
        raise ConfigError(f"{where} needs a password (or password_file)")
    return user, password


def _read_secret(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror or error}") from None


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> ServiceConfig:
    """Read a TOML settings file (the module docstring lists the keys); ``overrides`` win."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read settings {path}: {error}") from None
    return config_from_dict(data, overrides)


def config_from_dict(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> ServiceConfig:
    """Settings from parsed TOML; unknown keys are errors, not silently ignored."""
    data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = sorted(set(data) - {"listen", "journal", "commands", "log_file", "log_max_bytes", "log_backups",
                                  "queue_limit", "auth", "terminals", "tls"})
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    terminals = data.get("terminals", [])
    if not isinstance(terminals, list):
        raise ConfigError("terminals must be an array of tables ([[terminals]])")
    host, port = parse_listen(str(data.get("listen", f"127.0.0.1:{DEFAULT_PORT}")))
    options: dict[str, Any] = {}
    for key in ("log_max_bytes", "log_backups", "queue_limit"):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
            options[key] = value
    return ServiceConfig(
        terminals=tuple(t if isinstance(t, TerminalSettings) else _terminal(t, i) for i, t in enumerate(terminals)),
        journal=str(data.get("journal") or default_journal_path()), commands=data.get("commands"), host=host, port=port,
        auth=data["auth"] if isinstance(data.get("auth"), tuple) else
        _auth(data["auth"], "auth") if "auth" in data else None,
        log_file=data.get("log_file"), tls=_tls(data["tls"]) if data.get("tls") is not None else None, **options)


def _tls(data: Any) -> tuple[str, str]:
    """[tls] cert and key (or the command line's pair): both files, PEM."""
    if isinstance(data, tuple):
        return data
    if not isinstance(data, dict) or set(data) != {"cert", "key"} or \
            not all(isinstance(v, str) and v for v in data.values()):
        raise ConfigError("[tls] needs cert and key, the PEM files of the certificate and its private key")
    return data["cert"], data["key"]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``posbridge serve``."""
    parser.add_argument("--config", metavar="FILE", help="settings TOML (terminals, listen, journal, auth, logs); "
                        "the options below override it")
    parser.add_argument("--listen", metavar="HOST:PORT", help=f"address to serve (default 127.0.0.1:{DEFAULT_PORT}; "
                        "another host than 127.0.0.1 needs --auth-file)")
    parser.add_argument("--terminal", action="append", metavar="NAME=URL", default=[],
                        help="a terminal to own, e.g. kassa1=serial:///dev/ttyACM0 (repeatable)")
    parser.add_argument("--protocol", choices=protocols.names(), default=None,
                        help="wire protocol of the --terminal terminals (default inpas)")
    parser.add_argument("--terminal-id", help="terminal id to send to the --terminal terminals")
    parser.add_argument("--journal", help="ECR journal file (SQLite); command ids are kept beside it")
    parser.add_argument("--log-file", help="one line per command, rotated (default: serve.log beside the journal)")
    parser.add_argument("--auth-file", metavar="FILE", help="a file holding USER:PASSWORD for HTTP basic auth")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate (with --tls-key)")
    parser.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    parser.add_argument("--queue-limit", type=int, default=None,
                        help=f"operations waiting per terminal; one more gets 503 (default {DEFAULT_QUEUE_LIMIT})")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds one operation may take (default {DEFAULT_DEADLINE:g})")


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """Settings from ``posbridge serve``'s options (and its ``--config`` file)."""
    terminals: list[dict[str, Any]] = []
    for index, text in enumerate(args.terminal):
        name, equals, url = text.partition("=")
        if not equals:
            raise ConfigError(f"--terminal must be NAME=URL, got {text!r}")
        item: dict[str, Any] = {"name": name, "port": url, "protocol": args.protocol or "inpas"}
        if args.terminal_id:
            item["terminal_id"] = args.terminal_id
        if args.timeout is not None:
            item["deadline"] = args.timeout
        terminals.append(item)
    overrides: dict[str, Any] = {"listen": args.listen, "journal": args.journal, "log_file": args.log_file,
                                 "queue_limit": args.queue_limit}
    if args.auth_file:
        user, colon, password = _read_secret(args.auth_file, "--auth-file").partition(":")
        if not colon or not user or not password:
            raise ConfigError(f"--auth-file {args.auth_file} must hold USER:PASSWORD")
        overrides["auth"] = (user, password)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        overrides["tls"] = (args.tls_cert, args.tls_key)
    if args.config:
        base: dict[str, Any] = {}
        try:
            base = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"cannot read settings {args.config}: {error}") from None
        if terminals:
            overrides["terminals"] = list(base.get("terminals", [])) + terminals
        return config_from_dict(base, overrides)
    if not terminals:
        raise ConfigError("no terminal configured: give --terminal NAME=URL or --config FILE")
    overrides["terminals"] = terminals
    return config_from_dict({}, overrides)
