"""What the kit needs to know of a protocol beyond its :class:`ProtocolSpec`: its codec.

The spec is all the application sees (sessions, describe, capabilities). Testing the codec against
its declaration needs the codec itself, and every protocol shapes it its own way (INPAS frames start
with STX or SOH, Arcus2 frames come in two link versions, records vs ``key=value`` bodies). So each
protocol's test folder supplies one :class:`KitAdapter` in ``tests/protocols/<name>/kit.py`` as
``ADAPTER``, turning its codec into the neutral shape below, as pymodbus's framer tests hold one
table of wire bytes per framer. The kit finds it by the protocol's registered name
(:func:`adapter_for`); a registered protocol without one fails the kit with a message saying so.

Normalised values the adapter returns, so that the kit can compare without knowing the protocol:

- a decoded frame: ``(format, body, skipped, size)``, or the :class:`DecodeError` reason as a
  string (``"crc"``, ``"incomplete"``…) when the input is not a good frame;
- a scanner token: ``("frame", format, body)``, ``("bad", reason, stream offset)``,
  ``("control", byte)`` or ``("noise", data)``;
- a decoded message body: any comparable value, or ``"error"``.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

from posbridge.protocols.common.errors import DecodeError
from posbridge.protocols.common.link import BadFrame, Control, Noise

DecodedFrame = tuple[str, bytes, int, int]


class KitAdapter(abc.ABC):
    """One protocol's codec in the kit's neutral shape (module docstring)."""

    #: The names of the protocol's frame formats (INPAS: ``"STX"``, ``"SOH"``; Arcus2: ``"v1"``, ``"v2"``).
    formats: Sequence[str]
    #: Most bytes a scanner may hold of an incomplete frame: its memory bound.
    max_frame: int
    #: Control bytes the link sends outside frames.
    control_bytes: bytes
    #: Options for sessions in the kit's tests (defaults of the protocol unless set).
    options: Mapping[str, object] = {}

    # --- frames -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def bodies(self) -> st.SearchStrategy[bytes]:
        """Frame bodies any format can carry."""

    @abc.abstractmethod
    def encode_frame(self, body: bytes, fmt: str) -> bytes:
        """The fast path: the wire bytes of one frame."""

    @abc.abstractmethod
    def declared_encode_frame(self, body: bytes, fmt: str) -> bytes:
        """The same frame built from the protocol's construct declaration."""

    @abc.abstractmethod
    def decode_frame(self, data: bytes) -> DecodedFrame | str:
        """The fast path's reading of the first frame in ``data`` (normalised, module docstring)."""

    @abc.abstractmethod
    def declared_decode_frame(self, data: bytes) -> DecodedFrame | str:
        """The construct declaration's reading of the same bytes (normalised the same way)."""

    @abc.abstractmethod
    def damage(self, frame: bytes, fmt: str) -> tuple[bytes, str, int]:
        """``frame`` with its check broken but its extent kept: (bytes, the reason a receiver gives,
        the offset of the problem within the frame)."""

    def noise(self) -> st.SearchStrategy[bytes]:
        """Bytes that are noise between frames: no start byte, no control byte, whatever else."""
        return st.binary(min_size=1, max_size=8).map(self.strip_noise).filter(bool)

    @abc.abstractmethod
    def strip_noise(self, data: bytes) -> bytes:
        """``data`` without the bytes that would start a frame or be taken for a control byte."""

    # --- message bodies ---------------------------------------------------------------------------
    @abc.abstractmethod
    def messages(self) -> st.SearchStrategy[Any]:
        """Valid messages, in the form :meth:`encode_message` takes and :meth:`decode_message` gives."""

    @abc.abstractmethod
    def encode_message(self, message: Any) -> bytes:
        """The fast path: a message's body bytes."""

    @abc.abstractmethod
    def declared_encode_message(self, message: Any) -> bytes:
        """The same body built from the construct declaration."""

    @abc.abstractmethod
    def decode_message(self, body: bytes) -> Any:
        """The fast path's reading of a body, or ``"error"`` (a DecodeError)."""

    @abc.abstractmethod
    def declared_decode_message(self, body: bytes) -> Any:
        """The construct declaration's reading of a body, or ``"error"``."""

    @abc.abstractmethod
    def body_like(self) -> st.SearchStrategy[bytes]:
        """Bodies near the grammar: valid ones, damaged ones, repeated keys, stray separators."""

    # --- streams ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def scanner(self) -> Any:
        """A new streaming scanner: ``feed(bytes) -> tokens``, ``pending``, ``reset()``."""

    #: The protocol's frame token class (the other tokens are protocols/common's).
    frame_token: type

    @abc.abstractmethod
    def frame_format(self, token: Any) -> str:
        """Which of :attr:`formats` a frame token of the scanner is."""

    def token(self, token: object) -> tuple[Any, ...]:
        """A scanner token, normalised (module docstring)."""
        if isinstance(token, self.frame_token):
            return ("frame", self.frame_format(token), token.body)  # type: ignore[attr-defined]
        if isinstance(token, BadFrame):
            return ("bad", token.error.reason, token.error.offset)
        if isinstance(token, Control):
            return ("control", token.byte)
        assert isinstance(token, Noise), f"not a scanner token: {token!r}"
        return ("noise", token.data)

    def decoders(self) -> list[Any]:
        """Every function that decodes untrusted bytes and may raise only DecodeError."""
        return []


def fast_or_reason(decode: Any, data: bytes) -> Any:
    """``decode(data)``, or the DecodeError's reason: how adapters normalise the fast path."""
    try:
        return decode(data)
    except DecodeError as error:
        return error.reason


def adapter_for(name: str) -> KitAdapter:
    """The kit adapter of protocol ``name``: ``ADAPTER`` in ``tests.protocols.<name>.kit``."""
    module_name = f"tests.protocols.{name}.kit"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name not in (module_name, f"tests.protocols.{name}"):
            raise
        raise AssertionError(f"protocol {name!r} is registered but has no kit adapter: add {module_name} "
                             f"with ADAPTER = a KitAdapter (tests/protocols/kit/adapter.py)") from None
    adapter = getattr(module, "ADAPTER", None)
    assert isinstance(adapter, KitAdapter), f"{module_name}.ADAPTER must be a KitAdapter, not {adapter!r}"
    return adapter
