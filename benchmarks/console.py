"""Console benchmark: many concurrent telnet sessions of one Cmd class.

sockwork's ConsoleServer against telnetlib3's BlockingTelnetServer (the closest
existing library), each serving the same ``cmd.Cmd`` class in its own process.
A client process opens N sessions; each sends ``ping`` and reads the reply in a
loop, pausing ``--think`` seconds (jittered) between commands, as a terminal user
or a script polling a console would. Reported: command round trip p50/p99, the
commands per second achieved, and the server's resident memory per session
(RSS growth from idle to N connected sessions, divided by N).

    .venv/bin/python benchmarks/console.py                # 100 and 1,000 sessions
    .venv/bin/python benchmarks/console.py --sessions 100 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import cmd
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import summary

PROMPT = b"bench> "
PROMPT_WAIT = 60.0  # seconds for every session to get its first prompt


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


def serve_sockwork() -> None:
    from sockwork.console import ConsoleServer

    server = ConsoleServer(
        BenchShop,
        max_clients=None,
        max_per_address=None,  # every benchmark client comes from 127.0.0.1
        first_line_timeout=None,
        idle_timeout=None,
        backlog=1024,
    )
    server.start()
    print(server.address[1], flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop()


class _Telnetlib3Input:
    def __init__(self, conn: object) -> None:
        self.conn = conn

    def readline(self) -> str:
        try:
            line = self.conn.readline()  # type: ignore[attr-defined]
        except EOFError:
            return ""
        return str(line).rstrip("\r\n") + "\n"


class _Telnetlib3Output:
    def __init__(self, conn: object) -> None:
        self.conn = conn

    def write(self, text: str) -> int:
        self.conn.write(text.replace("\n", "\r\n"))  # type: ignore[attr-defined]
        return len(text)

    def flush(self) -> None:
        pass  # write() already hands the data to the event loop


def serve_telnetlib3() -> None:
    import socket

    from telnetlib3.sync import BlockingTelnetServer

    def handler(conn: object) -> None:
        shop = BenchShop(stdin=_Telnetlib3Input(conn), stdout=_Telnetlib3Output(conn))  # type: ignore[arg-type]
        shop.use_rawinput = False
        shop.cmdloop()

    with socket.socket() as probe:  # telnetlib3 takes a port number, not 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # connect_maxwait: how long it waits for negotiation answers the bench client never
    # sends before starting the shell (4 s by default); it does not affect round trips.
    server = BlockingTelnetServer("127.0.0.1", port, handler=handler, connect_maxwait=0.5)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(port, flush=True)
    sys.stdin.read()
    server.shutdown()


# -- the client (this process) ---------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def session(
    port: int,
    ready: asyncio.Event,
    connected: list[int],
    go: asyncio.Event,
    until: list[float],
    think: float,
    samples: list[float],
    rng: random.Random,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readuntil(PROMPT)
        task = asyncio.current_task()
        task.prompted = True  # type: ignore[union-attr]
        connected[0] += 1
        if connected[0] == connected[1]:
            ready.set()
        await go.wait()
        await asyncio.sleep(rng.uniform(0, think))  # spread the sessions out
        n = 0
        while time.monotonic() < until[0]:
            n += 1
            started = time.perf_counter()
            writer.write(b"ping %d\r\n" % n)
            await reader.readuntil(PROMPT)
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(think * rng.uniform(0.5, 1.5))
    finally:
        writer.close()


async def drive(
    port: int, pid: int, sessions: int, seconds: float, think: float
) -> dict[str, float]:
    rng = random.Random(1)
    idle_rss = rss_kib(pid)
    ready, go = asyncio.Event(), asyncio.Event()
    connected = [0, sessions]
    until = [0.0]
    samples: list[float] = []
    tasks = []
    for _ in range(sessions):
        tasks.append(
            asyncio.create_task(session(port, ready, connected, go, until, think, samples, rng))
        )
        await asyncio.sleep(0)  # let the backlog drain rather than flood it
    try:
        await asyncio.wait_for(ready.wait(), PROMPT_WAIT)
    except asyncio.TimeoutError:
        # Measure with the sessions that did get a prompt, and say how many did.
        for task in tasks:
            if not task.done() and not getattr(task, "prompted", False):
                task.cancel()
    errors = {
        repr(t.exception()) for t in tasks if t.done() and not t.cancelled() and t.exception()
    }
    if errors:
        raise RuntimeError(f"sessions failed: {errors}")
    await asyncio.sleep(0.5)
    full_rss = rss_kib(pid)
    until[0] = time.monotonic() + think + seconds
    go.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    samples.sort()
    return {
        "p50": statistics.median(samples) * 1000,
        "p99": samples[int(len(samples) * 0.99) - 1] * 1000,
        "rate": len(samples) / (seconds + think),
        "kib": (full_rss - idle_rss) / sessions,
        "served": connected[0],
    }


def measure(name: str, sessions: int, seconds: float, think: float) -> dict[str, float]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        port = int(process.stdout.readline())
        time.sleep(0.3)
        return asyncio.run(drive(port, process.pid, sessions, seconds, think))
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=["sockwork", "telnetlib3"], help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    parser.add_argument(
        "--servers", nargs="+", default=["sockwork", "telnetlib3"], help="which to run"
    )
    parser.add_argument("--think", type=float, default=0.5, help="pause between commands (s)")
    summary.add_argument(parser)
    args = parser.parse_args()
    if args.serve == "sockwork":
        serve_sockwork()
        return
    if args.serve == "telnetlib3":
        serve_telnetlib3()
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(
        f"{args.seconds:g} s per run; each session: ping, read the reply, pause "
        f"{args.think:g} s (x0.5..1.5); loopback; servers in their own process"
    )
    header = (
        f"{'sessions':>8}  {'server':<11} {'served':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'cmd/s':>7} {'KiB/session':>11}"
    )
    print(header)
    figures = []
    for n in args.sessions:
        results = {}
        for name in args.servers:
            results[name] = r = measure(name, n, args.seconds, args.think)
            print(
                f"{n:>8}  {name:<11} {r['served']:>6.0f} {r['p50']:>7.2f} {r['p99']:>7.2f} "
                f"{r['rate']:>7.0f} {r['kib']:>11.1f}",
                flush=True,
            )
            if name == "sockwork":
                figures += [
                    summary.Figure(
                        f"sockwork sessions served of {n:,}",
                        r["served"],
                        at_least=n,
                        goal="issue 5",
                    ),
                    summary.Figure(
                        f"sockwork p99 round trip, {n:,} sessions",
                        r["p99"],
                        "ms",
                        at_most=50,
                        goal="issue 5",
                    ),
                    summary.Figure(f"sockwork memory, {n:,} sessions", r["kib"], "KiB/session"),
                ]
        if len(results) < 2:
            continue
        ours, theirs = results["sockwork"], results["telnetlib3"]
        print(
            f"{n:>8}  {'ratio':<11} {'':>6} {theirs['p50'] / ours['p50']:>6.1f}x "
            f"{theirs['p99'] / ours['p99']:>6.1f}x {'':>7} {theirs['kib'] / ours['kib']:>10.1f}x"
            "   (telnetlib3 / sockwork)",
            flush=True,
        )
        figures.append(
            summary.Figure(
                f"telnetlib3 p99 / sockwork p99, {n:,} sessions",
                theirs["p99"] / ours["p99"],
                "x",
                at_least=1.0,
                goal="issue 5",
            )
        )
    summary.write(args.summary_json, "console", figures)


if __name__ == "__main__":
    main()
