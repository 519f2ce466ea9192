"""Benchmark: sockwork's FaultProxy (no fault) vs a direct connection, socat and HAProxy.

Run: .venv/bin/python benchmarks/proxy.py [--mib 64] [--trials 7] [--rounds 2000] [--baseline REV]

``--baseline REV`` adds a row for the proxy of git revision REV (its ``src/``, extracted
with ``git archive``) in the same interleaved rounds: old and new code side by side.

Each path carries (1) bulk transfers: the client pushes ``--mib`` MiB in 1 MiB
``sendall`` calls to a sink that acknowledges the EOF, and (2) 64-byte ping-pong round
trips to an echo server (TCP_NODELAY everywhere). The proxy and socat each run in their
own process, as a user would run them; the servers and the client share this process.
HAProxy (Debian ``haproxy``, installed by ``make bench``) runs in TCP mode with
``option splice-request``, ``option splice-response`` and 1 MiB pipes: a production relay in C that
moves bytes with splice too, so its row shows what any relay can reach on this machine.
A relay that is not installed is skipped with a message and its figures are "not measured".
Targets (issue 4): proxy >= 0.5x direct throughput and within 2x of socat; added median
round trip <= 100 us. Issue 12: >= 0.9x direct, added median round trip <= 30 us, >= socat.

The CPU columns (user + system, from /proc and process_time) are per GB of bulk data
for the relay process and for this process (the client and the servers), and per round
trip for the relay: unlike throughput, they hardly depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import summary

CHUNK = 1 << 20
FLOOR = "Python splice relay (floor)"
HAPROXY = "HAProxy (splice)"
_PIDS: dict[tuple[str, int], int] = {}  # relay address -> its process id


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system CPU time of a process so far (Linux /proc), with its reaped children's."""
    with open(f"/proc/{pid}/stat") as f:
        fields = [int(x) for x in f.read().rsplit(")", 1)[1].split()[11:15]]
    ticks = sum(fields) if reaped else fields[0] + fields[1]
    return ticks / os.sysconf("SC_CLK_TCK")


def serve(handler: Callable[[socket.socket], None]) -> tuple[socket.socket, tuple[str, int]]:
    listener = socket.create_server(("127.0.0.1", 0))

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return listener, listener.getsockname()[:2]


def sink(conn: socket.socket) -> None:
    buf = bytearray(CHUNK)
    # A relay that is stopped may reset its upstream connections (HAProxy does).
    with conn, contextlib.suppress(ConnectionResetError):
        while conn.recv_into(buf):
            pass
        conn.sendall(b"k")


def echo(conn: socket.socket) -> None:
    with conn, contextlib.suppress(ConnectionResetError):
        while data := conn.recv(65536):
            conn.sendall(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_connectable(address: tuple[str, int]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(address, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def sockwork_proxy(
    upstream: tuple[str, int], pythonpath: str | None = None
) -> Iterator[tuple[str, int]]:
    """``sockwork proxy`` in its own process (from ``pythonpath``'s sockwork if given)."""
    env = None if pythonpath is None else dict(os.environ, PYTHONPATH=pythonpath)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sockwork", "proxy", "--upstream", f"{upstream[0]}:{upstream[1]}"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        match = re.search(r"proxy (127\.0\.0\.1):(\d+)", banner)
        assert match, banner
        # Drain the per-connection lines so the pipe never fills up.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        address = match.group(1), int(match.group(2))
        _PIDS[address] = proc.pid
        yield address
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def socat_relay(upstream: tuple[str, int]) -> Iterator[tuple[str, int]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "socat",
            f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
            f"TCP:{upstream[0]}:{upstream[1]},nodelay",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_connectable(("127.0.0.1", port))
        _PIDS[("127.0.0.1", port)] = proc.pid  # socat forks a child per connection
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(10)


def haproxy_binary() -> str | None:
    """HAProxy's path: Debian puts it in /usr/sbin, which a user's PATH may lack."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


@contextmanager
def haproxy_relay(upstream: tuple[str, int]) -> Iterator[tuple[str, int]]:
    """HAProxy in TCP mode, splicing both directions through 1 MiB pipes (else its defaults)."""
    binary = haproxy_binary()
    assert binary is not None
    port = free_port()
    config = (
        "global\n"
        "    maxconn 256\n"
        "    tune.pipesize 1048576\n"  # 1 MiB kernel pipes, as the proxy's and the floor's
        "defaults\n"
        "    mode tcp\n"
        "    timeout connect 5s\n"
        "    timeout client 5m\n"
        "    timeout server 5m\n"
        "    option splice-request\n"
        "    option splice-response\n"
        "listen relay\n"
        f"    bind 127.0.0.1:{port}\n"
        f"    server upstream {upstream[0]}:{upstream[1]}\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", prefix="bench-haproxy-") as cfg:
        cfg.write(config)
        cfg.flush()
        # -db: stay in the foreground (so terminate() stops it); -q: no start-up notices.
        proc = subprocess.Popen(
            [binary, "-db", "-q", "-f", cfg.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_connectable(("127.0.0.1", port))
            _PIDS[("127.0.0.1", port)] = proc.pid
            yield "127.0.0.1", port
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def direct(upstream: tuple[str, int]) -> Iterator[tuple[str, int]]:
    yield upstream


def baseline_source(revision: str, directory: str) -> str:
    """Extract ``src/`` of git ``revision`` into ``directory``; returns the PYTHONPATH."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    archive = subprocess.run(
        ["git", "-C", root, "archive", revision, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
    return os.path.join(directory, "src")


def relay_cpu(pid: int | None) -> float:
    """CPU seconds of a relay and its children (socat forks one per connection)."""
    if pid is None:
        return 0.0
    # A child that ends between two readings moves from the live sum to the reaped one.
    total = cpu_seconds(pid, reaped=True)
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            for child in f.read().split():
                with contextlib.suppress(OSError):
                    total += cpu_seconds(int(child))
    return total


def bulk(address: tuple[str, int], mib: int) -> float:
    """Seconds to push ``mib`` MiB and get the sink's acknowledgement."""
    payload = os.urandom(CHUNK)
    with socket.create_connection(address) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        for _ in range(mib):
            conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(1) == b"k"
        return time.perf_counter() - started


def ping_pong(address: tuple[str, int], rounds: int) -> list[float]:
    """Round-trip times (seconds) of 64-byte messages."""
    message = b"p" * 64
    times = []
    with socket.create_connection(address) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(rounds):
            started = time.perf_counter()
            conn.sendall(message)
            got = 0
            while got < 64:
                got += len(conn.recv(64 - got))
            times.append(time.perf_counter() - started)
    return times


def splice_relay_main(upstream: str) -> None:
    """The floor of a relay written in Python: two threads per connection, blocking splice.

    No faults, no event loop, no counters: what is left is the kernel's work and one
    Python call per splice. Run as ``proxy.py --splice-relay HOST:PORT``.
    """
    import fcntl

    host, port = upstream.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"relay 127.0.0.1:{listener.getsockname()[1]}", flush=True)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        r, w = os.pipe()
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, CHUNK)
        with contextlib.suppress(OSError):
            while n := os.splice(src.fileno(), w, CHUNK, flags=os.SPLICE_F_MOVE):
                while n:
                    n -= os.splice(r, dst.fileno(), n, flags=os.SPLICE_F_MOVE)
            dst.shutdown(socket.SHUT_WR)

    while True:
        client, _ = listener.accept()
        server = socket.create_connection((host, int(port)))
        for conn in (client, server):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pump, args=(client, server), daemon=True).start()
        threading.Thread(target=pump, args=(server, client), daemon=True).start()


@contextmanager
def python_splice_relay(upstream: tuple[str, int]) -> Iterator[tuple[str, int]]:
    script = os.path.abspath(__file__)
    command = [sys.executable, script, "--splice-relay", f"{upstream[0]}:{upstream[1]}"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        match = re.search(r"relay (127\.0\.0\.1):(\d+)", proc.stdout.readline())
        assert match
        address = match.group(1), int(match.group(2))
        _PIDS[address] = proc.pid
        yield address
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB per bulk trial (default 64)")
    parser.add_argument("--trials", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--rounds", type=int, default=2000, help="ping-pong rounds (default 2000)")
    parser.add_argument(
        "--baseline", metavar="REV", help="also run the proxy of git revision REV (a row)"
    )
    parser.add_argument("--splice-relay", metavar="HOST:PORT", help=argparse.SUPPRESS)
    summary.add_argument(parser)
    args = parser.parse_args()
    if args.splice_relay:
        splice_relay_main(args.splice_relay)
        return 0

    sink_listener, sink_address = serve(sink)
    echo_listener, echo_address = serve(echo)
    Relay = Callable[[tuple[str, int]], contextlib.AbstractContextManager[tuple[str, int]]]
    paths: list[tuple[str, Relay]] = [("direct", direct)]
    paths.append(("sockwork FaultProxy", sockwork_proxy))
    scratch = tempfile.TemporaryDirectory(prefix="bench-proxy-")
    if args.baseline:
        old = baseline_source(args.baseline, scratch.name)
        paths.append(
            (f"FaultProxy {args.baseline}"[:27], functools.partial(sockwork_proxy, pythonpath=old))
        )
    if hasattr(os, "splice"):
        paths.append((FLOOR, python_splice_relay))
    if shutil.which("socat"):
        paths.append(("socat relay", socat_relay))
    else:
        print("socat is not installed: its row is skipped", file=sys.stderr)
    if haproxy_binary():
        paths.append((HAPROXY, haproxy_relay))
    else:
        print(
            "haproxy is not installed (Debian package haproxy; make bench installs it): "
            "its row is skipped",
            file=sys.stderr,
        )

    # Every path is measured once per round, rounds interleaved, so that the load of
    # this shared machine falls on all of them alike. Ratios are taken per round (each
    # path against direct in the same round), then the median of those is shown.
    rounds = args.rounds // args.trials
    gigabytes = args.trials * args.mib * CHUNK / 1e9
    with contextlib.ExitStack() as stack:
        relays = {
            name: (stack.enter_context(make(sink_address)), stack.enter_context(make(echo_address)))
            for name, make in paths
        }
        seconds: dict[str, list[float]] = {name: [] for name in relays}
        cpu: dict[str, float] = {name: 0.0 for name in relays}
        ends_cpu: dict[str, float] = {name: 0.0 for name in relays}
        rtts: dict[str, list[list[float]]] = {name: [] for name in relays}
        rtt_cpu: dict[str, float] = {name: 0.0 for name in relays}
        for bulk_address, echo_at in relays.values():
            bulk(bulk_address, 4)  # warm up
            ping_pong(echo_at, 100)
        for _ in range(args.trials):
            for name, (bulk_address, echo_at) in relays.items():
                pid = _PIDS.get(bulk_address)
                before, ends_before = relay_cpu(pid), time.process_time()
                seconds[name].append(bulk(bulk_address, args.mib))
                cpu[name] += relay_cpu(pid) - before
                ends_cpu[name] += time.process_time() - ends_before
                echo_pid = _PIDS.get(echo_at)
                before = relay_cpu(echo_pid)
                rtts[name].append(ping_pong(echo_at, rounds))
                rtt_cpu[name] += relay_cpu(echo_pid) - before
    sink_listener.close()
    echo_listener.close()
    scratch.cleanup()

    def per_round(name: str) -> tuple[float, float]:
        """Median over rounds of (throughput / direct's, median RTT - direct's), in µs."""
        speed = [d / s for d, s in zip(seconds["direct"], seconds[name], strict=True)]
        added = [
            statistics.median(mine) - statistics.median(theirs)
            for mine, theirs in zip(rtts[name], rtts["direct"], strict=True)
        ]
        return statistics.median(speed), statistics.median(added) * 1e6

    print(
        f"proxy benchmark: {args.trials} interleaved rounds of {args.mib} MiB per path "
        f"and {rounds} x 64 B round trips per round; "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'path':<28}{'MB/s':>7}{'x direct':>9}{'x socat':>8}{'RTT us':>8}{'p99 us':>8}"
        f"{'added us':>9}{'relay CPU s/GB':>15}{'ends CPU s/GB':>14}{'CPU bound':>10}"
        f"{'relay CPU us/RTT':>17}"
    )
    results: dict[str, tuple[float, float, float]] = {}
    socat_seconds = seconds.get("socat relay")
    base_total = ends_cpu["direct"]
    for name in relays:
        times = sorted(t for r in rtts[name] for t in r)
        mbps = args.mib * CHUNK / statistics.median(seconds[name]) / 1e6
        vs_direct, added = per_round(name)
        results[name] = (mbps, vs_direct, added)
        vs_socat = "-"
        if socat_seconds:
            ratios = [s / m for s, m in zip(socat_seconds, seconds[name], strict=True)]
            vs_socat = f"{statistics.median(ratios):.2f}"
        # If every core were busy, throughput would follow the CPU time per byte of all
        # the processes involved: direct's total over this path's bounds the ratio.
        total = ends_cpu[name] + cpu[name]
        print(
            f"{name:<28}{mbps:>7.0f}{vs_direct:>9.2f}{vs_socat:>8}"
            f"{statistics.median(times) * 1e6:>8.1f}{times[int(len(times) * 0.99) - 1] * 1e6:>8.1f}"
            f"{added:>9.1f}{cpu[name] / gigabytes if name != 'direct' else 0:>15.2f}"
            f"{ends_cpu[name] / gigabytes:>14.2f}{base_total / total if total else 0:>10.2f}"
            f"{rtt_cpu[name] / (rounds * args.trials) * 1e6:>17.1f}"
        )
    socat_ratio = None
    if socat_seconds:
        socat_ratio = statistics.median(
            s / m for s, m in zip(socat_seconds, seconds["sockwork FaultProxy"], strict=True)
        )
    base_mbps = results["direct"][0]
    _, vs_direct, added = results["sockwork FaultProxy"]
    print(
        "(x direct, x socat, added: medians of per-round ratios and differences; "
        "CPU bound: direct's CPU per GB / this path's, the ratio if the cores were the limit)"
    )
    goal = "issue 12.1"
    summary.write(
        args.summary_json,
        "proxy",
        [
            summary.Figure("direct loopback throughput", base_mbps, "MB/s"),
            summary.Figure(
                "FaultProxy throughput vs direct", vs_direct, "x", at_least=0.9, goal=goal
            ),
            summary.Figure(
                "FaultProxy added round trip (median)",
                added,
                "µs",
                at_most=30,
                goal=goal,
            ),
            summary.Figure(
                "FaultProxy throughput vs socat",
                socat_ratio,
                "x",
                at_least=1.0,
                goal=goal,
            ),
            summary.Figure("FaultProxy CPU per GB", cpu["sockwork FaultProxy"] / gigabytes, "s"),
            summary.Figure(
                f"{FLOOR} vs direct", results[FLOOR][1] if FLOOR in results else None, "x"
            ),
            summary.Figure(
                f"{FLOOR} added round trip", results[FLOOR][2] if FLOOR in results else None, "µs"
            ),
            summary.Figure(
                f"{HAPROXY} vs direct", results[HAPROXY][1] if HAPROXY in results else None, "x"
            ),
            summary.Figure(
                f"{HAPROXY} added round trip",
                results[HAPROXY][2] if HAPROXY in results else None,
                "µs",
            ),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
