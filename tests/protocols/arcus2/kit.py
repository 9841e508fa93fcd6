"""The Arcus2-style link's codec in the protocol kit's neutral shape (tests/protocols/kit/adapter.py).

Frame formats are the link versions, ``v1`` (STX … ETX LRC, legacy) and ``v2`` (SOH … ETX CRC-32);
a message body is ``(class letter, [(key, value), …])``.
"""

from __future__ import annotations

from typing import Any

import construct
from hypothesis import strategies as st

from posbridge.protocols.arcus2.constants import CHECK_SIZE, CONTROL_BYTES, FS, MAX_FRAME, SOH, STX
from posbridge.protocols.arcus2.fields import Message
from posbridge.protocols.arcus2.frame import (
    BODY,
    FRAMES,
    FrameScanner,
    FrameToken,
    decode_body,
    decode_frame,
    encode_body,
    encode_frame,
)
from tests.protocols.kit.adapter import DecodedFrame, KitAdapter, fast_or_reason

VERSION_OF = {"v1": 1, "v2": 2}
FORMAT_OF = {1: "v1", 2: "v2"}

keys = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
values = st.binary(max_size=30).map(lambda b: b.replace(bytes([FS]), b""))
field_lists = st.lists(st.tuples(keys, values), max_size=8, unique_by=lambda f: f[0])
classes = st.sampled_from(["Q", "I", "R", "A"])


class Arcus2Adapter(KitAdapter):
    formats = ("v1", "v2")
    max_frame = MAX_FRAME
    control_bytes = bytes(sorted(CONTROL_BYTES))

    def bodies(self) -> st.SearchStrategy[bytes]:
        return st.one_of(st.binary(max_size=40), st.binary(min_size=40, max_size=600))  # short and long

    def encode_frame(self, body: bytes, fmt: str) -> bytes:
        return encode_frame(body, VERSION_OF[fmt])

    def declared_encode_frame(self, body: bytes, fmt: str) -> bytes:
        return FRAMES[VERSION_OF[fmt]].build({"covered": {"value": {"body": body}}})

    def decode_frame(self, data: bytes) -> DecodedFrame | str:
        found = fast_or_reason(decode_frame, data)
        return found if isinstance(found, str) else (FORMAT_OF[found.version], found.body, found.skipped, found.size)

    def declared_decode_frame(self, data: bytes) -> DecodedFrame | str:
        starts = [at for at in (data.find(b"\x01"), data.find(b"\x02")) if at >= 0]
        if not starts:  # arcus2.md: bytes before the start byte (SOH or STX) are skipped
            return "incomplete"
        at = min(starts)
        version = {SOH: 2, STX: 1}[data[at]]  # the start byte states the version
        try:
            parsed = FRAMES[version].parse(data[at:])
        except construct.ChecksumError:
            return "crc"
        except construct.ConstError:
            # construct reads in order and meets a bad ETX before the check; a receiver judges a
            # frame only once all of it is there (its extent comes from LEN): a short one is incomplete.
            needed = 3 + int.from_bytes(data[at + 1: at + 3], "big") + 1 + CHECK_SIZE[version]
            return "incomplete" if len(data) - at < needed else "etx"
        except construct.StreamError:
            return "incomplete"
        size = len(parsed.covered.data) + 1 + CHECK_SIZE[version]
        return FORMAT_OF[version], parsed.covered.value.body, at, size

    def damage(self, frame: bytes, fmt: str) -> tuple[bytes, str, int]:
        return frame[:-1] + bytes([frame[-1] ^ 0x5A]), "crc", len(frame) - CHECK_SIZE[VERSION_OF[fmt]]

    def strip_noise(self, data: bytes) -> bytes:
        return bytes(b for b in data if b not in (STX, SOH) and b not in CONTROL_BYTES)

    def messages(self) -> st.SearchStrategy[Any]:
        return st.tuples(classes, field_lists)

    def encode_message(self, message: Any) -> bytes:
        return encode_body(*message)

    def declared_encode_message(self, message: Any) -> bytes:
        message_class, fields = message
        return BODY.build({"message_class": message_class.encode(),
                           "fields": [{"key": k.encode(), "value": v} for k, v in fields]})

    def decode_message(self, body: bytes) -> Any:
        found = fast_or_reason(decode_body, body)
        return "error" if isinstance(found, str) else found

    def declared_decode_message(self, body: bytes) -> Any:
        try:
            parsed = BODY.parse(body)
        except construct.ConstructError:
            return "error"
        return parsed.message_class.decode(), [(f.key.decode(), f.value) for f in parsed.fields]

    def body_like(self) -> st.SearchStrategy[bytes]:
        pieces = st.lists(st.sampled_from([b"a", b"b", b"=", b"\x1c", b"1", b"A", b"_", b"\xc0"]), max_size=14)
        return st.one_of(
            st.tuples(classes, field_lists).map(lambda m: encode_body(*m)),
            st.binary(max_size=40),
            st.tuples(st.sampled_from([b"Q", b"R", b"X", b""]), pieces).map(lambda t: t[0] + b"".join(t[1])),
        )

    def scanner(self) -> FrameScanner:
        return FrameScanner()

    frame_token = FrameToken

    def frame_format(self, token: FrameToken) -> str:
        return FORMAT_OF[token.version]

    def decoders(self) -> list[Any]:
        return [decode_frame, decode_body, Message.decode_body]


ADAPTER = Arcus2Adapter()
