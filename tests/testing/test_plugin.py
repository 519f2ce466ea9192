"""The sockwork pytest plugin, exercised through pytester (inner pytest runs)."""

from __future__ import annotations

import hypothesis  # noqa: F401 - see below
import pytest

# Inner runs load Hypothesis's pytest plugin, which imports hypothesis at the end of
# the run; pytester then unloads every module the inner run imported, so each run
# would import it anew (about a second). Importing it here keeps it loaded.

ECHO_SERVER = '''
import socket
import threading

import pytest


@pytest.fixture
def echo():
    """An echo server on 127.0.0.1:0 serving one connection at a time."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[:2]
    listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
    listener.close()
    thread.join(5)
'''


def test_header_shows_the_seed_given(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--sockwork-seed=1234")
    result.stdout.fnmatch_lines(["sockwork: --sockwork-seed=1234"])
    result.assert_outcomes(passed=1)


def test_header_shows_a_drawn_seed_without_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest()
    result.stdout.re_match_lines([r"sockwork: --sockwork-seed=\d+$"])


def test_seed_option_rejects_non_integers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--sockwork-seed=abc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--sockwork-seed*invalid int value*"])


def test_help_lists_the_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--sockwork-seed=SEED*"])


def test_fault_proxy_forwards_through_faults_and_closes_after_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(ECHO_SERVER)
    pytester.makepyfile(
        """
        import socket
        import time

        import pytest
        from sockwork.faults import Latency

        ADDRESSES = []


        def test_proxy(echo, fault_proxy):
            proxy = fault_proxy(echo)
            ADDRESSES.append(proxy.address)
            proxy.add(Latency(0.2), direction="downstream")
            with socket.create_connection(proxy.address, timeout=5) as client:
                start = time.monotonic()
                client.sendall(b"ping")
                assert client.recv(10) == b"ping"
                assert time.monotonic() - start >= 0.18


        def test_the_proxy_is_closed_after_its_test():
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(ADDRESSES[0], timeout=5)
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_fault_proxy_failure_prints_the_report_and_seed(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(ECHO_SERVER)
    pytester.makepyfile(
        """
        import socket

        from sockwork.faults import CloseAfter


        def test_proxy(echo, fault_proxy):
            proxy = fault_proxy(echo)
            proxy.add(CloseAfter(2), direction="downstream")
            with socket.create_connection(proxy.address, timeout=5) as client:
                client.sendall(b"hello")
                assert client.recv(10) == b"hello"  # fails: only b"he" comes back
        """
    )
    result = pytester.runpytest("--sockwork-seed=99")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- sockwork -*",
            "seed 99: replay with --sockwork-seed=99",
            "fault_proxy *",
            "*CloseAfter*",
        ]
    )


def test_passing_tests_print_no_report(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(ECHO_SERVER)
    pytester.makepyfile(
        """
        def test_proxy(echo, fault_proxy):
            fault_proxy(echo)
        """
    )
    result = pytester.runpytest("-rA")
    result.assert_outcomes(passed=1)
    assert "replay with" not in result.stdout.str()
