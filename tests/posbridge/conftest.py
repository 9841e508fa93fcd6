"""Shared fixtures of the application's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_lock_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own terminal-lock folder (posbridge creates it): no test sees another's locks or
    transaction counters, and none touches the machine's shared folder."""
    folder = tmp_path_factory.mktemp("locks") / "locks"  # beside tmp_path, not in it: tests list their folder
    monkeypatch.setenv("POSBRIDGE_LOCK_DIR", str(folder))
    return folder
