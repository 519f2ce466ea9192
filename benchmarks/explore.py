"""Benchmark: how fast ``sockwork.faults.explore`` runs schedules and finds the corpus bugs.

Run: ``.venv/bin/python benchmarks/explore.py`` (``--quick`` for a short run,
``--seeds N`` to repeat the time-to-failure runs over N seeds). The command line
(``sockwork explore``, a fresh process per run) is measured by
``benchmarks/explore_process.py``.

1. Schedules per second in-process on a one-connection client test (the corpus
   program ``length_prefix``, correct variant, which no schedule breaks): once over
   the fault kinds that only cut or reorder bytes (no waiting: Slice, CloseAfter,
   HalfClose), once over every kind (latency, stalls and refused connects wait up to
   the test's own timeouts).
2. Time to first failure for each corpus program's buggy variant: the time until
   the first failing schedule ran, the whole exploration with shrinking, the
   schedules run, and the shrunk schedule.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import summary

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the corpus lives in the test tree

from tests.faults.exploration.corpus import PROGRAMS, program  # noqa: E402

from sockwork.faults import explore  # noqa: E402
from sockwork.faults.exploration import EXPLORED_KINDS  # noqa: E402

NO_WAIT = tuple(k for k in ("Slice", "CloseAfter", "HalfClose") if k in EXPLORED_KINDS)


def in_process_rate(kinds: tuple[str, ...] | None, budget: int, repeats: int) -> list[float]:
    """Schedules per second of explore() over ``kinds``, one value per repeat.

    The correct twin should never fail; if it does (a false positive, e.g. a hang on
    a starved machine) the run is printed and its rate still counted.
    """
    prog = program("length_prefix")
    rates = []
    for seed in range(repeats):
        result = explore(prog.test("correct"), budget=budget, time=120, seed=seed, faults=kinds)
        if result.found:
            print(f"FALSE POSITIVE on the correct twin (seed {seed}): {result.summary()}")
        rates.append(result.schedules_run / result.elapsed_s)
    return rates


def first_failure(name: str, seed: int) -> tuple[float, float, int, str]:
    """(seconds to the first failing run, whole exploration, schedules run, reproduction)."""
    first: list[float] = []

    def progress(runs: int, failures: int, elapsed: float) -> None:
        if failures and not first:
            first.append(elapsed)

    result = explore(
        program(name).test("buggy"), budget=300, time=120, seed=seed, progress=progress
    )
    schedule = str(result.schedule) if result.found else "not found"
    return (first[0] if first else float("nan")), result.elapsed_s, result.schedules_run, schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer schedules and repeats")
    parser.add_argument("--seeds", type=int, default=1, help="time-to-failure runs per program")
    summary.add_argument(parser)
    args = parser.parse_args()
    figures: list[summary.Figure] = []
    budget, repeats = (100, 1) if args.quick else (300, 3)

    print("## schedules per second, one-connection client test (length_prefix, correct)")
    print("| surface | fault kinds | schedules | median schedules/s | runs |")
    print("|---|---|---:|---:|---|")
    for kinds, label in ((NO_WAIT, ", ".join(NO_WAIT)), (None, "all")):
        rates = in_process_rate(kinds, budget, repeats)
        line = ", ".join(f"{r:.0f}" for r in rates)
        median = statistics.median(rates)
        print(f"| in-process `explore()` | {label} | {budget} | {median:.0f} | {line} |")
        goal = {"at_least": 200, "goal": "issue 15.6"} if kinds == NO_WAIT else {}
        figures.append(summary.Figure(f"in-process, {label}", median, "schedules/s", **goal))
    print()
    print("## time to first failure, buggy variants (budget 300, seeds from 0)")
    print("| program | bug | first failure s | with shrinking s | schedules | shrunk schedule |")
    print("|---|---|---:|---:|---:|---|")
    totals = []
    found = 0
    for prog in PROGRAMS:
        runs = [first_failure(prog.name, seed) for seed in range(args.seeds)]
        first_s = statistics.median(r[0] for r in runs)
        whole_s = statistics.median(r[1] for r in runs)
        count = statistics.median(r[2] for r in runs)
        totals.append(whole_s)
        found += all(r[3] != "not found" for r in runs)
        print(
            f"| {prog.name} | {prog.bug} | {first_s:.2f} | {whole_s:.2f} | {count:.0f} "
            f"| `{runs[0][3]}` |"
        )
    median_s = statistics.median(totals)
    print(f"\nmedian exploration time over the corpus: {median_s:.2f} s")
    figures.append(
        summary.Figure("corpus bugs found", found, f"of {len(PROGRAMS)}", at_least=len(PROGRAMS))
    )
    figures.append(
        summary.Figure("median time to a shrunk bug", median_s, "s", at_most=60, goal="issue 15")
    )
    summary.write(args.summary_json, "explore", figures)


if __name__ == "__main__":
    main()
