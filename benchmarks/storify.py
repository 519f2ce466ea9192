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

Issue 12 table (``--issue12``): the same 50 customers driven by a cheap load generator
(``_Load`` below: one asyncio loop, a plain ``asyncio.Protocol`` per customer, requests
formatted as bytes, no task, future or ``wait_for`` per request) so that the customers
cost the 2-core machine as little as possible; each customer still waits for its reply
before sending its next checkout (closed loop, one request in flight). Rows: this
code's server, a CPU floor (a Python asyncio server answering canned replies, no
database), the same server with ``storify.simulate`` as the customers, PostgreSQL, and
with ``--baseline REV`` the server of git revision REV in the same rounds; CPU time of
the server process and of the customers per checkout. The full run ends with one round
of it (no baseline), whose figures are issue 12.4's in ``make bench``.

Run: ``.venv/bin/python benchmarks/storify.py [--duration 5] [--backends-only]``,
``.venv/bin/python benchmarks/storify.py --issue12 [--rounds 3] [--baseline REV]``
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import cast

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


def _serve(
    db: str, *extra: str, pythonpath: str | None = None
) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    env = None
    if pythonpath is not None:
        env = {**os.environ, "PYTHONPATH": pythonpath}
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
        env=env,
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
        postgres.close()
    return rows


def _pg_version(postgres: TemporaryPostgres) -> str:
    return str(postgres.execute("SHOW server_version")[0][0]).split()[0]


# -- issue 12: a cheap load generator -------------------------------------------------------


class _Customer(asyncio.Protocol):
    """One customer of :class:`_Load`: one connection, checkouts one after another.

    Each request is formatted straight to bytes (``U32`` header + compact JSON, the
    same request ``storify.simulate`` sends: ``items`` and a fresh ``request_id``);
    the next one is written from ``data_received`` as soon as the reply is in, with no
    task or future in between. Every reply is parsed with ``json.loads`` and checked:
    its ``id`` is the request's and it says ``ok``, else the customer counts an error.
    """

    def __init__(self, load: _Load, number: int) -> None:
        self.load = load
        self.number = number
        self.rng = random.Random(load.seed * 1_000_003 + number)
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent: collections.deque[tuple[int, int, int, float]] = collections.deque()
        self.seq = 0
        self.finished: asyncio.Future[None] = load.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(self.load.depth):
            self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.seq += 1
        load = self.load
        product = self.rng.choice(load.products)
        units = self.rng.randint(1, 3)
        body = b'{"id":%d,"op":"checkout","items":{"%d":%d},"request_id":"%s-%d-%d"}' % (
            self.seq, product, units, load.run, self.number, self.seq
        )  # fmt: skip
        self.sent.append((self.seq, product, units, time.perf_counter()))
        self.transport.write(len(body).to_bytes(4, "big") + body)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        offset = 0
        now = time.perf_counter()
        load = self.load
        while len(buffer) - offset >= 4:
            end = offset + 4 + int.from_bytes(buffer[offset : offset + 4], "big")
            if end > len(buffer):
                break
            reply = json.loads(buffer[offset + 4 : end])
            offset = end
            seq, product, units, started = self.sent.popleft()
            if reply.get("id") == seq and reply.get("ok") is True:
                load.latencies.append(now - started)
                load.bought[product] = load.bought.get(product, 0) + units
            else:
                load.errors.append(reply)
            if now < load.deadline:
                self._send()
        self.buffer = buffer[offset:]
        if not self.sent:
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for _ in self.sent:
            self.load.errors.append(f"customer {self.number}: connection lost ({exc})")
        self.sent.clear()
        if not self.finished.done():
            self.finished.set_result(None)


class _Load:
    """``customers`` closed-loop customers for ``duration`` s; the cheap generator of issue 12.

    ``depth`` requests in flight per customer (1: each waits for its reply, as a
    customer does; more is pipelining, not used in the recorded figures).
    """

    def __init__(self, customers: int, duration: float, products: list[int], *, depth: int = 1):
        self.customers = customers
        self.duration = duration
        self.products = products
        self.depth = depth
        self.seed = 1
        self.run = f"load-{uuid.uuid4().hex[:8]}".encode()
        self.loop = asyncio.get_running_loop()
        self.latencies: list[float] = []
        self.bought: dict[int, int] = {}
        self.errors: list[object] = []
        self.deadline = 0.0
        self.seconds = 0.0

    async def run_against(self, addresses: list[tuple[str, int]], timeout: float = 30.0) -> None:
        """Connect every customer (spread over ``addresses``), shop, wait for the last reply."""
        started = time.perf_counter()
        self.deadline = started + self.duration
        customers = []
        for number in range(self.customers):
            host, port = addresses[number % len(addresses)]
            _, customer = await self.loop.create_connection(
                lambda number=number: _Customer(self, number), host, port
            )
            customers.append(customer)
        done = asyncio.gather(*(customer.finished for customer in customers))
        try:
            await asyncio.wait_for(done, self.duration + timeout)
        finally:
            for customer in customers:
                if customer.transport is not None:
                    customer.transport.abort()
        self.seconds = time.perf_counter() - started


# The CPU floor: an asyncio server that answers each checkout frame with a canned reply of
# the same shape and size as storify's (the request's id echoed), after json.loads of the
# request: the CPU of one recv, one send and the JSON decoding per checkout, in Python,
# with no database and no validation. It is not a ceiling of checkouts/s: it answers each
# request the moment it comes, one wake-up of the customers' process per reply, where
# storify answers a whole batch in one loop turn (fewer wake-ups on a loaded machine).
_FLOOR = r"""
import asyncio, json, sys
REPLY = (
    '{"id":%s,"ok":true,"result":{"order":{"id":123456,"request_id":%s,'
    '"customer":"api 127.0.0.1:54321","total":306,"units":3,"created":1765098000.1234567,'
    '"lines":[{"product_id":3,"name":"Product 2","price":102,"quantity":3}]},"replayed":false}}'
)

class Floor(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        buffer = self.buffer + data
        offset = 0
        replies = []
        while len(buffer) - offset >= 4:
            end = offset + 4 + int.from_bytes(buffer[offset : offset + 4], "big")
            if end > len(buffer):
                break
            request = json.loads(buffer[offset + 4 : end])
            offset = end
            body = (REPLY % (json.dumps(request["id"]), json.dumps(request["request_id"]))).encode()
            replies.append(len(body).to_bytes(4, "big") + body)
        self.buffer = buffer[offset:]
        self.transport.write(b"".join(replies))

async def main():
    server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", 0)
    print("--api 127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _floor() -> tuple[subprocess.Popen[str], tuple[str, int]]:
    process = subprocess.Popen([sys.executable, "-c", _FLOOR], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    found = re.search(r"--api (127\.0\.0\.1):(\d+)", process.stdout.readline())
    if found is None:
        raise RuntimeError("the floor server did not start")
    return process, (found.group(1), int(found.group(2)))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class _Measured:
    setup: str
    rate: float
    p50: float
    p99: float
    server_us: float  # server CPU per checkout
    client_us: float  # customers' CPU per checkout
    note: str


def _issue12_run(
    setup: str,
    db: str,
    duration: float,
    *,
    cheap: bool,
    customers: int = 50,
    pythonpath: str | None = None,
    floor: bool = False,
) -> _Measured:
    with Store(db) as store:
        before = {product.id: product.stock for product in store.products()}
    process, address = _floor() if floor else _serve(db, pythonpath=pythonpath)
    try:
        server_before = _cpu_seconds(process.pid)
        client_before = time.process_time()
        if cheap:

            async def shop() -> _Load:
                load = _Load(customers, duration, sorted(before))
                await load.run_against([address])
                return load

            load = asyncio.run(shop())
            latencies, bought, seconds = load.latencies, load.bought, load.seconds
            errors = len(load.errors)
        else:
            result = run_simulation(address, customers=customers, duration=duration, seed=1)
            latencies, bought, seconds = (
                result.tally.latencies,
                result.tally.bought,
                result.seconds,
            )
            errors = result.tally.failed + result.tally.rejected
        client_cpu = time.process_time() - client_before
        server_cpu = _cpu_seconds(process.pid) - server_before
    finally:
        _stop(process)
    with Store(db) as store:
        after = {product.id: product.stock for product in store.products()}
        balanced = all(line.balanced for line in store.audit())
    ok = balanced and all(before[p] == after[p] + bought.get(p, 0) for p in before)
    count = max(len(latencies), 1)
    note = "books ok" if ok else "BOOKS BROKEN"
    if floor:
        note = "no database: the CPU floor"
    if errors:
        note += f", {errors} errors"
    return _Measured(
        setup,
        len(latencies) / seconds,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        server_cpu / count * 1e6,
        client_cpu / count * 1e6,
        note,
    )


def _baseline_source(revision: str, directory: str) -> str:
    """Extract ``src/`` of git ``revision`` into ``directory``; returns the PYTHONPATH."""
    root = os.path.dirname(_HERE)
    archive = subprocess.run(
        ["git", "-C", root, "archive", revision, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
    return os.path.join(directory, "src")


def _issue12(duration: float, rounds: int, baseline: str | None) -> list[summary.Figure]:
    """50 customers, the cheap generator: this server vs ``baseline``'s, several rounds."""
    results: dict[str, list[_Measured]] = {}
    with tempfile.TemporaryDirectory() as directory:
        old = None
        if baseline is not None:
            os.mkdir(os.path.join(directory, "baseline"))
            old = _baseline_source(baseline, os.path.join(directory, "baseline"))
        try:
            postgres: TemporaryPostgres | None = TemporaryPostgres().start()
        except PostgresNotAvailable as error:
            print(f"PostgreSQL rows skipped: {error}", file=sys.stderr)
            postgres = None
        try:
            for round_ in range(rounds):
                runs: list[tuple[str, str, dict[str, object]]] = []

                def sqlite(name: str, round_: int = round_) -> str:
                    path = os.path.join(directory, f"{name}-{round_}.db")
                    _make_db(path)
                    return path

                if old is not None:
                    runs.append((f"SQLite, {baseline} server", sqlite("old"), {"pythonpath": old}))
                runs.append(("SQLite, this server", sqlite("new"), {}))
                runs.append(
                    ("CPU floor: canned replies, no database", sqlite("floor"), {"floor": True})
                )
                runs.append(
                    ("SQLite, this server, storify.simulate", sqlite("sim"), {"cheap": False})
                )
                if postgres is not None:
                    if old is not None:
                        db = postgres.create_database()
                        _make_db(db)
                        runs.append((f"PostgreSQL, {baseline} server", db, {"pythonpath": old}))
                    db = postgres.create_database()
                    _make_db(db)
                    runs.append(("PostgreSQL, this server", db, {}))
                for setup, db, options in runs:
                    measured = _issue12_run(
                        setup,
                        db,
                        duration,
                        cheap=bool(options.get("cheap", True)),
                        pythonpath=cast("str | None", options.get("pythonpath")),
                        floor=bool(options.get("floor", False)),
                    )
                    results.setdefault(setup, []).append(measured)
                    print(
                        f"  round {round_ + 1}: {setup}: {measured.rate:,.0f}/s, p99 "
                        f"{measured.p99 * 1000:.1f} ms, {measured.note}, load average "
                        f"{os.getloadavg()[0]:.1f}",
                        file=sys.stderr,
                    )
        finally:
            if postgres is not None:
                postgres.close()
    _print_issue12(results, baseline)
    best = results.get("SQLite, this server")
    if not best:
        return []
    return [
        summary.Figure(
            "SQLite, 50 customers (cheap generator, median)",
            statistics.median(row.rate for row in best),
            "checkouts/s",
            at_least=ISSUE12_RATE,
            goal="issue 12.4",
        ),
        summary.Figure(
            "SQLite, 50 customers (cheap generator), median p99",
            statistics.median(row.p99 for row in best) * 1000,
            "ms",
            at_most=ISSUE12_P99 * 1000,
            goal="issue 12.4",
        ),
    ]


def _print_issue12(results: dict[str, list[_Measured]], baseline: str | None) -> None:
    print(
        "| setup | checkouts/s (runs) | median | p99 ms (runs) | median p99 "
        "| server CPU µs/checkout | customers CPU µs/checkout | notes |"
    )
    print("|---|---|--:|---|--:|--:|--:|---|")
    medians: dict[str, float] = {}
    for setup, rows in results.items():
        rates = [row.rate for row in rows]
        p99s = [row.p99 * 1000 for row in rows]
        medians[setup] = statistics.median(rates)
        notes = sorted({row.note for row in rows})
        print(
            f"| {setup} | {' / '.join(f'{r:,.0f}' for r in rates)} | {medians[setup]:,.0f} "
            f"| {' / '.join(f'{p:.1f}' for p in p99s)} | {statistics.median(p99s):.1f} "
            f"| {statistics.median(row.server_us for row in rows):.0f} "
            f"| {statistics.median(row.client_us for row in rows):.0f} | {'; '.join(notes)} |"
        )
    if baseline is not None:
        for kind in ("SQLite", "PostgreSQL"):
            new, old = (
                results.get(f"{kind}, this server"),
                results.get(f"{kind}, {baseline} server"),
            )
            if new and old:
                ratios = [n.rate / o.rate for n, o in zip(new, old, strict=True)]
                print(
                    f"{kind}: this server vs {baseline} in the same round: "
                    f"{' / '.join(f'{r:.2f}x' for r in ratios)} "
                    f"(median {statistics.median(ratios):.2f}x)"
                )
    best = results.get("SQLite, this server")
    if best:
        rate = statistics.median(row.rate for row in best)
        p99 = statistics.median(row.p99 for row in best)
        met = rate >= ISSUE12_RATE and p99 < ISSUE12_P99
        print(
            f"issue 12 target, SQLite, 50 customers (>= {ISSUE12_RATE:,.0f}/s, p99 < "
            f"{ISSUE12_P99 * 1000:.0f} ms), medians: {'met' if met else 'NOT met'} "
            f"({rate:,.0f}/s, p99 {p99 * 1000:.1f} ms)"
        )


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
    parser.add_argument(
        "--issue12",
        action="store_true",
        help="only the issue 12 table: 50 customers, cheap load generator, several rounds",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --issue12 (3)")
    parser.add_argument(
        "--baseline", metavar="REV", help="--issue12: also run the server of git revision REV"
    )
    summary.add_argument(parser)
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"storify checkouts/s, {args.duration:g} s per run, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    figures = []
    if args.issue12:
        figures += _issue12(args.duration, args.rounds, args.baseline)
        summary.write(args.summary_json, "storify", figures)
        return 0
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
    # Issue 12.4 is judged with the cheap load generator (one round here; --issue12 for more).
    print("Issue 12: 50 customers, the cheap load generator, one round:")
    figures += _issue12(args.duration, 1, None)
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
