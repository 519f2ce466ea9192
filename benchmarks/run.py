"""Run every benchmark script, then print one table of their headline figures and targets.

    .venv/bin/python benchmarks/run.py             # every benchmark, full length (make bench)
    .venv/bin/python benchmarks/run.py --quick     # a smoke run (make bench QUICK=1)
    .venv/bin/python benchmarks/run.py --only proxy frames

Each script runs in its own process with ``--summary-json FILE`` (see ``summary.py``);
its own tables print as it goes. At the end: one table of every figure, its target and
whether it was met. A script that fails is reported in the table and makes the exit
status 1; a target not met does not (it is a result, not an error).

A new benchmark joins with one line in ``BENCHMARKS``: its name (``benchmarks/NAME.py``)
and the arguments of its quick run. The script must take ``--summary-json FILE`` and
write its figures with ``summary.write``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import summary

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Bench:
    """One benchmark script: ``benchmarks/<name>.py``, and its arguments for a quick run."""

    name: str
    quick: tuple[str, ...] = ("--quick",)


BENCHMARKS: tuple[Bench, ...] = (
    Bench("frames"),
    Bench("faults"),
    Bench("proxy", ("--mib", "16", "--trials", "3", "--rounds", "600")),
    Bench("console", ("--sessions", "100", "--seconds", "3")),
    Bench("storify", ("--duration", "1")),
    Bench("ssh", ("--sessions", "20", "--seconds", "3")),
)


def run(
    benches: Sequence[Bench],
    *,
    quick: bool,
    directory: Path = HERE,
    python: str = sys.executable,
) -> tuple[list[summary.Figure], list[str]]:
    """Run ``benches`` one after the other; return their figures and the failures."""
    figures: list[summary.Figure] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sockwork-bench-") as scratch:
        for bench in benches:
            out = Path(scratch) / f"{bench.name}.json"
            command = [python, str(directory / f"{bench.name}.py")]
            command += [*(bench.quick if quick else ()), "--summary-json", str(out)]
            print(f"\n=== {bench.name}: {' '.join(command[1:])}", flush=True)
            started = time.monotonic()
            status = subprocess.run(command, check=False).returncode
            elapsed = time.monotonic() - started
            if status != 0:
                failures.append(f"{bench.name}: exit status {status} after {elapsed:.0f} s")
            elif not out.exists():
                failures.append(f"{bench.name}: wrote no summary (--summary-json ignored?)")
            else:
                try:
                    figures += summary.load(out)
                except ValueError as exc:
                    failures.append(str(exc))
    return figures, failures


def main(argv: list[str] | None = None, benches: Sequence[Bench] = BENCHMARKS) -> int:
    """Run the benchmarks and print the summary table; 1 if a script failed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run of each")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these benchmarks only")
    parser.add_argument("--directory", type=Path, default=HERE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    known = {b.name for b in benches}
    unknown = sorted(set(args.only or ()) - known)
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    chosen = [b for b in benches if not args.only or b.name in args.only]
    started = time.time()
    load_before = os.getloadavg()[0]
    figures, failures = run(chosen, quick=args.quick, directory=args.directory)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    mode = "quick (smoke run: figures are not comparable)" if args.quick else "full"
    print(
        f"\n## Summary: {len(chosen)} benchmarks, {mode}; started {stamp}, "
        f"{time.time() - started:.0f} s; load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; Python {sys.version.split()[0]}\n"
    )
    print(summary.table(figures))
    verdicts = [f.met for f in figures]
    print(
        f"\n{verdicts.count(True)} targets met, {verdicts.count(False)} not met, "
        f"{sum(f.value is None for f in figures)} figures not measured."
    )
    for failure in failures:
        print(f"FAILED {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
