"""What a simulation counts and how it reports: tallies, percentiles, the invariant check.

Pure functions and data, no I/O: ``storify.simulate`` fills a :class:`Tally` while
customers shop and turns it into the summary printed at the end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "InvariantCheck",
    "Tally",
    "check_invariant",
    "percentile",
    "render_progress",
    "summary",
]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values`` (``fraction`` in 0..1); 0.0 if empty."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in 0..1, not {fraction}")
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


@dataclass
class Tally:
    """Counts of one simulation run.

    Attributes:
        purchases: checkouts that committed (replies received, first try or retried).
        units: units bought by those checkouts.
        rejected: checkouts the store refused (out of stock, product gone).
        retried: checkouts resent (same request id) after a network error or timeout.
        replayed: resent checkouts the store had already committed (not charged twice).
        failed: checkouts given up after every attempt failed, or answered with an
            unexpected error; their request ids are in ``unresolved`` until resolved.
        recovered: failed checkouts found committed afterwards (``order_status``).
        latencies: seconds from the first send of each purchase to its reply.
        bought: units bought per product id.
    """

    purchases: int = 0
    units: int = 0
    rejected: int = 0
    retried: int = 0
    replayed: int = 0
    failed: int = 0
    recovered: int = 0
    latencies: list[float] = field(default_factory=list)
    bought: dict[int, int] = field(default_factory=dict)
    unresolved: list[tuple[str, dict[int, int]]] = field(default_factory=list)

    def record_purchase(self, items: Mapping[int, int], seconds: float) -> None:
        """Count one committed checkout of ``items`` (``{product_id: units}``)."""
        self.purchases += 1
        self.latencies.append(seconds)
        for product_id, units in items.items():
            self.units += units
            self.bought[product_id] = self.bought.get(product_id, 0) + units

    def record_recovered(self, items: Mapping[int, int]) -> None:
        """Count a failed checkout that turned out to be committed."""
        self.recovered += 1
        for product_id, units in items.items():
            self.units += units
            self.bought[product_id] = self.bought.get(product_id, 0) + units


@dataclass(frozen=True)
class InvariantCheck:
    """The result of checking the store's books after a run."""

    ok: bool
    lines: tuple[str, ...]


def check_invariant(
    before: Sequence[Mapping[str, object]],
    after: Sequence[Mapping[str, object]],
    bought: Mapping[int, int],
) -> InvariantCheck:
    """Check, per product, initial stock = stock + units sold during the run, and the books.

    ``before`` and ``after`` are the API's ``catalog`` products (id, name, stock,
    stocked, sold). Two checks: the server's own books (stocked = stock + sold)
    and the run's (stock before = stock after + units this run bought). The
    second assumes nobody else shopped or restocked during the run.
    """
    lines: list[str] = []
    ok = True
    now = {_int(p, "id"): p for p in after}
    total_before = total_after = total_bought = 0
    for product in before:
        product_id = _int(product, "id")
        units = bought.get(product_id, 0)
        later = now.get(product_id)
        if later is None:
            ok = False
            lines.append(f"#{product_id} {product.get('name')}: no longer on sale, cannot check")
            continue
        stock_before, stock_after = _int(product, "stock"), _int(later, "stock")
        total_before += stock_before
        total_after += stock_after
        total_bought += units
        if stock_before != stock_after + units:
            ok = False
            lines.append(
                f"#{product_id} {later.get('name')}: stock {stock_before} before != "
                f"{stock_after} now + {units} bought"
            )
        stocked, sold = _int(later, "stocked"), _int(later, "sold")
        if stocked != stock_after + sold or stock_after < 0:
            ok = False
            lines.append(
                f"#{product_id} {later.get('name')}: store books broken: stocked {stocked} != "
                f"{stock_after} in stock + {sold} sold"
            )
    verdict = "ok" if ok else "BROKEN"
    lines.insert(
        0,
        f"{verdict}: initial stock {total_before} = stock {total_after} + sold {total_bought}"
        f" ({len(before)} product{'' if len(before) == 1 else 's'})",
    )
    return InvariantCheck(ok, tuple(lines))


def _int(record: Mapping[str, object], key: str) -> int:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"catalog entry {record!r} has no whole number {key!r}")
    return value


def render_progress(elapsed: float, duration: float, purchases: int, *, width: int = 30) -> str:
    """Return one progress line: ``[#####.....]  50%  2.5/5.0 s  1234 purchases  493/s``."""
    fraction = min(max(elapsed / duration, 0.0), 1.0) if duration > 0 else 1.0
    filled = int(fraction * width)
    rate = purchases / elapsed if elapsed > 0 else 0.0
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%}  "
        f"{elapsed:4.1f}/{duration:.1f} s  {purchases} purchases  {rate:.0f}/s"
    )


def _failed_detail(tally: Tally) -> str:
    details = []
    if tally.recovered:
        details.append(f"{tally.recovered} found committed afterwards")
    if tally.unresolved:
        details.append(f"{len(tally.unresolved)} UNRESOLVED: the store could not be asked")
    return f" ({', '.join(details)})" if details else ""


def summary(
    tally: Tally,
    *,
    customers: int,
    seconds: float,
    target: str,
    seed: int,
    invariant: InvariantCheck | None,
    note: str | None = None,
) -> str:
    """Return the report printed at the end of ``storify simulate``.

    ``note`` says why the run ended early or bought nothing (printed after the first line).
    """
    rate = tally.purchases / seconds if seconds > 0 else 0.0
    ms = 1000.0
    lines = [
        f"storify simulate: {customers} customers for {seconds:.1f} s against {target}"
        f" (seed {seed})",
        *([f"  note        {note}"] if note else []),
        f"  purchases   {tally.purchases} ({rate:.1f}/s), {tally.units} units",
        f"  latency     p50 {percentile(tally.latencies, 0.5) * ms:.1f} ms,"
        f" p99 {percentile(tally.latencies, 0.99) * ms:.1f} ms,"
        f" max {max(tally.latencies, default=0.0) * ms:.1f} ms",
        f"  rejected    {tally.rejected} (out of stock or off sale)",
        f"  retried     {tally.retried} resent after a network error"
        f" ({tally.replayed} had already committed, not charged twice)",
        f"  failed      {tally.failed}" + _failed_detail(tally),
    ]
    if invariant is None:
        lines.append("  invariant   not checked")
    else:
        lines.append(f"  invariant   {invariant.lines[0]}")
        lines.extend(f"              {line}" for line in invariant.lines[1:])
    return "\n".join(lines)
