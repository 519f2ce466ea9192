"""The sockwork pytest plugin, exercised through pytester (inner pytest runs)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401 - see below
import pytest

import sockwork.compat.poorconn  # noqa: F401 - see below
import sockwork.faults  # noqa: F401 - see below
import sockwork.proxy  # noqa: F401 - see below
from tests.compat.test_poorconn_server import needs_ipv6

# pytester unloads every module an inner run imported. Hypothesis's plugin imports
# hypothesis at the end of each run (about a second), and our fixtures import the
# fault engine lazily: a fresh copy per run would be slow, and a second copy of the
# engine must never coexist with the first. Importing them here keeps them loaded.

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
    result.stderr.fnmatch_lines(["*--sockwork-seed: seed must be a whole number, not 'abc'"])


def test_seed_option_rejects_unicode_digits(pytester: pytest.Pytester) -> None:
    # int() reads "٣" as 3: a seed that is not the one typed would not replay anything.
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--sockwork-seed=٣")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--sockwork-seed: seed must be a whole number, not '٣'"])


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


# --- netfaults ---------------------------------------------------------------------------


def test_netfaults_injects_into_new_connections_and_undoes_after_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import socket
        import time

        from sockwork.faults import Latency


        def _timed_exchange():
            with socket.create_server(("127.0.0.1", 0)) as listener:
                with socket.create_connection(listener.getsockname()[:2], timeout=5) as client:
                    conn, _ = listener.accept()
                    with conn:
                        start = time.monotonic()
                        client.sendall(b"ping")
                        assert conn.recv(10) == b"ping"
                        return time.monotonic() - start


        def test_slow(netfaults):
            handle = netfaults.inject(Latency(0.2))
            assert netfaults.handles == (handle,)
            assert _timed_exchange() >= 0.18


        def test_fast_again():
            assert _timed_exchange() < 0.15
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_netfaults_marker_injects_for_the_whole_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket

        import pytest
        from sockwork.faults import Match, Refuse


        @pytest.mark.netfaults(Refuse(), match=Match(role="client"))
        def test_refused():
            with socket.create_server(("127.0.0.1", 0)) as listener:
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(listener.getsockname()[:2], timeout=5)


        @pytest.mark.netfaults(Refuse())
        def test_marker_and_fixture_share_the_scopes(netfaults):
            assert len(netfaults.handles) == 1
            assert netfaults.handles[0].faults == (Refuse(),)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)


def test_netfaults_marker_with_a_bad_fault_is_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest


        @pytest.mark.netfaults("not a fault")
        def test_it():
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*TypeError: not a fault: 'not a fault'*"])


def test_netfaults_failure_prints_the_report_and_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket

        from sockwork.faults import CloseAfter


        def test_cut(netfaults):
            netfaults.inject(CloseAfter(3, direction="recv"))
            with socket.create_server(("127.0.0.1", 0)) as listener:
                with socket.create_connection(listener.getsockname()[:2], timeout=5) as client:
                    conn, _ = listener.accept()
                    with conn:
                        conn.sendall(b"hello")
                        assert client.recv(10) == b"hello"  # fails: b"hel"
        """
    )
    result = pytester.runpytest("--sockwork-seed=5")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- sockwork -*",
            "seed 5: replay with --sockwork-seed=5",
            "sockwork faults report (seed=5)*",
            "*close: CloseAfter*",
        ]
    )


SHORT_WRITES = """
import socket

from sockwork.faults import Slice


def test_short_writes(netfaults):
    netfaults.inject(Slice(64, direction="send"))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()[:2], timeout=5) as client:
            conn, _ = listener.accept()
            with conn:
                sizes = [client.send(bytes(100)) for _ in range(8)]
    assert all(1 <= size <= 64 for size in sizes)
    print("SIZES", sizes)
"""


def _short_write_sizes(pytester: pytest.Pytester, seed: int) -> str:
    result = pytester.runpytest("-s", f"--sockwork-seed={seed}")
    result.assert_outcomes(passed=1)
    (line,) = [line[line.index("SIZES") :] for line in result.stdout.lines if "SIZES" in line]
    return line


def test_the_seed_replays_the_same_random_choices(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SHORT_WRITES)
    first = _short_write_sizes(pytester, 11)
    assert _short_write_sizes(pytester, 11) == first
    others = {_short_write_sizes(pytester, seed) for seed in (12, 13)}
    assert others != {first}


# --- poorconn_http_server -------------------------------------------------------------------

POORCONN_TESTS = """
import dataclasses
import time
import urllib.request

import pytest


def fetch(server, path):
    start = time.monotonic()
    with urllib.request.urlopen(server.url + path, timeout=10) as response:
        body = response.read()
    return time.monotonic() - start, body


@pytest.mark.poorconn_http_server_config(port=0, t=0.1, length=100)
def test_slowed_down(poorconn_http_server, tmp_path):
    (tmp_path / "f.txt").write_bytes(b"x" * 250)
    elapsed, body = fetch(poorconn_http_server, "/f.txt")
    assert body == b"x" * 250
    assert elapsed >= 0.45  # headers (2 chunks) + body (3 chunks), 0.1 s before each
    with pytest.raises(dataclasses.FrozenInstanceError):
        poorconn_http_server.url = "elsewhere"
    print("SERVER", type(poorconn_http_server.server).__module__, poorconn_http_server.url)


@pytest.mark.poorconn_http_server_config("::1", 1, 5, 5, port=0, t=0)
def test_positional_marker_arguments_are_ignored(poorconn_http_server, tmp_path):
    (tmp_path / "f.txt").write_bytes(b"fast")
    elapsed, body = fetch(poorconn_http_server, "/f.txt")
    assert body == b"fast"
    assert elapsed < 2.0  # honoured, the positional t=5 would hold each 5-byte chunk 5 s
    assert poorconn_http_server.url.startswith("http://127.0.0.1:")
"""


def _server_lines(result: pytest.RunResult) -> list[str]:
    return [line[line.index("SERVER") :] for line in result.stdout.lines if "SERVER " in line]


@pytest.mark.parametrize("args", [(), ("-p", "no:poorconn")], ids=["both-plugins", "ours-only"])
def test_poorconn_http_server_is_ours(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    pytester.makepyfile(POORCONN_TESTS)
    result = pytester.runpytest("-s", *args)
    result.assert_outcomes(passed=2)
    (line,) = _server_lines(result)
    module, url = line.split()[1:3]
    assert module == "sockwork.compat.poorconn.server"
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":8080")


def test_poorconn_http_server_is_poorconns_without_our_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest


        @pytest.mark.poorconn_http_server_config(port=0, t=0)
        def test_theirs(poorconn_http_server):
            print("SERVER", type(poorconn_http_server.server).__module__)
        """
    )
    result = pytester.runpytest("-s", "-p", "no:sockwork")
    result.assert_outcomes(passed=1)
    assert _server_lines(result) == ["SERVER poorconn.pytest_plugin._impl"]


@needs_ipv6
def test_poorconn_http_server_on_ipv6(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import urllib.request

        import pytest


        @pytest.mark.poorconn_http_server_config(address="::1", t=0)
        def test_v6(poorconn_http_server, tmp_path):
            (tmp_path / "f.txt").write_bytes(b"six")
            assert poorconn_http_server.url.startswith("http://[::1]:")
            with urllib.request.urlopen(poorconn_http_server.url + "/f.txt", timeout=5) as r:
                assert r.read() == b"six"
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("port=-1000", "OverflowError: port must be 0-65535, got -1000"),
        ("address='no-such-host.invalid', port=0", "gaierror"),
    ],
)
def test_poorconn_marker_errors_are_fixture_errors(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    pytester.makepyfile(
        f"""
        import pytest


        @pytest.mark.poorconn_http_server_config({marker})
        def test_it(poorconn_http_server):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{message}*"])


def test_poorconn_defaults_are_poorconns(monkeypatch: pytest.MonkeyPatch) -> None:
    from sockwork.compat.poorconn import server as server_module
    from sockwork.compat.poorconn.pytest_plugin import _impl
    from sockwork.testing.plugin import poorconn_server

    calls: list[dict[str, object]] = []

    @contextlib.contextmanager
    def fake_serve(directory: object, **kwargs: object) -> Iterator[str]:
        calls.append(kwargs)
        yield "server"

    monkeypatch.setattr(server_module, "serve", fake_serve)
    node = types.SimpleNamespace(get_closest_marker=lambda name: None)  # no marker
    request = types.SimpleNamespace(node=node)
    with poorconn_server(request, Path(".")) as server:  # type: ignore[arg-type]
        assert server == "server"
    (kwargs,) = calls
    assert (kwargs["host"], kwargs["port"], kwargs["threaded"]) == ("localhost", 8080, False)
    assert kwargs["log_requests"] is True
    defaults = _impl._PoorConnHTTPServerDefault
    assert (defaults.ADDRESS, defaults.PORT, defaults.T, defaults.LENGTH) == (
        "localhost",
        8080,
        1,
        1024,
    )


@pytest.mark.parametrize("entry_points", [True, False], ids=["entry-points", "no-entry-points"])
def test_poorconn_pytest_plugins_line_keeps_working(
    pytester: pytest.Pytester, entry_points: bool
) -> None:
    # Without poorconn's and sockwork's entry-point plugins, the module named in
    # pytest_plugins alone provides the fixture and the marker.
    name = "sockwork.compat.poorconn.pytest_plugin"
    pytester.makepyfile(
        f"""
        pytest_plugins = [{name!r}]

        import pytest


        @pytest.mark.poorconn_http_server_config(port=0, t=0)
        def test_it(poorconn_http_server, tmp_path):
            print("SERVER", type(poorconn_http_server.server).__module__)
        """
    )
    args = () if entry_points else ("-p", "no:sockwork", "-p", "no:poorconn")
    result = pytester.runpytest("-s", "--strict-markers", *args)
    result.assert_outcomes(passed=1)
    assert _server_lines(result) == ["SERVER sockwork.compat.poorconn.server"]


def test_the_marker_is_listed_once_with_both_plugins(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["sockwork.compat.poorconn.pytest_plugin"]')
    result = pytester.runpytest("--markers", "-p", "no:poorconn")
    lines = [line for line in result.stdout.lines if "poorconn_http_server_config(" in line]
    assert len(lines) == 1


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers", "-p", "no:poorconn")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.netfaults(*faults, match=None, seed=None):*",
            "@pytest.mark.poorconn_http_server_config(address, port, t, length):*",
        ]
    )


def test_loading_the_plugin_imports_no_engine() -> None:
    # The plugin loads in every pytest run where sockwork is installed.
    code = (
        "import sys, pytest, sockwork.testing.plugin; "
        "print(sorted({'sockwork.faults', 'sockwork.proxy', 'sockwork.compat.poorconn', "
        "'asyncio', 'hypothesis'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
