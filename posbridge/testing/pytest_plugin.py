"""pytest plugin (installed with posbridge, found through the ``pytest11`` entry point): a virtual
terminal for testing cash-register code.

``posbridge_terminal`` — for *your* register code, blocking or async (no pytest-asyncio needed):
a :class:`~posbridge.testing.background.BackgroundTerminal` running in a thread of its own. Open
``posbridge_terminal.port`` as your code opens a real terminal (``serial.Serial(port)`` for a pty,
``serial.serial_for_url(port)`` for pty and tcp); nothing else talks on the line::

    @pytest.mark.posbridge(protocol="inpas", transport="pty", card="insufficient_funds")
    def test_declined_sale(posbridge_terminal):
        posbridge_terminal.control.decline_next("51")
        assert my_register.pay(posbridge_terminal.port, 150_00) == "declined"
        assert posbridge_terminal.operations()[-1].code == "51"

``posbridge_replay`` — a capture (``--record FILE``) as a regression test:
``posbridge_replay("captures/monday.jsonl")`` fails unless a fresh virtual terminal answers the same.

``posbridge_link`` — for tests of posbridge's own client (async; needs pytest-asyncio): a
:class:`~posbridge.testing.TerminalLink`, a virtual terminal with a connected ``EcrClient``.

Marker ``@pytest.mark.posbridge(protocol=, transport=, scenario=, card=, seed=, faults=, control=)``
sets both fixtures up per test (``posbridge_link`` reads protocol and transport); options
``--posbridge-protocol`` and ``--posbridge-transport`` set the defaults for a whole run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from posbridge.testing.harness import TRANSPORTS

if TYPE_CHECKING:  # imported where used: pytest starts without loading the emulator
    from posbridge.emulator.scenario import Scenario
    from posbridge.testing.background import BackgroundTerminal

MARKER_KEYS = ("protocol", "transport", "scenario", "card", "seed", "faults", "control")
MARKER_HELP = ("posbridge(protocol='inpas'|'arcus2', transport='pty'|'tcp'|'virtual', scenario=PATH|dict, "
               "card=NAME_OR_NUMBER|[...], seed=INT, faults=SPEC, control=BOOL): the virtual terminal of "
               "posbridge_terminal (protocol and transport also posbridge_link)")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Run-wide defaults for the fixtures' protocol and transport."""
    group = parser.getgroup("posbridge")
    group.addoption("--posbridge-protocol", default="inpas",
                    help="protocol of the posbridge fixtures (inpas, arcus2; default inpas)")
    group.addoption("--posbridge-transport", default=None, choices=TRANSPORTS,
                    help="transport of the posbridge fixtures (default: posbridge_terminal pty where the OS "
                         "has pseudo-terminals, else tcp; posbridge_link virtual)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    if config.pluginmanager.has_plugin("asyncio"):  # installed and not disabled with -p no:asyncio
        config.pluginmanager.import_plugin("posbridge.testing.asyncio_fixtures")
    else:
        config.pluginmanager.register(_NoAsyncLink(), "posbridge-link")


def marker_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The marker's keyword arguments (closest marker wins), checked."""
    settings: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("posbridge"))):  # closest last: it overrides
        if marker.args:
            pytest.fail(f"@pytest.mark.posbridge takes keyword arguments only ({', '.join(MARKER_KEYS)})",
                        pytrace=False)
        settings.update(marker.kwargs)
    unknown = sorted(set(settings) - set(MARKER_KEYS))
    if unknown:
        pytest.fail(f"@pytest.mark.posbridge: {unknown[0]} is not a setting (settings: {', '.join(MARKER_KEYS)})",
                    pytrace=False)
    return settings


def _beside_test(path: str | os.PathLike[str], request: pytest.FixtureRequest) -> Path:
    """A relative file path as found beside the test file, then from the rootdir (else as given)."""
    given = Path(path)
    if not given.is_absolute():
        for base in (Path(request.path).parent, Path(str(request.config.rootpath))):
            if (base / given).is_file():
                return base / given
    return given


def _scenario(value: Any, request: pytest.FixtureRequest) -> Scenario | str | Mapping[str, Any] | None:
    """A scenario path is looked up beside the test file, then from the rootdir."""
    if value is None or isinstance(value, Mapping):
        return value
    if isinstance(value, (str, os.PathLike)):
        path = _beside_test(value, request)
        if not path.is_file():
            pytest.fail(f"@pytest.mark.posbridge: scenario file {value} not found (beside the test file or "
                        "from the rootdir)", pytrace=False)
        return str(path)
    return value  # a Scenario object


@pytest.fixture
def posbridge_terminal(request: pytest.FixtureRequest) -> Iterator[BackgroundTerminal]:
    """A running virtual terminal for your register code (see the module docstring): ``.port`` to
    open, ``.control`` to steer, ``.operations()`` / ``.batch()`` to assert on."""
    from posbridge.testing.background import BACKGROUND_TRANSPORTS, BackgroundTerminal

    settings = marker_settings(request)
    transport = settings.get("transport") or request.config.getoption("--posbridge-transport") or \
        ("pty" if hasattr(os, "openpty") else "tcp")
    if transport not in BACKGROUND_TRANSPORTS:
        pytest.fail(f"posbridge_terminal: transport must be one of {', '.join(BACKGROUND_TRANSPORTS)}, "
                    f"not {transport!r}", pytrace=False)
    cards = settings.get("card") or ()
    if isinstance(cards, str):
        cards = (cards,)
    try:
        terminal = BackgroundTerminal(
            settings.get("protocol") or request.config.getoption("--posbridge-protocol"),
            transport=transport, scenario=_scenario(settings.get("scenario"), request), cards=cards,
            seed=settings.get("seed"), faults=settings.get("faults"),
            control_address="127.0.0.1:0" if settings.get("control") else None)
    except (ValueError, LookupError) as error:  # a bad scenario, card, fault spec or protocol: one line
        pytest.fail(f"posbridge_terminal: {error}", pytrace=False)
    with terminal:
        yield terminal


@pytest.fixture
def posbridge_replay(request: pytest.FixtureRequest) -> Callable[..., None]:
    """A capture from the field as a regression test: ``posbridge_replay("captures/monday.jsonl")``
    replays the capture's requests against a fresh virtual terminal and fails, listing every
    difference, unless each answer matches the recorded one (a relative path is looked up beside
    the test file, then from the rootdir; keyword arguments go to the virtual terminal)."""
    from posbridge.testing.capture import posbridge_replay as replay

    def run(path: str | os.PathLike[str], **options: Any) -> None:
        replay(_beside_test(path, request), **options)
    return run


class _NoAsyncLink:
    """``posbridge_link`` without pytest-asyncio: a clear error in place of pytest's generic one."""

    @pytest.fixture(name="posbridge_link")
    def posbridge_link(self) -> None:
        """Needs pytest-asyncio (an async fixture)."""
        pytest.fail("posbridge_link is an async fixture for posbridge's own EcrClient: pip install pytest-asyncio "
                    "and set asyncio_mode = auto (or mark the test @pytest.mark.asyncio); for register code, "
                    "blocking or not, use posbridge_terminal", pytrace=False)
