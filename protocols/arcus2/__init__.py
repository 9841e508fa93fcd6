"""Arcus2-style link (version 2; version 1 kept as legacy): posbridge's open wire framing carrying
the public Arcus 2 contract.

See ``docs/protocols/arcus2.md``. A real Arcus 2 terminal does not speak this wire.
"""
