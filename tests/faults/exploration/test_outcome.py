from __future__ import annotations

import json

import pytest

from sockwork.faults import Slice
from sockwork.faults.exploration.outcome import ExploreResult, Outcome, Reproduction
from sockwork.faults.exploration.schedule import Schedule


def test_outcome_kinds_are_checked() -> None:
    assert Outcome.ok().to_json() is None
    assert Outcome.failed("hang", "no result").to_json() == {"kind": "hang", "message": "no result"}
    with pytest.raises(ValueError, match="kind must be one of"):
        Outcome(False, "crash")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no failure kind"):
        Outcome(True, "hang")


def test_explore_result_json_has_the_documented_keys() -> None:
    schedule = Schedule((Slice(1, direction="recv"),))
    result = ExploreResult(
        found=True,
        schedules_run=3,
        elapsed_s=0.1234,
        seed=5,
        fault_kinds_tried=("Slice",),
        failure=Outcome.failed("assertion", "AssertionError: b'x'"),
        reproduction=Reproduction.of(schedule, seed=5, command=["python", "c.py"]),
        replayed=True,
    )
    data = json.loads(json.dumps(result.to_json()))
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
    assert data["format"] == 1 and data["found"] is True and data["elapsed_s"] == 0.123
    assert data["failure"] == {"kind": "assertion", "message": "AssertionError: b'x'"}
    assert data["reproduction"]["faults"] == [
        {"type": "Slice", "max_bytes": 1, "direction": "recv"}
    ]
    assert data["reproduction"]["cli"].endswith("-- python c.py")
    assert {"pytest", "python", "cli"} <= set(data["reproduction"])


def test_explore_result_without_a_find_is_null_and_says_what_was_tried() -> None:
    result = ExploreResult(False, 10, 1.0, 0, ("CloseAfter", "Slice"))
    data = result.to_json()
    assert data["failure"] is None and data["reproduction"] is None
    assert "no failing schedule in 10 run(s)" in result.summary()
    assert "CloseAfter, Slice" in result.summary()
