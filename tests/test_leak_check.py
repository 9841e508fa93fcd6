"""The suite's leak check (tests/conftest.py) fails tests that leak, names what leaked, and lets
clean tests, finishing tasks and executor threads pass."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")

LEAKY_TESTS = '''
import asyncio, socket, threading, time

KEPT = []

async def test_leaks_a_task():
    asyncio.get_running_loop().create_task(asyncio.sleep(60), name="forgotten-sleeper")

def test_leaks_a_thread():
    threading.Thread(target=time.sleep, args=(5,), name="forgotten-thread", daemon=True).start()

def test_leaks_a_socket():
    KEPT.append(socket.socket())

async def test_a_task_that_ends_within_the_grace_period():
    asyncio.get_running_loop().create_task(asyncio.sleep(0.05))

async def test_the_loops_executor_threads():
    await asyncio.to_thread(time.sleep, 0.01)

def test_a_thread_joined_late():
    thread = threading.Thread(target=time.sleep, args=(0.1,))
    thread.start()

def test_clean():
    socket.socket().close()
'''


@pytest.mark.timeout(120)
def test_the_leak_check_fails_exactly_the_leaking_tests(pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSBRIDGE_LEAK_GRACE", "0.3")  # each leaking test waits out the grace period
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:posbridge")
    result.assert_outcomes(passed=7, errors=3)
    result.stdout.fnmatch_lines_random([
        "*ERROR at teardown of test_leaks_a_task*",
        "*leaked asyncio tasks*'forgotten-sleeper'*",
        "*leaked threads still running: 'forgotten-thread' (daemon)*",
        "*leaked file descriptors still open: * -> socket:*",
    ])
