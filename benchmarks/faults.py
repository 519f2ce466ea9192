"""Benchmark: the cost of sockwork.faults with no fault active, and how accurate delays are.

Run: ``.venv/bin/python benchmarks/faults.py`` (``--quick`` for a short run).

1. Overhead with no fault active, over TCP loopback, both ends patched:
   ``sendall``/``recv`` of 1 MiB messages, and a 64 B ping-pong (TCP_NODELAY), for a
   plain socket, ``apply(sock)`` with no faults, an ``inject()`` scope with no faults,
   and poorconn's ``PatchableSocket`` (no simulation). Variants run interleaved in
   rounds; the table shows medians and the ratio to the plain socket.
2. Delay accuracy: ``Latency(d)`` on a receive, and poorconn's
   ``delay_before_sending_once`` (a ``time.sleep``), measured against ``d``:
   error p50/p99 in ms.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator

import poorconn

import summary
from sockwork.faults import Latency, apply, inject

MIB = 1024 * 1024


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server


Variant = Callable[[], contextlib.AbstractContextManager[tuple[socket.socket, socket.socket]]]


@contextlib.contextmanager
def plain() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = tcp_pair()
    with a, b:
        yield a, b


@contextlib.contextmanager
def applied() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = tcp_pair()
    with a, b, apply(a), apply(b):
        yield a, b


@contextlib.contextmanager
def injected() -> Iterator[tuple[socket.socket, socket.socket]]:
    with inject(), socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
        for s in (a, b):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with a, b:
            yield a, b


@contextlib.contextmanager
def dispatching() -> Iterator[tuple[socket.socket, socket.socket]]:
    # A stream fault on some other socket puts the byte dispatchers on the class:
    # this measures what every other socket then pays (one registry look-up).
    other = socket.socket()
    a, b = tcp_pair()
    with other, a, b, apply(other, Latency(0.001)):
        yield a, b


@contextlib.contextmanager
def poorconn_patchable() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = tcp_pair()
    a = poorconn.make_socket_patchable(a)
    b = poorconn.make_socket_patchable(b)
    with a, b:
        yield a, b


VARIANTS: dict[str, Variant] = {
    "plain socket": plain,
    "sockwork apply()": applied,
    "sockwork inject()": injected,
    "sockwork, fault on another socket": dispatching,
    "poorconn PatchableSocket": poorconn_patchable,
}


def bulk(pair: tuple[socket.socket, socket.socket], total: int) -> float:
    """Seconds to push ``total`` bytes as 1 MiB sendall()s, read with recv(1 MiB)."""
    a, b = pair
    message = bytes(MIB)
    done = threading.Event()

    def reader() -> None:
        left = total
        while left:
            left -= len(b.recv(MIB))
        done.set()

    thread = threading.Thread(target=reader)
    start = time.perf_counter()
    thread.start()
    for _ in range(total // MIB):
        a.sendall(message)
    done.wait()
    took = time.perf_counter() - start
    thread.join()
    return took


def ping_pong(pair: tuple[socket.socket, socket.socket], count: int) -> float:
    """Median round trip in µs of a 64 B message echoed by a thread."""
    a, b = pair
    message = bytes(64)

    def echo() -> None:
        for _ in range(count):
            data = b.recv(64)
            while len(data) < 64:
                data += b.recv(64 - len(data))
            b.sendall(data)

    thread = threading.Thread(target=echo)
    thread.start()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        a.sendall(message)
        got = a.recv(64)
        while len(got) < 64:
            got += a.recv(64 - len(got))
        samples.append(time.perf_counter() - start)
    thread.join()
    return statistics.median(samples) * 1e6


def overhead(rounds: int, total: int, count: int) -> dict[str, tuple[float, float]]:
    """Print the no-fault overhead table; return each variant's (bulk, ping-pong) ratios."""
    names = list(VARIANTS)
    results: dict[str, dict[str, list[float]]] = {
        name: {"bulk": [], "pingpong": []} for name in names
    }
    for r in range(rounds):
        # Rotate the order each round, and compare each variant with the plain socket
        # of the same round: the load of this shared machine drifts between rounds.
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            with VARIANTS[name]() as pair:
                results[name]["bulk"].append(bulk(pair, total))
            with VARIANTS[name]() as pair:
                results[name]["pingpong"].append(ping_pong(pair, count))
    plain_bulk = results["plain socket"]["bulk"]
    plain_pp = results["plain socket"]["pingpong"]
    print(
        f"no-fault overhead: {rounds} rounds, {total // MIB} MiB per bulk run, "
        f"{count} round trips per ping-pong run; medians, and the median of per-round "
        "ratios to the plain socket"
    )
    print(
        f"| {'variant':<33} | {'1 MiB sendall/recv MB/s':>23} | {'ratio':>5} "
        f"| {'64 B ping-pong RTT µs':>21} | {'ratio':>5} |"
    )
    print(f"|{'-' * 35}|{'-' * 25}:|{'-' * 6}:|{'-' * 23}:|{'-' * 6}:|")
    ratios = {}
    for name in names:
        bulk_s = results[name]["bulk"]
        pp = results[name]["pingpong"]
        bulk_ratio = statistics.median(v / p for v, p in zip(bulk_s, plain_bulk, strict=True))
        pp_ratio = statistics.median(v / p for v, p in zip(pp, plain_pp, strict=True))
        print(
            f"| {name:<33} | {total / statistics.median(bulk_s) / 1e6:>23.0f} "
            f"| {bulk_ratio:>5.2f} | {statistics.median(pp):>21.1f} | {pp_ratio:>5.2f} |"
        )
        ratios[name] = (bulk_ratio, pp_ratio)
    return ratios


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_accuracy(delay: float, samples: int) -> list[float]:
    a, b = tcp_pair()
    errors = []
    with a, b, apply(b, Latency(delay)):
        for _ in range(samples):
            start = time.perf_counter()
            a.sendall(b"x")
            b.recv(1)
            errors.append((time.perf_counter() - start - delay) * 1e3)
    return errors


def poorconn_accuracy(delay: float, samples: int) -> list[float]:
    errors = []
    for _ in range(samples):
        a, b = tcp_pair()
        a = poorconn.make_socket_patchable(a)
        with a, b:
            poorconn.delay_before_sending_once(a, delay)
            start = time.perf_counter()
            a.sendall(b"x")
            b.recv(1)
            errors.append((time.perf_counter() - start - delay) * 1e3)
    return errors


def sleep_accuracy(delay: float, samples: int) -> list[float]:
    errors = []
    for _ in range(samples):
        start = time.perf_counter()
        time.sleep(delay)
        errors.append((time.perf_counter() - start - delay) * 1e3)
    return errors


def accuracy(samples: int) -> dict[str, float]:
    """Print the delay accuracy table; return each row's p99 error (ms)."""
    p99s = {}
    print(f"\ndelay accuracy: {samples} samples each; error = measured - requested, ms")
    print(f"| {'delay':<42} | {'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7} |")
    print(f"|{'-' * 44}|{'-' * 8}:|{'-' * 8}:|{'-' * 8}:|")
    for delay in (0.005, 0.02):
        for name, measure in (
            ("time.sleep (the machine's floor)", sleep_accuracy),
            ("sockwork Latency", latency_accuracy),
            ("poorconn delay_before_sending_once", poorconn_accuracy),
        ):
            errors = measure(delay, samples)
            label = f"{name} {delay * 1e3:g} ms"
            p99s[label] = percentile(errors, 0.99)
            print(
                f"| {label:<42} | {percentile(errors, 0.5):>7.3f} "
                f"| {percentile(errors, 0.99):>7.3f} | {max(errors):>7.3f} |"
            )
    return p99s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    summary.add_argument(parser)
    args = parser.parse_args()
    if args.quick:
        ratios = overhead(rounds=3, total=64 * MIB, count=500)
        p99s = accuracy(samples=50)
    else:
        ratios = overhead(rounds=15, total=128 * MIB, count=2000)
        p99s = accuracy(samples=300)
    figures = []
    for variant, label in (("sockwork apply()", "apply()"), ("sockwork inject()", "inject()")):
        bulk_ratio, pp_ratio = ratios[variant]
        # Both ratios are times over the plain socket's in the same round (> 1: slower).
        figures += [
            summary.Figure(
                f"{label} no fault, 1 MiB time vs plain",
                bulk_ratio,
                "x",
                at_most=1.05,
                goal="issue 3",
            ),
            summary.Figure(
                f"{label} no fault, 64 B round trip vs plain",
                pp_ratio,
                "x",
                at_most=1.05,
                goal="issue 3",
            ),
        ]
    for label in ("sockwork Latency 5 ms", "sockwork Latency 20 ms"):
        figures.append(
            summary.Figure(f"{label}: p99 error", p99s[label], "ms", at_most=2, goal="issue 3")
        )
    summary.write(args.summary_json, "faults", figures)


if __name__ == "__main__":
    main()
