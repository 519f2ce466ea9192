"""tests/peers/teardown_deadline.py: a failed test's teardown cannot hang the run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

PEERS = Path(__file__).parent / "peers"

SUITE = """
import threading
import time
import pytest

@pytest.fixture
def server():
    started = threading.Event()
    yield started
    started.wait()  # as HTTPServer.shutdown() waits for a serve_forever() never run

@pytest.fixture
def quick():
    yield
    time.sleep(0.2)

def test_fails_before_starting(server):
    assert False, "failed before the server started"

def test_fails_with_a_quick_teardown(quick):
    assert False, "an ordinary failure"

def test_passes(quick):
    pass
"""


def test_teardown_deadline_fails_a_hanging_teardown_after_a_failure(
    pytester: pytest.Pytester,
) -> None:
    # Loaded by module name from tests/peers, as run_poorconn_suite.py loads it; a
    # deadline this short is only for the test (real teardowns get 20-60 s).
    pytester.syspathinsert(PEERS)
    pytester.makepyfile(SUITE)
    start = time.monotonic()
    result = pytester.runpytest_inprocess(
        "-p", "teardown_deadline", "--timeout", "60", "--teardown-deadline", "0.5"
    )
    elapsed = time.monotonic() - start
    # pytest-timeout's 60 s never fires there: it cancels its timer when a test fails.
    assert elapsed < 30, f"the run took {elapsed:.1f} s: the teardown was not cut"
    result.assert_outcomes(passed=1, failed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_fails_before_starting*",
            "*teardown after the failure did not end in 0.5 s*",
            "*in server*",  # the stack of the waiting fixture
            "*failed before the server started*",
            "*an ordinary failure*",
        ]
    )
