"""``posbridge replay FILE --port URL [--protocol P]``: a capture's requests against a terminal.

The capture's recorded requests are re-issued through an ECR session (see :mod:`posbridge.capture`),
and each answer the terminal gives is compared with the recorded one field by field, ignoring the
fields that legitimately differ per run (:data:`posbridge.capture.VOLATILE_FIELDS`). Exit 0 when
every answer is identical, 1 when some differ (each difference one line on standard output), 2 on
bad input (one line on standard error: a malformed capture line names its number).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from posbridge import protocols
from posbridge.capture import VOLATILE_FIELDS, read_capture
from posbridge.testing.capture import replay


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    """The ``replay`` command's options."""
    p.add_argument("file", help="capture file written by --record")
    p.add_argument("--port", required=True, help="device URL of the terminal to replay against (real or virtual)")
    p.add_argument("--protocol", default=None, choices=protocols.names(),
                   help="wire protocol (default: the one the capture's header names)")
    p.add_argument("--ignore", action="append", default=[], metavar="FIELD",
                   help=f"another answer field to leave out of the comparison (repeatable; always left out: "
                        f"{', '.join(sorted(VOLATILE_FIELDS))})")
    p.add_argument("--record", metavar="FILE", help="write the replay's own capture")


def run_replay(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run ``posbridge replay``; returns the exit status. Bad input raises :class:`CaptureError` (a
    ValueError), which ``main`` prints as one line with exit status 2."""
    capture = read_capture(args.file)
    ignore = VOLATILE_FIELDS | frozenset(args.ignore)
    differences = asyncio.run(replay(capture, args.port, protocol=args.protocol, ignore=ignore, record=args.record))
    for difference in differences:
        print(f"differs: {difference}", file=out)
    if differences:
        print(f"{len(differences)} difference(s) replaying {args.file}", file=out)
        return 1
    print(f"identical: every answer in {args.file} matched", file=out)
    return 0
