"""Testing with posbridge: the in-process harness (a virtual terminal and an ECR client over any
transport) and the pytest plugin built on it."""

from posbridge.testing.harness import TRANSPORTS, TerminalLink

__all__ = ["TRANSPORTS", "TerminalLink"]
