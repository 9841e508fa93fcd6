"""Typed protocol options: what used to be a loose ``timers`` dict, one frozen dataclass per protocol.

Every protocol's options class derives from :class:`ProtocolOptions`, so the neutral names
``ack_timeout`` (how long a frame or turn waits for its ACK: SA WAITACK, Arcus T1),
``packet_timeout`` (how long the ECR waits for the terminal's next packet: SA WAITPACKET, Arcus
result timer) and ``tries`` (sends of one frame in all) mean the same thing for every protocol; a
protocol adds its own fields (and its own defaults) in its subclass.

Configuration arrives as a mapping (a scenario's ``[terminal.timers]`` table, ``timers={...}``
keyword arguments); :meth:`ProtocolOptions.from_mapping` turns it into the protocol's class at that
boundary, with a one-line :class:`OptionsError` naming unknown keys and bad values.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from .errors import PosbridgeError

__all__ = ["OptionsError", "ProtocolOptions"]

O = TypeVar("O", bound="ProtocolOptions")


class OptionsError(PosbridgeError, ValueError):
    """Protocol options that cannot be used: an unknown key, a value of the wrong type or range."""


@dataclasses.dataclass(frozen=True)
class ProtocolOptions:
    """Link settings every protocol understands (seconds and counts). Tests run timers in milliseconds.

    Subclasses redeclare these fields with their protocol's defaults and add their own; every field
    is a number, a bool or ``None`` (meaning "the default for this side"), so a mapping from a TOML
    file converts without surprises.
    """

    #: The protocol's name, for error messages ("inpas option ack_timeout: ...").
    protocol: ClassVar[str] = "protocol"

    ack_timeout: float = 5.0
    packet_timeout: float = 45.0
    tries: int = 3

    def __post_init__(self) -> None:
        for name in ("ack_timeout", "packet_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    and value >= 0):
                raise OptionsError(f"{self.protocol} option {name}: expected seconds >= 0, got {value!r}")
        if isinstance(self.tries, bool) or not isinstance(self.tries, int) or self.tries < 1:
            raise OptionsError(f"{self.protocol} option tries: expected a whole number >= 1, got {self.tries!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names this class takes, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls: type[O], values: Mapping[str, object]) -> O:
        """Options from a mapping of names to values (a TOML table, keyword arguments).

        Numbers may be ints, floats or numeric text; a whole-number option takes ``2.0`` as 2; a
        bool option takes only true/false. Raises :class:`OptionsError` (one line) naming every
        unknown key, or the first bad value.
        """
        if not isinstance(values, Mapping):
            raise OptionsError(f"{cls.protocol} options must be a mapping of names to values, "
                               f"not {type(values).__name__}")
        known = cls.names()
        unknown = sorted(str(key) for key in values if key not in known)
        if unknown:
            raise OptionsError(f"unknown {cls.protocol} option(s): {', '.join(unknown)} "
                               f"(known: {', '.join(known)})")
        hints = _field_types(cls)
        # Any: each value was converted to its field's own type just above, which mypy cannot follow.
        converted: dict[str, Any] = {name: _convert(cls.protocol, name, hints[name], value)
                                     for name, value in values.items()}
        try:
            return cls(**converted)
        except OptionsError:
            raise
        except (TypeError, ValueError) as error:  # a subclass's own range check
            raise OptionsError(f"{cls.protocol} options: {error}") from None


def _field_types(cls: type) -> dict[str, Any]:
    """The options' annotations as types. Not ``typing.get_type_hints(cls)`` alone: it reads each
    class's module from ``sys.modules``, and a class whose module was dropped from there (pytest's
    pytester restores ``sys.modules`` after an in-process run, keeping the classes it loaded) has
    ``ClassVar`` undefined — a NameError seen once in the suite. Options hold builtins (float, int,
    bool, None) and ClassVar, so those names are given; the module's own names stay visible."""
    module = sys.modules.get(cls.__module__)
    namespace = {**(vars(module) if module is not None else {}), "ClassVar": ClassVar}
    return typing.get_type_hints(cls, globalns=namespace)


def _convert(protocol: str, name: str, hint: Any, value: object) -> object:
    """``value`` as the type ``hint`` asks for (float, int, bool, or one of them | None)."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise OptionsError(f"{protocol} option {name}: a value is required, got None")
    kind = next(t for t in allowed if t is not type(None))
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise OptionsError(f"{protocol} option {name}: expected true or false, got {value!r}")
    if isinstance(value, bool):
        raise OptionsError(f"{protocol} option {name}: expected a number, got {value!r}")
    number: float
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        try:
            if not value.isascii():  # float() reads "١" (Arabic-Indic one) as 1: a file never means it
                raise ValueError(value)
            number = float(value.strip())
        except ValueError:
            raise OptionsError(f"{protocol} option {name}: expected a number, got {_short(value)}") from None
    else:
        raise OptionsError(f"{protocol} option {name}: expected a number, got {type(value).__name__}")
    if isinstance(number, float) and not math.isfinite(number):
        raise OptionsError(f"{protocol} option {name}: expected a finite number, got {_short(value)}")
    if kind is int:
        if number != int(number):
            raise OptionsError(f"{protocol} option {name}: expected a whole number, got {_short(value)}")
        return int(number)
    try:
        return float(number)
    except OverflowError:  # an int with hundreds of digits
        raise OptionsError(f"{protocol} option {name}: expected a finite number, got {_short(value)}") from None


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
