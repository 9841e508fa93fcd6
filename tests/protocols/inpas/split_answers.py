"""A terminal's answer that travels in INPAS SOH parts with a full card number in its slip text:
what the terminal writes, one write per part (the ECR ACKs each part before the next goes), for
every place of the number relative to the part boundaries."""

from __future__ import annotations

from posbridge import protocols
from posbridge.protocols.common.model import Operation, Request, Result, Slips, Status
from posbridge.protocols.inpas.constants import FRAME_OVERHEAD, HEADER_SIZE, SOH
from posbridge.protocols.inpas.multipart import decode_part

FULL_PAN = "4111111111111111"
PART_SIZE = 40


def split_answer_writes(offset: int, *, part_size: int = PART_SIZE) -> list[bytes]:
    """The writes of a terminal session (``part_size``) answering a sale with a slip that holds
    ``FULL_PAN`` after ``offset`` characters; the ECR session ACKs each part."""
    spec = protocols.get("inpas")
    ecr, terminal = spec.ecr_session(None), spec.terminal_session(None, part_size=part_size)
    now, writes = 0.0, []
    ecr.start(Request(Operation.SALE, amount=100, currency=643, transaction_id="1"), now)
    result = Result(Operation.SALE, Status.APPROVED, "00", "OK", 100, 643, masked_pan="411111******1111",
                    slips=Slips(customer="x" * offset + f"CARD {FULL_PAN}\nTHANK YOU"))
    completed = False
    for _ in range(80):
        if any(type(event).__name__ == "RequestReceived" for event in terminal.receive(ecr.data_to_send(), now)):
            terminal.send_result(result, now)
        out = terminal.data_to_send()
        if out:
            writes.append(out)
        completed = completed or any(type(event).__name__ == "Completed" for event in ecr.receive(out, now))
        now += 0.05
    assert completed and len(writes) >= 3
    return writes


def straddling_offsets() -> list[int]:
    """The slip offsets (one per place in a part) whose card number no single part holds whole."""
    offsets = [offset for offset in range(PART_SIZE)
               if not any(FULL_PAN.encode() in write for write in split_answer_writes(offset))]
    assert offsets  # the number does straddle two parts somewhere
    return offsets


def reassembled_chunks(data: bytes) -> bytes:
    """The part chunks of every SOH frame in ``data``, joined, CRC unchecked (a masked frame fails
    its check; a reader still sees its body): the message body a reader rebuilds from these bytes."""
    joined, at = b"", 0
    while (at := data.find(bytes([SOH]), at)) >= 0:
        length = int.from_bytes(data[at + 1:at + HEADER_SIZE], "little")
        try:
            joined += decode_part(data[at + HEADER_SIZE:at + HEADER_SIZE + length]).chunk
        except Exception:  # an SOH byte inside a body, not a frame
            at += 1
            continue
        at += FRAME_OVERHEAD + length
    return joined
