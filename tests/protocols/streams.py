"""Test support shared by the protocol suites: golden-vector files and scanner token streams."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from posbridge.protocols.common.link import Control, Noise


def load_vectors(path: Path) -> list[tuple[str, bytes, dict]]:
    """Parse ``NAME <tab> HEX <tab> JSON`` lines, skipping comments and blank lines."""
    vectors = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, hex_data, expectation = line.split("\t")
        vectors.append((name, bytes.fromhex(hex_data), json.loads(expectation)))
    return vectors


def normalize_tokens(tokens: Iterable, frame_tuple: Callable[[object], tuple]) -> list[tuple]:
    """Scanner tokens as comparable tuples, adjacent noise merged (noise may be split across feeds).

    ``frame_tuple`` turns the protocol's own ``FrameToken`` into a tuple; anything else that is not
    noise or a control byte is a bad frame, compared by its error's reason and offset.
    """
    out: list[tuple] = []
    for token in tokens:
        if isinstance(token, Noise):
            if out and out[-1][0] == "noise":
                out[-1] = ("noise", out[-1][1] + token.data)
            else:
                out.append(("noise", token.data))
        elif isinstance(token, Control):
            out.append(("control", token.byte))
        elif hasattr(token, "error"):
            out.append(("bad", token.error.reason, token.error.offset))
        else:
            out.append(frame_tuple(token))
    return out


def expected_tokens(items: Iterable[tuple[bytes, tuple]]) -> list[tuple]:
    """The tokens a stream built from ``(bytes, token)`` items must give; a bad frame's token
    carries the offset of its check within the frame, made a stream offset here."""
    out: list[tuple] = []
    offset = 0
    for data, token in items:
        if token[0] == "bad":
            token = ("bad", "crc", offset + token[1])
        if token[0] == "noise" and out and out[-1][0] == "noise":
            out[-1] = ("noise", out[-1][1] + token[1])
        else:
            out.append(token)
        offset += len(data)
    return out


def feed_all(scanner, chunks: Iterable[bytes], frame_tuple: Callable[[object], tuple]) -> list[tuple]:
    """Feed ``chunks`` to ``scanner``; nothing may be left half read."""
    tokens = [t for chunk in chunks for t in scanner.feed(chunk)]
    assert scanner.pending == 0
    return normalize_tokens(tokens, frame_tuple)
