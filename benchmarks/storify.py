"""Checkouts per second through storify's API with 1, 10 and 100 simulated customers.

The store runs as ``storify serve --no-console`` in its own process (SQLite in WAL
mode, one transaction per checkout); the customers are ``storify.simulate`` in this
process, each on its own connection, each checkout one request with a fresh request
id. Side by side: the same store with ``--durable`` (fsync per checkout), and the
ceiling of the database layer alone (``Store.checkout`` in-process, no network).

Target (issue 6): at least 1,000 checkouts/s at 10 customers with p99 under 50 ms.

Second table (issue 14): 50 customers on SQLite vs PostgreSQL, against one store
server and against three (the customers spread evenly over them, one database). The
PostgreSQL server is a throwaway one (``storify.testing.TemporaryPostgres``) with its
default settings: ``fsync`` and ``synchronous_commit`` on, every commit flushed.

Issue 12: at least 5,000 checkouts/s with 50 customers, p99 under 20 ms. The store
commits concurrent checkouts together (group commit); each setup of the second table
also runs with ``--max-batch 1`` (one transaction per checkout, as before) for the
ratio in the same run.

Run: ``.venv/bin/python benchmarks/storify.py [--duration 5] [--backends-only]``
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import summary  # before the next lines take this directory off sys.path

# Run as a script, this file's directory comes first on sys.path and its name would
# shadow the storify package: drop it before importing.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]

import asyncio  # noqa: E402

from storify.simulate import SimulationResult, run_simulation, simulate  # noqa: E402
from storify.store import Store  # noqa: E402
from storify.tally import percentile  # noqa: E402
from storify.testing import PostgresNotAvailable, TemporaryPostgres  # noqa: E402

TARGET_RATE = 1000.0
TARGET_P99 = 0.050
ISSUE12_RATE = 5000.0  # issue 12: 50 customers, group commit allowed
ISSUE12_P99 = 0.020
PRODUCTS = 10
STOCK = 100_000_000


@dataclass
class Row:
    setup: str
    customers: int
    rate: float
    p50: float
    p99: float
    note: str


def _make_db(path: str) -> None:
    with Store(path) as store:
        for number in range(PRODUCTS):
            store.add_product(f"Product {number}", 100 + number, STOCK)


def _serve(db: str, *extra: str) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "storify",
            "serve",
            "--no-console",
            "--db",
            db,
            "--port",
            "0",
            "--api-port",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    text = ""
    while "--api" not in text:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("storify serve did not start")
        text += line
    found = re.search(r"--api (127\.0\.0\.1):(\d+)", text)
    assert found is not None
    return process, (found.group(1), int(found.group(2)))


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    process.communicate(timeout=30)


def _through_api(setup: str, customers: int, duration: float, *extra: str) -> Row:
    with tempfile.TemporaryDirectory() as directory:
        db = os.path.join(directory, "bench.db")
        _make_db(db)
        process, address = _serve(db, *extra)
        try:
            result = run_simulation(address, customers=customers, duration=duration, seed=1)
        finally:
            _stop(process)
    tally = result.tally
    note = "books ok" if result.ok else "BOOKS BROKEN"
    if tally.retried or tally.failed:
        note += f", {tally.retried} retried, {tally.failed} failed"
    return Row(
        setup,
        customers,
        result.purchases_per_second,
        percentile(tally.latencies, 0.5),
        percentile(tally.latencies, 0.99),
        note,
    )


def _in_process(duration: float) -> Row:
    with tempfile.TemporaryDirectory() as directory:
        db = os.path.join(directory, "bench.db")
        _make_db(db)
        latencies: list[float] = []
        with Store(db) as store:
            started = time.perf_counter()
            deadline = started + duration
            number = 0
            while time.perf_counter() < deadline:
                number += 1
                before = time.perf_counter()
                store.checkout(
                    {1 + number % PRODUCTS: 1 + number % 3},
                    customer="bench",
                    request_id=f"b{number}",
                )
                latencies.append(time.perf_counter() - before)
            elapsed = time.perf_counter() - started
    return Row(
        "Store.checkout in-process (no network)",
        1,
        len(latencies) / elapsed,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        "ceiling of the database layer",
    )


async def _spread(
    addresses: list[tuple[str, int]], customers: int, duration: float
) -> list[SimulationResult]:
    """Run ``customers`` customers spread evenly over the servers at ``addresses``, at once."""
    shares = [customers // len(addresses) + (n < customers % len(addresses)) for n in
              range(len(addresses))]  # fmt: skip
    return list(
        await asyncio.gather(
            *(
                simulate(address, customers=share, duration=duration, seed=1 + n)
                for n, (address, share) in enumerate(zip(addresses, shares, strict=True))
            )
        )
    )


def _servers(
    setup: str, db: str, servers: int, customers: int, duration: float, *extra: str
) -> Row:
    """``servers`` store servers on the database ``db``, ``customers`` customers in all."""
    with Store(db) as store:
        before = {product.id: product.stock for product in store.products()}
    processes: list[subprocess.Popen[str]] = []
    try:
        addresses = []
        for _ in range(servers):
            process, address = _serve(db, *extra)
            processes.append(process)
            addresses.append(address)
        results = asyncio.run(_spread(addresses, customers, duration))
    finally:
        for process in processes:
            _stop(process)
    # Each simulation's own invariant assumes nobody else shops: check the sum instead.
    bought: dict[int, int] = {}
    latencies: list[float] = []
    purchases = failed = 0
    for result in results:
        latencies += result.tally.latencies
        purchases += result.tally.purchases
        failed += result.tally.failed
        for product_id, units in result.tally.bought.items():
            bought[product_id] = bought.get(product_id, 0) + units
    with Store(db) as store:
        after = {product.id: product.stock for product in store.products()}
        balanced = all(line.balanced for line in store.audit())
    ok = balanced and all(before[p] == after[p] + bought.get(p, 0) for p in before)
    seconds = max(result.seconds for result in results)
    note = "books ok" if ok else "BOOKS BROKEN"
    if failed:
        note += f", {failed} failed"
    return Row(
        setup,
        customers,
        purchases / seconds,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        note,
    )


# The same servers with group commit switched off (each checkout its own transaction,
# as before issue 12), for the ratio in the same run.
_ALONE = ("--max-batch", "1")


def _backends(duration: float, customers: int = 50) -> list[Row]:
    """SQLite vs PostgreSQL, one and three servers, ``customers`` customers."""
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        db = os.path.join(directory, "alone.db")
        _make_db(db)
        rows.append(
            _servers("SQLite, 1 server, --max-batch 1", db, 1, customers, duration, *_ALONE)
        )
        for servers in (1, 3):
            db = os.path.join(directory, f"bench{servers}.db")
            _make_db(db)
            label = f"SQLite WAL NORMAL, {servers} server{'s' * (servers > 1)}"
            rows.append(_servers(label, db, servers, customers, duration))
    try:
        postgres = TemporaryPostgres().start()
    except PostgresNotAvailable as error:
        print(f"PostgreSQL rows skipped: {error}", file=sys.stderr)
        return rows
    try:
        db = postgres.create_database()
        _make_db(db)
        label = f"PostgreSQL {_pg_version(postgres)}, 1 server, --max-batch 1"
        rows.append(_servers(label, db, 1, customers, duration, *_ALONE))
        for servers in (1, 3):
            db = postgres.create_database()
            _make_db(db)
            label = f"PostgreSQL {_pg_version(postgres)}, {servers} server{'s' * (servers > 1)}"
            rows.append(_servers(label, db, servers, customers, duration))
    finally:
        postgres.stop()
    return rows


def _pg_version(postgres: TemporaryPostgres) -> str:
    return str(postgres.execute("SHOW server_version")[0][0]).split()[0]


def _print(rows: list[Row]) -> None:
    header = (
        f"| {'setup':<40} | customers | checkouts/s | vs target | p50 ms | p99 ms | {'notes':<30} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for row in rows:
        ratio = row.rate / TARGET_RATE
        print(
            f"| {row.setup:<40} | {row.customers:>9} | {row.rate:>11,.0f} | {ratio:>8.2f}x "
            f"| {row.p50 * 1000:>6.2f} | {row.p99 * 1000:>6.2f} | {row.note:<30} |"
        )


def main() -> int:
    """Run every setup once and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument(
        "--backends-only", action="store_true", help="only the SQLite vs PostgreSQL table"
    )
    summary.add_argument(parser)
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"storify checkouts/s, {args.duration:g} s per run, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    figures = []
    if not args.backends_only:
        ten = _targets(args.duration)
        figures += [
            summary.Figure(
                "SQLite, 10 customers",
                ten.rate,
                "checkouts/s",
                at_least=TARGET_RATE,
                goal="issue 6",
            ),
            summary.Figure(
                "SQLite, 10 customers, p99",
                ten.p99 * 1000,
                "ms",
                at_most=TARGET_P99 * 1000,
                goal="issue 6",
            ),
        ]
    print("SQLite vs PostgreSQL, 50 customers, one and three store servers on one database:")
    rows = _backends(args.duration)
    _print(rows)
    for alone, batched in zip(rows[0::3], rows[1::3], strict=False):
        print(
            f"group commit vs --max-batch 1 ({batched.setup}): {batched.rate / alone.rate:.2f}x "
            f"checkouts/s, p99 {batched.p99 * 1000:.1f} ms vs {alone.p99 * 1000:.1f} ms"
        )
    best = rows[1]
    met = best.rate >= ISSUE12_RATE and best.p99 < ISSUE12_P99
    print(
        f"issue 12 target, 1 SQLite server, 50 customers (>= {ISSUE12_RATE:,.0f}/s, p99 < "
        f"{ISSUE12_P99 * 1000:.0f} ms): {'met' if met else 'NOT met'} "
        f"({best.rate:,.0f}/s, p99 {best.p99 * 1000:.1f} ms)"
    )
    figures += [
        summary.Figure(
            f"{best.setup}, 50 customers",
            best.rate,
            "checkouts/s",
            at_least=ISSUE12_RATE,
            goal="issue 12.4",
        ),
        summary.Figure(
            f"{best.setup}, 50 customers, p99",
            best.p99 * 1000,
            "ms",
            at_most=ISSUE12_P99 * 1000,
            goal="issue 12.4",
        ),
    ]
    summary.write(args.summary_json, "storify", figures)
    return 0


def _targets(duration: float) -> Row:
    """The issue 6 table: 1, 10 and 100 customers on SQLite, --durable, in-process."""
    rows = [
        _through_api("API, SQLite WAL synchronous=NORMAL", 1, duration),
        _through_api("API, SQLite WAL synchronous=NORMAL", 10, duration),
        _through_api("API, SQLite WAL synchronous=NORMAL", 100, duration),
        _through_api("API, --durable (synchronous=FULL)", 10, duration, "--durable"),
        _in_process(duration),
    ]
    _print(rows)
    ten = rows[1]
    met = ten.rate >= TARGET_RATE and ten.p99 < TARGET_P99
    print(
        f"target at 10 customers (>= {TARGET_RATE:,.0f}/s, p99 < {TARGET_P99 * 1000:.0f} ms): "
        f"{'met' if met else 'NOT met'} ({ten.rate:,.0f}/s, p99 {ten.p99 * 1000:.1f} ms)"
    )
    return ten


if __name__ == "__main__":
    raise SystemExit(main())
