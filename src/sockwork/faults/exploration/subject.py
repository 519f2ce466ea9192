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
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from sockwork.faults import kernel
from sockwork.faults.budget import now, skipping_endless_waits
from sockwork.faults.exploration.outcome import Outcome
from sockwork.faults.exploration.process import CommandNotFound, ProcessSubject
from sockwork.faults.exploration.recorder import Recorder
from sockwork.faults.exploration.schedule import Schedule, fault_source
from sockwork.faults.exploration.trace import Trace
from sockwork.faults.inject import Injection, Match, MatchSpec, Target

# CommandNotFound and ProcessSubject live in sockwork.faults.exploration.process; they are
# re-exported here, where they were first defined, so older imports keep working.
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
