"""The poorconn command line: ``python -m sockwork.compat.poorconn``.

``[-H HOST] [-p PORT] COMMAND --t T [--length L]`` serves the current directory
over HTTP with one poorconn simulation applied, as ``python -m poorconn`` does,
but every command has an effect on the responses (poorconn's
``delay_before_sending`` and ``delay_before_sending_once`` patch the listening
socket, which never sends, so they do nothing), ``t`` and ``length`` are
validated, IPv6 hosts work, a missing command is a usage error rather than a
``TypeError``, and Ctrl-C exits cleanly.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
from collections.abc import Sequence

from sockwork.compat.poorconn import simulation
from sockwork.compat.poorconn.server import HTTPServer, Simulation

__all__ = ["COMMANDS", "build_parser", "main"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8000

# command -> (help, takes length?). The listening socket never sends, so the two
# commands that poorconn applies to it are applied to each accepted connection.
COMMANDS: dict[str, tuple[str, bool]] = {
    "close_upon_acceptance": (
        "close every connection as soon as it is accepted (clients see EOF)",
        False,
    ),
    "delay_before_sending": (
        "slow down every response: wait T seconds before each L-byte chunk",
        True,
    ),
    "delay_before_sending_once": (
        "wait T seconds before the first response of the server, once",
        False,
    ),
    "delay_before_sending_upon_acceptance": (
        "slow down every connection: wait T seconds before each L-byte chunk",
        True,
    ),
    "delay_before_sending_upon_acceptance_once": (
        "wait T seconds before the first send of every connection",
        False,
    ),
}


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _length(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of bytes, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535 (0 picks a free port), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m sockwork.compat.poorconn``."""
    parser = argparse.ArgumentParser(
        prog="python -m sockwork.compat.poorconn",
        description="Serve the current directory over HTTP under a poorconn simulation.",
        epilog=(
            "example: python -m sockwork.compat.poorconn -p 9000 "
            "delay_before_sending_upon_acceptance --t 1 --length 1024  (about 1 KiB/s)"
        ),
    )
    parser.add_argument(
        "-H",
        "--host",
        default=DEFAULT_HOST,
        help="host name or address to bind (default: %(default)s)",
    )
    parser.add_argument(
        "-p",
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="port to bind, 0 for any (default: %(default)s)",
    )
    commands = parser.add_subparsers(
        title="simulation commands", dest="command", metavar="COMMAND", required=True
    )
    for name, (summary, takes_length) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        if name != "close_upon_acceptance":
            sub.add_argument(
                "--t", type=_seconds, required=True, metavar="T", help="seconds to wait (>= 0)"
            )
        if takes_length:
            sub.add_argument(
                "--length",
                type=_length,
                default=1024,
                metavar="L",
                help="bytes sent after each wait (>= 1, default: %(default)s)",
            )
    return parser


def simulation_for(args: argparse.Namespace) -> Simulation:
    """Return what the chosen command does to the server's listening socket.

    The result makes the socket patchable, applies the command and returns the
    socket to listen on (see :class:`~sockwork.compat.poorconn.server.HTTPServer`).
    """
    name: str = args.command

    def apply(s: socket.socket) -> None:
        if name == "close_upon_acceptance":
            simulation.close_upon_acceptance(s)
        elif name in ("delay_before_sending", "delay_before_sending_upon_acceptance"):
            simulation.delay_before_sending_upon_acceptance(s, args.t, args.length)
        elif name == "delay_before_sending_once":
            _delay_first_connection_once(s, args.t)
        else:
            simulation.delay_before_sending_upon_acceptance_once(s, args.t)

    def simulate(s: socket.socket) -> socket.socket:
        return simulation.patched(s, apply)

    return simulate


def _delay_first_connection_once(s: socket.socket, t: float) -> None:
    """Delay the first sending call of the first accepted connection only."""
    pending = [True]

    def first_only(conn: socket.socket) -> None:
        if pending:
            pending.clear()
            simulation.delay_before_sending_once(conn, t)

    simulation.on_each_accept(s, first_only)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 1
    args = parser.parse_args(argv)
    try:
        httpd = HTTPServer(
            os.getcwd(), host=args.host, port=args.port, simulation=simulation_for(args)
        )
    except OSError as exc:
        print(f"cannot serve on {args.host!r} port {args.port}: {exc}", file=sys.stderr)
        return 1
    with httpd:
        print(
            f"Serving {os.getcwd()} at {httpd.url}/ with {args.command}; Ctrl-C stops", flush=True
        )
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            print("interrupted, stopping", file=sys.stderr)
    return 0
