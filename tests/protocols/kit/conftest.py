"""Every test of the kit runs once per registered protocol (``posbridge.protocols.names()``)."""

from tests.protocols.kit.fixtures import adapter, protocol_name, spec

__all__ = ["adapter", "protocol_name", "spec"]
