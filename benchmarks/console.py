"""Console benchmark: many concurrent telnet sessions of one Cmd class, idle and active.

sockwork's ConsoleServer (one thread per session) against telnetlib3's asyncio server
(no thread per session: the same ``cmd.Cmd`` class driven by ``onecmd`` from an async
shell), each in its own process. A client process opens IDLE + ACTIVE sessions; every
session waits for its first prompt, then the idle ones hold their connection and say
nothing while each active one sends ``ping`` and reads the reply up to the next prompt
in a loop, pausing ``--think`` seconds (jittered) between commands, as a terminal user
or a script polling a console would.

Reported per server: sessions served (got a prompt), how fast they were accepted
(sessions per second until the last first prompt), the prompt latency p50/p99 of the
active sessions (command sent to next prompt received), commands per second, the
server's resident memory per session (RSS growth from idle to every session
connected, divided by the sessions), its threads, its virtual size, and its CPU time
while every session is idle (wake-ups cost CPU) and per command while active. With
``--rounds R`` each measurement is repeated R times (servers alternating) and the
median is printed, then the ratios telnetlib3 / sockwork.

    .venv/bin/python benchmarks/console.py                       # 100 and 1,000 active
    .venv/bin/python benchmarks/console.py --idle 10000 --active 1000 --rounds 3
    .venv/bin/python benchmarks/console.py --thread-costs 10000   # stack sizes

Each session is a file descriptor in the client and in the server: the benchmark
raises its soft RLIMIT_NOFILE to the hard limit (the server process inherits it) and
stops with a message when the hard limit is too low for the sessions asked.
"""

from __future__ import annotations

import argparse
import asyncio
import cmd
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import summary

PROMPT = b"bench> "
PROMPT_WAIT = 120.0  # seconds for every session to get its first prompt
CONNECTING = 200  # sessions connecting at once (a flood would overflow the listen queue)
IDLE_WINDOW = 2.0  # seconds of all-idle during which the server's CPU time is measured
# Seconds every session has been idle before memory and idle CPU are measured.
SETTLE = 2.0


class BenchShop(cmd.Cmd):
    """The served program: one command, answered through self.stdout."""

    prompt = PROMPT.decode()

    def do_ping(self, arg: str) -> None:
        self.stdout.write(f"pong {arg}\n")

    def do_EOF(self, arg: str) -> bool:
        return True

    def emptyline(self) -> bool:
        return False


# -- servers (run in a child process) -------------------------------------------------


def serve_sockwork(options: dict[str, Any]) -> None:
    from sockwork.console import ConsoleServer

    kwargs: dict[str, Any] = {
        "max_clients": None,
        "max_per_address": None,  # every benchmark client comes from 127.0.0.1
        "first_line_timeout": None,  # idle sessions never type a line
        "backlog": 1024,
    }
    kwargs.update(options)
    server = ConsoleServer(BenchShop, **kwargs)
    server.start()
    print(server.address[1], flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    started = time.perf_counter()
    server.close(timeout=60.0)
    report_close(time.perf_counter() - started)


def report_close(seconds: float) -> None:
    """Tell the parent how long close() took and how many threads are left."""
    import threading

    print(json.dumps({"close_s": seconds, "threads_left": threading.active_count()}), flush=True)


class _TelnetlibOutput:
    """BenchShop's stdout on a telnetlib3 writer: newlines as CR LF, no blocking."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def write(self, text: str) -> int:
        self.writer.write(text.replace("\n", "\r\n"))
        return len(text)

    def flush(self) -> None:
        pass  # write() hands the data to the event loop


def serve_telnetlib3(options: dict[str, Any]) -> None:
    import socket

    import telnetlib3

    async def shell(reader: Any, writer: Any) -> None:
        # The same Cmd class, driven line by line from telnetlib3's asyncio shell: its
        # commands never block, so one loop serves every session without threads.
        shop = BenchShop(stdout=_TelnetlibOutput(writer))  # type: ignore[arg-type]
        shop.use_rawinput = False
        shop.stdout.write(shop.prompt)
        while True:
            line = await reader.readline()
            if not line:
                break
            if shop.onecmd(line.rstrip("\r\n")):
                break
            shop.stdout.write(shop.prompt)
        writer.close()

    with socket.socket() as probe:  # pick a free port for it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> None:
        kwargs: dict[str, Any] = {
            "shell": shell,
            "line_mode": True,  # the client edits lines, as with sockwork
            # How long it waits for negotiation answers the bench client never sends
            # before starting the shell (4 s by default): it delays each first prompt only.
            "connect_maxwait": 0.05,
            "timeout": 900,  # sockwork's default idle timeout
        }
        kwargs.update(options)
        server = await telnetlib3.create_server("127.0.0.1", port, **kwargs)
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        started = time.perf_counter()
        server.close()
        await server.wait_closed()
        report_close(time.perf_counter() - started)

    asyncio.run(main())


SERVERS = {"sockwork": serve_sockwork, "telnetlib3": serve_telnetlib3}


# -- the client (this process) ---------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmSize (KiB) and Threads of a process."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmSize", "Threads"):
            found[key] = int(value.split()[0])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Load:
    """What the client's sessions share: events, counters, samples."""

    def __init__(self, sessions: int, think: float) -> None:
        self.sessions = sessions
        self.think = think
        self.prompted = 0
        self.all_prompted = asyncio.Event()
        self.go = asyncio.Event()
        self.done = asyncio.Event()
        self.until = 0.0
        self.samples: list[float] = []
        self.gate = asyncio.Semaphore(CONNECTING)
        self.rng = random.Random(1)


async def session(port: int, load: Load, active: bool) -> None:
    async with load.gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await reader.readuntil(PROMPT)
        except BaseException:
            writer.close()
            raise
    try:
        load.prompted += 1
        if load.prompted == load.sessions:
            load.all_prompted.set()
        if not active:
            await load.done.wait()
            return
        await load.go.wait()
        await asyncio.sleep(load.rng.uniform(0, load.think))  # spread the sessions out
        n = 0
        while time.monotonic() < load.until:
            n += 1
            started = time.perf_counter()
            writer.write(b"ping %d\r\n" % n)
            await reader.readuntil(PROMPT)
            load.samples.append(time.perf_counter() - started)
            await asyncio.sleep(load.think * load.rng.uniform(0.5, 1.5))
    finally:
        writer.close()


async def drive(
    port: int,
    process: subprocess.Popen[str],
    idle: int,
    active: int,
    seconds: float,
    think: float,
    ended_by: str,
) -> dict[str, float]:
    pid = process.pid
    total = idle + active
    load = Load(total, think)
    before = proc_status(pid)
    started = time.perf_counter()
    # Active sessions are spread among the idle ones (every 1 in total/active).
    step = total / active if active else 0.0
    marks = {int(i * step) for i in range(active)}
    tasks = [asyncio.create_task(session(port, load, i in marks)) for i in range(total)]
    try:
        await asyncio.wait_for(load.all_prompted.wait(), PROMPT_WAIT)
    except asyncio.TimeoutError:
        pass  # measure with the sessions that did get a prompt, and say how many did
    accept_rate = load.prompted / (time.perf_counter() - started)
    errors = {
        repr(t.exception()) for t in tasks if t.done() and not t.cancelled() and t.exception()
    }
    if errors:
        load.done.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise RuntimeError(f"sessions failed: {sorted(errors)[:3]}")
    await asyncio.sleep(SETTLE)
    full = proc_status(pid)
    cpu0 = cpu_seconds(pid)
    await asyncio.sleep(IDLE_WINDOW)
    idle_cpu = (cpu_seconds(pid) - cpu0) / IDLE_WINDOW
    cpu0 = cpu_seconds(pid)
    load.until = time.monotonic() + think + seconds
    load.go.set()
    while time.monotonic() < load.until:
        await asyncio.sleep(0.1)
    active_cpu = cpu_seconds(pid) - cpu0
    closing = {}
    if ended_by == "server":  # close() with every client still connected
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()
        closing = json.loads(await asyncio.to_thread(process.stdout.readline) or "{}")
    load.done.set()  # else the clients all leave at once, then the server closes
    await asyncio.sleep(0.2)
    for task in tasks:
        if not task.done():
            task.cancel()  # never prompted: still connecting
    await asyncio.gather(*tasks, return_exceptions=True)
    samples = sorted(load.samples) or [float("nan")]
    return {
        "served": load.prompted,
        "accept": accept_rate,
        "p50": statistics.median(samples) * 1000,
        "p99": samples[max(0, int(len(samples) * 0.99) - 1)] * 1000,
        "rate": len(load.samples) / (seconds + think),
        "kib": (full["VmRSS"] - before["VmRSS"]) / max(1, load.prompted),
        "threads": full["Threads"],
        "vsz_mib": full["VmSize"] / 1024,
        "idle_cpu_ms": idle_cpu * 1000,
        "cpu_us_cmd": active_cpu / max(1, len(load.samples)) * 1e6,
        **closing,
    }


def measure(
    name: str,
    options: dict[str, Any],
    idle: int,
    active: int,
    seconds: float,
    think: float,
    ended_by: str = "clients",
) -> dict[str, float]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", name, "--options", json.dumps(options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        port = int(process.stdout.readline())
        time.sleep(0.3)
        result = asyncio.run(drive(port, process, idle, active, seconds, think, ended_by))
        if "close_s" not in result:
            process.stdin.close()
            closing = json.loads(process.stdout.readline() or "{}")
            result["close_s"] = closing.get("close_s", float("nan"))
            result["threads_left"] = closing.get("threads_left", float("nan"))
        return result
    finally:
        assert process.stdin is not None
        if not process.stdin.closed:
            process.stdin.close()
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def raise_fd_limit(sessions: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; fail clearly when it is too low."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    need = sessions + 64  # each process: one fd per session, plus its own few
    if soft != resource.RLIM_INFINITY and soft < need:
        sys.exit(
            f"console benchmark: {sessions} sessions need {need} file descriptors per process; "
            f"the hard limit is {hard} (raise it: ulimit -Hn, or LimitNOFILE= in systemd)"
        )


# -- ending many sessions (--teardown) --------------------------------------------------

OPERATOR_TICK = 0.005  # the stand-in operator's pause: it reports how late it wakes


def serve_teardown(options: dict[str, Any]) -> None:
    """A ConsoleServer told by the parent, on stdin, how its sessions end; reports on stdout.

    ``leave``: the parent's clients all disconnect right after "go"; measured until every
    session thread has ended. ``close``: ``close(timeout=60)`` with the clients connected.
    Meanwhile a stand-in operator thread sleeps OPERATOR_TICK in a loop and records how
    late it wakes (its wait for the GIL).
    """
    import resource
    import threading

    from sockwork.console import ConsoleServer

    server = ConsoleServer(
        BenchShop,
        max_clients=None,
        max_per_address=None,
        first_line_timeout=None,
        backlog=1024,
    ).start()
    base_threads = threading.active_count()
    print(server.address[1], flush=True)
    how = sys.stdin.readline().strip()
    late = [0.0]
    stop = threading.Event()

    def operator() -> None:
        while not stop.is_set():
            before = time.perf_counter()
            time.sleep(OPERATOR_TICK)
            late[0] = max(late[0], time.perf_counter() - before - OPERATOR_TICK)

    ticker = threading.Thread(target=operator, daemon=True)
    ticker.start()
    time.sleep(0.1)
    late[0] = 0.0
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if how == "leave":
        print("go", flush=True)
        while threading.active_count() > base_threads + 1:  # + the operator
            time.sleep(0.01)
    else:
        server.close(timeout=60.0)
    seconds = time.perf_counter() - started
    used = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    ticker.join()
    server.close(timeout=60.0)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": used.ru_utime - cpu.ru_utime + used.ru_stime - cpu.ru_stime,
                "operator_ms": late[0] * 1000,
                "threads_left": threading.active_count() - 1,
                "fds": len(os.listdir("/proc/self/fd")),
            }
        ),
        flush=True,
    )


async def connect_all(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` sessions, each past its first prompt (CONNECTING at a time)."""
    gate = asyncio.Semaphore(CONNECTING)

    async def one() -> asyncio.StreamWriter:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(reader.readuntil(PROMPT), PROMPT_WAIT)
            return writer

    return await asyncio.gather(*(one() for _ in range(count)))


def measure_teardown(count: int, how: str, pythonpath: str | None) -> dict[str, float]:
    """End ``count`` sessions one way (``leave`` or ``close``) in a fresh server process."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", "teardown"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        port = int(process.stdout.readline())

        async def run() -> dict[str, float]:
            writers = await connect_all(port, count)
            await asyncio.sleep(SETTLE)
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(how + "\n")
            process.stdin.flush()
            if how == "leave":
                assert process.stdout.readline().strip() == "go"
                for writer in writers:  # every client at once
                    writer.close()
            report = await asyncio.to_thread(process.stdout.readline)
            for writer in writers:
                writer.close()
            return dict(json.loads(report))

        return asyncio.run(run())
    finally:
        process.stdin.close()
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def teardown(counts: list[int], ways: list[str], rounds: int, baseline: str | None) -> None:
    """Print how long ending every session takes, both ways, this tree vs ``baseline``."""
    import tempfile

    print(
        f"ending N sessions, median of {rounds} (codes alternating); 'leave': every client "
        f"disconnects at once, until every session thread has ended; 'close': close() with "
        f"the clients connected; operator: worst lateness of a thread sleeping "
        f"{OPERATOR_TICK * 1000:g} ms in a loop; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'N':>6}  {'code':<12} {'way':<6} {'s':>8} {'CPU s':>8} {'op ms':>8} {'left':>5}")
    with tempfile.TemporaryDirectory() as directory:
        codes: list[tuple[str, str | None]] = [("this tree", None)]
        if baseline is not None:
            codes.append((baseline, baseline_source(baseline, directory)))
        for count in counts:
            for how in ways:
                runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in codes}
                for _ in range(rounds):
                    for name, path in codes:
                        runs[name].append(measure_teardown(count, how, path))
                for name, results in runs.items():
                    m = {k: statistics.median(r[k] for r in results) for k in results[0]}
                    print(
                        f"{count:>6}  {name:<12} {how:<6} {m['seconds']:>8.2f} {m['cpu']:>8.2f} "
                        f"{m['operator_ms']:>8.0f} {m['threads_left']:>5.0f}",
                        flush=True,
                    )
                    if rounds > 1:
                        each = ", ".join(f"{r['seconds']:.2f}" for r in results)
                        print(f"{'':>28}(each round: {each} s)", flush=True)


def baseline_source(revision: str, directory: str) -> str:
    """Extract ``src/`` of git ``revision`` into ``directory``; returns the PYTHONPATH."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", revision, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
    return os.path.join(directory, "src")


# -- what a session thread costs, by stack size (--thread-costs) -----------------------

STACK_SIZES = [0, 4 << 20, 2 << 20, 1 << 20, 512 << 10, 256 << 10]  # 0: the default
RECURSIONS = {
    # Recursion to the default limit (1,000) through C calls, each level a C frame too.
    "map": "def f(n): return list(map(f, [n + 1]))\nf(0)",
    "sorted(key=)": "def f(n): return sorted([n + 1], key=f)\nf(0)",
    "property": "class P:\n @property\n def v(self): return P().v\nP().v",
}


def probe_threads(size: int, count: int) -> None:
    """In a fresh process: start ``count`` idle threads; print what they cost (JSON)."""
    import threading

    def status(key: str) -> int:
        return proc_status(os.getpid())[key]

    rss, vsz = status("VmRSS"), status("VmSize")
    if size:
        threading.stack_size(size)
    done = threading.Event()
    threads = [threading.Thread(target=done.wait, daemon=True) for _ in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(os.getpid())
    time.sleep(IDLE_WINDOW)
    idle_cpu = (cpu_seconds(os.getpid()) - cpu) / IDLE_WINDOW
    result = {
        "rss": (status("VmRSS") - rss) / count,
        "vsz": (status("VmSize") - vsz) / count,
        "rate": count / elapsed,
        "idle_cpu_ms": idle_cpu * 1000,
    }
    done.set()
    print(json.dumps(result))


def probe_recursion(size: int, name: str) -> None:
    """In a fresh process: recurse to the limit in a thread of ``size`` stack (or crash)."""
    import threading

    outcome = ["no RecursionError"]

    def run() -> None:
        try:
            exec(RECURSIONS[name], {})
        except RecursionError:
            outcome[0] = "RecursionError"

    if size:
        threading.stack_size(size)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    print(outcome[0])


def thread_costs(count: int) -> None:
    """Print what ``count`` idle threads cost, and which stack sizes survive deep recursion."""
    print(f"{count:,} idle threads per stack size, each run in a fresh process")
    titles = ("KiB RSS/thread", "KiB VSZ/thread", "starts/s", "idle CPU ms/s")
    print(f"{'stack':>8} " + " ".join(f"{title:>15}" for title in titles))
    for size in STACK_SIZES:
        runs = []
        for _ in range(3):
            out = subprocess.run(
                [sys.executable, __file__, "--probe-threads", str(size), str(count)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            runs.append(json.loads(out))
        m = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        label = f"{size >> 10} KiB" if size else "default"
        cells = (
            f"{m['rss']:.1f}",
            f"{m['vsz']:.0f}",
            f"{m['rate']:.0f}",
            f"{m['idle_cpu_ms']:.1f}",
        )
        print(f"{label:>8} " + " ".join(f"{cell:>15}" for cell in cells))
    limit, version = sys.getrecursionlimit(), sys.version.split()[0]
    print(f"\nrecursion to the limit ({limit}) in a thread of each stack size, Python {version}")
    print(f"{'stack':>8} " + " ".join(f"{name:>18}" for name in RECURSIONS))
    for size in STACK_SIZES:
        cells = []
        for name in RECURSIONS:
            done = subprocess.run(
                [sys.executable, __file__, "--probe-recursion", str(size), name],
                capture_output=True,
                text=True,
                check=False,
            )
            cells.append(
                done.stdout.strip()
                if done.returncode == 0
                else f"crash (signal {-done.returncode})"
            )
        label = f"{size >> 10} KiB" if size else "default"
        print(f"{label:>8} " + " ".join(f"{cell:>18}" for cell in cells), flush=True)


COLUMNS = [
    ("served", "served", "{:.0f}"),
    ("accept/s", "accept", "{:.0f}"),
    ("p50 ms", "p50", "{:.2f}"),
    ("p99 ms", "p99", "{:.2f}"),
    ("cmd/s", "rate", "{:.0f}"),
    ("KiB/sess", "kib", "{:.1f}"),
    ("threads", "threads", "{:.0f}"),
    ("VSZ MiB", "vsz_mib", "{:.0f}"),
    ("idle CPU ms/s", "idle_cpu_ms", "{:.1f}"),
    ("CPU us/cmd", "cpu_us_cmd", "{:.0f}"),
    ("close s", "close_s", "{:.2f}"),
]


def row(idle: int, active: int, label: str, cells: list[str]) -> str:
    head = f"{idle:>6} {active:>6}  {label:<12}"
    return head + "".join(
        f" {cell:>{max(8, len(title))}}" for cell, (title, _, _) in zip(cells, COLUMNS, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=[*sorted(SERVERS), "teardown"], help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument(
        "--active",
        "--sessions",
        dest="active",
        type=int,
        nargs="+",
        default=[100, 1000],
        help="active sessions (each a ping loop); several values: one run each",
    )
    parser.add_argument(
        "--idle", type=int, nargs="+", default=[0], help="idle sessions beside the active ones"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    parser.add_argument("--rounds", type=int, default=1, help="runs per measurement (median)")
    parser.add_argument(
        "--servers", nargs="+", default=["sockwork", "telnetlib3"], choices=sorted(SERVERS)
    )
    parser.add_argument("--think", type=float, default=0.5, help="pause between commands (s)")
    parser.add_argument(
        "--ended-by",
        choices=["clients", "server"],
        default="clients",
        help="who ends the sessions after the run: every client leaving at once, then "
        "close() (default), or close() with the clients connected ('close s' column)",
    )
    parser.add_argument(
        "--sockwork-options",
        default="{}",
        help="extra ConsoleServer keywords as JSON, e.g. '{\"session_stack_size\": null}'",
    )
    parser.add_argument(
        "--thread-costs",
        type=int,
        metavar="N",
        help="instead: what N idle threads cost per stack size, and which sizes survive "
        "deep recursion",
    )
    parser.add_argument(
        "--teardown",
        type=int,
        nargs="+",
        metavar="N",
        help="instead: how long ending N sessions takes (every client leaving at once, and "
        "close() with them connected), and how late an operator thread gets the GIL",
    )
    parser.add_argument(
        "--baseline", metavar="REV", help="--teardown: also run the server of git revision REV"
    )
    parser.add_argument(
        "--ways",
        nargs="+",
        choices=["close", "leave"],
        default=["close", "leave"],
        help="--teardown: which ends to measure",
    )
    parser.add_argument("--probe-threads", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe-recursion", nargs=2, help=argparse.SUPPRESS)
    summary.add_argument(parser)
    args = parser.parse_args()
    if args.probe_threads:
        probe_threads(*args.probe_threads)
        return
    if args.probe_recursion:
        probe_recursion(int(args.probe_recursion[0]), args.probe_recursion[1])
        return
    if args.thread_costs:
        thread_costs(args.thread_costs)
        summary.write(args.summary_json, "console", [])
        return
    if args.serve == "teardown":
        serve_teardown(json.loads(args.options))
        return
    if args.serve:
        SERVERS[args.serve](json.loads(args.options))
        return
    if args.teardown:
        raise_fd_limit(max(args.teardown))
        teardown(args.teardown, args.ways, args.rounds, args.baseline)
        summary.write(args.summary_json, "console", [])
        return
    loads = [(idle, active) for idle in args.idle for active in args.active]
    raise_fd_limit(max(idle + active for idle, active in loads))
    options = {"sockwork": json.loads(args.sockwork_options), "telnetlib3": {}}
    print(
        f"{args.seconds:g} s per run, median of {args.rounds}; each active session: ping, "
        f"read the reply, pause {args.think:g} s (x0.5..1.5); loopback; servers in their own "
        f"process; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        row(0, 0, "", [title for title, _, _ in COLUMNS]).replace("     0      0", "  idle active")
    )
    figures: list[summary.Figure] = []
    for idle, active in loads:
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in args.servers}
        for _ in range(args.rounds):
            for name in args.servers:
                runs[name].append(
                    measure(
                        name, options[name], idle, active, args.seconds, args.think, args.ended_by
                    )
                )
        medians = {
            name: {key: statistics.median(r[key] for r in results) for _, key, _ in COLUMNS}
            for name, results in runs.items()
        }
        for name, m in medians.items():
            print(
                row(idle, active, name, [fmt.format(m[key]) for _, key, fmt in COLUMNS]), flush=True
            )
            if args.rounds > 1:
                p99s = ", ".join(f"{r['p99']:.1f}" for r in runs[name])
                print(f"{'':>27}(p99 of each round: {p99s} ms)", flush=True)
        figures += headline(idle, active, medians)
        if "sockwork" in medians and "telnetlib3" in medians:
            ours, theirs = medians["sockwork"], medians["telnetlib3"]
            cells = []
            for _, key, _ in COLUMNS:
                if key in ("served", "threads", "vsz_mib", "rate") or not ours[key]:
                    cells.append("")
                else:
                    cells.append(f"{theirs[key] / ours[key]:.2f}x")
            print(row(idle, active, "telnetlib3/sw", cells), flush=True)
    summary.write(args.summary_json, "console", figures)


def headline(idle: int, active: int, medians: dict[str, dict[str, float]]) -> list[summary.Figure]:
    """The figures of one load for ``make bench``: sockwork's, and the ratio to telnetlib3."""
    load = f"{active:,} active" if not idle else f"{idle:,} idle + {active:,} active"
    goal = "issue 12.3" if idle else "issue 5"
    figures = []
    if "sockwork" in medians:
        ours = medians["sockwork"]
        figures += [
            summary.Figure(
                f"sockwork sessions served of {idle + active:,}",
                ours["served"],
                at_least=idle + active,
                goal=goal,
            ),
            summary.Figure(
                f"sockwork p99 prompt latency, {load}", ours["p99"], "ms", at_most=50, goal=goal
            ),
            summary.Figure(f"sockwork memory, {load}", ours["kib"], "KiB/session"),
            summary.Figure(f"sockwork idle CPU, {load}", ours["idle_cpu_ms"], "ms/s"),
        ]
    if "sockwork" in medians and "telnetlib3" in medians:
        figures.append(
            summary.Figure(
                f"telnetlib3 p99 / sockwork p99, {load}",
                medians["telnetlib3"]["p99"] / medians["sockwork"]["p99"],
                "x",
                at_least=1.0,
                goal=goal,
            )
        )
    return figures


if __name__ == "__main__":
    main()
