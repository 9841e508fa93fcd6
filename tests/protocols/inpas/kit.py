"""INPAS SA's codec in the protocol kit's neutral shape (tests/protocols/kit/adapter.py).

Frame formats are named by their start byte: ``STX`` (a whole message) and ``SOH`` (one part of a
multi-part message); a message body is a list of ``(tag, value)`` records.
"""

from __future__ import annotations

from typing import Any

import construct
from hypothesis import strategies as st

from posbridge.protocols.inpas.constants import CONTROL_BYTES, CRC_SIZE, MAX_FRAME, SOH, STX
from posbridge.protocols.inpas.frame import (
    FRAME,
    RECORDS,
    FrameScanner,
    FrameToken,
    decode_frame,
    decode_records,
    encode_frame,
    encode_records,
)
from posbridge.protocols.inpas.fields import Message
from posbridge.protocols.inpas.multipart import decode_part
from tests.protocols.kit.adapter import DecodedFrame, KitAdapter, fast_or_reason

START_OF = {"STX": STX, "SOH": SOH}
FORMAT_OF = {STX: "STX", SOH: "SOH"}

record_lists = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=12,
                        unique_by=lambda record: record[0])


class InpasAdapter(KitAdapter):
    formats = ("STX", "SOH")
    max_frame = MAX_FRAME
    control_bytes = bytes(sorted(CONTROL_BYTES))

    def bodies(self) -> st.SearchStrategy[bytes]:
        return st.one_of(st.binary(max_size=40), st.binary(min_size=40, max_size=600))  # short and long

    def encode_frame(self, body: bytes, fmt: str) -> bytes:
        return encode_frame(body, START_OF[fmt])

    def declared_encode_frame(self, body: bytes, fmt: str) -> bytes:
        return FRAME.build({"covered": {"value": {"start": START_OF[fmt], "body": body}}})

    def decode_frame(self, data: bytes) -> DecodedFrame | str:
        found = fast_or_reason(decode_frame, data)
        return found if isinstance(found, str) else (FORMAT_OF[found.start], found.body, found.skipped, found.size)

    def declared_decode_frame(self, data: bytes) -> DecodedFrame | str:
        at = next((i for i, b in enumerate(data) if b in (STX, SOH)), None)  # spec: skip to STX/SOH
        if at is None:
            return "incomplete"
        try:
            parsed = FRAME.parse(data[at:])
        except construct.ChecksumError:
            return "crc"
        except construct.StreamError:
            return "incomplete"
        value = parsed.covered.value
        return FORMAT_OF[value.start], value.body, at, len(parsed.covered.data) + CRC_SIZE

    def damage(self, frame: bytes, fmt: str) -> tuple[bytes, str, int]:
        return frame[:-1] + bytes([frame[-1] ^ 0x5A]), "crc", len(frame) - CRC_SIZE

    def strip_noise(self, data: bytes) -> bytes:
        return bytes(b for b in data if b not in (STX, SOH) and b not in CONTROL_BYTES)

    def messages(self) -> st.SearchStrategy[Any]:
        return record_lists

    def encode_message(self, message: Any) -> bytes:
        return encode_records(message)

    def declared_encode_message(self, message: Any) -> bytes:
        return RECORDS.build([{"tag": tag, "value": value} for tag, value in message])

    def decode_message(self, body: bytes) -> Any:
        found = fast_or_reason(decode_records, body)
        return "error" if isinstance(found, str) else found

    def declared_decode_message(self, body: bytes) -> Any:
        try:
            return [(r.tag, r.value) for r in RECORDS.parse(body)]
        except construct.ConstructError:
            return "error"

    def body_like(self) -> st.SearchStrategy[bytes]:
        encoded = record_lists.map(encode_records)
        return st.one_of(
            st.binary(max_size=60),
            encoded,
            st.tuples(encoded, st.binary(max_size=4)).map(lambda t: t[0] + t[1]),
            st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=3)), max_size=6).map(
                lambda rs: b"".join(bytes([t, len(v), 0]) + v for t, v in rs)),  # repeated tags likely
        )

    def scanner(self) -> FrameScanner:
        return FrameScanner()

    frame_token = FrameToken

    def frame_format(self, token: FrameToken) -> str:
        return FORMAT_OF[token.start]

    def decoders(self) -> list[Any]:
        return [decode_frame, decode_records, decode_part, Message.decode_body]


ADAPTER = InpasAdapter()
