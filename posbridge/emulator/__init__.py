"""The virtual terminal: a transitions state machine speaking a protocol's terminal side, its bank
host (../shared/host-rules.md), the card reader, scenarios (TOML) and slips."""

from posbridge.emulator.cards import TEST_CARDS, Card, CardReader, load_cards
from posbridge.emulator.config import TerminalConfig
from posbridge.emulator.host import BankHost, HostConfig, HostDecision
from posbridge.emulator.scenario import Scenario, load_scenario
from posbridge.emulator.slips import Merchant, SlipPrinter
from posbridge.emulator.terminal import VirtualTerminal, running_terminal

__all__ = [
    "TEST_CARDS", "BankHost", "Card", "CardReader", "HostConfig", "HostDecision", "Merchant", "Scenario",
    "SlipPrinter", "TerminalConfig", "VirtualTerminal", "load_cards", "load_scenario", "running_terminal",
]
