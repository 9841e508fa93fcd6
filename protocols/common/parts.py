"""Described bytes fit to show, when a card number straddles the parts of a split message.

A message split over several frames (INPAS SOH parts) carries its record stream in slices: a
16-digit card number may be cut between two parts, and then neither part alone holds a run of
digits masking recognises. Whatever shows, logs or records a protocol's bytes therefore holds the
parts of a split message until its final part and masks their chunks together. This module is that
one place, sans-IO (no I/O, no clocks), for the monitor, the capture writer, the wire log and the
console's trace:

- :class:`Piece`: bytes of one direction with their :class:`FrameDescription` (and, once masked
  across parts, ``shown``); :meth:`Piece.safe` gives the bytes fit to show;
- :class:`SplitMessages`: takes pieces as they are described, holds the parts of a split message
  and gives them back with the final part (or before anything else, or on :meth:`~SplitMessages.release`),
  masked by :func:`mask_split_message`; its ``context`` is the frames of the message so far, to be
  described again before the next bytes so that the final part carries the whole message's fields;
- :class:`DescribedStream`: one direction's bytes fed in any chunks, cut on frame boundaries,
  described with that context and given out as pieces -- what a trace needs, in one call;
- :func:`joined`: pieces as one line (the safe bytes and the entries, offsets into those bytes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from .describe import EntryKind, FrameDescription, Problem
from .model import mask_bytes, mask_card_bytes, mask_card_numbers, mask_decoded

__all__ = ["DescribedStream", "Piece", "SplitMessages", "joined", "mask_split_message", "masked_entry",
           "masked_values", "pieces_of"]

_MASKED_CARD = re.compile(r"\d{6}\*+\d{4}")
_TRAILING_DIGITS = re.compile(rb"[0-9]{1,19}\Z")  # may be the head of a card number
_HEADER_SIZE = 3  # START + LEN(2): where a start-byte framed body begins (protocols.common.scanner)


def masked_values(entries: Iterable[FrameDescription]) -> list[str]:
    """The card numbers the describer masked in ``entries``' fields (``411111******1111``): where a
    full one sits in the bytes, found by its first 6 and last 4 digits (:func:`mask_bytes`)."""
    return [item.value for entry in entries for item in entry.fields
            if isinstance(item.value, str) and _MASKED_CARD.fullmatch(item.value)]


def masked_entry(entry: FrameDescription) -> FrameDescription:
    """``entry`` with card numbers masked in its field values (:func:`mask_decoded`): a field the
    describer does not know as a card number (a slip) may hold one, and a one-line
    :meth:`~FrameDescription.summary` clips a long value, which could cut the number to a part no
    masking recognises -- mask first, then summarise."""
    if not entry.fields:
        return entry
    return replace(entry, fields=tuple(replace(item, value=mask_decoded(item.value)) for item in entry.fields))


@dataclass(frozen=True)
class Piece:
    """Bytes of one direction and their description: a frame (with the noise directly before it,
    ``entry.skipped`` bytes), a control byte, a run of noise, or a frame that never completed.
    ``entry.offset`` is where the entry starts within ``data``. ``shown``, when set, is ``data`` with
    the digits of a card number that straddles the parts of a split message masked (each part alone
    holds too few digits to be recognised); ``entry.part.chunk`` is then masked alike."""

    data: bytes
    entry: FrameDescription
    shown: bytes | None = None

    def safe(self) -> bytes:
        """The bytes fit to show, log or record: ``shown`` (or ``data``) with every card number
        masked, the same length (:func:`mask_bytes` with the numbers the describer masked)."""
        return mask_bytes(self.data if self.shown is None else self.shown, masked_values([self.entry]))


def pieces_of(whole: bytes, entries: Sequence[FrameDescription], shown_before: int = 0) -> list[Piece]:
    """Pieces of ``whole`` for ``entries`` (a describer's walk over ``whole``) that end after
    ``shown_before`` (the context described again: not given out twice); each piece runs from the
    end of the previous entry, so bytes no entry names are not lost."""
    pieces = []
    previous = 0
    for entry in entries:
        end = min(entry.offset + entry.size, len(whole))
        if end <= shown_before or end <= previous:
            previous = max(previous, end)
            continue
        begin = max(previous, shown_before)
        pieces.append(Piece(whole[begin:end], replace(entry, offset=max(0, entry.offset - begin))))
        previous = end
    return pieces


def mask_split_message(parts: Sequence[Piece]) -> list[Piece]:
    """The parts of one split message (in order; the final one last when it came) with a card number
    that straddles their chunks masked in every part: the chunks are joined and masked as one
    (the numbers the final part's fields show masked, any Luhn-valid issuer-shaped run), and each
    part whose chunk changed gets ``shown`` (its bytes with the masked chunk) and the masked chunk
    in ``entry.part.chunk``. Pieces that are no parts pass unchanged."""
    parts = list(parts)
    if len(parts) < 2:
        return parts
    chunks = [bytes.fromhex(piece.entry.part.chunk) if piece.entry.part else b"" for piece in parts]
    whole = b"".join(chunks)
    safe = mask_bytes(whole, masked_values([parts[-1].entry]))
    if safe == whole:
        return parts
    out, at_chunk = [], 0
    for piece, chunk in zip(parts, chunks):
        safe_chunk, at_chunk = safe[at_chunk:at_chunk + len(chunk)], at_chunk + len(chunk)
        entry = piece.entry
        if safe_chunk == chunk or entry.part is None:
            out.append(piece)
            continue
        # the chunk is the tail of the frame's body, which follows the start byte and LEN
        at = entry.offset + _HEADER_SIZE + (entry.length or 0) - len(chunk)
        if piece.data[at:at + len(chunk)] != chunk:
            at = piece.data.find(chunk, entry.offset)
        # a chunk not found in the bytes (a describer's whim): hide every digit rather than guess
        shown = (piece.data[:at] + safe_chunk + piece.data[at + len(chunk):] if at >= 0
                 else re.sub(rb"[0-9]", b"*", piece.data))
        out.append(Piece(piece.data, replace(entry, part=replace(entry.part, chunk=safe_chunk.hex())), shown=shown))
    return out


class SplitMessages:
    """Holds the parts of a split message until its final part, for one direction.

    :meth:`hold` takes pieces in order as they are described and returns those that may be given
    out: a part that is not the final one is held; the held parts come out, masked together by
    :func:`mask_split_message`, with the final part, before any other piece, on :meth:`release`
    or when they hold more than ``limit`` bytes. ``context`` is the frames of the split message in
    progress (at most ``limit`` bytes): describe ``context + new bytes`` and hand :meth:`hold` only
    the pieces after the context (:func:`pieces_of`), so the final part carries the whole message's
    fields. A released message keeps its context until its final part or another frame comes (a
    slow final part after a quiet release is still described whole); :meth:`forget` drops it.
    """

    def __init__(self, *, limit: int = 70_000) -> None:
        self.limit = limit
        self.context = b""
        self._parts: list[Piece] = []

    @property
    def pending(self) -> int:
        """Bytes of the parts held."""
        return sum(len(piece.data) for piece in self._parts)

    def hold(self, pieces: Iterable[Piece]) -> list[Piece]:
        """The pieces that may be given out now (see the class docstring), in order."""
        out: list[Piece] = []
        for piece in pieces:
            entry = piece.entry
            if entry.kind is EntryKind.FRAME:
                split = entry.part is not None and not entry.part.final
                frame = piece.data[entry.offset:entry.offset + entry.size]
                self.context = self.context + frame if split and len(self.context) < self.limit else b""
            part = entry.part if entry.kind is EntryKind.FRAME and entry.ok else None
            if part is not None and not part.final:
                self._parts.append(piece)
                if self.pending > self.limit:
                    out += self._take([])
                continue
            out += self._take([piece] if part is not None else [])
            if part is None:
                out.append(piece)
        return out

    def release(self) -> list[Piece]:
        """The held parts, masked together; nothing stays held (the context stays)."""
        return self._take([])

    def forget(self) -> list[Piece]:
        """:meth:`release`, and forget the split message in progress (its sender is gone)."""
        self.context = b""
        return self._take([])

    def _take(self, final: list[Piece]) -> list[Piece]:
        parts, self._parts = [*self._parts, *final], []
        return mask_split_message(parts)


class DescribedStream:
    """One direction's bytes, fed in any chunks, as :class:`Piece` s fit to show: cut on frame
    boundaries (a frame not yet complete is held, at most ``limit`` bytes), described by the
    protocol's ``describe`` (with the split message in progress before them: see
    :class:`SplitMessages`), the parts of a split message held until its final part and masked
    together. A describer that raises costs a noise piece, never the stream. Every byte fed comes
    out in exactly one piece, in order, by :meth:`flush` at the latest.

    Digits that end a run of noise are held too, until more bytes come or :meth:`flush`: a card
    number cut by a read must be masked whole, never given out in halves that no masking recognises.
    A held frame larger than ``eager`` bytes is described again only once its bytes have doubled
    (or at :meth:`flush`): a hostile length field costs O(n log n) describing, not O(n²).

    A trace (``(direction, data)``) keeps one per direction::

        pieces = streams[direction].feed(data)
        data_shown, entries = joined(pieces)   # bytes and descriptions, card numbers masked
    """

    def __init__(self, describe: Callable[[bytes], list[FrameDescription]], *, limit: int = 70_000,
                 eager: int = 4096) -> None:
        self.describe = describe
        self.limit = limit
        self.eager = eager
        self.split = SplitMessages(limit=limit)
        self._buffer = b""  # fed, not yet given out: a frame in progress, noise before it, trailing digits
        self._next_try = 0  # describe again once the buffer holds this many bytes

    @property
    def pending(self) -> int:
        """Bytes fed and not yet given out."""
        return len(self._buffer) + self.split.pending

    def feed(self, data: bytes) -> list[Piece]:
        """The pieces ``data`` completes (held ones before them included), in order; at ``limit``
        bytes held, everything (:meth:`flush`)."""
        if not data:
            return []
        self._buffer += data
        if len(self._buffer) >= self.limit:
            return self.flush()
        if len(self._buffer) < self._next_try:
            return []
        return self._cut(hold=True)

    def flush(self) -> list[Piece]:
        """Everything held, as pieces: a half frame as the incomplete frame it is."""
        pieces = self._cut(hold=False) if self._buffer else []
        return pieces + self.split.release()

    def forget(self) -> list[Piece]:
        """:meth:`flush`, and forget a split message in progress (its sender is gone)."""
        pieces = self.flush()
        self.split.forget()
        return pieces

    def _cut(self, *, hold: bool) -> list[Piece]:
        """The pieces the buffer (after the split message's context) holds; with ``hold``, a frame
        not yet complete and digits ending the noise stay in the buffer, else nothing does."""
        context = self.split.context
        whole = context + self._buffer
        entries = self._describe(whole)
        if hold and entries and entries[-1].kind is EntryKind.INCOMPLETE:
            entries.pop()
        pieces = pieces_of(whole, entries, len(context))
        shown = len(context) + sum(len(piece.data) for piece in pieces)
        if not hold and shown < len(whole):  # bytes no entry named: given out as noise, never dropped
            rest = whole[shown:]
            pieces.append(Piece(rest, FrameDescription(EntryKind.NOISE, 0, len(rest),
                                                       data=mask_card_bytes(rest).hex())))
            shown = len(whole)
        if hold and shown == len(whole):
            shown -= _hold_trailing_digits(pieces)
        self._buffer = whole[shown:]
        held = len(self._buffer)
        self._next_try = 2 * held if held > self.eager else 0
        return self.split.hold(pieces)

    def _describe(self, data: bytes) -> list[FrameDescription]:
        try:
            return self.describe(data)
        except Exception as error:  # a describer bug costs a noise entry, never the stream
            detail = mask_card_numbers(f"{type(error).__name__}: {error}")[:200]
            return [FrameDescription(EntryKind.NOISE, 0, len(data), data=mask_card_bytes(data).hex(),
                                     problems=(Problem("describe", detail),))]


def _hold_trailing_digits(pieces: list[Piece]) -> int:
    """When ``pieces`` end in noise that ends in digits (perhaps the head of a card number whose
    tail is on its way), cut those digits off the last piece (in place) and return how many."""
    if not pieces or pieces[-1].entry.kind is not EntryKind.NOISE:
        return 0
    digits = _TRAILING_DIGITS.search(pieces[-1].data)
    if digits is None:
        return 0
    last = pieces.pop()
    keep = last.data[:digits.start()]
    if keep:
        pieces.append(Piece(keep, replace(last.entry, size=len(keep), data=mask_card_bytes(keep).hex())))
    return len(last.data) - len(keep)


def joined(pieces: Iterable[Piece]) -> tuple[bytes, list[FrameDescription]]:
    """``pieces`` as one line fit to show: their safe bytes (:meth:`Piece.safe`) joined, and their
    entries (:func:`masked_entry`) with offsets into those bytes."""
    data, entries = b"", []
    for piece in pieces:
        entries.append(replace(masked_entry(piece.entry), offset=piece.entry.offset + len(data)))
        data += piece.safe()
    return data, entries
