"""The pytest surface of exploration: the netfaults_explore marker and --sockwork-explore."""

from __future__ import annotations

import re

import pytest

import sockwork.faults  # noqa: F401 - keep one copy of the engine loaded (see test_plugin.py)
import sockwork.faults.exploration  # noqa: F401 - same
import sockwork.testing.contract  # noqa: F401 - same

# A quote service and two clients of it: one reads a reply with one recv() (the bug),
# the other reads exactly what the header announces. Both pass without faults.
PROGRAM = """
import socket
import struct
import threading

import pytest

from sockwork.testing.contract import contract

QUOTE = b"I can resist everything except temptation. " * 20


def recv_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed mid-message")
        data += chunk
    return data


def serve_one(listener):
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    with conn:
        conn.settimeout(1.0)
        try:
            recv_exactly(conn, 5)
            conn.sendall(struct.pack("!I", len(QUOTE)) + QUOTE)
        except OSError:
            pass


def ask(read_reply):
    listener = socket.create_server(("127.0.0.1", 0))
    server = threading.Thread(target=serve_one, args=(listener,), daemon=True)
    server.start()
    try:
        with contract(ConnectionError, TimeoutError, within=3.0):
            with socket.create_connection(listener.getsockname(), timeout=1.0) as sock:
                sock.sendall(b"wilde")
                assert read_reply(sock) == QUOTE
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        server.join(2.0)


def naive(sock):
    data = sock.recv(65536)
    (size,) = struct.unpack("!I", data[:4])
    return data[4 : 4 + size]


def careful(sock):
    (size,) = struct.unpack("!I", recv_exactly(sock, 4))
    return recv_exactly(sock, size)
"""


def test_marker_finds_the_bug_and_fails_with_the_reproduction(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        PROGRAM
        + """
@pytest.mark.netfaults_explore(budget=50, time=30)
def test_naive_client():
    ask(naive)
"""
    )
    result = pytester.runpytest("--sockwork-seed=3")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "sockwork explore found a failing schedule after" in out
    assert "reproduce with pytest:" in out
    assert re.search(r"@pytest\.mark\.netfaults\(Slice\(.*seed=3", out), out
    assert "with inject(Slice(" in out
    assert "test_naive_client()" in out
    assert "sockwork run " in out
    assert "contract broken" in out


@pytest.mark.slow
def test_marker_passes_a_correct_client(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        PROGRAM
        + """
@pytest.mark.netfaults_explore(budget=40, time=30)
def test_careful_client():
    ask(careful)
"""
    )
    result = pytester.runpytest("-rA")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines(
        [r".*sockwork explore.*", r"no failing schedule in \d+ run\(s\).*"]
    )


@pytest.mark.slow
def test_option_explores_every_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        PROGRAM
        + """
def test_naive_client():
    ask(naive)

def test_arithmetic():
    assert 1 + 1 == 2
"""
    )
    plain = pytester.runpytest()
    plain.assert_outcomes(passed=2)
    explored = pytester.runpytest("--sockwork-explore=30")
    explored.assert_outcomes(passed=1, failed=1)
    explored.stdout.fnmatch_lines(["*FAILED*test_naive_client*"])


def test_option_budget_is_the_schedule_limit(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        PROGRAM
        + """
def test_careful_client():
    ask(careful)
"""
    )
    result = pytester.runpytest("--sockwork-explore=7", "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"no failing schedule in 7 run\(s\).*"])


@pytest.mark.slow
def test_marker_faults_restrict_the_kinds(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        PROGRAM
        + """
@pytest.mark.netfaults_explore(budget=30, faults=["Refuse"])
def test_naive_client():
    ask(naive)
"""
    )
    result = pytester.runpytest("-rA")
    # Refused connections are a clean error for this contract: the one-recv bug stays hidden.
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r".*fault kinds tried: Refuse$"])


def test_marker_on_a_test_without_network_io_fails_saying_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import pytest

@pytest.mark.netfaults_explore(budget=10)
def test_no_network():
    assert sum([1, 2]) == 3
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*netfaults_explore: the test did no network I/O*"])


def test_marker_on_a_test_that_fails_without_faults_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        PROGRAM
        + """
@pytest.mark.netfaults_explore(budget=10)
def test_wrong_expectation():
    ask(lambda sock: b"nothing")
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*already fails without faults*"])


@pytest.mark.slow
def test_fixtures_are_set_up_once_for_the_exploration(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        PROGRAM
        + """
SETUPS = []

@pytest.fixture
def counted():
    SETUPS.append(1)
    return len(SETUPS)

@pytest.mark.netfaults_explore(budget=5)
def test_careful_client(counted):
    assert counted == 1
    ask(careful)

def test_one_setup():
    assert SETUPS == [1]
"""
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sockwork-explore=0"], "at least 1"),
        (["--sockwork-explore=x"], "--sockwork-explore"),
    ],
)
def test_option_bad_budget_is_a_usage_error(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("netfaults_explore(budjet=3)", "unknown option(s) budjet"),
        ("netfaults_explore(30)", "keyword arguments only"),
        ('netfaults_explore(faults=["Bogus"])', "Bogus"),
        ("netfaults_explore(budget=0)", "budget"),
    ],
)
def test_marker_bad_options_fail_the_test_saying_why(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    pytester.makepyfile(
        PROGRAM
        + f"""
@pytest.mark.{marker}
def test_careful_client():
    ask(careful)
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*netfaults_explore: *{message}*"])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.netfaults_explore(budget=200, time=60, *"])


@pytest.mark.slow
def test_same_seed_same_reproduction(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        PROGRAM
        + """
@pytest.mark.netfaults_explore(budget=50)
def test_naive_client():
    ask(naive)
"""
    )
    outputs = []
    for _ in range(2):
        result = pytester.runpytest("--sockwork-seed=11")
        result.assert_outcomes(failed=1)
        outputs.append(re.findall(r"@pytest\.mark\.netfaults\(.*\)", result.stdout.str()))
    assert outputs[0] and outputs[0] == outputs[1]
