"""``sockwork explore -- COMMAND``: exit statuses, the printed reproduction and the --json form."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockwork.cli import main
from sockwork.faults.vocabulary import fault_from_dict

from .scripts.framed import serve

FRAMED = str(Path(__file__).resolve().parent / "scripts" / "framed.py")
KINDS = {"Slice", "CloseAfter", "HalfClose", "Stall", "Coalesce", "Latency", "Refuse"}


def explore(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["explore", *args])
    out, err = capfd.readouterr()
    return status, out, err


def load(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture
def running_server() -> Iterator[int]:
    """The framed server, already running in this process (not started by the command)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        thread = threading.Thread(target=serve, args=(listener,), daemon=True)
        thread.start()
        yield listener.getsockname()[1]
        listener.shutdown(socket.SHUT_RDWR)
    thread.join(5)


def test_explore_finds_the_bug_of_a_script_that_starts_its_server(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = tmp_path / "result.json"
    status, out, err = explore(
        capfd, "--seed", "4", "--json", str(result), "--", sys.executable, FRAMED
    )
    assert status == 1, err
    assert err == ""  # not a terminal: no progress line
    lines = out.strip().splitlines()
    assert lines[0].startswith("found a failing schedule after ")
    assert "exception: struct.error" in lines[0]
    cli = next(line.strip() for line in lines if line.strip().startswith("sockwork run "))
    assert cli.endswith(f"-- {sys.executable} {FRAMED}")

    data = load(result)
    assert set(data) == {
        "format",
        "found",
        "schedules_run",
        "elapsed_s",
        "seed",
        "fault_kinds_tried",
        "failure",
        "reproduction",
    }
    assert data["format"] == 1
    assert data["found"] is True
    assert data["seed"] == 4
    assert isinstance(data["schedules_run"], int) and data["schedules_run"] >= 1
    assert isinstance(data["elapsed_s"], float) and data["elapsed_s"] > 0
    tried = data["fault_kinds_tried"]
    assert (
        isinstance(tried, list)
        and tried == sorted(tried)
        and set(tried)
        <= KINDS
        | {
            "CloseOnAccept",
            "ConnectDelay",
            "ConnectTimeout",
            "DnsFailure",
            "AcceptDelay",
        }
    )
    failure = data["failure"]
    assert isinstance(failure, dict)
    assert failure["kind"] == "exception"
    assert str(failure["message"]).startswith("struct.error")
    reproduction = data["reproduction"]
    assert isinstance(reproduction, dict)
    faults = reproduction["faults"]
    assert isinstance(faults, list) and 1 <= len(faults) <= 2
    for fault in faults:
        assert isinstance(fault, dict)
        fault_from_dict(fault)  # every fault is in the vocabulary's JSON form
    assert str(reproduction["pytest"]).startswith("@pytest.mark.netfaults(")
    assert "inject(" in str(reproduction["python"])
    assert reproduction["cli"] == cli

    # The printed command line reproduces the failure.
    replay = subprocess.run(
        [sys.executable, "-m", "sockwork", *_argv(cli)[1:]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode == 1, replay.stdout + replay.stderr
    assert "struct.error" in replay.stderr


def _argv(cli: str) -> list[str]:
    import shlex

    return shlex.split(cli)


def test_explore_finds_the_bug_of_a_client_of_a_running_server(
    capfd: pytest.CaptureFixture[str], tmp_path: Path, running_server: int
) -> None:
    result = tmp_path / "result.json"
    status, out, err = explore(
        capfd,
        "--match",
        f"127.0.0.1:{running_server}",
        "--json",
        str(result),
        "--",
        sys.executable,
        FRAMED,
        "--port",
        str(running_server),
    )
    assert status == 1, err
    data = load(result)
    assert data["found"] is True
    reproduction = data["reproduction"]
    assert isinstance(reproduction, dict)
    assert f"--match-port {running_server}" in str(reproduction["cli"])


def test_explore_passes_the_correct_twin_with_counts_and_kinds(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = tmp_path / "result.json"
    status, out, err = explore(
        capfd,
        "--budget",
        "12",
        "--faults",
        "Slice,CloseAfter,HalfClose",
        "--json",
        str(result),
        "--",
        sys.executable,
        FRAMED,
        "--correct",
    )
    assert status == 0, out + err
    data = load(result)
    assert data["found"] is False
    assert data["failure"] is None and data["reproduction"] is None
    runs = data["schedules_run"]
    assert isinstance(runs, int) and 1 <= runs <= 12
    tried = data["fault_kinds_tried"]
    assert isinstance(tried, list) and set(tried) <= {"Slice", "CloseAfter", "HalfClose"}
    assert out.strip() == (
        f"no failing schedule in {runs} run(s) ({data['elapsed_s']:.1f}s, seed 0); "
        f"fault kinds tried: {', '.join(tried)}"
    )


def test_explore_json_to_stdout_moves_the_text_to_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    status, out, err = explore(
        capfd, "--budget", "2", "--faults", "Slice", "--json", "-", "--", sys.executable, FRAMED
    )
    assert status == 1
    assert json.loads(out)["found"] is True
    assert err.startswith("found a failing schedule")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--", "no-such-command-sockwork"], "command not found: no-such-command-sockwork"),
        (["--budget", "0", "--", sys.executable, FRAMED], "--budget 0 runs no schedule"),
        (
            ["--", sys.executable, "-c", "raise SystemExit(4)"],
            "already fails without faults (exit: exit status 4): fix that first",
        ),
        (["--", sys.executable, "-c", "print(1)"], "did no network I/O without faults"),
        ([], "give the program to explore after --"),
        (["--faults", "Slice,Nope", "--", sys.executable, FRAMED], "Nope"),
        (["--json", "/no/such/dir/r.json", "--", sys.executable, FRAMED], "no directory"),
    ],
    ids=["not-found", "budget-0", "baseline-fails", "no-network", "no-command", "kind", "json"],
)
def test_explore_usage_errors_are_one_line_and_status_2(
    capfd: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    try:
        status, out, err = explore(capfd, *args)
    except SystemExit as exc:  # argparse's own errors (bad option values)
        status, (out, err) = int(exc.code or 0), capfd.readouterr()
        err = err.strip().splitlines()[-1]
    assert status == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(("sockwork explore: ", "sockwork explore: error: "))
    assert message in lines[0]


def test_explore_draws_a_progress_line_on_a_terminal(tmp_path: Path) -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    try:
        child = subprocess.run(
            [sys.executable, "-m", "sockwork", "explore", "--budget", "3", "--faults", "Slice"]
            + ["--", sys.executable, FRAMED, "--correct"],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
            check=False,
        )
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert child.returncode == 0, child.stdout
    assert b"\rsockwork explore: 1 schedule(s), 0 failure(s)" in seen
    assert seen.endswith(b"\r\x1b[K")  # erased before the result is printed
    assert child.stdout.startswith(b"no failing schedule in ")
