"""Replay a capture against a terminal (``posbridge replay``), and a capture from the field as a
regression test: replay it against a fresh virtual terminal.

    from posbridge.testing.capture import posbridge_replay

    def test_the_shop_that_called_on_monday():
        posbridge_replay("tests/captures/monday.jsonl")

The capture's requests are re-issued to a new :class:`~posbridge.emulator.terminal.VirtualTerminal`
of the capture's protocol (keyword arguments go to it: ``seed``, ``config``, ``cards``…), and the
test fails, listing every difference, unless each answer matches the recorded one field by field
(:data:`posbridge.capture.VOLATILE_FIELDS` left out). Works from sync and async tests alike: the
replay runs in a loop of its own, in a thread of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import replace
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from posbridge import protocols
from posbridge.capture import (VOLATILE_FIELDS, Capture, CaptureError, CaptureWriter, Difference, compare_answers,
                               frames, mask_decoded, read_capture, recorded_exchanges)
from posbridge.ecr.client import EcrClient
from posbridge.journal import Journal
from posbridge.protocols.common.parts import DescribedStream
from posbridge.protocols.common.session import CashierPrompt
from posbridge.testing.harness import TerminalLink

__all__ = ["posbridge_replay", "replay", "replay_against_virtual_terminal"]


class _AnswerCollector:
    """A client trace gathering the terminal's frames (rx on the ECR side), decoded whole, as the
    capture writer decodes them (a split message's final part with the whole message's fields)."""

    def __init__(self, spec: protocols.ProtocolSpec) -> None:
        self.spec = spec
        self.frames: list[dict[str, Any]] = []
        self._stream = DescribedStream(spec.describe)

    def __call__(self, direction: str, data: bytes) -> None:
        if direction != "rx":
            return
        entries = [piece.entry for piece in self._stream.feed(data)]
        self.frames.extend(frames(mask_decoded(entry.to_dict()) for entry in entries))  # as recorded

    def take(self) -> list[dict[str, Any]]:
        frames, self.frames = self.frames, []
        return frames


def _recorded_value(answers: list[dict[str, Any]], name: str) -> str | None:
    """The last value the recorded answers gave field ``name`` (the final result's RRN…)."""
    found = None
    for frame in answers:
        for item in frame.get("fields", []) or []:
            if item.get("name") == name and isinstance(item.get("value"), str) and item["value"]:
                found = item["value"]
    return found


async def replay(capture: Capture, port: Any = None, *, protocol: str | None = None,
                 ignore: frozenset[str] = VOLATILE_FIELDS, record: str | Path | None = None,
                 client: EcrClient | None = None, client_options: Mapping[str, Any] | None = None) -> list[Difference]:
    """Re-issue the capture's requests to the terminal at ``port`` (a URL or a Device) through an
    :class:`EcrClient` (or through ``client``, an open one of the capture's protocol, whose trace is
    borrowed meanwhile) and return where its answers differ from the recorded ones (empty: identical).
    A later request naming a recorded RRN or auth code (a refund of a recorded sale) gets the one
    this terminal issued for the replayed original; the terminal's cashier dialog gets the recorded
    cashier's answers, in order. ``record`` writes the replay's own capture."""
    name = protocol or capture.protocol
    try:
        spec = protocols.get(name)
    except ValueError as error:
        raise CaptureError(str(error)) from None
    exchanges = recorded_exchanges(capture, name)
    if not exchanges:
        raise CaptureError(f"{capture.path}: no request from the ECR in this capture")
    collector = _AnswerCollector(spec)
    writer = CaptureWriter(record, spec, side="ecr", link={"port": str(port), "replay_of": capture.path}) \
        if record is not None else None

    def trace(direction: str, data: bytes) -> None:
        collector(direction, data)
        if writer is not None:
            writer(direction, data)

    options = dict(client_options or {})
    options.setdefault("journal", Journal())
    differences: list[Difference] = []

    # A refund or cancel names its original by the RRN (and auth code) the host issued when the
    # capture was made; this terminal issued its own for the replayed original: follow the mapping.
    issued: dict[tuple[str, str], str] = {}

    async def run(ecr: EcrClient) -> None:
        for exchange in exchanges:
            request = exchange.request
            request = replace(request, rrn=issued.get(("rrn", request.rrn or ""), request.rrn),
                              auth_code=issued.get(("auth_code", request.auth_code or ""), request.auth_code))
            answers = list(exchange.prompt_answers)  # the cashier's recorded replies, in order

            def cashier(prompt: CashierPrompt, answers: list[tuple[str, bool]] = answers) -> tuple[str, bool]:
                return answers.pop(0) if answers else ("", False)  # a dialog the recording did not have

            ecr.on_prompt = cashier
            result = await ecr.execute(request)
            for name, now in (("rrn", result.rrn), ("auth_code", result.auth_code)):
                then = _recorded_value(exchange.answers, name)
                if then and now:
                    issued[(name, then)] = now
            nonlocal differences
            differences += compare_answers(exchange.line, exchange.answers, collector.take(), ignore)

    try:
        if client is not None:
            saved, saved_prompt, client.trace = client.trace, client.on_prompt, trace
            try:
                await run(client)
            finally:
                client.trace, client.on_prompt = saved, saved_prompt
        else:
            async with EcrClient(port, spec, trace=trace, **options) as own:
                await run(own)
    finally:
        if writer is not None:
            writer.close()
    return differences





async def replay_against_virtual_terminal(path: str | Path, *, protocol: str | None = None,
                                          ignore: frozenset[str] = VOLATILE_FIELDS,
                                          **terminal_options: Any) -> list[Difference]:
    """The differences between the capture at ``path`` and a fresh virtual terminal's answers."""
    capture = read_capture(path)
    async with TerminalLink(protocol or capture.protocol, **terminal_options) as link:
        return await replay(capture, protocol=protocol, ignore=ignore, client=link.client)


def posbridge_replay(path: str | Path, *, protocol: str | None = None, ignore: frozenset[str] = VOLATILE_FIELDS,
                     **terminal_options: Any) -> None:
    """Assert that the capture at ``path`` replays against a fresh virtual terminal with identical
    answers; an AssertionError lists every difference."""
    def run() -> list[Difference]:
        return asyncio.run(replay_against_virtual_terminal(path, protocol=protocol, ignore=ignore,
                                                           **terminal_options))

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        differences = pool.submit(run).result()
    if differences:
        raise AssertionError(f"{path}: {len(differences)} answer difference(s):\n"
                             + "\n".join(f"  {difference}" for difference in differences))
