"""Terminal models as data: vendor, model, USB ids, default protocol, serial speed.

The built-in table is ``devices/profiles.toml`` (shipped with the package). Users add or change
rows in their own TOML files, read after it in this order (later wins):

1. ``$XDG_CONFIG_HOME/posbridge/profiles.toml`` (``~/.config/posbridge/profiles.toml``), if it exists;
2. each file named by ``POSBRIDGE_PROFILES`` (``os.pathsep``-separated; these must exist).

Each file holds ``[[terminal]]`` tables with the keys documented in ``profiles.toml``. A row whose
vendor and model (case-insensitive) match an earlier row changes only the keys it gives; any other
row is added. The protocol is a plain name here: devices know no protocol; the application checks
it against its registry when it uses it.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .base import DeviceError

__all__ = ["ENV_VAR", "ProfileError", "TerminalProfile", "built_in_text", "find_profile", "load_profiles",
           "parse_profiles", "user_profile_paths"]

ENV_VAR = "POSBRIDGE_PROFILES"
BUILT_IN = "built-in"


class ProfileError(DeviceError):
    """A profiles file that cannot be read or has a bad row (the message names file and row)."""


@dataclass(frozen=True)
class TerminalProfile:
    """One terminal model. ``usb_product_ids`` empty with a vendor id set: any product matches."""

    vendor: str
    model: str
    protocol: str
    baud_rate: int = 115200
    usb_vendor_id: int | None = None
    usb_product_ids: tuple[int, ...] = ()
    port_pattern: str | None = None
    connection: str = ""
    notes: str = ""
    source: str = field(default=BUILT_IN, compare=False)  # the file the row (last) came from

    @property
    def key(self) -> tuple[str, str]:
        """What names the row: (vendor, model), case-insensitive."""
        return self.vendor.casefold(), self.model.casefold()

    @property
    def name(self) -> str:
        return f"{self.vendor} {self.model}"

    def matches_usb(self, vendor_id: int | None, product_id: int | None) -> bool:
        """True if a USB device (or USB serial port) with these ids is this model."""
        if self.usb_vendor_id is None or vendor_id != self.usb_vendor_id:
            return False
        return not self.usb_product_ids or product_id in self.usb_product_ids

    def matches_port(self, device: str) -> bool:
        """True if ``device`` (a serial port path) is one the vendor's driver creates for it."""
        return bool(self.port_pattern) and fnmatch.fnmatch(device, self.port_pattern or "")

    def usb_ids_text(self) -> str:
        if self.usb_vendor_id is None:
            return "not public (user-supplied)"
        products = "/".join(f"{p:04x}" for p in self.usb_product_ids) or "any"
        return f"{self.usb_vendor_id:04x}:{products}"


_KEYS = {f.name for f in fields(TerminalProfile)} - {"source"}
_STRINGS = ("vendor", "model", "protocol", "port_pattern", "connection", "notes")


def _id16(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ProfileError(f"{where}: {key} must be a USB id 0..0xFFFF (write it as 0x0B00), not {value!r}")
    return value


def _row_values(where: str, row: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(row) - _KEYS)
    if unknown:
        raise ProfileError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    values: dict[str, Any] = {}
    for key, value in row.items():
        if key in _STRINGS:
            if not isinstance(value, str) or (key in ("vendor", "model", "protocol") and not value.strip()):
                raise ProfileError(f"{where}: {key} must be a non-empty string, not {value!r}")
            values[key] = value.strip().lower() if key == "protocol" else value.strip()
        elif key == "baud_rate":
            if isinstance(value, bool) or not isinstance(value, int) or not 50 <= value <= 10_000_000:
                raise ProfileError(f"{where}: baud_rate must be a serial speed such as 115200, not {value!r}")
            values[key] = value
        elif key == "usb_vendor_id":
            values[key] = _id16(where, key, value)
        elif key == "usb_product_ids":
            if isinstance(value, int) and not isinstance(value, bool):
                value = [value]
            if not isinstance(value, list):
                raise ProfileError(f"{where}: usb_product_ids must be a list such as [0x0060], not {value!r}")
            values[key] = tuple(_id16(where, key, v) for v in value)
    return values


def parse_profiles(text: str, source: str, base: Iterable[TerminalProfile] = ()) -> list[TerminalProfile]:
    """Apply the ``[[terminal]]`` rows of TOML ``text`` (from ``source``) on top of ``base``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"terminal"})
    if extra:
        raise ProfileError(f"{source}: unknown table{'s' if len(extra) > 1 else ''} {', '.join(extra)}; "
                           "profiles are [[terminal]] tables")
    rows = data.get("terminal", [])
    if not isinstance(rows, list):
        raise ProfileError(f"{source}: write each profile as a [[terminal]] table (double brackets)")
    profiles = list(base)
    index = {p.key: i for i, p in enumerate(profiles)}
    for number, row in enumerate(rows, 1):
        where = f"{source}: [[terminal]] #{number}"
        vendor, model = row.get("vendor"), row.get("model")
        if isinstance(vendor, str) and isinstance(model, str):
            where += f" ({vendor.strip()} {model.strip()})"
        values = _row_values(where, row)
        if "vendor" not in values or "model" not in values:
            raise ProfileError(f"{where}: vendor and model are required (they name the row)")
        key = (values["vendor"].casefold(), values["model"].casefold())
        if key in index:
            old = profiles[index[key]]
            values.pop("vendor"), values.pop("model")  # keep the built-in spelling
            profile = replace(old, source=source, **values)
            profiles[index[key]] = profile
        else:
            if "protocol" not in values:
                raise ProfileError(f"{where}: protocol is required for a new model (e.g. \"inpas\")")
            profile = TerminalProfile(source=source, **values)
            index[key] = len(profiles)
            profiles.append(profile)
        if profile.usb_product_ids and profile.usb_vendor_id is None:
            raise ProfileError(f"{where}: usb_product_ids needs usb_vendor_id too")
    return profiles


def user_profile_paths(env: Mapping[str, str] | None = None) -> list[tuple[Path, bool]]:
    """The user's profile files in reading order, each with whether it must exist."""
    env = os.environ if env is None else env
    config_home = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    paths = [(Path(config_home) / "posbridge" / "profiles.toml", False)]
    for part in (env.get(ENV_VAR) or "").split(os.pathsep):
        if part.strip():
            paths.append((Path(part.strip()).expanduser(), True))
    return paths


def built_in_text() -> str:
    """The shipped ``profiles.toml``."""
    return resources.files(__package__).joinpath("profiles.toml").read_text(encoding="utf-8")


def load_profiles(
    paths: Iterable[str | os.PathLike[str]] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    user: bool = True,
) -> list[TerminalProfile]:
    """The built-in profiles, then the user's files (see the module docstring), then ``paths``.

    ``user=False`` skips the user's files (tests, reproducible runs). Raises ProfileError naming
    the file and row on a bad file; a file named by ``POSBRIDGE_PROFILES`` or ``paths`` must exist.
    """
    profiles = parse_profiles(built_in_text(), BUILT_IN)
    files = user_profile_paths(env) if user else []
    files += [(Path(p), True) for p in paths or ()]
    for path, required in files:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if required:
                raise ProfileError(f"profiles file {path} does not exist (named by {ENV_VAR} or the "
                                   "caller)") from None
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"cannot read profiles file {path}: {exc}") from None
        profiles = parse_profiles(text, str(path), profiles)
    return profiles


def find_profile(vendor: str, model: str, profiles: Iterable[TerminalProfile] | None = None) -> TerminalProfile | None:
    """The profile named ``vendor`` ``model`` (case-insensitive), or None."""
    key = (vendor.casefold(), model.casefold())
    for profile in load_profiles() if profiles is None else profiles:
        if profile.key == key:
            return profile
    return None

