"""Test support shared by the protocol suites: two sans-IO sessions joined back to back."""

from __future__ import annotations


class Wire:
    """Two sessions joined back to back; delivers bytes in chunks of ``chunk`` (0 = whole)."""

    def __init__(self, ecr, terminal, chunk: int = 0) -> None:
        self.ecr, self.terminal, self.chunk = ecr, terminal, chunk
        self.ecr_events: list = []
        self.terminal_events: list = []
        self.now = 0.0

    def _deliver(self, data: bytes, to, sink: list) -> None:
        step = self.chunk or max(len(data), 1)
        for i in range(0, len(data), step):
            sink += to.receive(data[i : i + step], self.now)

    def run(self) -> None:
        for _ in range(10_000):
            a = self.ecr.data_to_send()
            b = self.terminal.data_to_send()
            if not a and not b:
                return
            self._deliver(a, self.terminal, self.terminal_events)
            self._deliver(b, self.ecr, self.ecr_events)
        raise AssertionError("the sessions never went quiet")
