"""The machinery of ``make bench``: summary files, the one table, the runner (benchmarks/)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    # By file, as the scripts import each other: putting benchmarks/ on sys.path would let
    # benchmarks/storify.py shadow the storify package for the rest of the suite.
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


summary = _load("summary")
run = _load("run")
Figure = summary.Figure


def test_summary_figure_verdicts() -> None:
    assert Figure("ratio", 0.95, "x", at_least=0.9).verdict == "met"
    assert Figure("ratio", 0.85, "x", at_least=0.9).verdict == "NOT MET"
    assert Figure("rtt", 31.0, "µs", at_most=30).met is False
    assert Figure("rtt", 30.0, "µs", at_most=30).met is True
    assert Figure("band", 2.0, at_least=1, at_most=1.5).met is False
    assert Figure("headline", 123.0, "MB/s").verdict == "—"
    assert Figure("missing", None, "x", at_least=1).verdict == "not measured"
    assert Figure("zero base", float("inf"), "x", at_least=1).value is None


def test_summary_write_load_and_table(tmp_path: Path) -> None:
    path = tmp_path / "proxy.json"
    summary.write(
        path,
        "proxy",
        [
            Figure("vs direct", 0.53, "x", at_least=0.9, goal="issue 12.1"),
            Figure("added round trip", 12.345, "µs", at_most=30, goal="issue 12.1"),
            Figure("direct", 3179.4, "MB/s"),
        ],
    )
    document = json.loads(path.read_text())
    assert document["benchmark"] == "proxy" and len(document["figures"]) == 3
    figures = summary.load(path)
    assert [f.benchmark for f in figures] == ["proxy"] * 3
    lines = summary.table(figures).splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "benchmark",
        "figure",
        "measured",
        "target",
        "goal",
        "verdict",
    ]
    assert lines[1].startswith("|---") and lines[1].count(":|") == 2  # numbers right-aligned
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert cells == [
        ["proxy", "vs direct", "0.53x", ">= 0.90x", "issue 12.1", "NOT MET"],
        ["proxy", "added round trip", "12.3 µs", "<= 30 µs", "issue 12.1", "met"],
        ["proxy", "direct", "3,179 MB/s", "", "", "—"],
    ]
    summary.write(None, "nothing", [])  # no --summary-json: writes nothing, no error


def test_summary_load_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"rows": []}')
    with pytest.raises(ValueError, match="not a benchmark summary"):
        summary.load(path)


def test_run_prints_one_table_and_reports_failures(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Two tiny scripts in a scratch directory, run as make bench runs the real ones.
    (tmp_path / "summary.py").write_text((BENCHMARKS / "summary.py").read_text())
    (tmp_path / "good.py").write_text(
        textwrap.dedent(
            """
            import argparse, sys
            import summary
            parser = argparse.ArgumentParser()
            parser.add_argument("--quick", action="store_true")
            summary.add_argument(parser)
            args = parser.parse_args()
            print("good's own table")
            summary.write(args.summary_json, "good", [
                summary.Figure("speed", 2.0 if args.quick else 1.0, "x", at_least=1.5),
            ])
            """
        )
    )
    (tmp_path / "broken.py").write_text("raise SystemExit(3)\n")
    benches = [run.Bench("good"), run.Bench("broken", ())]
    argv = ["--quick", "--directory", str(tmp_path)]
    assert run.main(argv, benches) == 1
    out = capfd.readouterr().out
    assert "good's own table" in out
    assert "| good " in out and "2.00x" in out and "| met " in out
    assert "1 targets met, 0 not met" in out
    assert "FAILED broken: exit status 3" in out
    assert run.main(["--directory", str(tmp_path), "--only", "good"], benches) == 0
    assert "NOT MET" in capfd.readouterr().out  # the full run measures 1.00x
    with pytest.raises(SystemExit):
        run.main(["--only", "nonesuch"], benches)


def test_run_knows_every_benchmark_script() -> None:
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")} - {"run", "summary", "__init__"}
    registered = {b.name for b in run.BENCHMARKS}
    assert scripts - registered == set(), "add a line for it to BENCHMARKS in benchmarks/run.py"
    assert registered - scripts == set()


@pytest.mark.parametrize("bench", run.BENCHMARKS, ids=lambda b: b.name)
def test_run_scripts_take_summary_json(bench: run.Bench) -> None:
    # Each script parses the option make bench passes (a real run is make bench's job).
    help_text = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{bench.name}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "--summary-json FILE" in help_text
    assert "summary.write(" in (BENCHMARKS / f"{bench.name}.py").read_text()
