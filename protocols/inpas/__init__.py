"""INPAS SmartSale "SA" protocol (Verifone and PAX terminals): see ../shared/protocols/inpas-sa.md.

Modules: ``frame`` (construct codec, scanner), ``fields`` (tag table, messages), ``multipart``,
``link`` (ACK/NAK, timers), ``mapping`` (domain model), ``session`` (both sides), ``spec``.
"""
