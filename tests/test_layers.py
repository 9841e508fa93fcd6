"""DESIGN.md's import rules, enforced from the code's syntax tree (every import, lazy ones included).

- protocols/: wire formats, sans-IO. Imports inside it are relative and stay inside it; nothing of the
  application, no transport, no clock, no files, no threads, no event loop.
- devices/: byte transports. Relative imports inside it; no protocol, nothing of the application.
- posbridge/ (the application): imports the layers as ``posbridge.protocols`` / ``posbridge.devices``
  (one import package), never as top-level ``protocols`` / ``devices``; its rooms import downwards only.
- tests/ and benchmarks/: the installed names only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Modules protocols/ may not import: I/O, time, concurrency, the application, other layers.
SANS_IO_FORBIDDEN = {
    "asyncio", "socket", "selectors", "select", "threading", "multiprocessing", "concurrent", "subprocess",
    "time", "os", "pathlib", "io", "shutil", "tempfile", "sqlite3", "logging", "signal",
    "serial", "usb", "transitions", "prompt_toolkit",
    "posbridge", "protocols", "devices",
}
DEVICES_FORBIDDEN = {"posbridge", "protocols", "devices", "construct", "transitions", "prompt_toolkit"}

# Rooms of posbridge/ and what each may import of posbridge (besides itself). Front ends (cli,
# testing, http) sit on top and may use any room; nothing below imports them.
ROOM_MAY_IMPORT = {
    "model": {"protocols"},
    "pump": {"protocols", "devices"},
    "journal": {"model", "protocols"},
    "capture": {"protocols"},
    "ecr": {"capture", "journal", "model", "pump", "protocols", "devices"},
    "emulator": {"journal", "model", "pump", "protocols", "devices"},
    "bridge": {"ecr", "journal", "pump", "model", "protocols", "devices"},
}
FRONT_ENDS = {"cli", "testing", "http", "__init__", "__main__"}


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # absolute dotted name ("" for a bare relative "from . import x")
    level: int  # 0: absolute; n: n dots


def _imports(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name, 0)
        elif isinstance(node, ast.ImportFrom):
            yield Import(path, node.lineno, node.module or "", node.level)


def _python_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if not _under_symlink(p))


def _under_symlink(path: Path) -> bool:
    current = ROOT
    for part in path.relative_to(ROOT).parts[:-1]:
        current = current / part
        if current.is_symlink():
            return True
    return False


def _package_parts(path: Path, layer_root: Path) -> list[str]:
    """The dotted package of ``path`` inside its layer, as a list ('' layer root = [])."""
    parts = list(path.relative_to(layer_root).parts[:-1])
    return parts


def _where(imp: Import) -> str:
    return f"{imp.path.relative_to(ROOT)}:{imp.line}"


def _check_relative_layer(layer: str, forbidden: set[str]) -> list[str]:
    problems = []
    root = ROOT / layer
    for path in _python_files(layer):
        depth = len(_package_parts(path, root))
        for imp in _imports(path):
            if imp.level:
                if imp.level - 1 > depth:
                    problems.append(f"{_where(imp)}: relative import leaves {layer}/")
                continue
            top = imp.module.split(".")[0]
            if top in forbidden:
                problems.append(f"{_where(imp)}: {layer}/ imports {imp.module}")
    return problems


def test_protocols_are_sans_io_and_import_only_themselves() -> None:
    problems = _check_relative_layer("protocols", SANS_IO_FORBIDDEN)
    for path in _python_files("protocols"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: protocols/ opens a file")
    assert problems == []


def test_devices_know_no_protocol_and_import_only_themselves() -> None:
    assert _check_relative_layer("devices", DEVICES_FORBIDDEN) == []


def _room(path: Path) -> str:
    rel = path.relative_to(ROOT / "posbridge")
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_the_application_uses_one_import_package_and_its_rooms_import_downwards() -> None:
    problems = []
    for path in _python_files("posbridge"):
        room = _room(path)
        for imp in _imports(path):
            if imp.level:
                problems.append(f"{_where(imp)}: relative import in posbridge/ (write posbridge.…)")
                continue
            parts = imp.module.split(".")
            if parts[0] in ("protocols", "devices"):
                problems.append(f"{_where(imp)}: top-level {parts[0]} (write posbridge.{imp.module})")
            if parts[0] != "posbridge" or len(parts) < 2 or room in FRONT_ENDS:
                continue
            target = parts[1]
            if target != room and target not in ROOM_MAY_IMPORT.get(room, set()):
                problems.append(f"{_where(imp)}: posbridge/{room} imports posbridge.{target}")
    assert problems == []


@pytest.mark.parametrize("folder", ["tests", "benchmarks"])
def test_tests_and_benchmarks_import_the_installed_names(folder: str) -> None:
    problems = [
        f"{_where(imp)}: top-level {imp.module}"
        for path in _python_files(folder)
        if "toy" not in path.parts  # a protocol package of the tests' own may import relatively
        for imp in _imports(path)
        if imp.level == 0 and imp.module.split(".")[0] in ("protocols", "devices")
    ]
    assert problems == []


def test_posbridge_protocols_and_devices_are_the_top_level_folders() -> None:
    for name in ("protocols", "devices"):
        link = ROOT / "posbridge" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), name
