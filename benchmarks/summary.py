"""Headline figures of a benchmark run, machine-readable, and the one table of ``make bench``.

Every benchmark script takes ``--summary-json FILE`` (:func:`add_argument`) and, at the
end of its run, writes its headline figures there (:func:`write`): for each, the value
measured, the target it is held to (if any) and where the target comes from (an issue
item). ``benchmarks/run.py`` runs every script with that option and prints
:func:`table` over all their figures: measured, target, met or not.

The file is JSON: ``{"benchmark": "proxy", "command": [...], "figures": [{...}, ...]}``,
one object per :class:`Figure` (its fields). Reading it back needs no benchmark code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, asdict, dataclass, fields, replace
from pathlib import Path

__all__ = ["Figure", "add_argument", "load", "table", "write"]

MET, NOT_MET, NO_TARGET, NOT_MEASURED = "met", "NOT MET", "—", "not measured"


@dataclass(frozen=True)
class Figure:
    """One headline figure of a benchmark: a measured value and, maybe, its target.

    ``value`` is None when the run could not measure it (a peer missing, a row failed).
    ``at_least``/``at_most`` bound the target (either or both); ``goal`` says where the
    target comes from (``"issue 12.1"``); ``note`` how the value was taken.
    """

    name: str
    value: float | None
    unit: str = ""
    _: KW_ONLY
    at_least: float | None = None
    at_most: float | None = None
    goal: str = ""
    note: str = ""
    benchmark: str = ""

    def __post_init__(self) -> None:
        if self.value is not None and not math.isfinite(self.value):
            object.__setattr__(self, "value", None)  # a ratio over a zero base: unmeasured

    @property
    def met(self) -> bool | None:
        """True/False against the target; None without a target or a value."""
        if self.value is None or (self.at_least is None and self.at_most is None):
            return None
        if self.at_least is not None and self.value < self.at_least:
            return False
        return self.at_most is None or self.value <= self.at_most

    @property
    def verdict(self) -> str:
        """``met``, ``NOT MET``, ``not measured`` or ``—`` (no target)."""
        if self.value is None:
            return NOT_MEASURED
        met = self.met
        return NO_TARGET if met is None else MET if met else NOT_MET

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Figure:
        """A figure from its JSON object (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


def add_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--summary-json FILE`` to a benchmark's command line."""
    parser.add_argument(
        "--summary-json",
        metavar="FILE",
        help="also write the headline figures and their targets to FILE (JSON)",
    )


def write(path: str | os.PathLike[str] | None, benchmark: str, figures: Iterable[Figure]) -> None:
    """Write ``figures`` of ``benchmark`` to ``path`` (nothing when ``path`` is None)."""
    if path is None:
        return
    document = {
        "benchmark": benchmark,
        "command": [sys.executable, *sys.argv],
        "figures": [asdict(replace(f, benchmark=benchmark)) for f in figures],
    }
    Path(path).write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")


def load(path: str | os.PathLike[str]) -> list[Figure]:
    """The figures of a summary file written by :func:`write`.

    Raises:
        ValueError: the file is not a summary (a list of figures under ``"figures"``).
    """
    document = json.loads(Path(path).read_text())
    if not isinstance(document, dict) or not isinstance(document.get("figures"), list):
        raise ValueError(f"{path}: not a benchmark summary (no 'figures' list)")
    name = str(document.get("benchmark", ""))
    return [Figure.from_json({"benchmark": name, **f}) for f in document["figures"]]


def _number(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    magnitude = abs(value)
    if magnitude >= 100 or float(value).is_integer():
        text = f"{value:,.0f}"
    else:
        text = f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def _target(figure: Figure) -> str:
    low, high = figure.at_least, figure.at_most
    if low is not None and high is not None:
        return f"{_number(low, figure.unit)} .. {_number(high, figure.unit)}"
    if low is not None:
        return f">= {_number(low, figure.unit)}"
    if high is not None:
        return f"<= {_number(high, figure.unit)}"
    return ""


def table(figures: Sequence[Figure]) -> str:
    """A Markdown table: benchmark, figure, measured, target (with its goal), verdict."""
    rows = [("benchmark", "figure", "measured", "target", "goal", "verdict")]
    for f in figures:
        measured = "—" if f.value is None else _number(f.value, f.unit)
        rows.append((f.benchmark, f.name, measured, _target(f), f.goal, f.verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {2, 3}  # numbers
    lines = []
    for n, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs]
        lines.append("| " + " | ".join(cells) + " |")
        if n == 0:
            rule = [
                "-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths)
            ]
            lines.append("|" + "|".join(rule) + "|")
    return "\n".join(lines)
