"""SSH console benchmark: handshakes per second and prompt latency at many sessions.

sockwork's SshConsoleServer serving a ``cmd.Cmd`` class against prompt_toolkit's
PromptToolkitSSHServer serving a ``prompt_async`` loop (the same commands), each in
its own process, both on asyncssh with the same Ed25519 host key type and public-key
authentication (prompt_toolkit's server accepts everyone unless subclassed: the
benchmark subclasses it to require the same key, so both do the same work).

A client process (asyncssh) first opens N sessions, at most ``--concurrency``
handshakes at a time: each connects, authenticates, asks for a pty and waits for the
first prompt. Handshakes per second = N / the time all that took. Then every session
sends ``ping`` and waits for the next prompt, pausing ``--think`` seconds (jittered)
between commands, for ``--seconds``: p50/p99 of that round trip, and the server's RSS
growth per session.

    .venv/bin/python benchmarks/ssh.py                       # 100 and 1,000 sessions
    .venv/bin/python benchmarks/ssh.py --sessions 100 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import cmd
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import summary

PROMPT = "bench> "
# What a client waits for: prompt_toolkit draws the prompt's trailing space as a cursor
# move, so the space is not in its output.
PROMPT_MARK = "bench>"
PROMPT_WAIT = 900.0  # seconds for every session to get its first prompt
GRACE = 30.0  # seconds after the measured time for the last round trips


class BenchShop(cmd.Cmd):
    """The served program: one command, answered through self.stdout."""

    prompt = PROMPT

    def do_ping(self, arg: str) -> None:
        self.stdout.write(f"pong {arg}\n")

    def do_EOF(self, arg: str) -> bool:
        return True

    def emptyline(self) -> bool:
        return False


def _asyncssh() -> Any:
    from sockwork.console.ssh import _asyncssh as load  # quiet about asyncssh's DSA notice

    return load()


# -- servers (run in a child process) -------------------------------------------------


def serve_sockwork(directory: Path) -> None:
    from sockwork.console import SshConsoleServer

    server = SshConsoleServer(
        BenchShop,
        host_key=directory / "host_key",
        authorized_keys=directory / "authorized_keys",
        max_clients=None,
        max_per_address=None,
        idle_timeout=None,
        backlog=1024,
    )
    server.start()
    print(server.address[1], flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.close()


def serve_prompt_toolkit(directory: Path) -> None:
    asyncssh = _asyncssh()
    from prompt_toolkit.contrib.ssh import PromptToolkitSSHServer
    from prompt_toolkit.shortcuts import PromptSession, print_formatted_text

    from sockwork.console.ssh import load_host_key

    class KeyOnly(PromptToolkitSSHServer):  # type: ignore[misc]
        def begin_auth(self, username: str) -> bool:
            return True  # authentication required: the authorized key, as for sockwork

    async def interact(ssh_session: object) -> None:
        session: PromptSession[str] = PromptSession()
        while True:
            try:
                line = await session.prompt_async(PROMPT)
            except (EOFError, KeyboardInterrupt):
                return
            except asyncio.CancelledError:
                return  # the client closed: prompt_toolkit would print a traceback
            words = line.split(maxsplit=1)
            if words and words[0] == "ping":
                print_formatted_text(f"pong {words[1] if len(words) > 1 else ''}")

    async def main() -> None:
        key, _ = load_host_key(directory / "host_key")
        server = await asyncssh.create_server(
            lambda: KeyOnly(interact, enable_cpr=False),
            "127.0.0.1",
            0,
            server_host_keys=[key],
            authorized_client_keys=str(directory / "authorized_keys"),
            gss_host=None,
            backlog=1024,
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(main())


# -- the client (this process) ---------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Session:
    def __init__(self, conn: Any, process: Any) -> None:
        self.conn = conn
        self.process = process


async def open_session(port: int, key: Any, gate: asyncio.Semaphore) -> Session:
    asyncssh = _asyncssh()
    async with gate:
        conn = await asyncssh.connect(
            "127.0.0.1", port, username="bench", client_keys=[key], known_hosts=None,
            agent_path=None, config=None, gss_host=None,
        )  # fmt: skip
        process = await conn.create_process(term_type="xterm", term_size=(80, 24))
        await process.stdout.readuntil(PROMPT_MARK)
        return Session(conn, process)


async def converse(
    session: Session, go: asyncio.Event, until: list[float], think: float,
    samples: list[float], rng: random.Random,
) -> None:  # fmt: skip
    await go.wait()
    await asyncio.sleep(rng.uniform(0, think))  # spread the sessions out
    n = 0
    task = asyncio.current_task()
    while time.monotonic() < until[0]:
        n += 1
        started = task.sent = time.perf_counter()  # type: ignore[union-attr]
        session.process.stdin.write(f"ping {n}\r")
        await session.process.stdout.readuntil(f"pong {n}")
        await session.process.stdout.readuntil(PROMPT_MARK)
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(think * rng.uniform(0.5, 1.5))


async def drive(
    port: int, pid: int, key: Any, sessions: int, concurrency: int, seconds: float, think: float
) -> dict[str, float]:
    rng = random.Random(1)
    idle_rss = rss_kib(pid)
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    attempts = [
        asyncio.create_task(asyncio.wait_for(open_session(port, key, gate), PROMPT_WAIT))
        for _ in range(sessions)
    ]
    outcomes = await asyncio.gather(*attempts, return_exceptions=True)
    handshake_time = time.perf_counter() - started
    opened = [outcome for outcome in outcomes if isinstance(outcome, Session)]
    failures = {repr(outcome) for outcome in outcomes if not isinstance(outcome, Session)}
    if failures:
        print(f"  {sessions - len(opened)} sessions failed to open: {failures}", flush=True)
    await asyncio.sleep(0.5)
    full_rss = rss_kib(pid)
    go = asyncio.Event()
    until = [time.monotonic() + think + seconds]
    samples: list[float] = []
    server_cpu, client_cpu = cpu_seconds(pid), time.process_time()
    tasks = [asyncio.create_task(converse(s, go, until, think, samples, rng)) for s in opened]
    go.set()
    # A server that cannot keep up would hold the run forever: round trips still
    # waiting GRACE seconds after the end count at the time they waited (a lower bound).
    done, late = await asyncio.wait(tasks, timeout=think + seconds + GRACE)
    for task in late:
        task.cancel()
        samples.append(time.perf_counter() - task.sent)  # type: ignore[attr-defined]
    server_cpu = cpu_seconds(pid) - server_cpu
    client_cpu = time.process_time() - client_cpu
    commands = len(samples)
    for session in opened:
        session.conn.close()
    await asyncio.gather(*(s.conn.wait_closed() for s in opened), return_exceptions=True)
    samples.sort()
    return {
        "handshakes": len(opened) / handshake_time,
        "served": len(opened),
        "p50": statistics.median(samples) * 1000,
        "p99": samples[int(len(samples) * 0.99) - 1] * 1000,
        "rate": len(samples) / (seconds + think),
        "kib": (full_rss - idle_rss) / sessions,
        "late": len(late),
        "server_ms": server_cpu / max(commands, 1) * 1000,
        "client_ms": client_cpu / max(commands, 1) * 1000,
    }


def measure(
    name: str, directory: Path, key: Any, sessions: int, concurrency: int, seconds: float,
    think: float,
) -> dict[str, float]:  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", name, "--directory", str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        port = int(process.stdout.readline())
        time.sleep(0.3)
        return asyncio.run(drive(port, process.pid, key, sessions, concurrency, seconds, think))
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
    parser.add_argument("--serve", choices=["sockwork", "prompt_toolkit"], help=argparse.SUPPRESS)
    parser.add_argument("--directory", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    parser.add_argument(
        "--servers", nargs="+", default=["sockwork", "prompt_toolkit"], help="which to run"
    )
    parser.add_argument("--think", type=float, default=0.5, help="pause between commands (s)")
    summary.add_argument(parser)
    args = parser.parse_args()
    if args.serve == "sockwork":
        serve_sockwork(args.directory)
        return
    if args.serve == "prompt_toolkit":
        serve_prompt_toolkit(args.directory)
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncssh = _asyncssh()
    with tempfile.TemporaryDirectory(prefix="sockwork-ssh-bench-") as tmp:
        directory = Path(tmp)
        key = asyncssh.generate_private_key("ssh-ed25519")
        (directory / "authorized_keys").write_bytes(key.export_public_key())
        os.chmod(directory, 0o700)
        print(
            f"{args.seconds:g} s per run; {args.concurrency} handshakes in flight; each session: "
            f"ping, read up to the next prompt, pause {args.think:g} s (x0.5..1.5); loopback; "
            f"servers in their own process; load average {os.getloadavg()[0]:.2f}"
        )
        print(
            f"{'sessions':>8}  {'server':<15} {'served':>6} {'handshakes/s':>12} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'cmd/s':>6} {'late':>5} {'KiB/session':>11} {'server CPU ms/cmd':>17} "
            f"{'client CPU ms/cmd':>17}"
        )
        figures = []
        for n in args.sessions:
            results = {}
            for name in args.servers:
                results[name] = r = measure(
                    name, directory, key, n, args.concurrency, args.seconds, args.think
                )
                print(
                    f"{n:>8}  {name:<15} {r['served']:>6.0f} {r['handshakes']:>12.1f} "
                    f"{r['p50']:>8.2f} {r['p99']:>8.2f} {r['rate']:>6.0f} {r['late']:>5.0f} "
                    f"{r['kib']:>11.1f} {r['server_ms']:>17.2f} {r['client_ms']:>17.2f}",
                    flush=True,
                )
                if name == "sockwork":
                    figures += [
                        summary.Figure(f"sockwork sessions served of {n:,}", r["served"]),
                        summary.Figure(
                            f"sockwork handshakes, {n:,} sessions", r["handshakes"], "/s"
                        ),
                        summary.Figure(f"sockwork p99 round trip, {n:,} sessions", r["p99"], "ms"),
                        summary.Figure(f"sockwork memory, {n:,} sessions", r["kib"], "KiB/session"),
                    ]
            if len(results) < 2:
                continue
            ours, theirs = results["sockwork"], results["prompt_toolkit"]
            print(
                f"{n:>8}  {'ratio':<15} {'':>6} "
                f"{ours['handshakes'] / theirs['handshakes']:>11.2f}x "
                f"{theirs['p50'] / ours['p50']:>7.1f}x {theirs['p99'] / ours['p99']:>7.1f}x "
                f"{'':>6} {'':>5} {theirs['kib'] / ours['kib']:>10.1f}x "
                f"{theirs['server_ms'] / ours['server_ms']:>16.1f}x"
                "   (handshakes: sockwork / prompt_toolkit; the rest: prompt_toolkit / sockwork)",
                flush=True,
            )
            figures.append(
                summary.Figure(
                    f"handshakes/s vs prompt_toolkit, {n:,} sessions",
                    ours["handshakes"] / theirs["handshakes"],
                    "x",
                )
            )
        summary.write(args.summary_json, "ssh", figures)


if __name__ == "__main__":
    main()
