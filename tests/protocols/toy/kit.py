"""Toyline's codec in the protocol kit's neutral shape (tests/protocols/kit/adapter.py).

One frame format, ``line``; a message body is ``(class letter, [(key, text), …])``.
"""

from __future__ import annotations

from typing import Any

import construct
from hypothesis import strategies as st

from posbridge.protocols.common.errors import DecodeError
from tests.protocols.kit.adapter import DecodedFrame, KitAdapter, fast_or_reason
from tests.protocols.toy.toyline.mapping import Message
from tests.protocols.toy.toyline.frame import (
    BODY,
    CLASSES,
    CONTROL_BYTES,
    END,
    FRAME,
    MAX_FRAME,
    START,
    FrameScanner,
    FrameToken,
    decode_body,
    decode_frame,
    encode_body,
    encode_frame,
    escape,
    unescape,
)

#: Bytes a frame body may hold: printable ASCII but '*' and '>'.
BODY_BYTES = bytes(b for b in range(0x20, 0x7F) if b not in b"*>")
text = st.text(st.characters(codec="utf-8"), max_size=20)
field_lists = st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True), text), max_size=8,
                       unique_by=lambda f: f[0])


class ToyAdapter(KitAdapter):
    formats = ("line",)
    max_frame = MAX_FRAME
    control_bytes = CONTROL_BYTES

    def bodies(self) -> st.SearchStrategy[bytes]:
        alphabet = st.sampled_from(BODY_BYTES)
        # construct reads a line byte by byte: 300 is long enough for what a size could change
        return st.one_of(st.lists(alphabet, max_size=40), st.lists(alphabet, min_size=40, max_size=300)).map(bytes)

    def encode_frame(self, body: bytes, fmt: str) -> bytes:
        return encode_frame(body)

    def declared_encode_frame(self, body: bytes, fmt: str) -> bytes:
        return FRAME.build({"line": {"body": body}})

    def decode_frame(self, data: bytes) -> DecodedFrame | str:
        found = fast_or_reason(decode_frame, data)
        return found if isinstance(found, str) else ("line", found.body, found.skipped, found.size)

    def declared_decode_frame(self, data: bytes) -> DecodedFrame | str:
        at = data.find(START)
        if at < 0:
            return "incomplete"
        try:
            parsed = FRAME.parse(data[at:])
        except construct.ChecksumError:
            return "crc"
        except construct.ConstructError:
            # A frame is a line: one that has ended and does not parse is malformed, else incomplete.
            return "format" if data.find(END, at) >= 0 else "incomplete"
        body = parsed.line.body
        return "line", body, at, len(body) + 5

    def damage(self, frame: bytes, fmt: str) -> tuple[bytes, str, int]:
        digit = frame[-2:-1]
        other = b"0" if digit != b"0" else b"1"  # still a hex digit: the check is wrong, the format right
        return frame[:-2] + other + frame[-1:], "crc", len(frame) - 3

    def strip_noise(self, data: bytes) -> bytes:
        return bytes(b for b in data if b not in START and b not in CONTROL_BYTES)

    def messages(self) -> st.SearchStrategy[Any]:
        return st.tuples(st.sampled_from(CLASSES), field_lists)

    def encode_message(self, message: Any) -> bytes:
        return encode_body(*message)

    def declared_encode_message(self, message: Any) -> bytes:
        cls, fields = message
        return BODY.build({"cls": cls.encode(), "fields": [{"key": k.encode(), "value": escape(v)} for k, v in fields]})

    def decode_message(self, body: bytes) -> Any:
        found = fast_or_reason(decode_body, body)
        return "error" if isinstance(found, str) else found

    def declared_decode_message(self, body: bytes) -> Any:
        try:
            parsed = BODY.parse(body)
            return parsed.cls.decode(), [(f.key.decode(), unescape(f.value)) for f in parsed.fields]
        except (construct.ConstructError, DecodeError):  # the declaration, or a value's bad escape
            return "error"

    def body_like(self) -> st.SearchStrategy[bytes]:
        pieces = st.lists(st.sampled_from([b"a", b"b", b"=", b"|", b"1", b"%", b"%4", b"%41", b"%C3%A9", b"\xc3"]),
                          max_size=14)
        return st.one_of(
            st.tuples(st.sampled_from(CLASSES), field_lists).map(lambda m: encode_body(*m)),
            st.binary(max_size=40),
            st.tuples(st.sampled_from([b"Q", b"R", b"P", b"X", b""]), pieces).map(lambda t: t[0] + b"".join(t[1])),
        )

    def scanner(self) -> FrameScanner:
        return FrameScanner()

    frame_token = FrameToken

    def frame_format(self, token: FrameToken) -> str:
        return "line"

    def decoders(self) -> list[Any]:
        return [decode_frame, decode_body, Message.decode]


ADAPTER = ToyAdapter()
