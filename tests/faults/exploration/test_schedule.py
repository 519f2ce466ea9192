from __future__ import annotations

import json
import shlex

import pytest

from sockwork.faults import CloseAfter, DnsFailure, Match, Slice, Stall, inject
from sockwork.faults.command import faults_from_options
from sockwork.faults.exploration.schedule import Schedule, fault_source
from sockwork.faults.vocabulary import FAULT_TYPES


@pytest.mark.parametrize(
    "fault",
    [
        Slice(1, direction="recv"),
        CloseAfter(4, direction="send", reset=True, connections={2}),
        Stall(after_bytes=3, connections=range(2, 9)),
        DnsFailure("again", connections={1}),
        DnsFailure(),
    ],
)
def test_fault_source_builds_an_equal_fault(fault: object) -> None:
    source = fault_source(fault)  # type: ignore[arg-type]
    assert eval(source, dict(FAULT_TYPES)) == fault


def test_fault_source_writes_main_arguments_positionally() -> None:
    assert fault_source(Slice(1, direction="recv")) == 'Slice(1, direction="recv")'
    assert fault_source(CloseAfter(0, connections={1})) == "CloseAfter(0, connections={1})"


def test_schedule_json_round_trip() -> None:
    schedule = Schedule((Slice(1, direction="recv", connections={1}),), role="client")
    data = json.loads(json.dumps(schedule.to_json()))
    assert Schedule.from_json(data) == schedule


def test_schedule_key_ignores_fault_order() -> None:
    a, b = Slice(1), CloseAfter(3)
    assert Schedule((a, b)).key() == Schedule((b, a)).key()
    assert Schedule((a,)).key() != Schedule((a,), role="client").key()


def test_schedule_rejects_bad_role_and_non_faults() -> None:
    with pytest.raises(ValueError, match="role must be one of"):
        Schedule((), role="peer")
    with pytest.raises(TypeError, match="not a fault"):
        Schedule(("Slice",))  # type: ignore[arg-type]


def test_reproduction_strings_replay_the_schedule() -> None:
    schedule = Schedule((CloseAfter(4, direction="recv", connections={1}),), role="client")
    marker = schedule.pytest_source(seed=7)
    assert marker == (
        '@pytest.mark.netfaults(CloseAfter(4, direction="recv", connections={1}), '
        'match=Match(role="client"), seed=7)'
    )
    code = schedule.python_source(seed=7, call="check()")
    assert code.startswith("from sockwork.faults import CloseAfter, Match, inject\n")
    assert code.endswith(
        'with inject(CloseAfter(4, direction="recv", connections={1}), '
        'match=Match(role="client"), seed=7):\n    check()'
    )
    # the Python code builds the same scope
    namespace = {"inject": inject, "Match": Match, **FAULT_TYPES}
    handle = eval(code.split("with ", 1)[1].split(":\n")[0], namespace)
    assert handle.faults == schedule.faults and handle.seed == 7


def test_cli_reproduction_parses_back_to_the_same_faults() -> None:
    import argparse

    from sockwork.faults.command import add_fault_options

    schedule = Schedule(
        (CloseAfter(4, direction="recv", reset=True, connections={2}),), role="client"
    )
    argv = shlex.split(schedule.cli_source(seed=3, command=["python", "client.py"]))
    assert argv[:2] == ["sockwork", "run"]
    assert argv[-3:] == ["--", "python", "client.py"]
    parser = argparse.ArgumentParser()
    add_fault_options(parser)
    parser.add_argument("--match-role")
    args, rest = parser.parse_known_args(argv[2 : argv.index("--")])
    assert rest == []
    assert faults_from_options(args) == list(schedule.faults)
    assert args.match_role == "client" and args.seed == 3
