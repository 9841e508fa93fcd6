"""Toyline, a third protocol that lives in the tests: one package, registered by one entry point.

It proves that a protocol is a folder plus an entry point in the group ``posbridge.protocols``,
with nothing above ``posbridge.protocols`` changing: the kit, the ECR client and the virtual
terminal take it as they take INPAS and Arcus2. It imports only ``posbridge.protocols.common`` and
``construct``, as a protocol shipped by another distribution would. Wire format: ``frame.py``.
"""
