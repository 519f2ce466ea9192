"""``sockwork proxy`` and ``sockwork toxiproxy-server`` as a user runs them."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockwork.cli import main
from tests.proxy.conftest import MakeUpstream, Upstream, recv_all, recv_exactly


@pytest.fixture
def run_command() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


def start(procs: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sockwork", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    procs.append(proc)
    return proc


def line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    text = proc.stdout.readline()
    assert text, "the command ended early"
    return text.strip()


def address_in(text: str, pattern: str) -> tuple[str, int]:
    match = re.search(pattern, text)
    assert match, text
    return match.group(1), int(match.group(2))


def test_command_proxy_prints_connections_and_applies_faults(
    run_command: list[subprocess.Popen[str]], echo_server: Upstream
) -> None:
    host, port = echo_server.address
    proc = start(
        run_command,
        "proxy",
        "--upstream",
        f"{host}:{port}",
        "--latency",
        "200ms",
        "--jitter",
        "10ms",
        "--direction",
        "downstream",
        "--seed",
        "7",
    )
    banner = line(proc)
    address = address_in(banner, r"proxy (127\.0\.0\.1):(\d+) ->")
    assert "seed 7" in banner
    with socket.create_connection(address, timeout=5) as client:
        started = time.monotonic()
        client.sendall(b"hello")
        assert recv_exactly(client, 5) == b"hello"
        assert 0.18 <= time.monotonic() - started < 0.8
        assert re.fullmatch(r"#1 opened from 127\.0\.0\.1:\d+", line(proc))
    closed = line(proc)
    assert closed.startswith("#1 closed: 5 B up, 5 B down, faults fired: latency_downstream x1")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(5) == 0


def test_command_proxy_half_close_ends_the_request_and_the_answer_comes(
    run_command: list[subprocess.Popen[str]], make_upstream: MakeUpstream
) -> None:
    def answer_after_eof(conn: socket.socket) -> None:
        conn.sendall(b"got:" + recv_all(conn))

    host, port = make_upstream(answer_after_eof).address
    proc = start(run_command, "proxy", "--upstream", f"{host}:{port}", "--half-close", "5")
    banner = line(proc)
    assert "both: half-close upstream after 5" in banner  # --direction both is the others'
    with socket.create_connection(address_in(banner, r"proxy (127\.0\.0\.1):(\d+) ->")) as client:
        client.settimeout(5)
        client.sendall(b"helloworld")  # no shutdown: only the fault ends the request
        assert recv_all(client) == b"got:hello"
    line(proc)  # opened
    assert "faults fired: halfclose_upstream x1" in line(proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(5) == 0


def test_command_proxy_rejects_bad_units(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxy", "--upstream", "127.0.0.1:9", "--latency", "fast"]) == 2
    assert "invalid duration 'fast'" in capsys.readouterr().err
    assert main(["proxy", "--upstream", "127.0.0.1:9", "--half-close", "lots"]) == 2
    assert "invalid size 'lots'" in capsys.readouterr().err
    assert main(["proxy", "--upstream", "nowhere"]) == 2
    assert "host:port" in capsys.readouterr().err
    # Port 0 cannot be dialed: a usage error, not a traceback.
    assert main(["proxy", "--upstream", "127.0.0.1:0"]) == 2
    assert "--upstream must be host:port with a port in 1..65535" in capsys.readouterr().err


def test_command_toxiproxy_server_serves_the_config(
    run_command: list[subprocess.Popen[str]], echo_server: Upstream, tmp_path: Path
) -> None:
    host, port = echo_server.address
    config = tmp_path / "proxies.json"
    config.write_text(
        json.dumps([{"name": "echo", "listen": "127.0.0.1:0", "upstream": f"{host}:{port}"}])
    )
    proc = start(
        run_command, "toxiproxy-server", "--port", "0", "--config", str(config), "--seed", "1"
    )
    api = address_in(line(proc), r"http://(127\.0\.0\.1):(\d+)")
    with urllib.request.urlopen(f"http://{api[0]}:{api[1]}/proxies", timeout=5) as response:
        proxies = json.load(response)
    assert list(proxies) == ["echo"]
    listen = address_in(proxies["echo"]["listen"], r"(127\.0\.0\.1):(\d+)")
    with socket.create_connection(listen, timeout=5) as client:
        client.sendall(b"ok")
        assert recv_exactly(client, 2) == b"ok"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0


def test_command_toxiproxy_server_rejects_a_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "proxies.json"
    config.write_text('[{"name": "x"}]')
    assert main(["toxiproxy-server", "--port", "0", "--config", str(config)]) == 2
    assert "missing required field: upstream at proxy 1" in capsys.readouterr().err
