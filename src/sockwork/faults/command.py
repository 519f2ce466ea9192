"""``sockwork run [FAULT OPTIONS] -- python script.py ...``: a program under faults.

The fault options are shared with other commands (the proxy): use
:func:`add_fault_options` and :func:`faults_from_options`.

# Rules (``sockwork run`` is a transparent wrapper around the program's process):
- The program dies with us. On Linux the child asks the kernel for SIGKILL when the
  thread that started it ends (``prctl(PR_SET_PDEATHSIG)``, man 2 prctl), so
  ``kill -9`` of ``sockwork run`` leaves no orphan; if we died before that call, the
  child kills itself. Only the direct child is tied: what it starts is its business.
- SIGTERM, SIGHUP and SIGINT sent to us go to the program, and we go on waiting for
  it. A SIGINT typed at the terminal already reached the whole foreground process
  group, the program included, so it is not passed a second time.
- Our exit status is the program's; 128 + N when signal N killed it, as shells say.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial

from sockwork.address import parse_float, parse_int, parse_port
from sockwork.cli import argument_type
from sockwork.faults.exploration.command import register as register_explore
from sockwork.faults.startup import child_environment
from sockwork.faults.units import parse_duration, parse_int_range, parse_rate, parse_size
from sockwork.faults.vocabulary import (
    AcceptDelay,
    Bandwidth,
    Blackhole,
    CloseAfter,
    CloseOnAccept,
    ConnectDelay,
    ConnectTimeout,
    DnsFailure,
    Fault,
    HalfClose,
    Latency,
    Refuse,
    Slice,
    SlowClose,
    Stall,
    fault_from_dict,
    fault_to_dict,
)
from sockwork.seed import seed_argument

__all__ = ["add_fault_options", "faults_from_options", "register", "run"]


_EPILOG = """\
examples:
  sockwork run --latency 200ms --slice 1..64 --reset-after 10KB --seed 7 -- python client.py
  sockwork run --refuse 2 --report -- python -m myservice.healthcheck
  sockwork run --bandwidth 100KB/s --direction recv -- python download.py

units: durations 200ms, 1.5s; sizes 64, 10KB (1000 B), 1MiB (1024*1024 B);
rates 1MiB/s, 100KB/s, 8Mbit/s; ranges 1..64.
"""


# Numbers are ASCII and finite: "١" is not 1, "nan" is not a probability (sockwork.address).
_PROBABILITY = argument_type(partial(parse_float, what="probability", low=0.0, high=1.0))
_COUNT = argument_type(partial(parse_int, what="N", low=0))
_PORT = argument_type(partial(parse_port, what="port"))


def _parse_fault(text: str) -> Fault:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--fault needs a JSON object, got {text!r} ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ValueError(f'--fault needs a JSON object such as {{"type": "Refuse"}}, got {text!r}')
    return fault_from_dict(data)


_FAULT = argument_type(_parse_fault)


def add_fault_options(parser: argparse.ArgumentParser) -> None:
    """Add the fault options (``--latency``, ``--slice``, ``--reset-after``...) to ``parser``."""
    duration, size = argument_type(parse_duration), argument_type(parse_size)
    rate = argument_type(parse_rate)
    g = parser.add_argument_group("stream faults")
    g.add_argument(
        "--latency", type=duration, metavar="DURATION", help="delay each chunk (e.g. 200ms)"
    )
    g.add_argument(
        "--jitter",
        type=duration,
        default=0.0,
        metavar="DURATION",
        help="random +/- variation of --latency",
    )
    g.add_argument(
        "--bandwidth", type=rate, metavar="RATE", help="limit each connection to RATE (e.g. 1MiB/s)"
    )
    g.add_argument(
        "--slice",
        type=argument_type(parse_int_range),
        metavar="MIN..MAX",
        help="short reads and writes of MIN..MAX bytes (e.g. 1..64)",
    )
    g.add_argument(
        "--slice-delay",
        type=duration,
        default=0.0,
        metavar="DURATION",
        help="pause after each slice",
    )
    g.add_argument(
        "--close-after",
        type=size,
        metavar="SIZE",
        help="close the connection (FIN) after SIZE bytes",
    )
    g.add_argument(
        "--reset-after",
        type=size,
        metavar="SIZE",
        help="reset the connection (RST) after SIZE bytes",
    )
    g.add_argument(
        "--half-close",
        type=size,
        metavar="SIZE",
        help="end one direction (FIN) after SIZE bytes, the other keeps working "
        "(default direction send: the program's own writing side)",
    )
    g.add_argument(
        "--stall-after",
        type=size,
        metavar="SIZE",
        help="stop reading after SIZE bytes (the peer gets back-pressure)",
    )
    g.add_argument("--blackhole", action="store_true", help="discard every byte")
    g.add_argument(
        "--slow-close", type=duration, metavar="DURATION", help="hold the end of stream (FIN) back"
    )
    g.add_argument(
        "--direction",
        choices=("send", "recv", "both"),
        help="direction of the stream faults (default: each fault's own)",
    )
    c = parser.add_argument_group("connection faults")
    c.add_argument(
        "--refuse",
        type=_COUNT,
        nargs="?",
        const=0,
        metavar="N",
        help="refuse connection attempts (the first N, or all)",
    )
    c.add_argument(
        "--connect-delay", type=duration, metavar="DURATION", help="slow connection attempts"
    )
    c.add_argument(
        "--connect-timeout", action="store_true", help="connection attempts never complete"
    )
    c.add_argument(
        "--accept-delay",
        type=duration,
        metavar="DURATION",
        help="hand accepted connections out late",
    )
    c.add_argument(
        "--close-on-accept", action="store_true", help="close accepted connections at once"
    )
    c.add_argument(
        "--dns-failure",
        choices=("noname", "again"),
        help="fail name look-ups with EAI_NONAME or EAI_AGAIN",
    )
    o = parser.add_argument_group("all faults")
    o.add_argument(
        "--probability",
        type=_PROBABILITY,
        default=1.0,
        metavar="P",
        help="chance that each fault applies to a connection (0..1)",
    )
    o.add_argument(
        "--seed", type=seed_argument, help="seed of the random choices (printed with --report)"
    )
    o.add_argument(
        "--fault",
        type=_FAULT,
        action="append",
        metavar="JSON",
        help="any fault with all its options, as JSON (repeatable), e.g. "
        '\'{"type": "CloseAfter", "bytes": 4, "direction": "recv", "connections": [2]}\'',
    )


def faults_from_options(args: argparse.Namespace) -> list[Fault]:
    """Return the faults that :func:`add_fault_options`' options describe."""
    common: dict[str, object] = {"probability": args.probability}
    stream: dict[str, object] = dict(common)
    if args.direction is not None:
        stream["direction"] = args.direction
    faults: list[Fault] = []
    if args.latency is not None:
        faults.append(Latency(args.latency, jitter=args.jitter, **stream))  # type: ignore[arg-type]
    if args.bandwidth is not None:
        faults.append(Bandwidth(args.bandwidth, **stream))  # type: ignore[arg-type]
    if args.slice is not None:
        low, high = args.slice
        faults.append(Slice(high, min_bytes=low, delay=args.slice_delay, **stream))  # type: ignore[arg-type]
    if args.close_after is not None:
        faults.append(CloseAfter(args.close_after, **stream))  # type: ignore[arg-type]
    if args.reset_after is not None:
        faults.append(CloseAfter(args.reset_after, reset=True, **stream))  # type: ignore[arg-type]
    if args.half_close is not None:
        faults.append(HalfClose(args.half_close, **stream))  # type: ignore[arg-type]
    if args.stall_after is not None:
        faults.append(Stall(after_bytes=args.stall_after, **stream))  # type: ignore[arg-type]
    if args.blackhole:
        faults.append(Blackhole(**stream))  # type: ignore[arg-type]
    if args.slow_close is not None:
        faults.append(SlowClose(args.slow_close, **stream))  # type: ignore[arg-type]
    if args.refuse is not None:
        faults.append(Refuse(connections=args.refuse or None, **common))  # type: ignore[arg-type]
    if args.connect_delay is not None:
        faults.append(ConnectDelay(args.connect_delay, **common))  # type: ignore[arg-type]
    if args.connect_timeout:
        faults.append(ConnectTimeout(**common))  # type: ignore[arg-type]
    if args.accept_delay is not None:
        faults.append(AcceptDelay(args.accept_delay, **common))  # type: ignore[arg-type]
    if args.close_on_accept:
        faults.append(CloseOnAccept(**common))  # type: ignore[arg-type]
    if args.dns_failure is not None:
        faults.append(DnsFailure(args.dns_failure, **common))  # type: ignore[arg-type]
    faults.extend(getattr(args, "fault", None) or ())
    return faults


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run`` and ``explore`` sub-commands."""
    parser = subparsers.add_parser(
        "run",
        help="run a Python program with network faults injected from start-up",
        description="Run COMMAND (a Python program) with its sockets under the given faults.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_fault_options(parser)
    m = parser.add_argument_group("selection")
    m.add_argument("--match-host", metavar="HOST", help="only connections to/from HOST")
    m.add_argument("--match-port", type=_PORT, metavar="PORT", help="only connections on PORT")
    m.add_argument(
        "--match-role",
        choices=("client", "server", "resolve"),
        help="only outgoing (client), accepted (server) or look-ups (resolve)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="print which faults fired, and the seed, on exit (stderr)",
    )
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="the program to run, after --",
    )
    parser.set_defaults(run=run)
    register_explore(subparsers)


def _spec(args: argparse.Namespace) -> dict[str, object]:
    match = {
        k: v
        for k, v in (
            ("host", args.match_host),
            ("port", args.match_port),
            ("role", args.match_role),
        )
        if v is not None
    }
    spec: dict[str, object] = {
        "faults": [fault_to_dict(f) for f in faults_from_options(args)],
        "report": bool(args.report),
    }
    if args.seed is not None:
        spec["seed"] = args.seed
    if match:
        spec["match"] = match
    return spec


def run(args: argparse.Namespace) -> int:
    """Run the command under the faults; return its exit status (128 + N: killed by signal N).

    SIGTERM, SIGHUP and SIGINT are passed to the program; on Linux the program is
    killed when the calling thread ends (see ``# Rules:``).
    """
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        sys.stderr.write(
            "sockwork run: give the program to run after --, "
            "e.g. sockwork run --latency 200ms -- python app.py\n"
        )
        return 2
    try:
        spec = _spec(args)
    except (TypeError, ValueError) as exc:
        sys.stderr.write(f"sockwork run: {exc}\n")
        return 2
    env = child_environment(spec)
    # Signals are taken over before the program starts: one that comes meanwhile is
    # passed on as soon as there is a program to take it.
    with _passing_signals() as relay:
        try:
            child = subprocess.Popen(command, env=env, preexec_fn=_tie_to_this_thread())
        except FileNotFoundError:
            sys.stderr.write(f"sockwork run: command not found: {command[0]}\n")
            return 127
        relay.attach(child)
        status = child.wait()
    return 128 - status if status < 0 else status


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _tie_to_this_thread() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child die with the calling thread (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent, kill = os.getpid(), int(signal.SIGKILL)

    # Runs in the child between fork and exec, where another thread's lock may be held
    # for good: it imports nothing and looks nothing up (prctl was found above).
    def tie() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: no signal will come
            os.kill(os.getpid(), kill)

    return tie


def _terminal_sent_it() -> bool:
    """True if we are in the foreground process group of our terminal (as is the child)."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            if os.tcgetpgrp(stream.fileno()) == os.getpgrp():
                return True
        except (AttributeError, OSError, ValueError):  # no stream, not a terminal, closed
            continue
    return False


class _Relay:
    """Passes the signals it is handed to the program, or keeps them until it starts."""

    def __init__(self) -> None:
        self._child: subprocess.Popen[bytes] | None = None
        self._pending: list[int] = []

    def attach(self, child: subprocess.Popen[bytes]) -> None:
        """Pass signals to ``child`` from now on, first those that came before."""
        self._child = child
        pending, self._pending = self._pending, []
        for signum in pending:
            self.forward(signum, None)

    def forward(self, signum: int, frame: object) -> None:
        """The signal handler: pass ``signum`` on (a terminal's SIGINT reached the program)."""
        if signum == signal.SIGINT and _terminal_sent_it():
            return
        if self._child is None:
            self._pending.append(signum)
            return
        with contextlib.suppress(OSError):
            self._child.send_signal(signum)


@contextlib.contextmanager
def _passing_signals() -> Iterator[_Relay]:
    """Hand SIGTERM, SIGHUP and SIGINT to a :class:`_Relay` while the block runs.

    Only the main thread can set signal handlers; elsewhere the relay gets nothing.
    """
    relay = _Relay()
    if threading.current_thread() is not threading.main_thread():
        yield relay
        return
    previous: dict[int, object] = {}
    try:
        for name in ("SIGTERM", "SIGHUP", "SIGINT"):
            number = getattr(signal, name, None)
            if number is not None:
                previous[number] = signal.signal(number, relay.forward)
        yield relay
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
