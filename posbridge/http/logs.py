"""The service's command log: one JSON line per command, in rotating files.

1C's driver standard (4.0 on) requires a driver to keep a log; this is it. Each line says which
command, on which terminal, which operation, how much, the outcome and how long it took. Card
numbers never reach it: the card is the masked one the terminal returned, and every free text (an
error, a command id) goes through :func:`~posbridge.model.mask_card_numbers` first — all but a
well-formed RRN (12 characters at most, the terminal's own field).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
from typing import Any

from posbridge.model import mask_card_numbers, mask_pan

__all__ = ["COMMAND_LOGGER", "CommandLog"]

COMMAND_LOGGER = "posbridge.http.commands"
"""The logger the lines go to (a handler for the rotating file is added to it)."""

_RRN = re.compile(r"^[0-9A-Za-z]{1,12}$")
"""An RRN as the terminal returns it: 12 characters at most, shorter than any card number; kept as
it is (masking its 12 digits like a card number made the log useless for matching the bank's report)."""


class CommandLog:
    """Writes the command lines. ``path`` None: only the logger (the process's stderr at -v)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, max_bytes: int = 10 * 1024 * 1024,
                 backups: int = 10) -> None:
        self.logger = logging.getLogger(COMMAND_LOGGER)
        self.logger.setLevel(logging.INFO)
        self.path = os.fspath(path) if path is not None else None
        self._handler: logging.Handler | None = None
        if self.path is not None:
            handler = logging.handlers.RotatingFileHandler(self.path, maxBytes=max_bytes, backupCount=backups,
                                                           encoding="utf-8", delay=True)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(handler)
            self._handler = handler

    def command(self, **fields: Any) -> None:
        """One line: ``fields`` as JSON, free text masked, the card masked again (defence in depth)."""
        line: dict[str, Any] = {}
        for key, value in fields.items():
            if value is None:
                continue
            if key == "card" and isinstance(value, str):
                value = mask_pan(value)
            elif key == "rrn" and isinstance(value, str) and _RRN.match(value):
                pass
            elif isinstance(value, str):
                value = mask_card_numbers(value)
            line[key] = value
        self.logger.info(json.dumps(line, ensure_ascii=False, separators=(",", ":")))

    def close(self) -> None:
        """Detach and close the file handler."""
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
