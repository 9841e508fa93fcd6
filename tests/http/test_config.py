"""``posbridge serve`` settings: the command line, the TOML file, and one-line errors naming the setting."""

from __future__ import annotations

import re

import pytest

from posbridge.ecr.gateway import GatewaySettings

from posbridge.cli.main import build_parser
from posbridge.http import config as config_module
from posbridge.http.config import ConfigError, config_from_args, load_config, parse_listen
from posbridge.http.store import commands_path_for


def _args(*argv: str):
    return build_parser().parse_args(["serve", *argv])


def test_the_documented_example_file_is_valid(tmp_path):
    example = re.search(r"```toml\n(.*?)```", config_module.__doc__ or "", re.S)
    assert example
    path = tmp_path / "serve.toml"
    path.write_text(example.group(1), encoding="utf-8")
    config = load_config(path)
    assert (config.host, config.port) == ("127.0.0.1", 8765)
    terminal = config.terminals[0]
    assert (terminal.name, terminal.protocol, terminal.terminal_id, terminal.num_device) == ("kassa1", "inpas",
                                                                                             "00344224", 1)
    assert terminal.timers == {"ack_timeout": 5.0} and terminal.recovery_retry == 5
    assert terminal.gateway == GatewaySettings(enabled=True, connect_timeout=10.0, receive_wait=5.0, write_timeout=10.0)
    assert config.auth == ("kassa", "secret") and "secret" not in repr(config)
    assert config.tls == ("/etc/posbridge/serve.crt", "/etc/posbridge/serve.key")


def test_command_line_terminals_and_defaults(tmp_path):
    config = config_from_args(_args("--terminal", "a=serial:///dev/ttyACM0", "--terminal", "b=tcp://10.0.0.5:5000",
                                    "--protocol", "arcus2", "--journal", str(tmp_path / "j.sqlite3"),
                                    "--timeout", "120"))
    assert [(t.name, t.protocol, t.num_device, t.deadline) for t in config.terminals] == [
        ("a", "arcus2", 1, 120.0), ("b", "arcus2", 2, 120.0)]
    assert (config.host, config.port, config.auth) == ("127.0.0.1", 8765, None)
    assert commands_path_for(config.journal) == str(tmp_path / "j.commands.sqlite3")


def test_auth_file_allows_another_address(tmp_path):
    secret = tmp_path / "auth"
    secret.write_text("kassa:pa:ss\n", encoding="utf-8")
    config = config_from_args(_args("--terminal", "a=serial:///dev/x", "--listen", "0.0.0.0:9000",
                                    "--auth-file", str(secret)))
    assert (config.host, config.port, config.auth) == ("0.0.0.0", 9000, ("kassa", "pa:ss"))


def test_config_file_and_command_line_together(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text('listen = "127.0.0.1:7000"\nqueue_limit = 3\n[[terminals]]\nname = "k1"\n'
                    'port = "serial:///dev/ttyACM0"\n', encoding="utf-8")
    config = config_from_args(_args("--config", str(path), "--terminal", "k2=serial:///dev/ttyACM1",
                                    "--listen", "127.0.0.1:7001"))
    assert [t.name for t in config.terminals] == ["k1", "k2"] and config.port == 7001 and config.queue_limit == 3


@pytest.mark.parametrize("argv, message", [
    ((), "no terminal configured"),
    (("--terminal", "kassa1"), "--terminal must be NAME=URL"),
    (("--terminal", "bad name=serial:///x"), "terminals[0].name"),
    (("--terminal", "k=/dev/ttyACM0"), "terminals[0].port must be a device URL"),
    (("--terminal", "k=serial:///a", "--terminal", "k=serial:///b"), "terminal names must differ"),
    (("--terminal", "k=serial:///a", "--listen", "localhost"), "listen must be HOST:PORT"),
    (("--terminal", "k=serial:///a", "--listen", "192.168.1.5:8765"), "refusing to listen on 192.168.1.5"),
    (("--terminal", "k=serial:///a", "--queue-limit", "0"), "queue_limit must be a positive integer"),
    (("--terminal", "k=serial:///a", "--auth-file", "/nonexistent/auth"), "cannot read --auth-file"),
    (("--terminal", "k=serial:///a", "--tls-cert", "/etc/c.pem"), "--tls-cert and --tls-key go together"),
])
def test_bad_settings_are_one_line_naming_the_setting(argv, message):
    with pytest.raises(ConfigError) as caught:
        config_from_args(_args(*argv))
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ('listne = "127.0.0.1:1"\n', "unknown setting(s): listne"),
    ('[[terminals]]\nname = "k"\nport = "serial:///x"\nbaud = 9600\n', "unknown setting(s) in terminals[0]: baud"),
    ('[[terminals]]\nname = "k"\nport = "serial:///x"\nprotocol = "zvt"\n', "terminals[0].protocol must be one of"),
    ('[[terminals]]\nname = "k"\nport = "serial:///x"\ndeadline = 0\n', "terminals[0].deadline must be seconds"),
    ('[auth]\nuser = "a"\n[[terminals]]\nname = "k"\nport = "serial:///x"\n', "auth needs a password"),
    ("listen = \n", "cannot read settings"),
    ('[[terminals]]\nname = "k"\nport = "serial:///x"\n[terminals.gateway]\nenabled = "no"\n',
     "terminals[0].gateway.enabled must be true or false"),
    ('[[terminals]]\nname = "k"\nport = "serial:///x"\n[terminals.gateway]\nreceive_wait = 0\n',
     "terminals[0].gateway: gateway receive_wait must be 0 < seconds <= 600"),
    ('[[terminals]]\nname = "k"\nport = "serial:///x"\n[terminals.gateway]\nport = 1\n',
     "unknown setting(s) in terminals[0].gateway: port"),
    ('[tls]\ncert = "/etc/c.pem"\n[[terminals]]\nname = "k"\nport = "serial:///x"\n', "[tls] needs cert and key"),
])
def test_bad_files_name_the_setting(tmp_path, text, message):
    path = tmp_path / "serve.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


def test_listen_spellings():
    assert parse_listen(":8000") == ("127.0.0.1", 8000)
    assert parse_listen("[::1]:8000") == ("::1", 8000)
