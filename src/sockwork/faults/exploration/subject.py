"""The thing under exploration: a :class:`Subject`, and :class:`FunctionSubject` for a callable.

A subject can be run once without faults while recording (``record``) and then
again under schedules (``run``). The oracle is the subject itself: it passes, or it
fails with an exception, a non-zero exit or a hang.

# Rules:
- A run past its deadline that still moves bytes (a long reply read 1 byte at a
  time on a loaded machine) is slow, not hung: it gets up to ``_STRETCH`` deadlines
  while every check sees bytes pass. One that moved nothing since the last check
  (blocked, or spinning on ``b""``) hangs.
- A run never outlives its deadline silently. On a hang the subject reports the
  stacks of every thread, then unblocks the stuck code: the faults are removed
  (waits inside the engine wake up) and every socket the run touched is shut down
  (blocked ``recv``/``accept`` calls return). A thread that still does not finish
  is reported in the outcome's details as leaked.
- A subject runs one schedule at a time.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from sockwork.errors import SockworkError
from sockwork.faults import kernel
from sockwork.faults.budget import now, skipping_endless_waits
from sockwork.faults.exploration.outcome import FailureKind, Outcome
from sockwork.faults.exploration.recorder import Recorder
from sockwork.faults.exploration.schedule import Schedule, fault_source
from sockwork.faults.exploration.trace import Trace, TraceEvent
from sockwork.faults.exploration.zygote import forkable
from sockwork.faults.inject import Injection, Match, MatchSpec, Target
from sockwork.faults.plan import Event
from sockwork.faults.startup import OUTPUT_FORMAT, child_environment, server_environment
from sockwork.faults.vocabulary import fault_to_dict

__all__ = ["CommandNotFound", "FunctionSubject", "ProcessSubject", "RunAbandoned", "Subject"]

# After a hang: how long the unblocked run may take to finish before it is reported leaked.
_UNBLOCK_GRACE = 1.0
# A run past its deadline that still moves bytes gets up to this many deadlines...
_STRETCH = 6
# ...as long as every check, this many seconds apart, sees bytes move.
_PROGRESS_CHECK = 0.5


@runtime_checkable
class Subject(Protocol):
    """What ``explore`` runs: record once without faults, then run schedules."""

    @property
    def command(self) -> Sequence[str] | None:
        """The command line that runs the subject (for ``sockwork run``), or None."""
        ...

    def record(self, *, timeout: float) -> tuple[Outcome, Trace]:
        """Run without faults, recording the network activity; a hang past ``timeout`` fails."""
        ...

    def run(self, schedule: Schedule, *, seed: int, timeout: float) -> Outcome:
        """Run under ``schedule`` (faults seeded with ``seed``); a run past ``timeout`` hangs."""
        ...

    # Optional: ``run_recorded(schedule, *, seed, timeout) -> tuple[Outcome, Trace]`` runs
    # under ``schedule`` while recording; ``explore`` uses it for the failing run's trace.


def _describe(exc: BaseException) -> tuple[str, str]:
    text = str(exc)
    first = text.splitlines()[0] if text else ""
    message = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    details = "".join(traceback.format_exception(exc))
    return message, details


def _stacks(skip: int) -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        if ident == skip:
            continue
        parts.append(
            f"Thread {names.get(ident, ident)!s}:\n" + "".join(traceback.format_stack(frame))
        )
    return "\n".join(parts)


def _moved(scopes: list[Injection]) -> int:
    """A fingerprint of the bytes the scopes' open connections have passed so far."""
    total = 0
    for scope in scopes:
        try:
            conns = list(scope._scope.plan._connections.values())
        except RuntimeError:  # a connection opened meanwhile: that is movement too
            return -1
        for conn in conns:
            total += conn.index * 1_000_003 + conn.send.offset * 31 + conn.recv.offset
    return total


def _wait_while_moving(worker: threading.Thread, scopes: list[Injection], limit: float) -> None:
    """Past its deadline, give a run that still moves bytes more time, up to ``limit``.

    A slow run is not a hung one: 1-byte reads of a long reply on a loaded machine
    may take longer than the deadline while every check sees new bytes pass. A run
    that moved nothing since the last check (blocked, or spinning on ``b""``) hangs.
    """
    while worker.is_alive() and now() < limit:
        mark = _moved(scopes)
        worker.join(min(_PROGRESS_CHECK, max(0.0, limit - now())))
        if worker.is_alive() and _moved(scopes) == mark:
            return


def _remove(scopes: list[Injection]) -> None:
    """Leave the scopes, the faults' own last: ``fired()`` then reads its report."""
    for scope in scopes:
        scope.remove()


def _with_fired(outcome: Outcome, scope: Injection) -> Outcome:
    """Add what the faults of ``scope`` did (its report) to ``outcome``."""
    fired = tuple(
        f"{e.what} {fault_source(e.fault)} on {e.kind} #{e.connection}"
        + (f" {e.direction} at byte {e.offset}" if e.direction is not None else "")
        for e in scope.report.events
    )
    return dataclasses.replace(outcome, fired=fired)


def _combine(user: MatchSpec, schedule: Schedule) -> MatchSpec:
    fields = schedule.match_fields
    own: Match | None = Match(**fields) if fields else None  # type: ignore[arg-type]
    if own is None:
        return user
    if user is None:
        return own
    first, second = user, own

    def both(target: Target) -> bool:
        return bool(first(target)) and bool(second(target))

    return both


class FunctionSubject:
    """Run a callable in this process: it passes unless it raises or outlives its deadline.

    Runs under a schedule skip the endless waits of sockets that have a timeout (a
    stalled read, a connect never answered: see :mod:`sockwork.faults.budget`): the
    test sees its ``TimeoutError`` at once instead of after the timeout. Pass
    ``real_time=True`` to ``run`` to wait them out (``explore`` confirms a failure
    that way before reporting it).

    Args:
        fn: the test, called with no arguments; ``sys.exit(n)`` with n != 0 fails it.
        match: restricts faults (and recording) to these connections (as ``inject``).
        name: how the reproduction calls it (default: ``fn``'s name followed by ``()``).
    """

    def __init__(
        self, fn: Callable[[], object], *, match: MatchSpec = None, name: str | None = None
    ) -> None:
        if not callable(fn):
            raise TypeError(f"FunctionSubject needs a callable, got {fn!r}")
        self.fn = fn
        self.match = match
        self.name = name or f"{getattr(fn, '__name__', 'test')}()"

    @property
    def command(self) -> Sequence[str] | None:
        """None: a callable has no command line."""
        return None

    def record(self, *, timeout: float) -> tuple[Outcome, Trace]:
        """Run once without faults, recording a trace."""
        recorder = Recorder(match=self.match)
        outcome = self._call([recorder._scope], timeout, recorder)
        return outcome, recorder.trace

    def run(
        self, schedule: Schedule, *, seed: int, timeout: float, real_time: bool = False
    ) -> Outcome:
        """Run once under ``schedule`` (``real_time``: wait endless waits out)."""
        scope = Injection(schedule.faults, match=_combine(self.match, schedule), seed=seed)
        # A tracker with no faults attaches to every connection, so a hang can be undone.
        tracker = Injection((), match=self.match, seed=0)
        outcome = self._call([tracker, scope], timeout, None, fast=not real_time)
        return _with_fired(outcome, scope)

    def run_recorded(
        self, schedule: Schedule, *, seed: int, timeout: float, real_time: bool = False
    ) -> tuple[Outcome, Trace]:
        """Run once under ``schedule`` while recording the run's trace."""
        scope = Injection(schedule.faults, match=_combine(self.match, schedule), seed=seed)
        recorder = Recorder(match=self.match)
        outcome = self._call([recorder._scope, scope], timeout, recorder, fast=not real_time)
        return _with_fired(outcome, scope), recorder.trace

    def _call(
        self,
        scopes: list[Injection],
        timeout: float,
        recorder: Recorder | None,
        *,
        fast: bool = False,
    ) -> Outcome:
        result: list[Outcome] = []
        fn = self.fn

        def target() -> None:
            start = now()
            try:
                fn()
            except SystemExit as exc:
                code = exc.code
                if code in (None, 0):
                    result.append(Outcome.ok(now() - start))
                else:
                    message, details = _describe(exc)
                    result.append(
                        Outcome.failed("exit", f"exit status {code}", details, now() - start)
                    )
            except AssertionError as exc:
                message, details = _describe(exc)
                result.append(Outcome.failed("assertion", message, details, now() - start))
            except RunAbandoned:
                return  # the run hung and was stopped: its outcome is already "hang"
            except BaseException as exc:  # the oracle: anything escaping the test fails it
                message, details = _describe(exc)
                result.append(Outcome.failed("exception", message, details, now() - start))
            else:
                result.append(Outcome.ok(now() - start))

        # Exceptions escaping the test's own threads (a server thread dying on a reset)
        # are not the oracle's business: they go into the outcome's details instead of
        # the process's excepthook (which pytest turns into warnings).
        escaped: list[str] = []
        previous_hook = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            if args.exc_value is not None:
                name = args.thread.name if args.thread is not None else "?"
                message, details = _describe(args.exc_value)
                escaped.append(f"exception in thread {name}: {message}\n{details}")

        start = now()
        before = set(threading.enumerate())
        if recorder is not None:
            recorder._start = start
        for scope in scopes:
            scope.__enter__()
        threading.excepthook = hook
        worker = threading.Thread(target=target, name="sockwork-explore-run", daemon=True)
        try:
            with skipping_endless_waits() if fast else contextlib.nullcontext():
                worker.start()
                worker.join(timeout)
                _wait_while_moving(worker, scopes, start + timeout * _STRETCH)
                if worker.is_alive():
                    return self._hang(worker, before, scopes, timeout, now() - start)
        finally:
            threading.excepthook = previous_hook
            if recorder is not None:
                recorder._end = now()
            _remove(scopes)
        outcome = (
            result[0] if result else Outcome.failed("exception", "the run ended without a result")
        )
        if escaped:
            outcome = dataclasses.replace(
                outcome, details="\n".join(filter(None, [outcome.details, *escaped]))
            )
        return outcome

    def _hang(
        self,
        worker: threading.Thread,
        before: set[threading.Thread],
        scopes: list[Injection],
        timeout: float,
        elapsed: float,
    ) -> Outcome:
        stacks = _stacks(skip=threading.get_ident())
        sockets: list[socket.socket] = []
        for scope in scopes:
            try:
                sockets.extend(scope._scope.sockets)
            except RuntimeError:
                pass
        # Unblock: faults out first (waits in the engine wake), then every socket shut.
        _remove(scopes)
        for sock in sockets:
            try:
                if sock.fileno() >= 0:
                    kernel.shutdown_quietly(sock, socket.SHUT_RDWR)
            except OSError:
                pass
        worker.join(_UNBLOCK_GRACE)
        details = f"the run did not finish within {timeout:g}s; stacks of every thread:\n{stacks}"
        if worker.is_alive():
            # Still running: a busy loop (recv() returning b"" forever) or a wait
            # outside the sockets. Stop the run's threads with an exception.
            started = [t for t in threading.enumerate() if t not in before and t.is_alive()]
            stopped = _stop_threads(started, worker)
            if stopped:
                details += "\nthe run's threads were stopped with RunAbandoned"
            else:
                details += (
                    "\nwarning: the run was still running after its sockets were shut down "
                    "and could not be stopped (thread leaked)"
                )
        if not worker.is_alive():
            _close_connections(sockets)
        return Outcome.failed("hang", f"no result within {timeout:g}s (hang)", details, elapsed)


def _close_connections(sockets: list[socket.socket]) -> None:
    """Close the connections a stopped run left open (listeners may be a fixture's)."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            if sock.fileno() >= 0 and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                sock.close()


class RunAbandoned(BaseException):
    """Raised in the threads of a hung run to stop them (``except Exception`` lets it by)."""


def _stop_threads(threads: list[threading.Thread], worker: threading.Thread) -> bool:
    """Raise :class:`RunAbandoned` in ``threads``; True when ``worker`` ended."""
    previous = threading.excepthook

    def quiet(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not RunAbandoned:
            previous(args)

    threading.excepthook = quiet
    try:
        for _ in range(3):  # a thread may be inside a C call: ask again
            for thread in threads:
                if thread.is_alive() and thread.ident is not None:
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(thread.ident), ctypes.py_object(RunAbandoned)
                    )
            worker.join(_UNBLOCK_GRACE / 2)
            if not worker.is_alive():
                break
        for thread in threads:
            thread.join(0.1)
    finally:
        threading.excepthook = previous
    return not worker.is_alive()


# --- a command line, one fresh process per run ----------------------------------------

# How long a hung child has to write its stacks (SIGUSR1) before it is killed.
_STACKS_GRACE = 0.5
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
