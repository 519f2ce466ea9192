"""ProcessSubject: a command line explored one fresh process per run, through the start-up hook."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sockwork.faults import HalfClose, Match, Slice
from sockwork.faults.exploration.process import CommandNotFound, ProcessSubject
from sockwork.faults.exploration.schedule import Schedule

SCRIPTS = Path(__file__).resolve().parent / "scripts"
FRAMED = str(SCRIPTS / "framed.py")


def test_process_subject_keeps_its_older_import_paths() -> None:
    from sockwork.faults import exploration
    from sockwork.faults.exploration import process, subject

    for name in process.__all__:
        assert getattr(subject, name) is getattr(process, name)
        assert getattr(exploration, name) is getattr(process, name)
        assert name in subject.__all__ and name in exploration.__all__


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


# Runs are forked from a warm interpreter when the command is this Python on a script,
# exec'd otherwise: both must look the same from outside.
both_ways = pytest.mark.parametrize("fork", [True, False], ids=["fork", "exec"])


def script(tmp_path: Path, source: str) -> str:
    path = tmp_path / "program.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return str(path)


@both_ways
def test_process_record_traces_a_program_that_starts_its_own_server(fork: bool) -> None:
    subject = ProcessSubject(python(FRAMED, "--correct"), fork=fork)
    assert subject.forks is fork
    try:
        outcome, trace = subject.record(timeout=30)
    finally:
        subject.close()
    assert outcome.passed, outcome.details
    roles = {(c.role, c.sent, c.received) for c in trace.connections()}
    assert roles == {("client", 12, 204), ("server", 204, 12)}
    assert [e.outcome for e in trace.attempts("connect")] == ["ok"]


def test_process_record_merges_the_traces_of_two_python_processes() -> None:
    """The script starts its server as a second Python process: both are traced, on one
    time line, their connection numbers kept apart."""
    subject = ProcessSubject(python(FRAMED, "--spawn-server", "--correct"))
    try:
        outcome, trace = subject.record(timeout=30)
    finally:
        subject.close()
    assert outcome.passed, outcome.details
    connections = trace.connections()
    assert sorted((c.role, c.role_index) for c in connections) == [("client", 1), ("server", 1)]
    assert len({c.index for c in connections}) == 2
    times = [e.time for e in trace.events]
    assert times == sorted(times)


@both_ways
def test_process_run_reports_the_exception_and_what_fired(fork: bool) -> None:
    subject = ProcessSubject(python(FRAMED), fork=fork)
    try:
        outcome = subject.run(
            Schedule((Slice(1, direction="recv"),), role="client"), seed=3, timeout=30
        )
        events = subject.last_events
    finally:
        subject.close()
    assert not outcome.passed
    assert outcome.kind == "exception"
    assert outcome.message.startswith("struct.error: unpack requires a buffer of 4 bytes")
    assert "Traceback" in outcome.details
    assert [(e.what, e.kind, e.connection, e.direction) for e in events][:1] == [
        ("fired", "stream", 1, "recv")
    ]
    assert events[0].fault == Slice(1, direction="recv")
    assert events[0].label.startswith("client 127.0.0.1:")


@both_ways
def test_process_run_tells_assertions_and_exit_statuses_apart(tmp_path: Path, fork: bool) -> None:
    asserting = ProcessSubject(
        python(script(tmp_path, "assert 1 + 1 == 3, 'arithmetic is off'")), fork=fork
    )
    exit_script = tmp_path / "exit.py"
    exit_script.write_text("import sys\nprint('giving up')\nsys.exit(3)\n", encoding="utf-8")
    exiting = ProcessSubject(python(str(exit_script)), fork=fork)
    try:
        failed = asserting.run(Schedule(), seed=0, timeout=30)
        status = exiting.run(Schedule(), seed=0, timeout=30)
    finally:
        asserting.close()
        exiting.close()
    assert (failed.kind, failed.message) == ("assertion", "AssertionError: arithmetic is off")
    assert (status.kind, status.message) == ("exit", "exit status 3: giving up")
    assert "giving up" in status.details


@both_ways
def test_process_run_past_its_deadline_is_a_hang_with_the_stacks(
    tmp_path: Path, fork: bool
) -> None:
    program = script(
        tmp_path,
        """
        import time

        def waiting_forever():
            time.sleep(3600)

        waiting_forever()
        """,
    )
    subject = ProcessSubject(python(program), fork=fork)
    # A new interpreter (exec) must be inside waiting_forever() before the deadline: on a
    # loaded machine its start-up alone has taken more than 1 s.
    timeout = 1.0 if fork else 3.0
    try:
        started = time.monotonic()
        outcome = subject.run(Schedule(), seed=0, timeout=timeout)
        took = time.monotonic() - started
    finally:
        subject.close()
    assert outcome.kind == "hang"
    assert outcome.message == f"no result within {timeout:g}s (hang)"
    assert "waiting_forever" in outcome.details  # the child's own stack, via SIGUSR1
    assert took < 10


@both_ways
def test_process_run_kills_what_the_command_left_running(tmp_path: Path, fork: bool) -> None:
    marker = tmp_path / "pid"
    program = script(
        tmp_path,
        f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        open({str(marker)!r}, "w").write(str(child.pid))
        """,
    )
    subject = ProcessSubject(python(program), fork=fork)
    try:
        assert subject.run(Schedule(), seed=0, timeout=30).passed
    finally:
        subject.close()
    pid = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().split()[2] == "Z":
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        pytest.fail("the command's own child was left running")


def test_process_half_close_schedule_reaches_the_child() -> None:
    """A HalfClose on the client after its 12-byte request: the server still answers."""
    subject = ProcessSubject(python(FRAMED, "--correct"))
    try:
        outcome = subject.run(Schedule((HalfClose(12),), role="client"), seed=0, timeout=30)
        events = subject.last_events
    finally:
        subject.close()
    assert outcome.passed, outcome.details
    assert [(e.what, e.offset) for e in events] == [("fired", 0), ("half-close", 12)]


def test_process_subject_rejects_bad_input() -> None:
    with pytest.raises(CommandNotFound) as info:
        ProcessSubject(["no-such-command-sockwork", "x"])
    assert str(info.value) == "command not found: no-such-command-sockwork"
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ValueError, match="needs a command"):
        ProcessSubject([])
    with pytest.raises(ValueError, match="must be a Match"):
        ProcessSubject(python("-c", "pass"), match=lambda target: True)  # type: ignore[arg-type]


def test_process_subject_reproduction_names_the_program() -> None:
    subject = ProcessSubject(python(FRAMED, "--correct"), match=Match(port=9))
    try:
        assert subject.command == [sys.executable, FRAMED, "--correct"]
        assert "runpy.run_path" in subject.name and FRAMED in subject.name
    finally:
        subject.close()


@both_ways
def test_process_child_exits_as_python_does(tmp_path: Path, fork: bool) -> None:
    """Files left open are flushed, non-daemon threads joined, stdin is empty, and each
    run draws its own random numbers."""
    out = tmp_path / "out"
    program = script(
        tmp_path,
        f"""
        import random, sys, threading, time
        log = open({str(out)!r}, "a")
        log.write(f"{{random.random()}}\\n")  # never closed, never flushed
        try:
            input()
        except EOFError:
            log.write("stdin empty\\n")
        def late():
            time.sleep(0.2)
            log.write("thread joined\\n")
        threading.Thread(target=late).start()
        """,
    )
    subject = ProcessSubject(python(program), fork=fork)
    try:
        for _ in range(2):
            outcome = subject.run(Schedule(), seed=0, timeout=30)
            assert outcome.passed, outcome.details
    finally:
        subject.close()
    lines = out.read_text().splitlines()
    assert lines[1:3] == ["stdin empty", "thread joined"] == lines[4:6]
    assert lines[0] != lines[3]  # a fresh random seed per run


def test_process_forks_only_this_interpreter_on_a_script(tmp_path: Path) -> None:
    from sockwork.faults.exploration.zygote import forkable

    me = sys.executable
    assert forkable([me, "x.py", "-v"], me)
    assert forkable([me, "-m", "pkg.mod", "a"], me)
    assert not forkable([me, "-u", "x.py"], me)  # interpreter options: exec
    assert not forkable([me, "-c", "pass"], me)
    assert not forkable([me, "-m"], me)
    assert not forkable([me], me)
    assert not forkable(["sh", "x.py"], "/bin/sh")
    assert not forkable([me, "x.py"], None)
    assert not ProcessSubject(["sh", "-c", "true"]).forks
