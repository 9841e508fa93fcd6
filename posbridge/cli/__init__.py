"""The ``posbridge`` command and the technician's front ends (console, demo, arcus2-cli), thin
layers over the public API."""

from posbridge.cli.main import main

__all__ = ["main"]
