"""``explore(fn)``: find the network fault schedule that breaks a test, and shrink it.

Record the test once without faults, run it under the candidate schedules placed
on what it did (:mod:`~sockwork.faults.exploration.candidates`), stop at the first
failure, shrink it (:mod:`~sockwork.faults.exploration.shrink`) and print the
reproduction.

# Rules:
- A test that fails without faults, or does no network I/O, cannot be explored:
  :class:`BaselineFailed` / :class:`NoNetworkActivity` say so at once.
- Everything is seeded: one seed gives one sequence of schedules, and every run's
  faults use that seed, so a reproduction replays exactly.
- Each run has a deadline (``per_run_timeout``, by default above the test's own
  socket timeouts and its duration without faults); a run past it is a hang.
- A failure is believed only when it comes back: the first one found is confirmed
  in real time before shrinking, and shrinking keeps a milder schedule only when
  it fails twice (its run, then a real-time one). The shrunk schedule is replayed
  once more; when that passes, the confirmed schedule is replayed; when that
  passes too, the failure depends on thread timing: the search goes on, and that
  find is reported (``replayed`` False) only if no other one replays.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TextIO

from sockwork.faults.exploration.candidates import candidates, explored_kinds
from sockwork.faults.exploration.outcome import (
    BaselineFailed,
    ExploreResult,
    NoNetworkActivity,
    Outcome,
    Reproduction,
)
from sockwork.faults.exploration.schedule import Schedule
from sockwork.faults.exploration.shrink import shrink
from sockwork.faults.exploration.subject import FunctionSubject, Subject
from sockwork.faults.exploration.trace import Trace
from sockwork.faults.inject import MatchSpec

__all__ = ["default_per_run_timeout", "explore"]

# A run without faults must finish within this when no per_run_timeout is given.
_BASELINE_TIMEOUT = 60.0
_SHRINK_BUDGET = 60
# A hang is confirmed with a deadline this many times longer.
_HANG_CONFIRM = 2

Progress = Callable[[int, int, float], None]


def default_per_run_timeout(trace: Trace) -> float:
    """A run's deadline: above the test's duration and its longest socket timeout."""
    longest = trace.longest_timeout or 0.0
    return max(2.0, 4 * trace.duration + 1.0, 2 * longest + trace.duration + 1.0)


def _delay(trace: Trace, per_run: float) -> float | None:
    """The delay that latency faults try: above the test's timeouts, within the deadline."""
    longest = trace.longest_timeout
    if longest is None:
        return None
    delay = round(longest * 1.25 + 0.05, 3)
    return delay if delay < per_run else None


def explore(
    fn: Callable[[], object] | Subject,
    *,
    budget: int = 500,
    time: float = 60.0,
    seed: int = 0,
    match: MatchSpec = None,
    faults: Collection[str] | None = None,
    per_run_timeout: float | None = None,
    progress: Progress | TextIO | None = None,
) -> ExploreResult:
    """Run ``fn`` under fault schedules until one makes it fail; shrink and report it.

    Args:
        fn: the test (a callable that raises or returns) or a :class:`Subject`.
        budget: the most schedules to run (shrinking not counted).
        time: the most seconds to spend looking (recording and shrinking not
            counted; one schedule at least is run).
        seed: the seed of the schedule sequence and of every run's faults.
        match: only these connections and look-ups (a ``Match`` or a callable).
        faults: fault class names to try (``{"Slice", "CloseAfter"}``); None: all.
        per_run_timeout: a run past this many seconds is a hang (default: above
            the test's own timeouts and duration).
        progress: called as ``progress(runs, failures, elapsed)`` after each run, or
            a terminal stream to draw a progress line on.

    Returns:
        An :class:`ExploreResult`: ``found``, the shrunk reproduction, counts.

    Raises:
        ValueError: ``budget`` < 1, ``time`` <= 0, ``per_run_timeout`` <= 0, or an
            unknown fault kind.
        BaselineFailed: the test fails without faults.
        NoNetworkActivity: the test did no network I/O.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be an int >= 1 (schedules to run), got {budget!r}")
    if not isinstance(time, (int, float)) or not time > 0:
        raise ValueError(f"time must be a number of seconds > 0, got {time!r}")
    if per_run_timeout is not None and not per_run_timeout > 0:
        raise ValueError(f"per_run_timeout must be > 0 seconds, got {per_run_timeout!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    kinds = explored_kinds(faults)
    subject: Subject
    if isinstance(fn, Subject):
        subject = fn
    elif callable(fn):
        subject = FunctionSubject(fn, match=match)
    else:
        raise TypeError(f"explore() needs a callable or a Subject, got {fn!r}")
    report = _reporter(progress)

    started = _time.monotonic()
    outcome, trace = subject.record(timeout=per_run_timeout or _BASELINE_TIMEOUT)
    if not outcome.passed:
        raise BaselineFailed(outcome)
    if trace.empty:
        raise NoNetworkActivity()
    per_run = per_run_timeout or default_per_run_timeout(trace)
    delay = _delay(trace, per_run)

    runs = 0
    flaky = 0
    tried: set[str] = set()
    settled: _Find | None = None
    unsettled: _Find | None = None  # failed, confirmed, shrunk, yet its replay passed
    # ``time`` bounds the looking, not the recording: a slow baseline on a loaded
    # machine must not leave no time at all for the schedules.
    deadline = _time.monotonic() + time

    def counted(outcome: Outcome) -> Outcome:
        nonlocal runs
        runs += 1
        report(runs, 1, _time.monotonic() - started)
        return outcome

    for schedule in candidates(trace, seed=seed, kinds=kinds, timeout=delay):
        if runs >= budget or (runs and _time.monotonic() >= deadline):
            break  # at least one schedule runs, however short ``time`` is
        result = subject.run(schedule, seed=seed, timeout=per_run)
        runs += 1
        tried.update(schedule.kinds)
        report(runs, 0 if result.passed else 1, _time.monotonic() - started)
        if result.passed:
            continue
        # Confirm before believing it, in real time (no endless wait skipped): a
        # failure that does not come back in two more runs (a loaded machine missing
        # a deadline, a race in the test) is not a find. A hang is confirmed with a
        # longer deadline: slow (retries backing off under a fault on every attempt)
        # is not stuck.
        confirm = per_run * _HANG_CONFIRM if result.kind == "hang" else per_run
        again = [_run(subject, schedule, seed, confirm, real_time=True)]
        runs += 1
        if again[0].passed and result.kind != "hang":
            again.append(_run(subject, schedule, seed, confirm, real_time=True))
            runs += 1
        if again[-1].passed:
            flaky += 1
            continue
        find = _settle(subject, schedule, result, seed, per_run, counted)
        if find.replay.passed:
            # Neither the shrunk schedule nor the confirmed one failed on replay: the
            # failure depends on thread timing. Look on for one that replays; report
            # this one only if none does.
            flaky += 1
            unsettled = unsettled or find
            continue
        settled = find
        break

    found = settled or unsettled
    _end_line(progress)
    if found is None:
        return ExploreResult(
            found=False,
            schedules_run=runs,
            elapsed_s=_time.monotonic() - started,
            seed=seed,
            fault_kinds_tried=tuple(sorted(tried)),
            trace=trace,
            flaky=flaky,
        )
    command = getattr(subject, "command", None)
    call = getattr(subject, "name", "test()")
    return ExploreResult(
        found=True,
        schedules_run=runs,
        elapsed_s=_time.monotonic() - started,
        seed=seed,
        fault_kinds_tried=tuple(sorted(tried)),
        failure=found.failure,
        reproduction=Reproduction.of(found.shrunk, seed=seed, command=command, call=call),
        found_schedule=found.first,
        trace=trace,
        failing_trace=found.failing_trace,
        replayed=not found.replay.passed,
        replay_exact=not found.replay.passed and found.replay.fired == found.failure.fired,
        flaky=flaky - (1 if settled is None else 0),
    )


@dataclass(frozen=True)
class _Find:
    """A confirmed failure, shrunk and replayed."""

    first: Schedule
    shrunk: Schedule
    failure: Outcome
    replay: Outcome
    failing_trace: Trace | None


def _settle(
    subject: Subject,
    first: Schedule,
    failure: Outcome,
    seed: int,
    per_run: float,
    counted: Callable[[Outcome], Outcome],
) -> _Find:
    """Shrink a confirmed failing schedule, then replay the result in real time."""
    last: dict[str, Outcome] = {}

    def still_fails(proposal: Schedule) -> bool:
        result = counted(subject.run(proposal, seed=seed, timeout=per_run))
        if result.passed:
            return False
        # A milder schedule replaces a confirmed one only if it fails again, in real
        # time: one that fails with some thread timings only (a FIN whose RST depends
        # on whether the request had arrived) would make a reproduction that does not
        # reproduce. A hang was confirmed with a longer deadline when found: waiting
        # out each milder one again would double the cost of shrinking it.
        if result.kind != "hang":
            if counted(_run(subject, proposal, seed, per_run, real_time=True)).passed:
                return False
        last[repr(proposal.key())] = result
        return True

    shrunk = shrink(first, still_fails, budget=_SHRINK_BUDGET)
    failure = last.get(repr(shrunk.key()), failure)
    # Replay the shrunk schedule once more, recorded and in real time: it must fail
    # again. If it does not, the schedule that was confirmed is the reproduction.
    replay, failing_trace = _replay(subject, shrunk, seed, per_run)
    counted(replay)
    if replay.passed and shrunk != first:
        shrunk = first
        replay, failing_trace = _replay(subject, shrunk, seed, per_run)
        counted(replay)
    if not replay.passed:
        failure = replay
    return _Find(first, shrunk, failure, replay, failing_trace)


def _run(
    subject: Subject, schedule: Schedule, seed: int, timeout: float, *, real_time: bool
) -> Outcome:
    """Run ``schedule``; ``real_time`` asks a FunctionSubject to wait endless waits out."""
    if isinstance(subject, FunctionSubject):
        return subject.run(schedule, seed=seed, timeout=timeout, real_time=real_time)
    return subject.run(schedule, seed=seed, timeout=timeout)


def _replay(
    subject: Subject, schedule: Schedule, seed: int, timeout: float
) -> tuple[Outcome, Trace | None]:
    """Run ``schedule`` in real time, recorded when the subject can record a run."""
    if isinstance(subject, FunctionSubject):
        return subject.run_recorded(schedule, seed=seed, timeout=timeout, real_time=True)
    recorded = getattr(subject, "run_recorded", None)
    if recorded is not None:
        outcome, trace = recorded(schedule, seed=seed, timeout=timeout)
        return outcome, trace
    return subject.run(schedule, seed=seed, timeout=timeout), None


def _end_line(progress: Progress | TextIO | None) -> None:
    """End the progress line drawn on a terminal."""
    if progress is not None and not callable(progress) and progress.isatty():
        progress.write("\n")
        progress.flush()


def _reporter(progress: Progress | TextIO | None) -> Progress:
    if progress is None:
        return lambda runs, failures, elapsed: None
    if callable(progress):
        return progress
    stream = progress
    if not stream.isatty():
        return lambda runs, failures, elapsed: None

    def line(runs: int, failures: int, elapsed: float) -> None:
        stream.write(
            f"\rsockwork explore: {runs} schedule(s), {failures} failure(s), {elapsed:.1f}s"
        )
        stream.flush()

    return line
