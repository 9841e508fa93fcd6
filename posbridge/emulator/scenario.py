"""Scenarios: TOML files that set up the virtual terminal (cards, outcomes, delays, faults).

```toml
seed = 7                         # RRNs and authorization codes
faults = "rx:corrupt@40,seed=3"  # line faults (devices/faults.py grammar; rx = what the terminal receives);
                                 # emulate --fault overrides it
[terminal]
terminal_id = "00344224"
merchant_name = "ТЕСТ БАНК"
copies = 2                       # slips: card holder's, then cashier's
part_size = 1024                 # bigger answers go out in parts
progress_interval = 5.0          # seconds between WAIT packets
card_delay = 0.0                 # the card holder is this slow
ask_last_digits = false          # cashier dialog for the card's last 4 digits
idle_timeout = 2.0               # tcp-listen: hang up on a line with no request this long when
                                 # another ECR waits (0 = never)
report_max_lines = 300           # operations listed on a full report (the latest; the rest counted)
host_via_ecr = ""                # gateway mode: reach `posbridge host` at HOST:PORT through the ECR
[terminal.timers]                # protocol timers, seconds
ack_timeout = 5.0
packet_timeout = 45.0
[host]
latency = 0.0                    # a slow host: the terminal sends WAIT meanwhile
fault = ""                       # "no_connection" | "answer_lost" | "request_not_sent"
hold_ttl_hours = 168
single_max = 0                   # minor units, 0 = no limit
daily_max = 0
[[cards]]                        # read by the next operations, in order; then 4111 1111 1111 1111
pan = "5432543254325430"         # or name = "insufficient_funds" (posbridge.emulator.rules.TEST_CARD_NAMES)
expiry = "3012"
[[rules]]                        # outcome rules, the first that matches decides (posbridge.emulator.rules)
amount_ends = "05"
outcome = "declined"
code = "05"
```
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from posbridge.devices.faults import FaultPlan, FaultSpecError
from posbridge.emulator.cards import Card
from posbridge.emulator.host import HostConfig, Limits
from posbridge.emulator.rules import Rule, RuleError, card_from_name, rule_from_dict
from posbridge.emulator.slips import Merchant
from posbridge.emulator.config import TerminalConfig

FAULTS = ("no_connection", "answer_lost", "request_not_sent")


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the key."""


@dataclass
class Scenario:
    """What a scenario file says, ready for :class:`~posbridge.emulator.terminal.VirtualTerminal`."""

    terminal: TerminalConfig = field(default_factory=TerminalConfig)
    host: HostConfig = field(default_factory=HostConfig)
    cards: list[Card] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    faults: str | None = None  # byte-level line faults, the devices/faults.py grammar


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario TOML file (see the module docstring for the keys)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ScenarioError(f"cannot read scenario {path}: {error}") from error
    return scenario_from_dict(data)


def scenario_from_dict(data: dict[str, Any]) -> Scenario:
    """Build a scenario from parsed TOML; unknown keys are errors, not silently ignored."""
    _check_keys("", data, {"seed", "faults", "terminal", "host", "cards", "rules", "protocol"})
    term = dict(data.get("terminal", {}))
    host = dict(data.get("host", {}))
    _check_keys("terminal.", term, {"terminal_id", "merchant_id", "merchant_name", "address", "copies",
                                    "slip_width", "part_size", "progress_interval", "card_delay", "pin_delay",
                                    "ask_last_digits", "dialog_timeout", "timers", "idle_timeout",
                                    "report_max_lines", "host_via_ecr"})
    _check_keys("host.", host, {"latency", "fault", "hold_ttl_hours", "single_max", "daily_max"})
    merchant = Merchant(
        name=term.get("merchant_name", Merchant.name), address=term.get("address", Merchant.address),
        terminal_id=str(term.get("terminal_id", Merchant.terminal_id)),
        merchant_id=str(term.get("merchant_id", Merchant.merchant_id)))
    terminal = TerminalConfig(
        merchant=merchant,
        **{k: term[k] for k in ("copies", "slip_width", "part_size", "progress_interval", "card_delay",
                                "pin_delay", "ask_last_digits", "dialog_timeout", "idle_timeout",
                                "report_max_lines") if k in term},
        timers=dict(term.get("timers", {})),  # checked by the protocol's options (ProtocolSpec.options)
        host_via_ecr=_host_address(term.get("host_via_ecr")))
    fault = host.get("fault") or None
    if fault is not None and fault not in FAULTS:
        raise ScenarioError(f"host.fault must be one of {', '.join(FAULTS)}, not {fault!r}")
    limits = Limits(single_max=host.get("single_max") or None, daily_max=host.get("daily_max") or None)
    host_config = HostConfig(
        terminal_id=merchant.terminal_id, merchant_id=merchant.merchant_id,
        seed=int(data.get("seed", 0)), fault=fault, latency=float(host.get("latency", 0.0)),
        hold_ttl=timedelta(hours=float(host.get("hold_ttl_hours", 168))), terminal_limits=limits)
    cards = []
    for i, card in enumerate(data.get("cards", [])):
        _check_keys(f"cards[{i}].", card, {"pan", "name", "expiry", "holder"})
        if ("pan" in card) == ("name" in card):
            raise ScenarioError(f"cards[{i}] needs a pan or a name (a test card's), not both")
        try:
            pan = card_from_name(str(card["pan"]) if "pan" in card else card["name"], f"cards[{i}].name")
        except RuleError as error:
            raise ScenarioError(str(error)) from None
        cards.append(Card(pan, str(card.get("expiry", "3012")), str(card.get("holder", ""))))
    rules = []
    if not isinstance(data.get("rules", []), list):
        raise ScenarioError("rules must be an array of tables ([[rules]])")
    for i, rule in enumerate(data.get("rules", [])):
        try:
            rules.append(rule_from_dict(rule, f"rules[{i}]."))
        except RuleError as error:
            raise ScenarioError(str(error)) from None
    faults = data.get("faults") or None
    if faults is not None:
        try:
            FaultPlan.parse(str(faults))
        except FaultSpecError as error:
            raise ScenarioError(f"faults: {error}") from None
    return Scenario(terminal, host_config, cards, rules, faults)


def _host_address(value: Any) -> str | None:
    """``terminal.host_via_ecr``: the ``posbridge host`` the terminal reaches through the ECR."""
    if value in (None, ""):
        return None
    host, sep, port = str(value).rpartition(":")
    if not isinstance(value, str) or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ScenarioError(f"terminal.host_via_ecr must be HOST:PORT, e.g. 127.0.0.1:7100, not {value!r}")
    return value


def _check_keys(prefix: str, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ScenarioError(f"unknown scenario key(s): {', '.join(prefix + k for k in unknown)}")
