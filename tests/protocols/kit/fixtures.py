"""The kit's fixtures: one registered protocol per parameter, its spec and its kit adapter.

``tests/protocols/kit/conftest.py`` takes them from here; a protocol registered by a test itself
(``tests/protocols/toy``) imports the kit's test modules and overrides :func:`protocol_name`.
"""

from __future__ import annotations

import pytest

from posbridge import protocols
from posbridge.protocols import ProtocolSpec
from tests.protocols.kit.adapter import KitAdapter, adapter_for

#: The registered protocols at collection time: the kit runs once for each.
REGISTERED = protocols.names()


@pytest.fixture(scope="module", params=REGISTERED)
def protocol_name(request: pytest.FixtureRequest) -> str:
    """The name of the protocol under test."""
    return str(request.param)


@pytest.fixture(scope="module")
def spec(protocol_name: str) -> ProtocolSpec:
    """The protocol under test, as the registry gives it to the application."""
    return protocols.get(protocol_name)


@pytest.fixture(scope="module")
def adapter(protocol_name: str) -> KitAdapter:
    """The protocol's codec in the kit's neutral shape."""
    return adapter_for(protocol_name)
