"""One protocol test kit: the suite every registered protocol must pass (pymodbus's parametrized
framer suite is the model).

Every test here runs once per name in ``posbridge.protocols.names()``:

- ``test_codec``: the fast codec equals the construct declarations (frames and message bodies, both
  ways, on valid and near-valid bytes), round trips, only DecodeError on untrusted bytes;
- ``test_streams``: the scanner gives the same tokens fed whole, in halves, byte by byte or in
  random pieces; its memory stays bounded by one frame;
- ``test_sessions``: ECR and terminal sessions carry every operation both ways on the null modem,
  in any chunking; garbage never raises; silent peers end in typed failures; capabilities either
  work or are refused with NotSupported;
- ``test_faults``: the every-byte fault sweep of a sale, both directions, drop and corrupt, on a
  virtual clock (``modem.py``), with the invariants of ``modem.check_invariants``.

A protocol supplies its codec's neutral shape in ``tests/protocols/<name>/kit.py``
(``adapter.py`` says what). Facts of one protocol (golden vectors, field tables, multipart, quirks)
stay in that protocol's own folder.
"""
