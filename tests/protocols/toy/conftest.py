"""The toy protocol is registered from the tests, the way any distribution registers a protocol:
an entry point in the group ``posbridge.protocols``, here in a dist-info folder put on ``sys.path``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator

import pytest

TOY_ENTRY_POINT = "toy = tests.protocols.toy.toyline.spec:SPEC"


@pytest.fixture(scope="module")
def toy_registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Register the toy protocol for the tests of one module that ask for it; yields its name.

    Writes ``posbridge_toy-0.1.dist-info`` (METADATA, entry_points.txt) into a temporary folder and
    puts that folder on ``sys.path``, where ``importlib.metadata`` finds installed distributions;
    takes it off again after the module, so no other test sees a third protocol.
    """
    site = tmp_path_factory.mktemp("toy-site")
    info = site / "posbridge_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: posbridge-toy\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[posbridge.protocols]\n{TOY_ENTRY_POINT}\n", encoding="utf-8")
    sys.path.append(str(site))
    importlib.invalidate_caches()
    try:
        yield "toy"
    finally:
        sys.path.remove(str(site))
        importlib.invalidate_caches()
