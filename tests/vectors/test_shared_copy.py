"""The repository's golden vectors against ../shared/vectors, the reference they were copied from.

The suite reads only the repository's copies (a clone alone must pass). Where ../shared is next to
the project's root, as CI has it, every file there must have a byte-identical copy here: a vector
fixed or added in ../shared and not copied fails this test instead of silently diverging.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vectors import VECTORS_DIR, vector_file

SHARED_VECTORS = VECTORS_DIR.parents[1].parent / "shared" / "vectors"


def test_the_suite_reads_vectors_from_the_repository_only() -> None:
    # The files the protocol suites load exist here, whatever is next to the repository.
    for name in ("inpas-sa.txt", "arcus2.txt"):
        assert vector_file(name).read_bytes().count(b"\t") >= 2
    with pytest.raises(FileNotFoundError, match="no golden-vector file"):
        vector_file("no-such-protocol.txt")


def shared_files() -> list[Path]:
    if not SHARED_VECTORS.is_dir():
        pytest.skip(f"{SHARED_VECTORS} is absent (a clone on its own): nothing to compare the copies with")
    files = sorted(p for p in SHARED_VECTORS.iterdir() if p.is_file())
    assert files, f"{SHARED_VECTORS} holds no vector files"
    return files


def test_every_shared_vector_file_has_a_byte_identical_copy_in_the_repository() -> None:
    for shared in shared_files():
        copy = VECTORS_DIR / shared.name
        assert copy.is_file(), f"{shared} has no copy in {VECTORS_DIR}: copy it there"
        assert copy.read_bytes() == shared.read_bytes(), \
            f"{copy} differs from {shared}: copy the reference file over it (cp {shared} {copy})"
