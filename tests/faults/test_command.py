"""``sockwork run``: a Python program under faults from start-up."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest

from sockwork.cli import build_parser, main
from sockwork.faults import (
    Bandwidth,
    CloseAfter,
    DnsFailure,
    HalfClose,
    Latency,
    Refuse,
    Slice,
    Stall,
)
from sockwork.faults.command import add_fault_options, faults_from_options

PROGRAM = textwrap.dedent(
    """
    import socket, sys, time
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=5)
        conn, _ = server.accept()
        with client, conn:
            start = time.monotonic()
            client.sendall(b"abcdefgh")
            sizes = []
            while sum(sizes) < 8:
                sizes.append(len(conn.recv(100)))
            print("sizes", sizes, "elapsed", round(time.monotonic() - start, 3))
    """
)


def test_command_runs_a_program_under_latency_and_slices(
    capfd: pytest.CaptureFixture[str],
) -> None:
    status = main(
        [
            "run",
            "--latency",
            "200ms",
            "--slice",
            "1..4",
            "--direction",
            "recv",
            "--seed",
            "7",
            "--report",
            "--",
            sys.executable,
            "-c",
            PROGRAM,
        ]
    )
    out, err = capfd.readouterr()
    assert status == 0, err
    words = out.split("elapsed")
    sizes = eval(words[0].split("sizes", 1)[1])  # a printed list of ints
    assert all(1 <= s <= 4 for s in sizes) and sum(sizes) == 8
    assert 0.19 <= float(words[1]) < 3.0
    assert "seed=7" in err and "Latency" in err


def test_command_refuses_and_passes_the_exit_status(capfd: pytest.CaptureFixture[str]) -> None:
    program = textwrap.dedent(
        """
        import socket
        with socket.create_server(("127.0.0.1", 0)) as server:
            try:
                socket.create_connection(server.getsockname(), timeout=5)
            except ConnectionRefusedError as exc:
                print("refused", exc.errno)
                raise SystemExit(3)
        """
    )
    status = main(["run", "--refuse", "--", sys.executable, "-c", program])
    out, _ = capfd.readouterr()
    assert status == 3
    assert out.strip() == "refused 111"


def test_command_dns_failure(capfd: pytest.CaptureFixture[str]) -> None:
    program = (
        "import socket\ntry:\n socket.getaddrinfo('localhost', 80)\n"
        "except socket.gaierror as e:\n print(e.errno)"
    )
    assert main(["run", "--dns-failure", "again", "--", sys.executable, "-c", program]) == 0
    assert capfd.readouterr().out.strip() == str(-3)


def test_command_needs_a_program(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--latency", "1s"]) == 2
    assert "after --" in capfd.readouterr().err
    assert main(["run", "--", "no-such-program-sockwork"]) == 127


def test_command_rejects_bad_units(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["run", "--latency", "fast", "--", "true"])
    assert info.value.code == 2
    assert "invalid duration 'fast'" in capfd.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--probability", "2", "--", "true"])


def test_command_fault_options_build_the_vocabulary() -> None:
    parser = argparse.ArgumentParser()
    add_fault_options(parser)
    args = parser.parse_args(
        [
            "--latency",
            "200ms",
            "--jitter",
            "10ms",
            "--slice",
            "1..64",
            "--reset-after",
            "10KB",
            "--bandwidth",
            "1MiB/s",
            "--refuse",
            "2",
            "--stall-after",
            "1KiB",
            "--close-after",
            "5",
            "--dns-failure",
            "noname",
            "--direction",
            "send",
        ]
    )
    assert faults_from_options(args) == [
        Latency(0.2, jitter=0.01, direction="send"),
        Bandwidth(1024 * 1024, direction="send"),
        Slice(64, min_bytes=1, direction="send"),
        CloseAfter(5, direction="send"),
        CloseAfter(10_000, reset=True, direction="send"),
        Stall(after_bytes=1024, direction="send"),
        Refuse(connections=2),
        DnsFailure("noname"),
    ]
    assert faults_from_options(parser.parse_args([])) == []


HALF_CLOSE_PROGRAM = textwrap.dedent(
    """
    import socket, threading
    with socket.create_server(("127.0.0.1", 0)) as server:
        def answer():
            conn, _ = server.accept()
            with conn:
                data = b""
                while chunk := conn.recv(100):
                    data += chunk
                conn.sendall(b"got:" + data)
        thread = threading.Thread(target=answer)
        thread.start()
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            client.sendall(b"helloworld")  # no shutdown: only the fault ends the request
            reply = b""
            while chunk := client.recv(100):
                reply += chunk
        thread.join()
        print(reply.decode())
    """
)


def test_command_half_close_ends_the_request_and_the_answer_comes(
    capfd: pytest.CaptureFixture[str],
) -> None:
    status = main(
        [
            "run",
            "--half-close",
            "5",
            "--match-role",
            "client",
            "--report",
            "--",
            sys.executable,
            "-c",
            HALF_CLOSE_PROGRAM,
        ]
    )
    out, err = capfd.readouterr()
    assert status == 0, err
    assert out.strip() == "got:hello"
    assert "half-close: HalfClose" in err


def test_command_half_close_and_json_faults_build_the_vocabulary() -> None:
    parser = argparse.ArgumentParser()
    add_fault_options(parser)
    args = parser.parse_args(["--half-close", "1KB"])
    assert faults_from_options(args) == [HalfClose(1000)]
    args = parser.parse_args(["--half-close", "3", "--direction", "recv"])
    assert faults_from_options(args) == [HalfClose(3, direction="recv")]
    args = parser.parse_args(
        [
            "--fault",
            '{"type": "HalfClose", "bytes": 5, "connections": [2]}',
            "--fault",
            '{"type": "Slice", "max_bytes": 1, "direction": "recv"}',
            "--direction",
            "send",  # changes the option faults only
        ]
    )
    assert faults_from_options(args) == [
        HalfClose(5, connections={2}),
        Slice(1, direction="recv"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "--fault needs a JSON object"),
        ("[1]", "a JSON object"),
        ('{"type": "Nope"}', "unknown fault type 'Nope'"),
        ('{"type": "HalfClose", "bytes": -1}', "bytes must be an int >= 0"),
        ('{"type": "HalfClose"}', "bytes"),
    ],
)
def test_command_rejects_bad_json_faults(
    capfd: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["run", "--fault", text, "--", "true"])
    assert info.value.code == 2
    last = capfd.readouterr().err.strip().splitlines()[-1]  # after the usage lines
    assert last.startswith("sockwork run: error: argument --fault: ")
    assert message in last


def _start_wrapped(script: str) -> tuple[subprocess.Popen[str], int]:
    """Start ``sockwork run -- sh -c script`` in its own process; return it and the program's pid.

    The script prints its pid first (``$$``; ``exec`` keeps it).
    """
    wrapper = subprocess.Popen(
        [sys.executable, "-m", "sockwork", "run", "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a stray program is killed with the group at the end
    )
    line = wrapper.stdout.readline() if wrapper.stdout is not None else ""
    assert line.strip().isdigit(), line
    return wrapper, int(line)


def _ended(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` has ended (a pidfd becomes readable when its process exits)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and pidfd are Linux's"
)


@linux_only
def test_command_program_dies_with_a_killed_sockwork_run() -> None:
    wrapper, program = _start_wrapped("echo $$; exec sleep 60")
    try:
        wrapper.kill()  # SIGKILL: no handler of ours runs
        wrapper.wait()
        assert _ended(program), "the program outlived sockwork run"
    finally:
        with contextlib.suppress(OSError):
            os.killpg(wrapper.pid, signal.SIGKILL)
        if wrapper.stdout is not None:
            wrapper.stdout.close()


@linux_only
def test_command_passes_sigterm_to_the_program_and_returns_its_status() -> None:
    script = (
        "trap 'kill $sleeper; echo terminated; exit 3' TERM; echo $$; "
        "sleep 60 >/dev/null & sleeper=$!; wait"
    )
    wrapper, program = _start_wrapped(script)
    try:
        wrapper.send_signal(signal.SIGTERM)
        out, _ = wrapper.communicate(timeout=5.0)
        assert out.strip() == "terminated"
        assert wrapper.returncode == 3
        assert _ended(program)
    finally:
        with contextlib.suppress(OSError):
            os.killpg(wrapper.pid, signal.SIGKILL)
