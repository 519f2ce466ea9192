"""``sockwork proxy`` (one proxy in the foreground) and ``sockwork toxiproxy-server``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from sockwork.address import parse_port
from sockwork.cli import argument_type
from sockwork.faults.units import parse_duration, parse_int_range, parse_rate, parse_size
from sockwork.faults.vocabulary import (
    Bandwidth,
    Blackhole,
    CloseAfter,
    Fault,
    HalfClose,
    Latency,
    Slice,
    Stall,
)
from sockwork.proxy.proxy import ConnectionEvent, FaultProxy
from sockwork.proxy.server import ToxiproxyServer
from sockwork.proxy.toxic import ApiError, format_address, parse_address
from sockwork.seed import seed_argument

__all__ = ["register"]

# Numbers are ASCII: "٣" is not 3 (sockwork.address).
_PORT = argument_type(partial(parse_port, what="port"))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``proxy`` and ``toxiproxy-server`` sub-commands."""
    p = subparsers.add_parser(
        "proxy",
        help="run one fault proxy in the foreground",
        description="Forward --listen to --upstream with faults; print a line per connection "
        "until Ctrl-C.",
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="where clients connect (default 127.0.0.1:0, a free port)",
    )
    p.add_argument("--upstream", required=True, metavar="HOST:PORT", help="the real server")
    p.add_argument(
        "--direction",
        choices=("upstream", "downstream", "both"),
        help="where the faults apply: upstream is client->server "
        "(default both; for --half-close upstream)",
    )
    p.add_argument("--latency", metavar="DURATION", help="delay each chunk, e.g. 200ms")
    p.add_argument("--jitter", metavar="DURATION", help="latency varies by +/- this, e.g. 50ms")
    p.add_argument("--bandwidth", metavar="RATE", help="rate limit per connection, e.g. 20KB/s")
    p.add_argument("--slice", metavar="MIN..MAX", help="pass data in pieces of MIN..MAX bytes")
    p.add_argument("--close-after", metavar="SIZE", help="close (FIN) after SIZE bytes")
    p.add_argument("--reset-after", metavar="SIZE", help="reset (RST) after SIZE bytes")
    p.add_argument(
        "--half-close",
        metavar="SIZE",
        help="end one direction (FIN) after SIZE bytes, the other keeps working "
        "(default upstream: the client's writing side, as sockwork run's --half-close)",
    )
    p.add_argument("--stall", action="store_true", help="stop reading: senders feel back-pressure")
    p.add_argument("--blackhole", action="store_true", help="read and discard everything")
    p.add_argument(
        "--seed", type=seed_argument, help="seed for jitter and slicing (printed if not given)"
    )
    p.set_defaults(run=_run_proxy)

    s = subparsers.add_parser(
        "toxiproxy-server",
        help="serve Toxiproxy's HTTP API (2.x) on sockwork proxies",
        description="A Toxiproxy 2.x compatible server: same paths, JSON and status codes.",
    )
    s.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    s.add_argument("--port", type=_PORT, default=8474, help="API port (default 8474)")
    s.add_argument(
        "--config", type=Path, metavar="FILE", help="JSON array of proxies to create at start"
    )
    s.add_argument("--seed", type=seed_argument, help="seed for every random choice of the proxies")
    s.set_defaults(run=_run_server)


def _faults(args: argparse.Namespace) -> list[tuple[Fault, str, str]]:
    """The faults the options ask for: each with its direction and the words the user wrote.

    The direction is ``--direction`` (default both), but a half-close ends one
    direction: upstream unless ``--direction`` says otherwise, as ``sockwork run
    --half-close`` ends the program's own writing side.
    """
    every = args.direction or "both"
    faults: list[tuple[Fault, str, str]] = []
    if args.latency is not None or args.jitter is not None:
        seconds = parse_duration(args.latency) if args.latency is not None else 0.0
        jitter = parse_duration(args.jitter) if args.jitter is not None else 0.0
        text = f"latency {args.latency or '0s'}"
        if args.jitter is not None:
            text += f" +/- {args.jitter}"
        faults.append((Latency(seconds, jitter=jitter), every, text))
    if args.bandwidth is not None:
        faults.append((Bandwidth(parse_rate(args.bandwidth)), every, f"bandwidth {args.bandwidth}"))
    if args.slice is not None:
        low, high = parse_int_range(args.slice)
        faults.append((Slice(high, min_bytes=low), every, f"slice {args.slice}"))
    if args.close_after is not None:
        fault = CloseAfter(parse_size(args.close_after))
        faults.append((fault, every, f"close after {args.close_after}"))
    if args.reset_after is not None:
        fault = CloseAfter(parse_size(args.reset_after), reset=True)
        faults.append((fault, every, f"reset after {args.reset_after}"))
    if args.half_close is not None:
        one = args.direction or "upstream"
        text = f"half-close {one} after {args.half_close}"
        faults.append((HalfClose(parse_size(args.half_close)), one, text))
    if args.stall:
        faults.append((Stall(), every, "stall"))
    if args.blackhole:
        faults.append((Blackhole(), every, "blackhole"))
    return faults


def _describe(event: ConnectionEvent) -> str:
    who = format_address(event.client)
    if event.kind == "opened":
        return f"#{event.connection_id} opened from {who}"
    if event.kind == "failed":
        return f"#{event.connection_id} from {who}: {event.error}; client closed"
    fired: dict[str, int] = {}
    for name in event.faults_fired:
        fired[name] = fired.get(name, 0) + 1
    faults = ", ".join(f"{n} x{c}" for n, c in fired.items()) or "none"
    return (
        f"#{event.connection_id} closed: {event.bytes_upstream} B up, "
        f"{event.bytes_downstream} B down, faults fired: {faults}"
    )


def _settle_after_start_up() -> None:
    """Take what start-up made out of the garbage collector's full passes (``gc.freeze``)."""
    # The process lives as long as the proxy, and so do the ~22,000 objects start-up made
    # (modules, classes, functions). Each full collection walked them all again, ~7 ms
    # (4-22 ms on a busy machine) with the event loop stopped: a round trip that much
    # late. Frozen, they are never scanned again and a full pass sees only what came
    # later (docs/benchmarks.md). Here and not in FaultProxy or ToxiproxyServer: a
    # program that imports sockwork decides about its own collector.
    gc.freeze()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """Set the yielded event on SIGINT or SIGTERM while the block runs.

    The handlers are in place before the caller announces its address: whoever reads
    it may send a signal at once.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def _run_proxy(args: argparse.Namespace) -> int:
    try:
        listen = parse_address(args.listen, "--listen")
        upstream = parse_address(args.upstream, "--upstream")
        if upstream[1] == 0:
            raise ValueError(
                f"--upstream must be host:port with a port in 1..65535, got {args.upstream!r}"
            )
        faults = _faults(args)
    except (ApiError, ValueError, TypeError) as exc:
        print(f"sockwork proxy: error: {exc}", file=sys.stderr)
        return 2

    def on_event(event: ConnectionEvent) -> None:
        print(_describe(event), flush=True)

    async def main() -> int:
        proxy = FaultProxy(upstream, listen=listen, seed=args.seed, on_event=on_event)
        try:
            await proxy.astart()
        except OSError as exc:
            print(f"sockwork proxy: error: cannot listen on {args.listen}: {exc}", file=sys.stderr)
            return 1
        try:
            for fault, direction, _ in faults:
                proxy.add(fault, direction=direction)
            names = ", ".join(text for _, _, text in faults) or "no faults"
            _settle_after_start_up()
            with _stop_on_signals() as stop:
                print(
                    f"proxy {format_address(proxy.address)} -> {format_address(upstream)} "
                    f"(seed {proxy.seed}; {args.direction or 'both'}: {names}); Ctrl-C stops",
                    flush=True,
                )
                await stop.wait()
        finally:
            await proxy.aclose()
        return 0

    return asyncio.run(main())


def _run_server(args: argparse.Namespace) -> int:
    proxies: list[object] = []
    if args.config is not None:
        try:
            loaded = json.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(
                f"sockwork toxiproxy-server: error: --config {args.config}: {exc}", file=sys.stderr
            )
            return 2
        if not isinstance(loaded, list):
            print(
                f"sockwork toxiproxy-server: error: --config {args.config}: "
                "expected a JSON array of proxies",
                file=sys.stderr,
            )
            return 2
        proxies = loaded
    try:
        server = ToxiproxyServer(host=args.host, port=args.port, seed=args.seed, proxies=proxies)
    except (ApiError, ValueError) as exc:
        print(f"sockwork toxiproxy-server: error: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        try:
            await server.astart()
        except (OSError, ApiError) as exc:
            print(f"sockwork toxiproxy-server: error: {exc}", file=sys.stderr)
            return 1
        try:
            _settle_after_start_up()
            with _stop_on_signals() as stop:
                print(f"toxiproxy API on {server.url} (seed {args.seed}); Ctrl-C stops", flush=True)
                await stop.wait()
        finally:
            await server.aclose()
        return 0

    return asyncio.run(main())
