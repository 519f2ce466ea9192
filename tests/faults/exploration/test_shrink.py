from __future__ import annotations

import pytest

from sockwork.faults import CloseAfter, Latency, Refuse, Slice
from sockwork.faults.exploration.schedule import Schedule
from sockwork.faults.exploration.shrink import shrink, simpler


def test_shrink_drops_faults_that_do_not_matter() -> None:
    needed = Slice(1, direction="recv")
    start = Schedule((Refuse(connections={2}), needed, CloseAfter(9, direction="send")))
    result = shrink(start, lambda s: needed in s.faults)
    assert result.faults == (needed,)


def test_shrink_moves_to_the_earliest_connection_and_smallest_offset() -> None:
    start = Schedule((CloseAfter(10, direction="recv", reset=True, connections={3}),))

    def fails(s: Schedule) -> bool:
        (f,) = s.faults
        return isinstance(f, CloseAfter) and f.bytes >= 4  # cut inside the payload

    (fault,) = shrink(start, fails).faults
    assert fault == CloseAfter(4, direction="recv", connections={1})


def test_shrink_keeps_the_schedule_when_nothing_simpler_fails() -> None:
    start = Schedule((Slice(1, direction="recv", connections={1}),), role="client")
    assert shrink(start, lambda s: s == start) == start


def test_shrink_respects_its_budget() -> None:
    calls: list[Schedule] = []

    def fails(s: Schedule) -> bool:
        calls.append(s)
        return any(isinstance(f, CloseAfter) for f in s.faults)

    start = Schedule((CloseAfter(1000, connections={9}, reset=True), Refuse(), Slice(3)))
    shrink(start, fails, budget=5)
    assert len(calls) == 5
    with pytest.raises(ValueError, match="budget must be >= 0"):
        shrink(Schedule(), fails, budget=-1)


def test_simpler_proposes_milder_parameters() -> None:
    assert CloseAfter(5, reset=False) in set(simpler(CloseAfter(5, reset=True)))
    assert Latency(1.0) in set(simpler(Latency(2.0)))
    assert not list(simpler(Slice(1, direction="recv")))
