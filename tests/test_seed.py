"""Every seed option reads its value the same way (sockwork.seed)."""

from __future__ import annotations

import argparse

import pytest

from sockwork.cli import build_parser
from sockwork.seed import seed_argument


def test_seed_argument_reads_whole_numbers() -> None:
    assert seed_argument("7") == 7
    assert seed_argument(" -3 ") == -3


@pytest.mark.parametrize("text", ["x", "1.5", "", "1_000"])
def test_seed_argument_bad_value_is_a_usage_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        seed_argument(text)
    assert str(info.value) == f"seed must be a whole number, not {text!r}"


def _seed_options(parser: argparse.ArgumentParser, path: str = "sockwork") -> dict[str, object]:
    found: dict[str, object] = {}
    for action in parser._actions:
        if "--seed" in action.option_strings:
            found[path] = action.type
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_seed_options(sub, f"{path} {name}"))
    return found


def test_seed_option_of_every_command_uses_seed_argument() -> None:
    found = _seed_options(build_parser())
    assert set(found) >= {
        "sockwork run",
        "sockwork proxy",
        "sockwork toxiproxy-server",
        "sockwork explore",
    }
    assert all(kind is seed_argument for kind in found.values()), found


def test_seed_option_bad_value_exits_2_naming_the_seed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["proxy", "--listen", ":0", "--upstream", ":1", "--seed", "x"])
    assert info.value.code == 2
    assert "argument --seed: seed must be a whole number, not 'x'" in capsys.readouterr().err
