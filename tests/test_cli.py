from __future__ import annotations

import pytest

from sockwork import __version__
from sockwork.cli import build_parser, main


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sockwork {__version__}"


def test_cli_without_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage: sockwork" in capsys.readouterr().err


# int() reads "٣" as 3 and float() reads "inf" and "nan": every number option reads
# ASCII digits and finite values only, and anything else is a one-line usage error.
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--refuse", "٣", "--", "true"], "argument --refuse: N must be a whole number"),
        (["run", "--refuse", "-1", "--", "true"], "argument --refuse: N must be a whole number"),
        (["run", "--seed", "٣", "--", "true"], "argument --seed: seed must be a whole number"),
        (["run", "--match-port", "٣", "--", "true"], "argument --match-port: port must be"),
        (["run", "--match-port", "70000", "--", "true"], "argument --match-port: port must be"),
        (["run", "--probability", "١", "--", "true"], "argument --probability: probability must"),
        (["run", "--probability", "nan", "--", "true"], "argument --probability: probability"),
        (["proxy", "--upstream", "h:1", "--seed", "٣"], "argument --seed: seed must be"),
        (["toxiproxy-server", "--port", "٣"], "argument --port: port must be"),
        (["toxiproxy-server", "--seed", "١٢"], "argument --seed: seed must be"),
        (["serve", "m:T", "--port", "٣"], "argument --port: port must be"),
        (["serve", "m:T", "--port", "99999"], "argument --port: port must be"),
        (["serve", "m:T", "--max-clients", "٣"], "argument --max-clients: max clients must"),
        (["serve", "m:T", "--max-clients", "-1"], "argument --max-clients: max clients must"),
        (["serve", "m:T", "--idle-timeout", "inf"], "argument --idle-timeout: idle timeout must"),
        (["serve", "m:T", "--idle-timeout", "nan"], "argument --idle-timeout: idle timeout must"),
        (["serve", "m:T", "--idle-timeout", "٣"], "argument --idle-timeout: idle timeout must"),
    ],
)
def test_cli_numbers_are_ascii_and_finite(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"sockwork {argv[0]}: error: {message}")


def test_cli_numbers_in_ascii_still_work() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--refuse",
            "2",
            "--seed",
            "-7",
            "--match-port",
            "80",
            "--probability",
            ".5",
            "--",
            "true",
        ]
    )
    assert (args.refuse, args.seed, args.match_port, args.probability) == (2, -7, 80, 0.5)
    args = build_parser().parse_args(["serve", "m:T", "--port", "0", "--idle-timeout", "1.5"])
    assert (args.port, args.idle_timeout, args.max_clients) == (0, 1.5, 100)
