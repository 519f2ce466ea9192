"""`sockwork explore -- COMMAND`: schedules per second with a fresh process per run.

The subject is a one-connection client (tests/faults/exploration/scripts/framed.py
--correct: it starts its server in a thread, sends a 12-byte request and reads a
204-byte answer) that keeps its contract under every fault, so every schedule of the
budget runs. Only faults that cut or split bytes are explored (no waiting), so the
time is what a run costs: starting Python, the start-up hook, the program, the parent.

Then the same through the API, runs forked from a warm interpreter (the default for
``python script.py``) and exec'd (``fork=False``).

Also measured, to see where a run's time goes (median of REPEAT child starts):
a bare `python -c pass`, `python -c "import sockwork.faults"`, and the program under
the hook with no fault.

Usage: .venv/bin/python benchmarks/explore_process.py [--budget N] [--quick]
[--summary-json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import summary

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = str(ROOT / "tests" / "faults" / "exploration" / "scripts" / "framed.py")
REPEAT = 15


def child_start(argv: list[str], env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=200, help="schedules (default 200)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 schedules")
    summary.add_argument(parser)
    args = parser.parse_args()
    budget = 20 if args.quick else args.budget
    py = sys.executable
    from sockwork.faults.startup import child_environment

    with tempfile.TemporaryDirectory() as out:
        hooked = child_environment({"faults": [], "output": out})
        rows = [
            ("python -c pass", child_start([py, "-c", "pass"])),
            (
                "python -c 'import sockwork.faults'",
                child_start([py, "-c", "import sockwork.faults"]),
            ),
            ("program, no hook", child_start([py, PROGRAM, "--correct"])),
            ("program under the hook, no fault", child_start([py, PROGRAM, "--correct"], hooked)),
        ]
    for name, seconds in rows:
        print(f"{name:40} {seconds * 1000:7.1f} ms")

    with tempfile.TemporaryDirectory() as out:
        result = Path(out) / "result.json"
        started = time.perf_counter()
        subprocess.run(
            [
                py,
                "-m",
                "sockwork",
                "explore",
                "--budget",
                str(budget),
                "--faults",
                "Slice,CloseAfter,HalfClose,Refuse,CloseOnAccept",
                "--json",
                str(result),
                "--",
                py,
                PROGRAM,
                "--correct",
            ],
            check=False,
            stdout=subprocess.DEVNULL,
            env=dict(os.environ),
        )
        wall = time.perf_counter() - started
        data = json.loads(result.read_text())
    runs = data["schedules_run"]
    cli_rate = runs / data["elapsed_s"]
    print(
        f"sockwork explore: {runs} schedules in {data['elapsed_s']:.2f}s "
        f"(+ record and CLI start: {wall:.2f}s wall) -> "
        f"{cli_rate:.1f} schedules/s; "
        f"found={data['found']}; kinds {', '.join(data['fault_kinds_tried'])}"
    )
    from sockwork.faults.exploration import explore
    from sockwork.faults.exploration.process import ProcessSubject

    rates = {}
    for fork in (True, False):
        subject = ProcessSubject([py, PROGRAM, "--correct"], fork=fork)
        try:
            found = explore(
                subject,
                budget=min(budget, 50),
                faults={"Slice", "CloseAfter", "HalfClose", "Refuse", "CloseOnAccept"},
            )
        finally:
            subject.close()
        rates[fork] = found.schedules_run / found.elapsed_s
        print(
            f"explore(ProcessSubject(fork={fork})): {found.schedules_run} schedules in "
            f"{found.elapsed_s:.2f}s -> {rates[fork]:.1f} schedules/s"
        )
    summary.write(
        args.summary_json,
        "explore_process",
        [
            summary.Figure(
                "sockwork explore, fresh process per run",
                cli_rate,
                "schedules/s",
                at_least=20,
                goal="issue 15",
            ),
            summary.Figure("ProcessSubject exec'd per run", rates[False], "schedules/s"),
        ],
    )


if __name__ == "__main__":
    main()
