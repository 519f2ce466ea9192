"""Exploring a command line: :class:`ProcessSubject`, a fresh process per run.

Each run starts the command with the ``sockwork run`` start-up hook
(:mod:`sockwork.faults.startup`): forked from a warm interpreter
(:mod:`sockwork.faults.exploration.zygote`) when the command is this Python on a
script or module, exec'd otherwise. Every Python process of the run applies the
schedule and writes its trace, fault events and uncaught exception at exit; this
module reads them back and merges them (:func:`_merge`).

# Rules:
- A run never outlives its deadline: a hung child is asked for its threads' stacks
  (SIGUSR1, faulthandler), then its whole process group is killed.
- After every run, whatever the command left running in its process group is
  killed (a process that left the group with ``setsid`` is out of reach).
- A subject runs one schedule at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sockwork.errors import SockworkError
from sockwork.faults.budget import now
from sockwork.faults.exploration.outcome import FailureKind, Outcome
from sockwork.faults.exploration.schedule import Schedule
from sockwork.faults.exploration.trace import Trace, TraceEvent
from sockwork.faults.exploration.zygote import forkable
from sockwork.faults.inject import Match
from sockwork.faults.report import Event
from sockwork.faults.startup import OUTPUT_FORMAT, child_environment, server_environment
from sockwork.faults.vocabulary import fault_to_dict

__all__ = ["CommandNotFound", "ProcessSubject"]

# How long a hung child has to write its stacks (SIGUSR1) before it is killed.
_STACKS_GRACE = 2.0  # waited out only by a child that writes nothing (loaded machine)
# How long the fork server may take to answer a request before it is given up.
_SERVER_TIMEOUT = 30.0
# The tail of a failed child's output kept in the outcome's details.
_OUTPUT_TAIL = 4000


class CommandNotFound(SockworkError, FileNotFoundError):
    """The command to explore cannot be started: it is not on PATH or not executable."""

    def __init__(self, command: str) -> None:
        super().__init__(f"command not found: {command}")
        self.command = command


class ProcessSubject:
    """Run a command line (a fresh process per run); it passes when it exits with status 0.

    The child is traced and injected by the ``sockwork run`` start-up hook
    (:mod:`sockwork.faults.startup`): every Python process it starts records and
    applies the schedule, and writes its trace, its fault events and its uncaught
    exception to a file at exit. A run past its deadline is a hang: the child is
    asked for the stacks of its threads (SIGUSR1), then its whole process group is
    killed. Whatever the command started and left running is killed after each run.

    Args:
        argv: the command and its arguments (``["python", "client.py"]``).
        match: restrict faults and recording to these connections (a ``Match``;
            a callable cannot cross to the child).
        env: the environment (default: this process's); cwd: the directory.

    Attributes:
        last_events: the fault events (:class:`~sockwork.faults.Event`) of the last
            run, from every Python process of it.

    Raises:
        CommandNotFound: ``argv[0]`` is not an executable file or on PATH.
        ValueError: ``argv`` is empty, or ``match`` is not a ``Match``.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        match: Match | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        fork: bool = True,
    ) -> None:
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("ProcessSubject needs a command to run")
        if match is not None and not isinstance(match, Match):
            raise ValueError(
                "ProcessSubject: match must be a Match (role, host, port): "
                "a function cannot be sent to the child process"
            )
        which = shutil.which(argv[0], path=(env or os.environ).get("PATH"))
        if which is None:
            raise CommandNotFound(argv[0])
        self.argv = argv
        self.match = match
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.name = _python_call(argv)
        self.last_events: list[Event] = []
        self._runs = 0
        self._base = Path(tempfile.mkdtemp(prefix="sockwork-explore-"))
        self._server: _ForkServer | None = None
        if fork and forkable(argv, which):
            self._server = _ForkServer(self.env, self.cwd)
        self._cleanup = weakref.finalize(self, _clean_up, self._base, self._server)

    @property
    def command(self) -> Sequence[str] | None:
        """The command line (``sockwork run ... -- COMMAND`` reproduces a run)."""
        return list(self.argv)

    @property
    def forks(self) -> bool:
        """True while runs are forked from a warm interpreter rather than exec'd."""
        return self._server is not None and self._server.alive

    def close(self) -> None:
        """Stop the fork server and remove the temporary files (also done when collected)."""
        self._cleanup()

    def record(self, *, timeout: float) -> tuple[Outcome, Trace]:
        """Run once without faults, recording a trace."""
        outcome, trace = self._run(Schedule(), seed=0, timeout=timeout, record=True)
        return outcome, trace if trace is not None else Trace()

    def run(self, schedule: Schedule, *, seed: int, timeout: float) -> Outcome:
        """Run once under ``schedule``."""
        return self._run(schedule, seed=seed, timeout=timeout, record=False)[0]

    def run_recorded(
        self, schedule: Schedule, *, seed: int, timeout: float
    ) -> tuple[Outcome, Trace]:
        """Run once under ``schedule`` while recording the run's trace."""
        outcome, trace = self._run(schedule, seed=seed, timeout=timeout, record=True)
        return outcome, trace if trace is not None else Trace()

    def _spec(self, schedule: Schedule, seed: int, record: bool, output: Path) -> dict[str, object]:
        match: dict[str, object] = {}
        if self.match is not None:
            match.update(
                (k, v)
                for k, v in (
                    ("role", self.match.role),
                    ("host", self.match.host),
                    ("port", self.match.port),
                )
                if v is not None
            )
        match.update(schedule.match_fields)
        spec: dict[str, object] = {
            "faults": [fault_to_dict(f) for f in schedule.faults],
            "seed": seed,
            "output": str(output),
        }
        if match:
            spec["match"] = match
        if record:
            spec["record"] = True
        return spec

    def _run(
        self, schedule: Schedule, *, seed: int, timeout: float, record: bool
    ) -> tuple[Outcome, Trace | None]:
        self._runs += 1
        output = self._base / f"run-{self._runs}"
        output.mkdir()
        try:
            env = child_environment(self._spec(schedule, seed, record, output), self.env)
            log = output / "output.log"
            log.touch()
            start = now()
            started = None
            if self._server is not None and self._server.alive:
                started = self._server.start(self.argv, env, self.cwd, log)
            if started is not None:
                pid = started
                status, stacks = self._server.wait(pid, timeout, output)  # type: ignore[union-attr]
            else:
                pid, status, stacks = self._exec(env, log, timeout, output)
            _kill_group(pid)  # what the run left behind in its process group
            elapsed = now() - start
            reports = _read_reports(output)
            self.last_events = [e for r in reports for e in r.events]
            tail = _tail(log)
            if status is None:
                details = (
                    f"the command did not finish within {timeout:g}s; "
                    f"stacks of its threads:\n{stacks or '(none written)'}"
                )
                if tail:
                    details += f"\noutput (last lines):\n{tail}"
                outcome = Outcome.failed(
                    "hang", f"no result within {timeout:g}s (hang)", details, elapsed
                )
            else:
                outcome = _outcome(status, pid, reports, tail, elapsed)
            trace = _merge([r for r in reports if r.trace is not None]) if record else None
            return outcome, trace
        finally:
            shutil.rmtree(output, ignore_errors=True)

    def _exec(
        self, env: dict[str, str], log: Path, timeout: float, output: Path
    ) -> tuple[int, int | None, str]:
        """Start the command with exec; return (pid, status or None on a hang, stacks)."""
        with open(log, "wb") as sink:
            try:
                child = subprocess.Popen(
                    self.argv,
                    env=env,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed as one
                )
            except FileNotFoundError as exc:
                raise CommandNotFound(self.argv[0]) from exc
        try:
            return child.pid, child.wait(timeout), ""
        except subprocess.TimeoutExpired:
            stacks = _ask_for_stacks(child.pid, output, lambda: child.poll() is None)
            _kill_group(child.pid)
            child.wait()
            return child.pid, None, stacks


def _clean_up(base: Path, server: _ForkServer | None) -> None:
    if server is not None:
        server.stop()
    shutil.rmtree(base, ignore_errors=True)


class _ForkServer:
    """The parent's end of :mod:`sockwork.faults.exploration.zygote` (JSON lines on pipes)."""

    def __init__(self, env: Mapping[str, str], cwd: str | os.PathLike[str] | None) -> None:
        self._buffer = b""
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from sockwork.faults.exploration.zygote import serve; serve()",
                ],
                env=server_environment(env),
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError:
            self._proc = None

    @property
    def alive(self) -> bool:
        """True while the server runs."""
        return self._proc is not None and self._proc.poll() is None

    def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str | os.PathLike[str] | None,
        log: Path,
    ) -> int | None:
        """Fork a child running ``argv``; its pid, or None when the server failed."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            return None
        request = {
            "argv": list(argv),
            "cwd": None if cwd is None else os.fspath(cwd),
            "env": dict(env),
            "log": str(log),
        }
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
        except OSError:
            self.stop()
            return None
        answer = self._answer(now() + _SERVER_TIMEOUT)
        if answer is None or "pid" not in answer:
            self.stop()
            return None
        return int(answer["pid"])

    def wait(self, pid: int, timeout: float, output: Path) -> tuple[int | None, str]:
        """Wait for the child's status; on a hang get its stacks and kill it (None)."""
        answer = self._answer(now() + timeout)
        if answer is not None:
            return int(answer["status"]), ""
        reaped: list[dict[str, int]] = []

        def alive() -> bool:
            if not reaped:
                found = self._answer(now())
                if found is not None:
                    reaped.append(found)
            return not reaped

        stacks = _ask_for_stacks(pid, output, alive)
        _kill_group(pid)
        if not reaped:
            self._answer(now() + _SERVER_TIMEOUT)  # the server reaps it
        return None, stacks

    def _answer(self, deadline: float) -> dict[str, int] | None:
        """The next answer line, or None at ``deadline`` (or if the server died)."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            return None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = max(0.0, deadline - now())
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                self.stop()
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        data = json.loads(line)
        return data if isinstance(data, dict) else None

    def stop(self) -> None:
        """Stop the server (closing its stdin ends it; killed if it lingers)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _python_call(argv: Sequence[str]) -> str:
    """The statement that runs ``argv`` in this process, for the Python reproduction."""
    program = os.path.basename(argv[0])
    if program.startswith("python") and len(argv) >= 2:
        if argv[1] == "-m" and len(argv) >= 3:
            return (
                f"import runpy, sys; sys.argv = {[argv[2], *argv[3:]]!r}; "
                f"runpy.run_module({argv[2]!r}, run_name='__main__', alter_sys=True)"
            )
        if not argv[1].startswith("-"):
            return (
                f"import runpy, sys; sys.argv = {list(argv[1:])!r}; "
                f"runpy.run_path({argv[1]!r}, run_name='__main__')"
            )
    if program in ("pytest", "py.test"):
        return f"import pytest; pytest.main({list(argv[1:])!r})"
    # Not a Python program this process can run: the faults act in-process only.
    return f"main()  # the entry point of {shlex.join(argv)}; or use the command line form"


def _ask_for_stacks(pid: int, output: Path, alive: Callable[[], bool]) -> str:
    """Ask a hung child for its threads' stacks (SIGUSR1, see startup.py); return them."""
    stacks = output / f"{pid}.stacks"
    sigusr1 = getattr(signal, "SIGUSR1", None)
    if sigusr1 is None or not stacks.exists():
        return ""
    try:
        os.kill(pid, sigusr1)
    except OSError:
        return ""
    # faulthandler writes from its C signal handler: wait until the file stops growing.
    deadline = now() + _STACKS_GRACE
    size = -1
    while now() < deadline and alive():
        time.sleep(0.02)
        current = stacks.stat().st_size
        if current and current == size:
            break
        size = current
    return stacks.read_text(encoding="utf-8", errors="replace").strip()


def _kill_group(pid: int) -> None:
    """Kill the process group ``pid`` leads: the child if it still runs, and what it left."""
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


@dataclass(frozen=True)
class _Report:
    """What one Python process of a run wrote at exit (startup.OUTPUT_FORMAT)."""

    pid: int
    started: float
    trace: Trace | None
    events: tuple[Event, ...]
    error: Mapping[str, str] | None


def _read_reports(output: Path) -> list[_Report]:
    reports = []
    for path in sorted(output.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != OUTPUT_FORMAT:
                continue
            raw_trace = data.get("trace")
            reports.append(
                _Report(
                    int(data["pid"]),
                    float(data["started"]),
                    None if raw_trace is None else Trace.from_json(raw_trace),
                    tuple(Event.from_json(e) for e in data.get("events", ())),
                    data.get("error"),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a process killed while writing: its report is lost
    reports.sort(key=lambda r: r.started)
    return reports


def _merge(reports: Sequence[_Report]) -> Trace:
    """One trace from the processes of a run: the only one, or all on one time line.

    Each process numbers its own connections and attempts; merged, a later process's
    numbers follow the earlier ones' (``candidates`` count connections per role).
    """
    traces = [r.trace for r in reports if r.trace is not None and not r.trace.empty]
    if not traces:
        return Trace()
    if len(traces) == 1:
        return traces[0]
    first = min(r.started for r in reports if r.trace is not None and not r.trace.empty)
    events: list[TraceEvent] = []
    offsets: dict[str, int] = {}
    duration = 0.0
    dropped = 0
    for report in reports:
        trace = report.trace
        if trace is None or trace.empty:
            continue
        shift = report.started - first
        highest: dict[str, int] = {}
        for e in trace.events:
            family = e.kind if e.kind in ("resolve", "connect", "accept") else "stream"
            index = e.index + offsets.get(family, 0)
            highest[family] = max(highest.get(family, 0), index)
            events.append(replace(e, index=index, time=e.time + shift))
        offsets.update(highest)
        duration = max(duration, trace.duration + shift)
        dropped += trace.dropped
    events.sort(key=lambda e: e.time)
    return Trace(tuple(events), duration, dropped)


def _tail(log: Path) -> str:
    try:
        data = log.read_bytes()
    except OSError:
        return ""
    return data[-_OUTPUT_TAIL:].decode("utf-8", errors="replace").strip()


def _outcome(
    status: int, pid: int, reports: Sequence[_Report], tail: str, elapsed: float
) -> Outcome:
    if status == 0:
        return Outcome.ok(elapsed)
    error = next((r.error for r in reports if r.pid == pid and r.error), None)
    if error is None:  # the command is not Python itself: its Python child's error, if any
        error = next((r.error for r in reports if r.error), None)
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        message = f"killed by {name}"
    else:
        message = f"exit status {status}"
    details = f"output (last lines):\n{tail}" if tail else ""
    if error is not None:
        kind: FailureKind = "assertion" if error.get("assertion") else "exception"
        text = error.get("message", "")
        message = f"{error.get('type', 'Exception')}: {text}" if text else error.get("type", "")
        details = error.get("traceback", "") + (f"\n{details}" if details else "")
        return Outcome.failed(kind, message, details, elapsed)
    last = tail.splitlines()[-1].strip() if tail else ""
    if last:
        message += f": {last[:200]}"
    return Outcome.failed("exit", message, details, elapsed)
