"""``python -m sockwork.compat.poorconn``: poorconn's CLI, as poorconn's behaves."""

from __future__ import annotations

import http.client
import importlib
import os
import re
import runpy
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sockwork.compat.poorconn._cli import main
from tests.compat.test_poorconn_server import needs_ipv6

T = 0.1
# Upper tolerance for a request to a server in another process on a loaded machine; the
# lower bounds (the delays themselves) are the real checks, and a delay per 100 bytes
# instead of per 1000 (3 s) still fails.
SLACK = 1.5
BODY = bytes(range(256)) * 11 + bytes(184)  # 3000 bytes


@contextmanager
def running(
    directory: Path, *args: str, stderr: list[str] | None = None
) -> Iterator[tuple[str, int]]:
    """Run the CLI in ``directory`` on a free port; yield (host, port); stop it with Ctrl-C.

    The server's stderr is appended to ``stderr`` once it has stopped.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "sockwork.compat.poorconn", "-p", "0", *args],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r" at (http://\S+)/ with ", line)
        assert match, f"unexpected first line {line!r}; stderr: {process.stderr.read()}"  # type: ignore[union-attr]
        url = urlsplit(match.group(1))
        assert url.hostname is not None and url.port is not None
        yield url.hostname, url.port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            # Killed and reaped here: a process left running failed later tests too
            # (unraisable ResourceWarnings of its Popen and pipes).
            process.kill()
            process.communicate()
            raise
    if stderr is not None:
        stderr.append(err)
    assert process.returncode == 0, err
    assert "Traceback" not in err


def get(address: tuple[str, int], path: str) -> tuple[float, int, bytes]:
    """GET path; return (seconds, status, body)."""
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        start = time.monotonic()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return time.monotonic() - start, response.status, body
    finally:
        conn.close()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "file.bin").write_bytes(BODY)
    return tmp_path


def test_delay_before_sending_upon_acceptance_slows_down_responses(site: Path) -> None:
    with running(
        site,
        "-H",
        "127.0.0.1",
        "delay_before_sending_upon_acceptance",
        "--t",
        str(T),
        "--length",
        "1000",
    ) as address:
        elapsed, status, body = get(address, "/file.bin")
    assert (status, body) == (200, BODY)
    # headers (one short chunk) + 3000 body bytes in 1000-byte chunks, T before each
    assert 4 * T * 0.9 <= elapsed < 4 * T + SLACK


@pytest.mark.parametrize(
    ("command", "options"),
    [("delay_before_sending", ["--length", "10"]), ("delay_before_sending_once", [])],
)
def test_delay_commands_on_the_listening_socket_have_no_effect(
    site: Path, command: str, options: list[str]
) -> None:
    # As in poorconn: they patch the listening socket, which never sends.
    with running(site, command, "--t", "2", *options) as address:
        elapsed, status, body = get(address, "/file.bin")
    assert (status, body) == (200, BODY)
    assert elapsed < 1.8  # a delay of the response would take 2 s at least


def test_each_request_prints_an_access_line(site: Path) -> None:
    stderr: list[str] = []
    command = ("delay_before_sending_upon_acceptance", "--t", "0")
    with running(site, *command, stderr=stderr) as address:
        assert get(address, "/file.bin")[1] == 200
        assert get(address, "/missing")[1] == 404
    assert '"GET /file.bin HTTP/1.1" 200 -' in stderr[0]
    assert '"GET /missing HTTP/1.1" 404 -' in stderr[0]


@needs_ipv6
def test_upon_acceptance_once_on_ipv6_delays_every_connection(site: Path) -> None:
    with running(
        site, "-H", "::1", "delay_before_sending_upon_acceptance_once", "--t", "0.2"
    ) as address:
        assert address[0] == "::1"
        timings = [get(address, "/file.bin") for _ in range(2)]
    for elapsed, status, body in timings:
        assert (status, body) == (200, BODY)
        assert 0.2 * 0.9 <= elapsed < 0.2 + SLACK


def test_close_upon_acceptance_clients_see_the_connection_closed(site: Path) -> None:
    with running(site, "close_upon_acceptance") as address:
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            get(address, "/file.bin")
        with socket.create_connection(address, timeout=5) as client:
            assert client.recv(10) == b""


def test_no_arguments_prints_help_on_stderr_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "usage: python -m sockwork.compat.poorconn" in captured.err
    assert "Simulation commands" in captured.err
    assert "Example" in captured.err
    assert "delay_before_sending_upon_acceptance_once" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-p", "0"], "the following arguments are required: COMMAND"),
        (["-p", "0", "no_such_command"], "invalid choice: 'no_such_command'"),
        (["delay_before_sending"], "the following arguments are required: --t"),
        (["delay_before_sending", "--t", "soon"], "--t: invalid float value: 'soon'"),
        (["delay_before_sending", "--t", "1", "--length", "1k"], "--length: invalid int value"),
        (["-p", "http", "close_upon_acceptance"], "-p/--port: invalid int value: 'http'"),
    ],
)
def test_bad_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "port", "message"),
    [
        ("no-such-host.invalid", "0", "cannot serve on 'no-such-host.invalid' port 0: "),
        ("127.0.0.1", "70000", "cannot serve on '127.0.0.1' port 70000: "),
    ],
)
def test_a_server_that_cannot_start_is_a_one_line_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    port: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["-H", host, "-p", port, "close_upon_acceptance"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_a_port_in_use_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            main(["-H", "127.0.0.1", "-p", str(port), "close_upon_acceptance"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cannot serve on '127.0.0.1' port {port}: ")
    assert err.count("\n") == 1


def test_subcommand_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["delay_before_sending_once", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--t" in out
    assert "no effect, as in poorconn" in " ".join(out.split())
    assert "SimulationCommand" not in out
    assert os.sep not in out.splitlines()[0]  # prog is not an interpreter path


def test_python_m_runs_under_pytests_assertion_rewriting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # runpy is what `python -m` uses; pytest's import hook claims sockwork's modules.
    monkeypatch.setattr(sys, "argv", ["poorconn", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("sockwork.compat.poorconn", run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 0
    assert "Simulation commands" in capsys.readouterr().out


def test_importing_main_module_does_not_run_the_command_line() -> None:
    module = importlib.import_module("sockwork.compat.poorconn.__main__")
    assert module.main is main
