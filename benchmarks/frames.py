"""Throughput of framed messaging stacks: sockwork.frames against its competitors.

Each run forks a receiver and a sender process connected over loopback TCP. The
sender sends COUNT messages of SIZE bytes; the receiver times from the first to the
last complete message. Every stack runs three times per size; the table shows
medians and ratios, and the CPU time both processes used per message (from
``getrusage(RUSAGE_CHILDREN)``), which other programs' load disturbs less than the rates.

    .venv/bin/python benchmarks/frames.py            # the full table (about a minute)
    .venv/bin/python benchmarks/frames.py --quick    # one repetition, smaller counts
    .venv/bin/python benchmarks/frames.py --only sockwork   # rows whose name contains it

Rows live in STACKS; add one with ``register(name, sender, receiver, counts)``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import select
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import summary

SMALL = 64
LARGE = 1 << 20
BATCH = 64  # small messages per send_many / sendall, where a row says "batched"
HOST = "127.0.0.1"

# A receiver listens on HOST, calls ready(port), receives ``count`` messages of ``size``
# bytes and returns the seconds from the first to the last one. A sender connects to
# ``port``, sends them, and keeps its connection open until ``done`` is set (Stockings
# drops unsent data on close).
Receiver = Callable[[int, int, Callable[[int], None]], float]
Sender = Callable[[int, int, int, Event], None]


@dataclass(frozen=True)
class Stack:
    """One row of the table."""

    name: str
    sender: Sender
    receiver: Receiver
    small_count: int
    large_count: int


STACKS: dict[str, Stack] = {}


def register(name: str, sender: Sender, receiver: Receiver, counts: tuple[int, int]) -> None:
    """Add a row; ``counts`` = (number of 64 B messages, number of 1 MiB messages) per run."""
    STACKS[name] = Stack(name, sender, receiver, *counts)


def _listen() -> socket.socket:
    return socket.create_server((HOST, 0))


def _batched(count: int) -> int:
    return count // BATCH * BATCH


# -- plain sockets: no framing at all, the limit ---------------------------------------------


def plain_sender(port: int, size: int, count: int, done: Event) -> None:
    with socket.create_connection((HOST, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if size == SMALL:
            chunk = b"x" * (size * BATCH)
            for _ in range(count // BATCH):
                sock.sendall(chunk)
        else:
            payload = b"x" * size
            for _ in range(count):
                sock.sendall(payload)
        done.wait(60)


def plain_receiver(size: int, count: int, ready: Callable[[int], None]) -> float:
    with _listen() as listener:
        ready(listener.getsockname()[1])
        sock, _ = listener.accept()
    with sock:
        buf = bytearray(4 << 20)
        total = size * (_batched(count) if size == SMALL else count)
        got = sock.recv_into(buf)
        start = time.perf_counter()
        while got < total:
            n = sock.recv_into(buf)
            if not n:
                raise RuntimeError("plain: early EOF")
            got += n
        return (time.perf_counter() - start) * total / (total - size)


# -- sockwork blocking ------------------------------------------------------------------------


def sockwork_blocking_sender(port: int, size: int, count: int, done: Event) -> None:
    from sockwork.frames import connect

    with connect((HOST, port)) as conn:
        payload = b"x" * size
        if size == SMALL:
            batch = [payload] * BATCH
            for _ in range(count // BATCH):
                conn.send_many(batch)
        else:
            for _ in range(count):
                conn.send(payload)
        done.wait(60)


def sockwork_blocking_single_sender(port: int, size: int, count: int, done: Event) -> None:
    from sockwork.frames import connect

    with connect((HOST, port)) as conn:
        payload = b"x" * size
        for _ in range(_batched(count) if size == SMALL else count):
            conn.send(payload)
        done.wait(60)


def sockwork_blocking_receiver(size: int, count: int, ready: Callable[[int], None]) -> float:
    from sockwork.frames import MessageSocket

    with _listen() as listener:
        ready(listener.getsockname()[1])
        sock, _ = listener.accept()
    with MessageSocket(sock) as conn:
        expected = _batched(count) if size == SMALL else count
        conn.recv()
        start = time.perf_counter()
        for _ in range(expected - 1):
            conn.recv()
        return time.perf_counter() - start


# -- sockwork asyncio -------------------------------------------------------------------------


def _asyncio_sender(port: int, size: int, count: int, done: Event, *, batch: bool) -> None:
    from sockwork.frames import open_connection

    async def main() -> None:
        stream = await open_connection(HOST, port)
        payload = b"x" * size
        if batch and size == SMALL:
            messages = [payload] * BATCH
            for _ in range(count // BATCH):
                await stream.send_many(messages)
        else:
            for _ in range(_batched(count) if size == SMALL else count):
                await stream.send(payload)
        await asyncio.get_running_loop().run_in_executor(None, done.wait, 60)
        stream.close()
        await stream.wait_closed()

    asyncio.run(main())


def sockwork_asyncio_sender(port: int, size: int, count: int, done: Event) -> None:
    _asyncio_sender(port, size, count, done, batch=True)


def sockwork_asyncio_single_sender(port: int, size: int, count: int, done: Event) -> None:
    _asyncio_sender(port, size, count, done, batch=False)


def sockwork_asyncio_receiver(size: int, count: int, ready: Callable[[int], None]) -> float:
    from sockwork.frames import MessageStream, start_server

    expected = _batched(count) if size == SMALL else count

    async def main() -> float:
        result: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def handler(stream: MessageStream[bytes]) -> None:
            await stream.recv()
            start = time.perf_counter()
            for _ in range(expected - 1):
                await stream.recv()
            result.set_result(time.perf_counter() - start)

        server = await start_server(handler)
        async with server:
            ready(server.sockets[0].getsockname()[1])
            return await result

    return asyncio.run(main())


# -- sockwork background (Endpoint): one shared I/O thread, select() on fileno() --------------


def _background_sender(port: int, size: int, count: int, done: Event, *, batch: bool) -> None:
    from sockwork.frames import Endpoint

    with Endpoint(socket.create_connection((HOST, port))) as endpoint:
        payload = b"x" * size
        if batch and size == SMALL:
            messages = [payload] * BATCH
            for _ in range(count // BATCH):
                endpoint.send_many(messages)
        else:
            send = endpoint.send
            for _ in range(_batched(count) if size == SMALL else count):
                send(payload)  # one call per message: the I/O thread batches the sends
        done.wait(60)


def sockwork_background_sender(port: int, size: int, count: int, done: Event) -> None:
    _background_sender(port, size, count, done, batch=True)


def sockwork_background_single_sender(port: int, size: int, count: int, done: Event) -> None:
    _background_sender(port, size, count, done, batch=False)


def sockwork_background_receiver(size: int, count: int, ready: Callable[[int], None]) -> float:
    from sockwork.errors import TimedOut
    from sockwork.frames import Endpoint

    with _listen() as listener:
        ready(listener.getsockname()[1])
        sock, _ = listener.accept()
    with Endpoint(sock) as endpoint:
        expected = _batched(count) if size == SMALL else count
        recv = endpoint.recv
        got = 0
        start = 0.0
        while got < expected:
            select.select([endpoint], [], [], 10)
            try:
                while got < expected:
                    recv(0)  # does not wait: raises TimedOut once the queue is empty
                    got += 1
                    if got == 1:
                        start = time.perf_counter()
            except TimedOut:
                pass
        return time.perf_counter() - start


# -- asyncio streams with readexactly: the common hand-written peer ---------------------------


def streams_sender(port: int, size: int, count: int, done: Event) -> None:
    async def main() -> None:
        _, writer = await asyncio.open_connection(HOST, port)
        frame = struct.pack(">I", size) + b"x" * size
        for _ in range(_batched(count) if size == SMALL else count):
            writer.write(frame)
            await writer.drain()
        await asyncio.get_running_loop().run_in_executor(None, done.wait, 60)
        writer.close()
        await writer.wait_closed()

    asyncio.run(main())


def streams_receiver(size: int, count: int, ready: Callable[[int], None]) -> float:
    expected = _batched(count) if size == SMALL else count

    async def main() -> float:
        result: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async def one() -> bytes:
                (length,) = struct.unpack(">I", await reader.readexactly(4))
                return await reader.readexactly(length)

            await one()
            start = time.perf_counter()
            for _ in range(expected - 1):
                await one()
            result.set_result(time.perf_counter() - start)
            writer.close()

        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            ready(server.sockets[0].getsockname()[1])
            return await result

    return asyncio.run(main())


# -- Stockings 1.2.3 (PyPI): the package sockwork.frames replaces -----------------------------


def stockings_sender(port: int, size: int, count: int, done: Event) -> None:
    import Stockings

    sock = socket.create_connection((HOST, port))
    stocking = Stockings.Stocking(sock)
    payload = b"x" * size
    sent = 0
    while sent < count:
        try:
            stocking.write(payload)
            sent += 1
        except Stockings.NotReady:  # its handshake runs in a thread
            time.sleep(0.001)
    done.wait(60)
    stocking.close()


def stockings_receiver(size: int, count: int, ready: Callable[[int], None]) -> float:
    import Stockings

    with _listen() as listener:
        ready(listener.getsockname()[1])
        sock, _ = listener.accept()
    stocking = Stockings.Stocking(sock)
    got = 0
    start = 0.0
    try:
        while got < count:
            select.select([stocking], [], [], 10)
            try:
                message = stocking.read()
            except Stockings.NotReady:
                continue
            while message is not None:
                got += 1
                if got == 1:
                    start = time.perf_counter()
                message = stocking.read() if got < count else None
        return time.perf_counter() - start
    finally:
        stocking.close()


# -- pyzmq PAIR -------------------------------------------------------------------------------


def zmq_sender(port: int, size: int, count: int, done: Event) -> None:
    import zmq

    context = zmq.Context()
    sock = context.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(f"tcp://{HOST}:{port}")
    payload = b"x" * size
    copy = size < 64 * 1024
    for _ in range(count):
        sock.send(payload, copy=copy)
    done.wait(60)
    sock.close()
    context.term()


def zmq_receiver(size: int, count: int, ready: Callable[[int], None]) -> float:
    import zmq

    context = zmq.Context()
    sock = context.socket(zmq.PAIR)
    port = sock.bind_to_random_port(f"tcp://{HOST}")
    ready(port)
    copy = size < 64 * 1024
    sock.recv(copy=copy)
    start = time.perf_counter()
    for _ in range(count - 1):
        sock.recv(copy=copy)
    elapsed = time.perf_counter() - start
    sock.close(linger=0)
    context.term()
    return elapsed


# -- the rows ---------------------------------------------------------------------------------

PLAIN = "plain sockets, no framing (the limit)"
BLOCKING = "sockwork blocking"
ASYNCIO = "sockwork asyncio"
READEXACTLY = "asyncio streams + readexactly"
STOCKINGS = "Stockings 1.2.3 (PollStocking)"
BASES = (PLAIN, READEXACTLY, STOCKINGS)  # always run: the ratios are relative to them

register(PLAIN, plain_sender, plain_receiver, (0, 600))
register(BLOCKING, sockwork_blocking_sender, sockwork_blocking_receiver, (300_000, 600))
register(
    "sockwork blocking, send() per message",
    sockwork_blocking_single_sender,
    sockwork_blocking_receiver,
    (150_000, 0),
)
register(ASYNCIO, sockwork_asyncio_sender, sockwork_asyncio_receiver, (300_000, 600))
register(
    "sockwork asyncio, send() per message",
    sockwork_asyncio_single_sender,
    sockwork_asyncio_receiver,
    (150_000, 0),
)
register(
    "sockwork background",
    sockwork_background_sender,
    sockwork_background_receiver,
    (300_000, 600),
)
register(
    "sockwork background, send() per message",
    sockwork_background_single_sender,
    sockwork_background_receiver,
    (150_000, 0),
)
register(READEXACTLY, streams_sender, streams_receiver, (60_000, 200))
register(STOCKINGS, stockings_sender, stockings_receiver, (30_000, 100))
try:
    import zmq  # noqa: F401
except ImportError:  # pyzmq is optional: the row is skipped without it
    pass
else:
    register("pyzmq PAIR", zmq_sender, zmq_receiver, (300_000, 600))


# -- running ----------------------------------------------------------------------------------


def _receiver_main(name: str, size: int, count: int, conn: Connection) -> None:
    try:
        conn.send(("ok", STACKS[name].receiver(size, count, conn.send)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def run_once(stack: Stack, size: int, count: int) -> float | None:
    """Return the receiver's seconds for ``count`` messages, or None if the run failed."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    done = ctx.Event()
    receiver = ctx.Process(target=_receiver_main, args=(stack.name, size, count, child))
    receiver.start()
    sender = None
    try:
        if not parent.poll(20):
            return None
        port = parent.recv()
        sender = ctx.Process(target=stack.sender, args=(port, size, count, done))
        sender.start()
        if not parent.poll(60):
            return None
        status, value = parent.recv()
        if status != "ok":
            print(f"  {stack.name}: {value}", file=sys.stderr)
            return None
        return float(value)
    finally:
        done.set()
        for proc in (sender, receiver):
            if proc is not None:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        parent.close()
        child.close()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rate(stack: Stack, size: int, count: int) -> tuple[float, float] | None:
    """Return (messages per second, CPU microseconds per message of both processes).

    The CPU figure suffers less from other programs' load than the rate does.
    """
    cpu = _children_cpu()
    seconds = run_once(stack, size, count)
    cpu = _children_cpu() - cpu
    if not seconds:
        return None
    messages = _batched(count) if size == SMALL else count
    return (messages - 1) / seconds, cpu / messages * 1e6


def main(argv: list[str] | None = None) -> int:
    """Run every registered stack and print one table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run each, smaller counts")
    parser.add_argument("--only", default="", help="rows whose name contains this text")
    summary.add_argument(parser)
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else 3
    scale = 0.25 if args.quick else 1.0
    stacks = [s for s in STACKS.values() if args.only.lower() in s.name.lower() or s.name in BASES]
    started = time.perf_counter()
    rates: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    # Round robin (every stack once, then again): a burst of load from other programs
    # then hits all rows alike instead of one row's three runs. Round 0 is a shorter
    # warm-up whose results are dropped (first runs were measured up to 2x slower).
    for round_ in range(repeat + 1):
        for stack in stacks:
            for size, count in ((SMALL, stack.small_count), (LARGE, stack.large_count)):
                if not count:
                    continue
                floor = BATCH * 4 if size == SMALL else 20
                runs = max(floor, int(count * (scale if round_ else scale / 4)))
                measured = _rate(stack, size, runs)
                if measured is not None and round_:
                    rates.setdefault((stack.name, size), []).append(measured[0])
                    cpus.setdefault((stack.name, size), []).append(measured[1])
    elapsed = time.perf_counter() - started

    def median(name: str, size: int) -> float | None:
        values = rates.get((name, size))
        return statistics.median(values) if values else None

    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{value:,.0f}"

    def cpu(name: str, size: int) -> str:
        values = cpus.get((name, size))
        return "—" if not values else f"{statistics.median(values):,.{1 if size == SMALL else 0}f}"

    def ratio(value: float | None, base: float | None) -> str:
        return "—" if value is None or not base else f"{value / base:.2f}x"

    def mbps(name: str) -> float | None:
        rate = median(name, LARGE)
        return None if rate is None else rate * LARGE / 1e6

    stockings, readexactly, plain = (
        median(STOCKINGS, SMALL),
        median(READEXACTLY, SMALL),
        mbps(PLAIN),
    )
    print(
        f"Frames: medians of {repeat} (after a warm-up round), sender and receiver in "
        "separate processes, loopback; "
        f"Python {sys.version.split()[0]}; {elapsed:.0f} s"
    )
    print()
    print(
        "| stack | 64 B msg/s | vs Stockings | vs readexactly | 1 MiB MB/s | vs plain "
        "| CPU µs per 64 B msg | CPU µs per 1 MiB msg |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for stack in stacks:
        small, large = median(stack.name, SMALL), mbps(stack.name)
        if stack.name == PLAIN:
            small = None  # no framing: a message count means nothing here
        print(
            f"| {stack.name} | {fmt(small)} | {ratio(small, stockings)} "
            f"| {ratio(small, readexactly)} | {fmt(large)} | {ratio(large, plain)} "
            f"| {cpu(stack.name, SMALL)} | {cpu(stack.name, LARGE)} |"
        )
    print()
    zmq = median("pyzmq PAIR", SMALL)
    figures = [summary.Figure("plain sockets 1 MiB", plain, "MB/s")]
    for name in (BLOCKING, ASYNCIO, "sockwork background"):
        if any(key[0] == name for key in rates):
            small, large = median(name, SMALL), mbps(name)
            print(
                f"{name}: 64 B = {ratio(small, stockings)} Stockings (target >= 10x), "
                f"{ratio(small, readexactly)} readexactly (target >= 2x), "
                f"{ratio(small, zmq)} pyzmq PAIR (target >= 1x); "
                f"1 MiB = {ratio(large, plain)} plain sockets (target >= 0.8x)"
            )
            short = name.removeprefix("sockwork ")
            figures += [
                summary.Figure(
                    f"{short} 1 MiB vs plain sockets",
                    _quotient(large, plain),
                    "x",
                    at_least=0.8,
                    goal="issue 12.2",
                ),
                summary.Figure(
                    f"{short} 64 B batched vs pyzmq PAIR",
                    _quotient(small, zmq),
                    "x",
                    at_least=1.0,
                    goal="issue 12.2",
                ),
                summary.Figure(
                    f"{short} 64 B batched vs Stockings",
                    _quotient(small, stockings),
                    "x",
                    at_least=10,
                    goal="issue 2",
                ),
                summary.Figure(
                    f"{short} 64 B batched vs readexactly",
                    _quotient(small, readexactly),
                    "x",
                    at_least=2,
                    goal="issue 2",
                ),
            ]
    summary.write(args.summary_json, "frames", figures)
    return 0


def _quotient(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


if __name__ == "__main__":
    sys.exit(main())
