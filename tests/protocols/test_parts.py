"""protocols.common.parts: described bytes fit to show when a card number straddles the parts of a
split message (INPAS SOH parts), for the monitor, the capture, the wire log and the console."""

from __future__ import annotations

from posbridge import protocols
from posbridge.protocols.common.describe import EntryKind, FieldDescription, FrameDescription
from posbridge.protocols.common.parts import DescribedStream, Piece, SplitMessages, joined, masked_entry, pieces_of
from posbridge.protocols.inpas.constants import ACK, SOH

from .inpas.split_answers import FULL_PAN, reassembled_chunks, split_answer_writes, straddling_offsets

DESCRIBE = protocols.get("inpas").describe


def feed_all(stream: DescribedStream, writes: list[bytes]) -> list[list[Piece]]:
    return [stream.feed(write) for write in writes]


def test_a_split_message_is_held_until_its_final_part_then_given_out_masked_in_every_part():
    for offset in straddling_offsets():
        writes = split_answer_writes(offset)
        stream = DescribedStream(DESCRIBE)
        per_write = feed_all(stream, writes[:-1])
        # the first write is the ACK of the request and part 1: the ACK comes out, the part is held
        assert [piece.entry.name for piece in per_write[0]] == ["ACK"]
        assert all(pieces == [] for pieces in per_write[1:]) and stream.pending == sum(map(len, writes[:-1])) - 1
        per_write.append(stream.feed(writes[-1]))
        *parts, final = per_write[-1]
        assert stream.pending == 0 and stream.flush() == []
        assert b"".join(piece.data for piece in [*per_write[0], *parts, final]) == b"".join(writes)
        assert [piece.entry.part.final for piece in [*parts, final]] == [False] * len(parts) + [True]
        safe = b"".join(piece.safe() for piece in [*parts, final])
        assert len(safe) == sum(len(piece.data) for piece in [*parts, final])
        assert reassembled_chunks(safe).count(b"CARD 411111******1111") == 1, offset
        assert FULL_PAN.encode() not in reassembled_chunks(safe)
        chunks = bytes.fromhex("".join(piece.entry.part.chunk for piece in [*parts, final]))
        assert chunks == reassembled_chunks(safe)  # the description's chunks masked as the bytes are
        # the parts the number straddles carry their masked bytes (the first 6 and last 4 digits stay)
        assert any(piece.shown is not None for piece in [*parts, final])
        assert all(piece.shown is None or piece.shown != piece.data for piece in [*parts, final])
        assert final.entry.field("pan").value == "411111******1111"
        assert "CARD 4111111111111111" in final.entry.field("receipt_data").value  # raw: masked_entry's job


def test_fed_byte_by_byte_the_pieces_are_the_same():
    writes = split_answer_writes(7)
    whole = [piece for pieces in feed_all(DescribedStream(DESCRIBE), writes) for piece in pieces]
    stream = DescribedStream(DESCRIBE)
    bytewise = [piece for write in writes for at in range(len(write)) for piece in stream.feed(write[at:at + 1])]
    assert bytewise == whole


def test_a_final_part_that_never_comes_is_given_out_by_flush_and_forget_drops_the_message():
    writes = split_answer_writes(7)
    stream = DescribedStream(DESCRIBE)
    feed_all(stream, writes[:-1])
    held = stream.pending
    parts = stream.forget()
    assert held and sum(len(piece.data) for piece in parts) == held and stream.pending == 0
    assert all(piece.entry.part is not None and not piece.entry.part.final for piece in parts)
    assert FULL_PAN.encode() not in reassembled_chunks(b"".join(piece.safe() for piece in parts))
    # forgotten: the final part alone is described without the parts before it
    [final] = stream.feed(writes[-1])
    assert final.entry.part.final and final.entry.field("pan") is None


def test_joined_gives_one_line_its_entries_offsets_into_the_safe_bytes_and_its_fields_masked():
    writes = split_answer_writes(7)
    stream = DescribedStream(DESCRIBE)
    *_, pieces = feed_all(stream, writes)
    data, entries = joined(pieces)
    assert len(data) == sum(len(piece.data) for piece in pieces)
    assert [data[entry.offset] for entry in entries] == [SOH] * len(entries)
    receipt = entries[-1].field("receipt_data").value
    assert FULL_PAN not in receipt and "CARD 411111******1111" in receipt
    assert FULL_PAN.encode() not in data and bytes([ACK]) not in data[:1]


def test_masked_entry_masks_a_card_number_before_a_summary_clips_it():
    entry = FrameDescription(EntryKind.FRAME, 0, 10, name="STX",
                             fields=(FieldDescription("90", "receipt_data", "x" * 70 + FULL_PAN + " slip"),))
    assert FULL_PAN[:10] in entry.summary()  # what clipping alone would show
    summary = masked_entry(entry).summary()
    assert FULL_PAN[:7] not in summary and "x" * 70 + "411111" in summary


def test_a_describer_that_raises_costs_a_noise_piece_with_the_number_masked():
    def broken(data: bytes) -> list[FrameDescription]:
        raise ValueError(f"bad {FULL_PAN}")

    [piece] = DescribedStream(broken).feed(b"\x02" + FULL_PAN.encode())
    assert piece.entry.kind is EntryKind.NOISE and piece.entry.problems[0].reason == "describe"
    assert FULL_PAN not in piece.entry.problems[0].detail and FULL_PAN.encode().hex() not in piece.entry.data
    assert FULL_PAN.encode() not in piece.safe()


def test_split_messages_give_held_parts_out_before_anything_else_and_past_their_limit():
    writes = split_answer_writes(7)
    stream = DescribedStream(DESCRIBE)
    feed_all(stream, writes[:2])
    [*held, ack] = stream.feed(bytes([ACK]))  # anything else: the held parts come out first, in order
    assert ack.entry.name == "ACK" and len(held) == 2 and all(not piece.entry.part.final for piece in held)
    assert stream.pending == 0
    ack_piece, part_piece = pieces_of(writes[0], DESCRIBE(writes[0]))
    assert SplitMessages().hold([ack_piece, part_piece]) == [ack_piece]  # part 1 held
    assert SplitMessages(limit=10).hold([ack_piece, part_piece]) == [ack_piece, part_piece]  # 55 bytes > 10


def test_a_card_number_in_noise_cut_by_a_read_is_held_and_masked_whole():
    # Every consumer (console trace, capture, wire log, monitor): the digits that end the noise wait
    # for the next read, so the number is masked whole, not given out as two unrecognisable halves.
    stream = DescribedStream(DESCRIBE)
    first = stream.feed(b"noise " + FULL_PAN[:9].encode())
    assert [piece.data for piece in first] == [b"noise "] and stream.pending == 9
    second = stream.feed(FULL_PAN[9:].encode() + b" more")
    rest = stream.flush()
    pieces = first + second + rest
    assert b"".join(piece.data for piece in pieces) == b"noise " + FULL_PAN.encode() + b" more"
    assert b"".join(bytes.fromhex(piece.entry.data) for piece in pieces) == b"noise 411111******1111 more"
    assert FULL_PAN.encode() not in b"".join(piece.safe() for piece in pieces)
    # digits still held when the stream is flushed come out then
    stream.feed(b"tail 12345")
    assert [piece.data for piece in stream.flush()] == [b"12345"] and stream.pending == 0
