"""Golden frames, kept in the repository so that a clone alone runs the suite.

``inpas-sa.txt`` is a copy of ``../shared/vectors/inpas-sa.txt`` (built by an implementation
independent of posbridge; ``test_shared_copy.py`` checks the copy is byte-identical wherever
../shared is present); ``arcus2.txt`` was built by hand for posbridge's Arcus2-style link and has
no counterpart in ../shared. One vector a line: ``NAME <tab> HEX <tab> EXPECTATION (JSON)``.
"""

from __future__ import annotations

import json
from pathlib import Path

VECTORS_DIR = Path(__file__).resolve().parent


def vector_file(name: str) -> Path:
    """The repository's golden-vector file ``name`` (e.g. ``"inpas-sa.txt"``); FileNotFoundError if absent."""
    path = VECTORS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"no golden-vector file {name!r} in {VECTORS_DIR}")
    return path


def load_vectors(path: Path) -> list[tuple[str, bytes, dict[str, object]]]:
    """Parse ``NAME <tab> HEX <tab> JSON`` lines, skipping comments and blank lines."""
    vectors = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, hex_data, expectation = line.split("\t")
        vectors.append((name, bytes.fromhex(hex_data), json.loads(expectation)))
    return vectors
