"""pytest plugin: the teardown of a failed test gets a deadline, as a passing test's has.

pytest-timeout (2.x) cancels its timer in ``pytest_exception_interact`` so that a
debugger session is not interrupted, and pytest calls that hook for every failed
setup or call, with or without ``--pdb``. The teardown after a failure therefore
runs with no timeout at all, and a fixture that waits for something the failed
test never started waits for ever. poorconn 0.2.1's ``http_server`` fixture does:
its teardown calls ``HTTPServer.shutdown()``, which waits for ``serve_forever()``
to end; when the test fails before it started the server thread (its ``id()``
checks come first), that wait has no end, and the whole run hung until the cap
of ``run_poorconn_suite.py``.

This plugin arms ``SIGALRM`` for such a teardown (``--teardown-deadline``, else
the test's own timeout as set for pytest-timeout: marker, ``--timeout`` or the
``timeout`` ini value; 60 s when none), prints every thread's stack when it
fires and fails the teardown with a message that says so; the run then goes on
and ends with pytest's usual report.
The signal interrupts ``Lock.acquire()``, ``Event.wait()`` and ``Thread.join()``.
sockwork's own suite loads it too (tests/conftest.py); run_poorconn_suite.py
loads it into poorconn's suite by module name, without touching the suite.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
from collections.abc import Generator
from types import FrameType

import pytest

__all__ = [
    "DEFAULT_DEADLINE",
    "pytest_addoption",
    "pytest_runtest_makereport",
    "pytest_runtest_teardown",
]

DEFAULT_DEADLINE = 60.0
_FAILED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--teardown-deadline``."""
    parser.addoption(
        "--teardown-deadline",
        type=float,
        default=None,
        metavar="SECONDS",
        help="fail the teardown of a failed test after SECONDS (default: its timeout)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember that the setup or the call of ``item`` failed."""
    report = yield
    if call.when in ("setup", "call") and report.failed:
        item.stash[_FAILED] = True
    return report


def _deadline(item: pytest.Item) -> float:
    """--teardown-deadline, else the item's timeout as pytest-timeout reads it, else 60 s."""
    chosen = item.config.getoption("teardown_deadline")
    if chosen is not None and chosen > 0:
        return float(chosen)
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        value = marker.args[0]
    else:
        value = item.config.getoption("timeout", None)
        if value is None:
            try:
                value = item.config.getini("timeout")
            except ValueError:  # pytest-timeout not loaded: no such ini key
                value = None
    try:
        seconds = float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        seconds = 0.0
    return seconds if seconds > 0 else DEFAULT_DEADLINE


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """Bound the teardown of a failed test with SIGALRM (main thread only)."""
    failed = item.stash.get(_FAILED, False)
    if not failed or threading.current_thread() is not threading.main_thread():
        return (yield)
    deadline = _deadline(item)

    def expire(signum: int, frame: FrameType | None) -> None:
        sys.stderr.write(f"\n+++ teardown of failed {item.nodeid}: {deadline:g} s passed\n")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        pytest.fail(
            f"teardown after the failure did not end in {deadline:g} s (stacks on stderr); "
            "a fixture waits for something the failed test never started",
            pytrace=False,
        )

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, deadline)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
