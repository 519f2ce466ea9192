"""``python -m sockwork.compat.poorconn``: poorconn's CLI, with every command effective."""

from __future__ import annotations

import http.client
import os
import re
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

from sockwork.compat.poorconn.command import main
from tests.compat.test_poorconn_server import needs_ipv6

T = 0.1
SLACK = 0.6
BODY = bytes(range(256)) * 11 + bytes(184)  # 3000 bytes


@contextmanager
def running(directory: Path, *args: str) -> Iterator[tuple[str, int]]:
    """Run the CLI in ``directory`` on a free port; yield (host, port); stop it with Ctrl-C."""
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
        out, err = process.communicate(timeout=10)
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


@pytest.mark.parametrize(
    "command", ["delay_before_sending", "delay_before_sending_upon_acceptance"]
)
def test_delay_before_sending_commands_slow_down_responses(site: Path, command: str) -> None:
    with running(site, "-H", "127.0.0.1", command, "--t", str(T), "--length", "1000") as address:
        elapsed, status, body = get(address, "/file.bin")
    assert (status, body) == (200, BODY)
    # headers (one short chunk) + 3000 body bytes in 1000-byte chunks, T before each
    assert 4 * T * 0.9 <= elapsed < 4 * T + SLACK


def test_delay_before_sending_once_delays_the_first_response_only(site: Path) -> None:
    with running(site, "delay_before_sending_once", "--t", "0.3") as address:
        first, status, body = get(address, "/file.bin")
        second, *_ = get(address, "/file.bin")
    assert (status, body) == (200, BODY)
    assert 0.3 * 0.9 <= first < 0.3 + SLACK
    assert second < 0.25


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


def test_no_arguments_prints_help_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "usage: python -m sockwork.compat.poorconn" in captured.err
    assert "delay_before_sending_upon_acceptance_once" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-p", "0"], "the following arguments are required: COMMAND"),
        (["-p", "0", "no_such_command"], "invalid choice: 'no_such_command'"),
        (["delay_before_sending"], "the following arguments are required: --t"),
        (["delay_before_sending", "--t", "-1"], "--t: must be a finite number >= 0, got '-1'"),
        (["delay_before_sending", "--t", "soon"], "--t: expected a number of seconds, got 'soon'"),
        (
            ["delay_before_sending", "--t", "1", "--length", "0"],
            "--length: must be at least 1 byte",
        ),
        (["-p", "70000", "close_upon_acceptance"], "-p/--port: must be in 0..65535"),
        (["-p", "http", "close_upon_acceptance"], "-p/--port: expected a port number, got 'http'"),
        (["delay_before_sending", "--t", "1", "--length", "1k"], "--length: expected a whole"),
    ],
)
def test_bad_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_port_in_use_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["-H", "127.0.0.1", "-p", str(port), "close_upon_acceptance"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cannot serve on '127.0.0.1' port {port}: ")
    assert err.count("\n") == 1


def test_an_unknown_host_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["-H", "no-such-host.invalid", "-p", "0", "close_upon_acceptance"]) == 1
    assert "cannot serve on 'no-such-host.invalid'" in capsys.readouterr().err


def test_subcommand_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["delay_before_sending_once", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "wait T seconds before the first response of the server, once" in out
    assert "SimulationCommand" not in out
    assert os.sep not in out.splitlines()[0]  # prog is not an interpreter path
