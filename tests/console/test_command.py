from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pexpect
import pytest

from sockwork.cli import main
from sockwork.console.command import load_app
from tests.console.conftest import Shop, nc

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests.console.conftest:Shop"


def test_command_load_app_finds_the_class() -> None:
    assert load_app(TARGET) is Shop


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("tests.console.conftest", ValueError),
        ("tests.console.conftest:Nope", ValueError),
        ("tests.console.conftest:TIMEOUT", ValueError),
        ("no_such_module_here:Thing", ImportError),
    ],
)
def test_command_load_app_errors(target: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        load_app(target)


def test_command_serve_bad_target_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "nothing"]) == 2
    assert "expected package.module:Thing" in capsys.readouterr().err


def test_command_serve_missing_password_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOCKWORK_TEST_PW", raising=False)
    assert main(["serve", TARGET, "--password-env", "SOCKWORK_TEST_PW"]) == 2
    assert "SOCKWORK_TEST_PW is not set" in capsys.readouterr().err


def _port_from(line: str) -> int:
    match = re.search(r"port (\d+)", line)
    assert match, line
    return int(match.group(1))


def test_command_serve_no_console_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sockwork", "serve", TARGET, "--no-console", "--max-clients", "1"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        port = _port_from(process.stderr.readline())
        with nc(("127.0.0.1", port)) as client:
            client.read_until(b"shop> ")
            client.send_line("hello cli")
            assert client.read_until(b"shop> ") == b"hello cli\r\nshop> "
            with nc(("127.0.0.1", port)) as second:
                assert b"busy" in second.read_all()
            process.send_signal(signal.SIGINT)
            assert client.read_all() == b""
        assert process.wait(10) == 0
    finally:
        process.kill()
        process.wait()
        for stream in (process.stdout, process.stderr):
            assert stream is not None
            stream.close()


def test_command_serve_keeps_the_local_console() -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "sockwork", "serve", TARGET],
        cwd=str(ROOT),
        timeout=10,
        encoding="utf-8",
    )
    try:
        child.expect(r"port (\d+)")
        port = int(child.match.group(1))
        child.expect_exact("shop> ")
        with nc(("127.0.0.1", port)) as client:
            client.read_until(b"shop> ")
            client.send_line("hello remote")
            assert client.read_until(b"shop> ") == b"hello remote\r\nshop> "
            child.sendline("hello local")
            child.expect_exact("hello local\r\nhello local\r\n")  # echo, then the output
            child.expect_exact("shop> ")
            assert "remote" not in child.before
            child.sendline("exit")  # the console ends: the server stops with it
            assert client.read_all() == b""
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)


def test_command_serve_tls_with_certfile(certificate: Path) -> None:
    import socket
    import ssl

    process = subprocess.Popen(
        [sys.executable, "-m", "sockwork", "serve", TARGET, "--no-console",
         "--certfile", str(certificate)],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        port = _port_from(process.stderr.readline())
        context = ssl.create_default_context(cafile=str(certificate))
        context.check_hostname = False
        tls = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
        with nc(tls) as client:
            assert client.read_until(b"shop> ") == b"Welcome to the shop.\r\nshop> "
        process.send_signal(signal.SIGTERM)  # ends like Ctrl-C: a clean stop
        assert process.wait(10) == 0
    finally:
        process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_command_serve_port_in_use_is_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Issue 10.9: it printed a traceback.
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", TARGET, "--no-console", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"sockwork serve: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use\n"
    )


def test_command_serve_rejects_a_bad_limit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", TARGET, "--no-console", "--write-timeout", "-1"]) == 2
    assert "write_timeout must be > 0 seconds" in capsys.readouterr().err


@contextmanager
def serve_process(target: str, *options: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Run ``sockwork serve TARGET --no-console OPTIONS``; yield it and its port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sockwork", "serve", target, "--no-console", *options],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        yield process, _port_from(process.stderr.readline())
    finally:
        process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_command_serve_passes_the_session_limits() -> None:
    options = ("--max-per-address", "1", "--first-line-timeout", "0.5")
    with serve_process(TARGET, *options) as (process, port):
        with nc(("127.0.0.1", port)) as first, nc(("127.0.0.1", port)) as second:
            first.read_until(b"shop> ")
            assert second.read_all() == (
                b"*** too many sessions from 127.0.0.1 (1); try again later\r\n"
            )
            assert first.read_all().endswith(b"*** nothing typed within 0.5 s; disconnecting\r\n")
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


def _sigterm_at_once_exit_seconds() -> float:
    """SIGTERM ``sockwork serve`` as soon as it announces its address; seconds to exit 0."""
    with serve_process("tests.console.conftest:Busy") as (process, _):
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, process.stderr.read()  # type: ignore[union-attr]
        return time.monotonic() - started


def test_command_serve_sigterm_right_after_the_announcement_exits_cleanly() -> None:
    # The address was announced before start(): the signal landed in start() and
    # close() failed on the accept thread not yet started (exit 1, a traceback; 4
    # runs in 5 on a loaded machine).
    assert _sigterm_at_once_exit_seconds() < 10


@pytest.mark.slow
def test_command_serve_sigterm_waits_once_for_a_busy_session() -> None:
    # Issue 9.9: serve_forever() and run_serve() both called stop(), each waiting its
    # 1 s grace for the busy session: the process exited after 2.1 s instead of ~1 s.
    # The same exit without a busy session first: on a loaded machine the interpreter's
    # own exit took up to ~1.9 s (2.86 s in all with the grace, seen), so the bound is
    # on the difference.
    idle = _sigterm_at_once_exit_seconds()
    with serve_process("tests.console.conftest:Busy") as (process, port):
        with nc(("127.0.0.1", port)) as client:
            client.read_until(b"busy> ")
            client.send_line("busy")
            client.read_until(b"working\r\n")  # the command runs (and sleeps 10 s)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0
            elapsed = time.monotonic() - started
    assert elapsed >= 0.9, elapsed  # the busy session had its 1 s grace
    # two grace periods take 2.0 s at least, one 1.0 s
    assert elapsed - idle < 1.7, (elapsed, idle)
