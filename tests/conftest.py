"""Suite-wide fixtures: every test is checked for leaked asyncio tasks, threads and file descriptors.

Modelled on pymodbus's ``test/conftest.py`` system-health check. A test that leaves something
running fails at teardown with a message naming what leaked:

- **asyncio tasks** still pending on the test's event loop once the test and its async fixtures have
  finished (pytest-asyncio's runner would otherwise cancel them silently when it closes the loop);
- **threads** started during the test and still alive after the test's event loop is closed;
- **file descriptors** (sockets, pipes, pseudo-terminals, files, SQLite journals) opened during the
  test and still open after it: an fd that only a garbage collection closes (an object left
  unreachable, not closed) is not counted, only one something still holds.

Each check waits a short grace period first (:data:`GRACE`), polling, so a task finishing its
cancellation, a thread being joined or a socket being closed by a callback is not a leak. What
the process keeps on purpose once started is started before the first test
(:func:`process_wide_resources`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: How long a check waits for tasks to finish, threads to end and descriptors to close (seconds;
#: ``POSBRIDGE_LEAK_GRACE`` overrides it: tests/test_leak_check.py runs leaking tests with less).
GRACE = float(os.environ.get("POSBRIDGE_LEAK_GRACE", "1.0"))
_POLL = 0.02
_FD_DIR = next((Path(p) for p in ("/proc/self/fd", "/dev/fd") if Path(p).is_dir()), None)


def open_descriptors() -> dict[int, str]:
    """This process's open file descriptors, each with what it refers to (a path, ``socket:[…]``)."""
    if _FD_DIR is None:
        return {}
    found: dict[int, str] = {}
    for name in os.listdir(_FD_DIR):
        try:
            found[int(name)] = os.readlink(_FD_DIR / name)
        except (OSError, ValueError):  # the listing's own descriptor, closed by now
            continue
    return found


def _new_descriptors(before: dict[int, str]) -> dict[int, str]:
    return {fd: target for fd, target in open_descriptors().items() if before.get(fd) != target}


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread not in before and thread.is_alive()]


def _wait_until(done: Callable[[], bool], grace: float = GRACE) -> bool:
    deadline = time.monotonic() + grace
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def _describe_thread(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    where = f" running {getattr(target, '__qualname__', target)!s}" if target is not None else ""
    return f"{thread.name!r}{' (daemon)' if thread.daemon else ''}{where}"


@pytest.fixture(autouse=True)
def no_leaked_threads_or_descriptors() -> Iterator[None]:
    """Fail a test that leaves a thread running or a file descriptor open (see the module docstring).

    Set up before and torn down after every other function-scoped fixture, the test's event loop
    included, so the loop's own executor threads and descriptors are gone by then.
    """
    threads_before = set(threading.enumerate())
    descriptors_before = open_descriptors()
    yield
    problems = []
    if not _wait_until(lambda: not _new_threads(threads_before)):
        problems.append("threads still running: " + ", ".join(map(_describe_thread, _new_threads(threads_before))))
    if _new_descriptors(descriptors_before):
        gc.collect()  # only what something still holds is a leak (module docstring)
        if not _wait_until(lambda: not _new_descriptors(descriptors_before)):
            leaked = _new_descriptors(descriptors_before)
            problems.append("file descriptors still open: "
                            + ", ".join(f"{fd} -> {target}" for fd, target in sorted(leaked.items())))
    if problems:
        pytest.fail("the test leaked " + "; ".join(problems), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def process_wide_resources() -> None:
    """Start, before the first test, what posbridge keeps for the whole process once started, so
    the leak check does not blame the first test that happens to start it: the fake USB backend's
    event-loop thread (``devices/fakeusb.py`` runs every fake terminal on one daemon loop)."""
    from posbridge.devices import fakeusb

    fakeusb._fake_loop()


def _test_loop(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoop | None:
    """The event loop pytest-asyncio runs this test on, or None for a test that is not async.

    pytest-asyncio provides it through a runner fixture per loop scope (``_function_scoped_runner``
    and so on); requesting it here makes this fixture's teardown run before the runner closes the
    loop (and cancels whatever is left on it).
    """
    if request.node.get_closest_marker("asyncio") is None:
        return None
    runners = [name for name in request.fixturenames if name.endswith("_scoped_runner")]
    if not runners:
        return None
    return request.getfixturevalue(runners[0]).get_loop()


def _pending_tasks(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks(loop) if not task.done()]


def _describe_task(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    where = f" at {Path(code.co_filename).name}:{code.co_firstlineno}" if code is not None else ""
    return f"{task.get_name()!r} ({getattr(coro, '__qualname__', coro)!s}{where})"


@pytest.fixture(autouse=True)
def no_leaked_tasks(request: pytest.FixtureRequest, no_leaked_threads_or_descriptors: None) -> Iterator[None]:
    """Fail an async test that leaves asyncio tasks pending once it and its fixtures are done.

    It depends on the thread and descriptor check so that check is set up first and torn down last,
    after the test's event loop is closed.
    """
    loop = _test_loop(request)
    yield
    if loop is None or loop.is_closed() or not _pending_tasks(loop):
        return
    deadline = time.monotonic() + GRACE
    while _pending_tasks(loop) and time.monotonic() < deadline:
        loop.run_until_complete(asyncio.sleep(_POLL))  # let tasks that are finishing finish
    leaked = _pending_tasks(loop)
    if leaked:
        pytest.fail("the test leaked asyncio tasks still pending after it ended: "
                    + ", ".join(map(_describe_task, leaked)), pytrace=False)
