"""What a run and an exploration came to: :class:`Outcome` and :class:`ExploreResult`.

``ExploreResult.to_json()`` is the documented ``--json`` form of ``sockwork
explore`` (``"format": 1``)::

    {"format": 1, "found": bool, "schedules_run": int, "elapsed_s": float,
     "seed": int, "fault_kinds_tried": [...],
     "failure": {"kind": "exit"|"exception"|"assertion"|"hang", "message": str} | null,
     "reproduction": {"faults": [{"type": "Slice", ...}], "pytest": str,
                      "python": str, "cli": str} | null}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from sockwork.errors import SockworkError
from sockwork.faults.exploration.schedule import Schedule
from sockwork.faults.exploration.trace import Trace
from sockwork.faults.vocabulary import fault_to_dict

__all__ = [
    "FORMAT",
    "BaselineFailed",
    "ExploreError",
    "ExploreResult",
    "FailureKind",
    "NoNetworkActivity",
    "Outcome",
    "Reproduction",
]

FORMAT = 1
FailureKind = Literal["exit", "exception", "assertion", "hang"]
_KINDS = ("exit", "exception", "assertion", "hang")


@dataclass(frozen=True)
class Outcome:
    """How one run ended: passed, or failed with a kind, a one-line message and details.

    Attributes:
        passed: True when the test passed (exit status 0, no exception, in time).
        kind: the failure: ``"exit"`` (non-zero status), ``"exception"``,
            ``"assertion"`` (an ``AssertionError``) or ``"hang"`` (over its deadline).
        message: one line saying what failed.
        details: the traceback, or the stacks of every thread for a hang.
        duration: seconds the run took.
        fired: what the schedule's faults did, in order (``"close CloseAfter(4, ...)
            on stream #1 recv at byte 4"``): the same schedule replays exactly when
            this is the same.
    """

    passed: bool
    kind: FailureKind | None = None
    message: str = ""
    details: str = ""
    duration: float = 0.0
    fired: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.passed and self.kind is not None:
            raise ValueError("Outcome: a passed run has no failure kind")
        if not self.passed and self.kind not in _KINDS:
            raise ValueError(f"Outcome: kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")

    @classmethod
    def ok(cls, duration: float = 0.0) -> Outcome:
        """A run that passed."""
        return cls(True, duration=duration)

    @classmethod
    def failed(
        cls, kind: FailureKind, message: str, details: str = "", duration: float = 0.0
    ) -> Outcome:
        """A run that failed."""
        return cls(False, kind, message, details, duration)

    def to_json(self) -> dict[str, object] | None:
        """``{"kind": ..., "message": ...}`` for a failure, None for a pass."""
        if self.passed:
            return None
        return {"kind": self.kind, "message": self.message}

    def __str__(self) -> str:
        return "passed" if self.passed else f"{self.kind}: {self.message}"


@dataclass(frozen=True)
class Reproduction:
    """A failing schedule in the three forms a user pastes back, with its seed."""

    schedule: Schedule
    seed: int
    pytest: str
    python: str
    cli: str

    @classmethod
    def of(
        cls,
        schedule: Schedule,
        *,
        seed: int,
        command: Sequence[str] | None = None,
        call: str = "test()",
    ) -> Reproduction:
        """Build the three reproduction strings of ``schedule`` run with ``seed``."""
        return cls(
            schedule,
            seed,
            schedule.pytest_source(seed=seed),
            schedule.python_source(seed=seed, call=call),
            schedule.cli_source(seed=seed, command=command),
        )

    def to_json(self) -> dict[str, object]:
        """The ``reproduction`` object of the ``--json`` form."""
        return {
            "faults": [fault_to_dict(f) for f in self.schedule.faults],
            "match": self.schedule.match_fields,
            "seed": self.seed,
            "pytest": self.pytest,
            "python": self.python,
            "cli": self.cli,
        }


@dataclass(frozen=True)
class ExploreResult:
    """What an exploration found (see the module docstring for the JSON form).

    Attributes:
        found: True when a schedule made the test fail.
        schedules_run: how many runs with faults were made (shrinking included).
        elapsed_s: wall time of the whole exploration.
        seed: the seed of the exploration (and of every run's faults).
        fault_kinds_tried: the fault class names the runs covered, sorted.
        failure: how the shrunk schedule's run failed (None when nothing was found).
        reproduction: the shrunk schedule and its three reproductions.
        found_schedule: the schedule that failed first, before shrinking.
        trace: the recorded run without faults.
        failing_trace: the run of the shrunk schedule, recorded (when available).
        replayed: True when the shrunk schedule failed again on a last replay.
        replay_exact: the replay failed with the faults firing exactly as in the
            failing run (same faults, connections and offsets).
        flaky: schedules that failed once but passed their confirmation, or were
            confirmed but passed the replay after shrinking (not reported as finds;
            the first of the latter is reported when nothing replays).
    """

    found: bool
    schedules_run: int
    elapsed_s: float
    seed: int
    fault_kinds_tried: tuple[str, ...]
    failure: Outcome | None = None
    reproduction: Reproduction | None = None
    found_schedule: Schedule | None = None
    trace: Trace = field(default_factory=Trace)
    failing_trace: Trace | None = None
    replayed: bool = False
    replay_exact: bool = False
    flaky: int = 0

    @property
    def schedule(self) -> Schedule | None:
        """The shrunk failing schedule, or None."""
        return None if self.reproduction is None else self.reproduction.schedule

    def to_json(self) -> dict[str, object]:
        """The documented ``--json`` form, versioned with ``"format": 1``."""
        return {
            "format": FORMAT,
            "found": self.found,
            "schedules_run": self.schedules_run,
            "elapsed_s": round(self.elapsed_s, 3),
            "seed": self.seed,
            "fault_kinds_tried": list(self.fault_kinds_tried),
            "failure": None if self.failure is None else self.failure.to_json(),
            "reproduction": None if self.reproduction is None else self.reproduction.to_json(),
        }

    def summary(self) -> str:
        """One line: what was found, or how much was tried."""
        kinds = ", ".join(self.fault_kinds_tried) or "none"
        if not self.found or self.failure is None or self.reproduction is None:
            flaky = f"; {self.flaky} flaky failure(s) did not repeat" if self.flaky else ""
            return (
                f"no failing schedule in {self.schedules_run} run(s) "
                f"({self.elapsed_s:.1f}s, seed {self.seed}); fault kinds tried: {kinds}{flaky}"
            )
        return (
            f"found a failing schedule after {self.schedules_run} run(s) "
            f"({self.elapsed_s:.1f}s, seed {self.seed}): {self.reproduction.schedule} -> "
            f"{self.failure}"
        )

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.reproduction is not None:
            r = self.reproduction
            lines += ["", "reproduce with pytest:", f"  {r.pytest}", "", "in Python:"]
            lines += [f"  {line}" if line else "" for line in r.python.splitlines()]
            lines += ["", "from the command line:", f"  {r.cli}"]
            if not self.replayed:
                lines += [
                    "",
                    "note: the shrunk schedule did not fail again on replay (flaky test?)",
                ]
            elif not self.replay_exact:
                lines += ["", "note: on replay the faults fired differently (thread timing?)"]
            excerpt = self.excerpt()
            if excerpt:
                lines += ["", "what fired, and the trace around it:", excerpt]
        return "\n".join(lines)

    def excerpt(self, *, limit: int = 12) -> str:
        """What the shrunk schedule's faults did, then the failing run's trace around it."""
        if self.failure is None:
            return ""
        lines = [f"  {event}" for event in self.failure.fired]
        trace = self.failing_trace
        if trace is not None and not trace.empty:
            index, offset = self._where(trace)
            text = trace.excerpt(index=index, around=offset, limit=limit)
            lines += [f"  {line}" for line in text.splitlines()]
        return "\n".join(lines)

    def _where(self, trace: Trace) -> tuple[int | None, int]:
        """The recorded connection and offset where the first stream fault fired."""
        role = self.schedule.role if self.schedule is not None else None
        for text in self.failure.fired if self.failure is not None else ():
            # "fired Slice(1, ...) on stream #1 recv at byte 4"
            words = text.rpartition(" on ")[2].split()
            if len(words) >= 2 and words[0] == "stream" and words[1][1:].isdigit():
                index = int(words[1][1:])
                offset = int(words[-1]) if words[-1].isdigit() else 0
                for conn in trace.connections():
                    mine = conn.role_index if role is not None else conn.index
                    if mine == index and (role is None or conn.role == role):
                        return conn.index, offset
        return None, 0


class ExploreError(SockworkError, RuntimeError):
    """Exploration cannot start: the test is not fit to explore (the message says why)."""


class BaselineFailed(ExploreError):
    """The test fails without any fault: exploring is meaningless until it passes.

    Attributes:
        outcome: how the run without faults failed.
    """

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(
            f"the test already fails without faults ({outcome}); fix it before exploring"
        )
        self.outcome = outcome


class NoNetworkActivity(ExploreError):
    """The test did no network I/O without faults: there is nothing to place faults on."""

    def __init__(self) -> None:
        super().__init__(
            "the test did no network I/O (no look-up, connection or accept): nothing to explore"
        )
