"""What the wheel installs: one top-level import package, ``posbridge``, so that a project with its
own ``devices/`` or ``protocols/`` runs pytest in an environment where posbridge (and its auto-loaded
pytest plugin) is installed.

The environment is real: the wheel is built by pip from this checkout, installed into a fresh virtual
environment, and pytest runs in a subprocess from the foreign project's folder. The dependencies come
from this interpreter's site-packages through a ``.pth`` file (no network, seconds instead of a pip
resolve); posbridge's own editable install is left out of it so that only the wheel provides posbridge.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the tree: setuptools writes build/ into the source folder, and two test
    # workers (pytest-xdist) building from one folder at once trip over each other's files.
    source = tmp_path_factory.mktemp("source") / "posbridge"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".hypothesis", ".mypy_cache", ".pytest_cache"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    (built,) = out.glob("posbridge-*.whl")
    return built


def test_the_wheel_has_one_top_level_import_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
        (dist_info,) = {name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info")}
        declared = archive.read(f"{dist_info}/top_level.txt").decode().split() \
            if f"{dist_info}/top_level.txt" in names else ["posbridge"]
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert top_level == {"posbridge"}
    assert declared == ["posbridge"]
    # the layers are inside it, as real files (the repository's symlinks resolved), with their data
    for needed in ("posbridge/protocols/inpas/frame.py", "posbridge/protocols/arcus2/frame.py",
                   "posbridge/devices/tcp.py", "posbridge/devices/profiles.toml", "posbridge/py.typed"):
        assert needed in names, needed
    assert "posbridge = posbridge.testing.pytest_plugin" in entry_points
    assert "posbridge = posbridge.cli.main:main" in entry_points


def _environment_with(wheel: Path, where: Path) -> Path:
    """A fresh venv: the wheel installed, the test dependencies reachable, no editable posbridge."""
    env_dir = where / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # Dependencies: every entry of this interpreter's site-packages except posbridge's own, linked
    # into one folder that the new environment reads through a .pth file.
    deps = where / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.startswith(("posbridge", "__editable__", "_posbridge")) or entry.suffix == ".pth":
            continue
        (deps / entry.name).symlink_to(entry)
    (site / "posbridge-test-deps.pth").write_text(f"{deps}\n")
    with zipfile.ZipFile(wheel) as archive:  # installing a wheel is unpacking it into site-packages
        archive.extractall(site)
    return python


def test_a_project_with_its_own_devices_and_protocols_runs_pytest_beside_posbridge(
        wheel: Path, tmp_path: Path) -> None:
    python = _environment_with(wheel, tmp_path)
    project = tmp_path / "register"
    for package in ("devices", "protocols"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(f'OWNER = "the register project\'s {package}"\n')
    (project / "tests").mkdir()
    (project / "tests" / "test_register.py").write_text(textwrap.dedent('''
        import devices
        import protocols

        import posbridge.devices
        import posbridge.protocols


        def test_the_project_keeps_its_own_packages():
            assert devices.OWNER == "the register project's devices"
            assert protocols.OWNER == "the register project's protocols"
            assert posbridge.protocols.names() == ["arcus2", "inpas"]
            assert posbridge.devices.__file__.startswith(posbridge.__path__[0])


        async def test_the_plugin_serves_a_sale(posbridge_link):
            result = await posbridge_link.client.sale(150_00)
            assert result.approved
        '''))
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\nasyncio_mode = "auto"\n')
    done = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
    # and posbridge came from the wheel, not from this checkout
    where = subprocess.run([str(python), "-c", "import posbridge; print(posbridge.__file__)"], cwd=project,
                           capture_output=True, text=True, check=True).stdout
    assert str(ROOT) not in where and "site-packages" in where
