from __future__ import annotations

import sys

import pytest

from sockwork.console.stampede import EndingSessions


class Interpreter:
    """A stand-in for sys.get/setswitchinterval, in whole microseconds as CPython keeps it."""

    def __init__(self, interval: float = 0.005, threads: int = 1000) -> None:
        self.micros = round(interval * 1e6)
        self.threads = threads
        self.sets: list[float] = []

    def get(self) -> float:
        return self.micros * 1e-6

    def set(self, interval: float) -> None:
        self.sets.append(interval)
        self.micros = int(interval * 1e6)

    def ending(self, **options: float) -> EndingSessions:
        return EndingSessions(
            threads=lambda: self.threads,
            get_interval=self.get,
            set_interval=self.set,
            **options,  # type: ignore[arg-type]
        )


def test_stampede_below_the_crowd_leaves_the_interval_alone() -> None:
    interpreter = Interpreter()
    ending = interpreter.ending(crowd=3)
    ending.begin("a")
    ending.begin("b")
    ending.begin("b")  # counted once
    assert ending.ending == 2
    assert not ending.raised
    assert interpreter.sets == []


def test_stampede_a_crowd_raises_the_interval_per_thread_and_restores_it() -> None:
    interpreter = Interpreter(threads=2000)
    ending = interpreter.ending(crowd=3, per_thread=25e-6)
    for name in "abcd":
        ending.begin(name)
    assert ending.raised
    assert interpreter.sets == [pytest.approx(0.05)]  # 2,000 threads x 25 µs, set once
    ending.end("a")
    assert ending.raised  # still 3 ending
    ending.end("b")  # 2 left: below the crowd
    assert not ending.raised
    assert interpreter.get() == pytest.approx(0.005)
    assert ending.ending == 2


def test_stampede_the_interval_is_capped_by_the_ceiling() -> None:
    interpreter = Interpreter(threads=100_000)
    ending = interpreter.ending(crowd=1, ceiling=0.5)
    ending.begin("a")
    assert interpreter.get() == pytest.approx(0.5)


def test_stampede_never_shortens_a_longer_interval() -> None:
    interpreter = Interpreter(interval=0.2, threads=100)
    ending = interpreter.ending(crowd=1)
    ending.begin("a")
    assert not ending.raised
    ending.end("a")
    assert interpreter.sets == []


def test_stampede_keeps_an_interval_someone_else_set_meanwhile() -> None:
    interpreter = Interpreter(threads=4000)
    ending = interpreter.ending(crowd=1)
    ending.begin("a")
    interpreter.set(0.02)  # the program's own choice, made while raised
    ending.end("a")
    assert not ending.raised
    assert interpreter.get() == pytest.approx(0.02)


def test_stampede_end_of_a_session_never_begun_is_ignored() -> None:
    interpreter = Interpreter()
    ending = interpreter.ending(crowd=1)
    ending.end("a")
    assert ending.ending == 0
    assert interpreter.sets == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"crowd": 0}, "crowd must be >= 1 session, got 0"),
        ({"per_thread": 0.0}, "per_thread and ceiling must be > 0 seconds"),
        ({"ceiling": -1.0}, "per_thread and ceiling must be > 0 seconds"),
    ],
)
def test_stampede_bad_limits_are_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EndingSessions(**options)  # type: ignore[arg-type]


def test_stampede_drives_the_real_interpreter_and_puts_it_back() -> None:
    before = sys.getswitchinterval()
    ending = EndingSessions(crowd=2, per_thread=1.0, ceiling=before * 10)
    ending.begin("a")
    ending.begin("b")
    try:
        assert sys.getswitchinterval() == pytest.approx(before * 10)
    finally:
        ending.end("a")
    assert sys.getswitchinterval() == before
