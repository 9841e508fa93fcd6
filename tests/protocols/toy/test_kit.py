"""The toy protocol passes the whole protocol kit: every test of tests/protocols/kit, run with the
toy registered through its entry point and found by name like any protocol."""

from __future__ import annotations

import pytest

from posbridge import protocols
from tests.protocols.kit.fixtures import adapter, spec
from tests.protocols.kit.test_codec import *  # noqa: F403 - the kit's tests, collected here for the toy
from tests.protocols.kit.test_faults import *  # noqa: F403
from tests.protocols.kit.test_sessions import *  # noqa: F403
from tests.protocols.kit.test_streams import *  # noqa: F403

__all__ = ["adapter", "spec"]


@pytest.fixture(scope="module")
def protocol_name(toy_registered: str) -> str:
    """The toy, registered for these tests (tests/protocols/toy/conftest.py)."""
    assert toy_registered in protocols.names()
    return toy_registered
