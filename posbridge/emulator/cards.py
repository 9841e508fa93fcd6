"""Cards for the virtual terminal: the card reader, card schemes, Luhn, and the acquirer's test cards.

The :class:`CardReader` is the only place a full card number lives (DESIGN.md). Everything a card
is printed as — ``repr``, ``str``, logs, journals, slips — shows at most the first 6 and the last 4
digits (:attr:`Card.masked_pan`).

:data:`TEST_CARDS` is the test-card table of ``host-rules.md``: each card gives its listed outcome
for a sale and a pre-authorization, whatever its printed expiry.
"""

from __future__ import annotations

import os
import re
import threading
from collections import deque
from dataclasses import dataclass

from posbridge.model import mask_pan

__all__ = [
    "DEFAULT_CARD", "TEST_CARDS", "Card", "CardFileError", "CardReader", "TestCardRule", "card_scheme",
    "load_cards", "luhn_valid",
]


def _digits(pan: str) -> str:
    # Card numbers are written with spaces or dashes between groups; anything else is kept so that a
    # typo (a letter) fails the Luhn check instead of silently vanishing.
    return pan.replace(" ", "").replace("-", "")


def luhn_valid(pan: str) -> bool:
    """True if ``pan`` (digits, spaces and dashes allowed) passes the Luhn check digit test."""
    digits = _digits(pan)
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_scheme(pan: str) -> str:
    """The payment scheme of a card number by its leading digits (IIN ranges).

    One of ``VISA``, ``MASTERCARD``, ``MIR`` (2200-2204), ``MAESTRO``, ``DISCOVER`` (6011, 644-649, 65),
    ``UNIONPAY`` (62), ``JCB`` (3528-3589), ``AMEX`` (34, 37) or ``UNKNOWN``. Maestro takes 50 and
    56-69 except the Discover and UnionPay ranges — so the test card 6390 02… is Maestro.
    """
    d = _digits(pan)
    if not d.isascii() or not d.isdigit() or len(d) < 2:
        return "UNKNOWN"
    p2, p3, p4 = int(d[:2]), int(d[:3] or 0), int(d[:4].ljust(4, "0"))
    if d[0] == "4":
        return "VISA"
    if 2200 <= p4 <= 2204:
        return "MIR"
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return "MASTERCARD"
    if p2 in (34, 37):
        return "AMEX"
    if 3528 <= p4 <= 3589:
        return "JCB"
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65:
        return "DISCOVER"
    if p2 == 62:
        return "UNIONPAY"
    if p2 == 50 or 56 <= p2 <= 69:
        return "MAESTRO"
    return "UNKNOWN"


@dataclass(frozen=True, repr=False)
class Card:
    """A card as the virtual reader reads it. ``expiry`` is ``YYMM``; ``pan`` may contain spaces.

    ``repr`` and ``str`` show the masked number only, so a card in a log or a traceback is safe.
    """

    pan: str
    expiry: str = "3012"
    holder: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pan", _digits(self.pan))

    @property
    def masked_pan(self) -> str:
        """The number as it may be shown or stored: first 6 and last 4 digits."""
        return mask_pan(self.pan)

    @property
    def scheme(self) -> str:
        """The card scheme (see :func:`card_scheme`)."""
        return card_scheme(self.pan)

    def __repr__(self) -> str:
        return f"Card(pan={self.masked_pan!r}, expiry={self.expiry!r}, holder={self.holder!r})"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class TestCardRule:
    """One row of the acquirer's test-card table: the outcome of a sale or pre-authorization.

    ``code`` is the manual's response code (``"00"`` for approved); ``text`` is what the terminal
    prints, in Russian.
    """

    __test__ = False  # not a pytest test class, despite the name

    pan: str
    approved: bool
    code: str
    text: str

    def __repr__(self) -> str:
        return (
            f"TestCardRule(pan={mask_pan(self.pan)!r}, approved={self.approved!r}, "
            f"code={self.code!r}, text={self.text!r})"
        )


APPROVED_TEXT = "ОДОБРЕНО"

_TABLE: tuple[tuple[str, bool, str, str], ...] = (
    ("4111 1111 1111 1111", True, "00", APPROVED_TEXT),
    ("5100 0000 0000 0008", True, "00", APPROVED_TEXT),
    ("6011 0000 0000 0004", True, "00", APPROVED_TEXT),
    ("6390 0200 0000 000003", True, "00", APPROVED_TEXT),
    ("5555 5555 5555 5599", True, "00", APPROVED_TEXT),
    ("4444 0000 0000 1111", True, "00", APPROVED_TEXT),
    ("5555 5555 5555 5557", False, "-2011", "ОТКЛОНЕНО: СТАТУС PARES U"),
    ("4444 3333 2222 1111", False, "-2011", "ОТКЛОНЕНО: СТАТУС PARES U"),
    ("4000 0000 0000 0002", False, "-2016", "ОТКЛОНЕНО: СТАТУС VERES U"),
    ("5555 5555 4444 4442", False, "-2016", "ОТКЛОНЕНО: СТАТУС VERES U"),
    ("4444 4444 4444 4422", False, "913", "ОТКЛОНЕНО: НЕВЕРНЫЙ ФОРМАТ СООБЩЕНИЯ"),
    ("4444 4444 4444 4455", False, "902", "ОТКЛОНЕНО: ПРЕВЫШЕНЫ ОГРАНИЧЕНИЯ ПО КАРТЕ"),
    ("4444 4444 4444 3333", False, "123", "ОТКЛОНЕНО: ПРЕВЫШЕН ЛИМИТ"),
    ("4444 4444 4444 6666", False, "-20010", "ОТКЛОНЕНО: ЗАБЛОКИРОВАНО ПО ЛИМИТУ"),
    ("4444 4444 1111 1111", False, "5", "ОТКЛОНЕНО: СЕТЬ ОТКАЗАЛА В ОПЕРАЦИИ"),
    ("4444 4444 9999 9999", False, "151017", "ОТКЛОНЕНО: ОШИБКА СВЯЗИ 3-D SECURE"),
    ("5432 5432 5432 5430", False, "116", "ОТКЛОНЕНО: НЕДОСТАТОЧНО СРЕДСТВ"),
)

TEST_CARDS: dict[str, TestCardRule] = {
    _digits(pan): TestCardRule(_digits(pan), approved, code, text) for pan, approved, code, text in _TABLE
}
"""The host-rules test-card table, keyed by the digits-only PAN."""

DEFAULT_CARD = Card("4111111111111111", "3012")
"""The card the reader gives when none was presented: an approved test card."""


class CardReader:
    """The virtual card reader: cards presented here are read, one per card operation, in order.

    When no card is queued the reader gives its default card (:data:`DEFAULT_CARD` unless told
    otherwise), as a training terminal with a card always in the slot would. Thread-safe.
    """

    def __init__(self, default: Card = DEFAULT_CARD) -> None:
        self.default = default
        self._queue: deque[Card] = deque()
        self._lock = threading.Lock()

    def present(self, *cards: Card | str) -> None:
        """Queue cards (or bare card numbers, read with the default expiry) for the next operations."""
        with self._lock:
            self._queue.extend(c if isinstance(c, Card) else Card(c) for c in cards)

    def next_card(self) -> Card:
        """Read a card: the oldest queued card, or the default card if none is queued."""
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def pending(self) -> int:
        """How many presented cards have not been read yet."""
        with self._lock:
            return len(self._queue)

    def clear(self) -> None:
        """Forget every queued card."""
        with self._lock:
            self._queue.clear()

    def __repr__(self) -> str:
        return f"CardReader(pending={self.pending()}, default={self.default!r})"


class CardFileError(ValueError):
    """A cards file that cannot be read; the message names the line (card numbers masked)."""


_EXPIRY = re.compile(r"^[0-9]{4}$")


def load_cards(path: str | os.PathLike[str]) -> list[Card]:
    """Read a cards file: one ``PAN[,EXPIRY]`` a line (``EXPIRY`` is ``YYMM``, default 3012).

    Blank lines and lines starting with ``#`` are skipped; spaces and dashes inside a PAN are
    allowed. A card number on the command line is visible to every user in the process list; in a
    file (mode 600) it is not. Errors name the line and show card numbers masked.
    """
    try:
        text = open(path, encoding="utf-8-sig").read()
    except (OSError, UnicodeDecodeError) as error:
        raise CardFileError(f"cannot read cards file {path}: {error}") from None
    cards = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pan, _, expiry = (part.strip() for part in line.partition(","))
        digits = _digits(pan)
        if not digits.isascii() or not digits.isdigit() or not 12 <= len(digits) <= 19:
            raise CardFileError(f"{path}, line {number}: not a card number of 12-19 digits: {mask_pan(pan)!r}")
        if expiry and not _EXPIRY.match(expiry):
            raise CardFileError(f"{path}, line {number}: expiry must be YYMM, not {expiry!r}")
        cards.append(Card(digits, expiry or "3012"))
    return cards
