"""The streaming scanner both protocols share: ``START LEN(2) BODY TRAILER`` frames among control
bytes and line noise, fed in arbitrary chunks.

Each protocol subclasses :class:`LengthPrefixedScanner` with its start bytes, control bytes, LEN
byte order and trailer size (one for every frame, or one per start byte where the start byte states
a format version, as in Arcus2-style link versions 1 and 2), and says in
:meth:`~LengthPrefixedScanner._token` how a complete frame is checked (CRC, ETX + LRC) and what
token it becomes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from .link import Control, Noise

HEADER_SIZE = 3  # START + LEN(2)


def _byte_class(values: bytes) -> bytes:
    return b"".join(b"\\x%02x" % value for value in values)


class LengthPrefixedScanner:
    """Cut a byte stream into frames, control bytes and noise (see the module docstring).

    Inside a frame every byte is frame data, control values included: a frame's extent comes from
    its LEN. After a frame that fails its check, scanning resumes after that frame's bytes. At most
    one frame (``HEADER_SIZE + 65535 + trailer`` bytes, the largest trailer) is held; :meth:`reset` drops it (the link
    calls it on timeouts, since a stray start byte in noise announces a frame that never comes).
    """

    def __init__(self, start_bytes: bytes, control_bytes: bytes, byteorder: Literal["little", "big"],
                 trailer_size: int | Mapping[int, int]) -> None:
        """``trailer_size``: bytes after the body, for every frame, or by start byte (a mapping that
        names every one of ``start_bytes``)."""
        self._start_re = re.compile(b"[" + _byte_class(start_bytes) + b"]")
        controls = _byte_class(control_bytes)
        # Outside a frame: one control byte, or a run of bytes that are neither control nor start.
        self._outside_re = re.compile(b"([" + controls + b"])|[^" + _byte_class(start_bytes) + controls + b"]+")
        self._little_endian = byteorder == "little"
        if isinstance(trailer_size, int):
            self._overheads = dict.fromkeys(start_bytes, HEADER_SIZE + trailer_size)
        else:
            self._overheads = {start: HEADER_SIZE + trailer_size[start] for start in start_bytes}
        self._frame = bytearray()  # the frame in progress, from its start byte
        self._size = 0  # its total size once LEN is known, else 0
        self._frame_at = 0  # stream offset of its start byte
        self._stream_pos = 0  # stream offset of the next byte fed

    @property
    def pending(self) -> int:
        """Bytes held of an incomplete frame."""
        return len(self._frame)

    def reset(self) -> None:
        """Forget a partial frame."""
        self._frame.clear()
        self._size = 0

    def feed(self, data: bytes) -> list:
        """Consume ``data`` and return the tokens it completes, in stream order."""
        tokens: list = []
        data = bytes(data)
        end = len(data)
        pos = 0
        frame = self._frame
        while pos < end:
            if not frame:
                match = self._start_re.search(data, pos)
                stop = match.start() if match else end
                if stop > pos:
                    self._outside(data, pos, stop, tokens)
                if match is None:
                    break
                self._frame_at = self._stream_pos + stop
                frame.append(data[stop])
                pos = stop + 1
                continue
            if not self._size:
                take = min(HEADER_SIZE - len(frame), end - pos)
                frame += data[pos : pos + take]
                pos += take
                if len(frame) < HEADER_SIZE:
                    break
                length = frame[1] | frame[2] << 8 if self._little_endian else frame[1] << 8 | frame[2]
                self._size = length + self._overheads[frame[0]]
            take = min(self._size - len(frame), end - pos)
            frame += data[pos : pos + take]
            pos += take
            if len(frame) == self._size:
                token = self._token(frame, self._frame_at)
                self.reset()
                tokens.append(token)
        self._stream_pos += end
        return tokens

    def _outside(self, data: bytes, pos: int, stop: int, tokens: list) -> None:
        """Tokenize ``data[pos:stop]``, which holds no start byte."""
        for match in self._outside_re.finditer(data, pos, stop):
            if match.group(1) is not None:
                tokens.append(Control(data[match.start()]))
            else:
                tokens.append(Noise(match.group()))

    def _token(self, frame: bytearray, frame_at: int) -> object:
        """The token for a complete ``frame`` that starts at stream offset ``frame_at``."""
        raise NotImplementedError
