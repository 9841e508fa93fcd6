"""Outcome rules: what the virtual terminal does for the operations a rule matches.

One vocabulary for scenario files (``[[rules]]`` tables), the control API (``POST /rules``) and
tests. A rule has *conditions* (all given ones must hold) and *effects*::

    # conditions
    card = "5432543254325430"     # the card read (digits; spaces allowed) or a test-card name (TEST_CARD_NAMES)
    amount_ends = "05"            # the amount in minor units ends with these digits (vendor sandbox style)
    operation = "sale"            # an Operation value (sale, refund, cancel, preauth, settlement, ...)
    nth = 3                       # only the 3rd operation the other conditions match (counted from 1)
    # effects
    outcome = "declined"          # "approved" (past the test-card table and limits) | "declined"
    code = "05"                   # response code of a decline (default "05")
    text = "ОТКАЗ"                # response text of a decline (default: the host's text for the code)
    card_delay = 2.0              # seconds the card holder takes (this operation)
    pin_delay = 1.0               # seconds of PIN entry
    host_delay = 10.0             # seconds the host takes (the terminal sends WAIT meanwhile)
    dialog = true                 # ask the cashier for the card's last 4 digits (a wrong answer declines)
    fault = "answer_lost"         # transaction-level host fault: no_connection | answer_lost | request_not_sent
    once = true                   # used up after it applied once (default: persistent)

The first rule that matches decides; the bank host still journals the outcome (a forced decline
is a journaled decline, totals stay equal to the journal). Rules are checked when the card is
read (card operations) or when the request arrives (the others). Thread-safe: the control API
changes rules while the terminal runs.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from posbridge.emulator.cards import Card
from posbridge.emulator.host import FAULTS
from posbridge.model import Operation, mask_card_numbers, mask_pan

__all__ = ["Rule", "RuleBook", "RuleError", "TEST_CARD_NAMES", "rule_from_dict", "card_from_name"]

TEST_CARD_NAMES: dict[str, str] = {
    "approved": "4111111111111111",
    "insufficient_funds": "5432543254325430",
    "over_limit": "4444444444443333",
    "network_declined": "4444444411111111",
    "bad_format": "4444444444444422",
    "blocked": "4444444444446666",
    "pares_u": "5555555555555557",
    "veres_u": "4000000000000002",
}
"""Names for cards of the host's test-card table (cards.TEST_CARDS), usable wherever a card is."""

OUTCOMES = ("approved", "declined")
_KEYS = ("card", "amount_ends", "operation", "nth", "outcome", "code", "text", "card_delay", "pin_delay",
         "host_delay", "dialog", "fault", "once")


class RuleError(ValueError):
    """A rule that cannot be used; ``key`` names the key and the message says why in one line."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def card_from_name(value: object, key: str = "card") -> str:
    """The digits of a card given by number (spaces allowed) or test-card name; RuleError otherwise."""
    if not isinstance(value, str):
        raise RuleError(key, f"{key} must be a card number or a test-card name, not {type(value).__name__}")
    if value in TEST_CARD_NAMES:
        return TEST_CARD_NAMES[value]
    digits = value.replace(" ", "")
    if not digits.isascii() or not digits.isdigit() or not 12 <= len(digits) <= 19:
        names = ", ".join(TEST_CARD_NAMES)
        raise RuleError(key, f"{key} must be 12-19 digits or one of {names}")
    return digits


@dataclass(frozen=True)
class Rule:
    """One outcome rule (see the module docstring). Build it with :func:`rule_from_dict`."""

    card: str | None = None
    amount_ends: str | None = None
    operation: Operation | None = None
    nth: int | None = None
    outcome: str | None = None
    code: str | None = None
    text: str | None = None
    card_delay: float | None = None
    pin_delay: float | None = None
    host_delay: float | None = None
    dialog: bool | None = None
    fault: str | None = None
    once: bool = False

    def matches(self, operation: Operation, amount: int | None, card: Card | None) -> bool:
        """Do this rule's conditions (other than ``nth``) hold for an operation?"""
        if self.operation is not None and operation is not self.operation:
            return False
        if self.card is not None and (card is None or card.pan != self.card):
            return False
        if self.amount_ends is not None and (amount is None or not str(amount).endswith(self.amount_ends)):
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """The rule as JSON-ready data (card numbers masked), only the keys given."""
        data = {k: v for k, v in asdict(self).items() if v is not None}
        if self.operation is not None:
            data["operation"] = self.operation.value
        if self.card is not None:
            data["card"] = mask_pan(self.card)
        if self.text is not None:  # whoever wrote the rule may have quoted a card number
            data["text"] = mask_card_numbers(self.text)
        return data


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
        raise RuleError(key, f"{key} must be seconds from 0 to 3600, not {value!r}")
    return float(value)


def rule_from_dict(data: Mapping[str, Any], where: str = "") -> Rule:
    """Check and build a rule; RuleError names the key (prefixed by ``where``, e.g. ``rules[2].``)."""
    if not isinstance(data, Mapping):
        raise RuleError(where.rstrip(".") or "rule", f"{where.rstrip('.') or 'a rule'} must be a table/object")

    def fail(key: str, message: str) -> RuleError:
        return RuleError(where + key, where + message)

    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise fail(unknown[0], f"{unknown[0]} is not a rule key (keys: {', '.join(_KEYS)})")
    try:
        card = card_from_name(data["card"]) if "card" in data else None
        delays = {k: _number(data, k) for k in ("card_delay", "pin_delay", "host_delay")}
    except RuleError as error:
        raise fail(error.key, str(error)) from None
    amount_ends = data.get("amount_ends")
    if amount_ends is not None and (not isinstance(amount_ends, str) or not amount_ends.isascii()
                                    or not amount_ends.isdigit() or len(amount_ends) > 12):
        raise fail("amount_ends", f"amount_ends must be 1-12 digits as a string (\"05\"), not {amount_ends!r}")
    operation = None
    if "operation" in data:
        try:
            operation = Operation(data["operation"])
        except ValueError:
            raise fail("operation", f"operation must be one of {', '.join(o.value for o in Operation)}, "
                                    f"not {data['operation']!r}") from None
    nth = data.get("nth")
    if nth is not None and (isinstance(nth, bool) or not isinstance(nth, int) or nth < 1):
        raise fail("nth", f"nth must be a whole number from 1, not {nth!r}")
    outcome = data.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise fail("outcome", f"outcome must be approved or declined, not {outcome!r}")
    code = data.get("code")
    if code is not None:
        if isinstance(code, int) and not isinstance(code, bool):
            code = str(code)
        if not isinstance(code, str) or not code.lstrip("-").isdigit() or not code.isascii() or len(code) > 8:
            raise fail("code", f"code must be a response code of up to 8 digits (\"05\"), not {code!r}")
        if outcome is None:
            outcome = "declined"
        elif outcome != "declined":
            raise fail("code", "code is for outcome = \"declined\"")
    text = data.get("text")
    if text is not None and (not isinstance(text, str) or not text or len(text) > 64 or not text.isprintable()):
        raise fail("text", "text must be one printable line of 1-64 characters")
    if text is not None and outcome != "declined":
        raise fail("text", "text is for outcome = \"declined\"")
    dialog = data.get("dialog")
    if dialog is not None and not isinstance(dialog, bool):
        raise fail("dialog", f"dialog must be true or false, not {dialog!r}")
    fault = data.get("fault")
    if fault is not None and (fault not in FAULTS or fault is None):
        raise fail("fault", f"fault must be one of {', '.join(f for f in FAULTS if f)}, not {fault!r}")
    if fault is not None and outcome is not None:
        raise fail("fault", "fault and outcome exclude each other (a fault is the outcome)")
    once = data.get("once", False)
    if not isinstance(once, bool):
        raise fail("once", f"once must be true or false, not {once!r}")
    if outcome == "declined" and code is None:
        code = "05"
    rule = Rule(card=card, amount_ends=amount_ends, operation=operation, nth=nth, outcome=outcome, code=code,
                text=text, dialog=dialog, fault=fault, once=once, **delays)
    if all(getattr(rule, k) is None for k in ("outcome", "card_delay", "pin_delay", "host_delay", "dialog",
                                              "fault")):
        raise fail("outcome", "a rule needs an effect: outcome, code, a delay, dialog or fault")
    return rule


class RuleBook:
    """The rules in force, in order (the queue of cards is the terminal's CardReader)."""

    def __init__(self, rules: list[Rule] | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[Rule] = list(rules or [])
        self._seen: list[int] = [0] * len(self._rules)  # operations each rule's conditions matched

    def add(self, *rules: Rule) -> None:
        """Append rules (checked after the ones already here)."""
        with self._lock:
            self._rules.extend(rules)
            self._seen.extend(0 for _ in rules)

    def clear(self) -> None:
        """Forget every rule."""
        with self._lock:
            self._rules.clear()
            self._seen.clear()

    def rules(self) -> list[Rule]:
        """The rules in force, in order."""
        with self._lock:
            return list(self._rules)

    def choose(self, operation: Operation, amount: int | None, card: Card | None) -> Rule | None:
        """The rule for this operation (the first that matches), counting it against every rule's
        ``nth``; a one-shot rule is removed once chosen."""
        with self._lock:
            chosen: int | None = None
            for i, rule in enumerate(self._rules):
                if not rule.matches(operation, amount, card):
                    continue
                self._seen[i] += 1
                if chosen is None and (rule.nth is None or rule.nth == self._seen[i]):
                    chosen = i
            if chosen is None:
                return None
            rule = self._rules[chosen]
            if rule.once or rule.nth is not None:  # an nth rule cannot match again: drop it too
                del self._rules[chosen]
                del self._seen[chosen]
            return rule
