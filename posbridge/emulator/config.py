"""How the virtual terminal behaves: the settings a scenario file fills in.

Its own module so that scenarios (which build it) and the terminal (which reads it) do not import
each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from posbridge.emulator.slips import Merchant


@dataclass
class TerminalConfig:
    """How the virtual terminal behaves (a scenario file fills this in)."""

    merchant: Merchant = field(default_factory=Merchant)
    copies: int = 2  # slips printed: the card holder's, then the cashier's
    slip_width: int = 32
    part_size: int = 1024  # bodies larger than this go out as multi-part SOH frames
    progress_interval: float = 5.0  # seconds between WAIT packets while busy
    card_delay: float = 0.0  # the card holder takes this long to present the card
    pin_delay: float = 0.0
    ask_last_digits: bool = False  # cashier dialog: "enter the last 4 digits of the card"
    dialog_timeout: float = 60.0
    timers: dict[str, object] = field(default_factory=dict)  # protocol options (ProtocolSpec.options), seconds
    # A connection with no request for this long is hung up on when another ECR waits (listening
    # devices only; 0 = never). The reasoning behind 2 s: posbridge.emulator.terminal's docstring.
    idle_timeout: float = 2.0
    report_max_lines: int = 300  # operations listed on a full report (the latest; the rest counted)
    # Gateway mode: reach the bank host ("posbridge host" at HOST:PORT) through the ECR, every host
    # message carried by operation-63 packets (posbridge.emulator.remote_host); None: in-process.
    host_via_ecr: str | None = None
    host_key: bytes | None = None  # the key sealing card numbers for that host (None: the built-in test key)
    host_timeout: float = 60.0  # gateway mode: the whole host answer within this, else the outcome is unknown
    delivery_timeout: float = 600.0  # safety net: a result's delivery outcome never takes longer
