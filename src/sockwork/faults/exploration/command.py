"""``sockwork explore [OPTIONS] -- COMMAND ARGS...``: find the faults that break a program.

COMMAND runs once without faults (recorded), then once per candidate schedule, a
fresh process each time, traced and injected by the ``sockwork run`` start-up hook
(:class:`~sockwork.faults.exploration.process.ProcessSubject`). The oracle is its
exit status (0 passes) and the per-run deadline.

# Rules:
- Exit status 1: a failing schedule was found (the shrunk reproduction is printed
  last, on stdout); 0: none within the budget (how many ran, which fault kinds);
  2: a usage error, including a COMMAND that cannot be explored (not found, fails
  without faults, does no network I/O). Each usage error is one line on stderr.
- A progress line is drawn on stderr only when stderr is a terminal.
- ``--json FILE`` (``-``: stdout, the text then goes to stderr) writes
  ``ExploreResult.to_json()``, ``"format": 1``; nothing is written on a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from functools import partial
from typing import TextIO

from sockwork.address import parse_address, parse_int
from sockwork.cli import argument_type
from sockwork.faults.exploration.candidates import EXPLORED_KINDS, explored_kinds
from sockwork.faults.exploration.explorer import explore
from sockwork.faults.exploration.outcome import (
    BaselineFailed,
    ExploreResult,
    NoNetworkActivity,
    Reproduction,
)
from sockwork.faults.exploration.process import CommandNotFound, ProcessSubject
from sockwork.faults.exploration.schedule import Schedule
from sockwork.faults.inject import Match
from sockwork.faults.units import parse_duration
from sockwork.seed import seed_argument

__all__ = ["register", "run"]

_EPILOG = f"""\
examples:
  sockwork explore -- python client.py
  sockwork explore --budget 200 --faults Slice,CloseAfter --json result.json -- python -m app.check
  sockwork explore --match 127.0.0.1:8080 --time 30s -- python client.py --server 127.0.0.1:8080

exit status: 1 a failing schedule was found (the reproduction is printed last),
0 none within the budget, 2 usage errors (also: COMMAND not found, COMMAND fails
without faults, COMMAND does no network I/O).

fault kinds: {", ".join(EXPLORED_KINDS)}
"""

_NAME = "sockwork explore"


def _seconds(text: str) -> float:
    value = parse_duration(text)
    if not value > 0:
        raise ValueError(f"must be more than 0 seconds, got {text!r}")
    return value


def _kinds(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError("give at least one fault kind, e.g. Slice,CloseAfter")
    explored_kinds(names)  # ValueError naming the unknown ones and the known ones
    return names


def _match(text: str) -> Match:
    host, port = parse_address(text, "--match", zero=False)
    return Match(host=host, port=port)


# The option types: each parser's ValueError is a one-line usage error (exit status 2).
_BUDGET = argument_type(partial(parse_int, what="budget", low=0))
_SECONDS = argument_type(_seconds)
_MATCH = argument_type(_match)
_KINDS = argument_type(_kinds)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``explore`` sub-command."""
    parser = subparsers.add_parser(
        "explore",
        help="find the network fault schedule that breaks a program, and shrink it",
        description=(
            "Run COMMAND under network fault schedules placed on what it does without "
            "faults, stop at the first failure (non-zero exit or hang), shrink it and "
            "print how to reproduce it."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--budget",
        type=_BUDGET,
        default=500,
        metavar="N",
        help="the most schedules to run (default 500; shrinking not counted)",
    )
    parser.add_argument(
        "--time",
        type=_SECONDS,
        default=60.0,
        metavar="SECONDS",
        help="the most time to spend looking, the run without faults not counted"
        " (default 60; e.g. 30, 2m)",
    )
    parser.add_argument(
        "--per-run-timeout",
        type=_SECONDS,
        metavar="SECONDS",
        help="a run past this is a hang (default: above COMMAND's own duration and timeouts)",
    )
    parser.add_argument(
        "--seed",
        type=seed_argument,
        default=0,
        metavar="N",
        help="seed of the schedule sequence and of every run's faults (default 0)",
    )
    parser.add_argument(
        "--match",
        type=_MATCH,
        metavar="HOST:PORT",
        help="only connections to (or accepted on) HOST:PORT",
    )
    parser.add_argument(
        "--faults",
        type=_KINDS,
        metavar="KIND,...",
        help="only these fault kinds (class names, e.g. Slice,CloseAfter,HalfClose)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="write the outcome as JSON (format 1) to FILE ('-': stdout)",
    )
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="the program to explore, after --",
    )
    parser.set_defaults(run=run)


def _fail(message: str) -> int:
    sys.stderr.write(f"{_NAME}: {message}\n")
    return 2


def run(args: argparse.Namespace) -> int:
    """Explore COMMAND; return 1 (found), 0 (none found) or 2 (usage error)."""
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        return _fail("give the program to explore after --, e.g. sockwork explore -- python app.py")
    if args.budget < 1:
        return _fail(f"--budget {args.budget} runs no schedule: give at least 1")
    if args.json not in (None, "-"):
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder):
            return _fail(f"--json {args.json}: no directory {folder}")
    try:
        subject = ProcessSubject(command, match=args.match)
    except CommandNotFound as exc:
        return _fail(str(exc))
    text: TextIO = sys.stdout if args.json != "-" else sys.stderr
    progress = sys.stderr
    try:
        result = explore(
            subject,
            budget=args.budget,
            time=args.time,
            seed=args.seed,
            faults=args.faults,
            per_run_timeout=args.per_run_timeout,
            progress=progress,
        )
    except BaselineFailed as exc:
        return _fail(
            f"{_shown(command)} already fails without faults ({exc.outcome}): "
            "fix that first, exploring it is meaningless"
        )
    except NoNetworkActivity:
        return _fail(
            f"{_shown(command)} did no network I/O without faults "
            "(no look-up, connection or accept by a Python process): nothing to explore"
        )
    except CommandNotFound as exc:
        return _fail(str(exc))
    except ValueError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        _end_progress(progress)
        sys.stderr.write(f"{_NAME}: interrupted\n")
        return 130
    finally:
        subject.close()
    _end_progress(progress)
    result = _with_match(result, args.match, subject)
    if args.json is not None:
        written = _write_json(args.json, result)
        if written is not None:
            return _fail(written)
    text.write(f"{result}\n")
    text.flush()
    return 1 if result.found else 0


def _with_match(
    result: ExploreResult, match: Match | None, subject: ProcessSubject
) -> ExploreResult:
    """The reproduction selects what ``--match`` selected too (the schedule's own
    selection wins where both say something)."""
    if match is None or result.reproduction is None:
        return result
    r = result.reproduction
    schedule = r.schedule
    fields: dict[str, object] = {"role": match.role, "host": match.host, "port": match.port}
    fields.update(schedule.match_fields)
    widened = Schedule(schedule.faults, **fields)  # type: ignore[arg-type]
    return dataclasses.replace(
        result,
        reproduction=Reproduction.of(
            widened, seed=r.seed, command=subject.command, call=subject.name
        ),
    )


def _shown(command: list[str]) -> str:
    line = " ".join(command)
    return line if len(line) <= 80 else line[:77] + "..."


def _end_progress(stream: TextIO) -> None:
    if stream.isatty():
        stream.write("\r\x1b[K")  # erase the progress line
        stream.flush()


def _write_json(target: str, result: ExploreResult) -> str | None:
    """Write the JSON form; return an error message, or None."""
    text = json.dumps(result.to_json(), indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    try:
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        return f"cannot write --json {target}: {exc.strerror or exc}"
    return None
