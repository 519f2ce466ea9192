"""poorconn's command line: ``python -m sockwork.compat.poorconn`` (poorconn's ``poorconn._cli``).

``[-H HOST] [-p PORT] COMMAND [--t T] [--length L]`` serves the current
directory over HTTP (one request at a time, an access line per request on
stderr) with the simulation function named by ``COMMAND`` applied to the
listening socket, as ``python -m poorconn`` does. That includes poorconn's
quirk: ``delay_before_sending`` and ``delay_before_sending_once`` patch the
listening socket, which never sends, so they have no effect (use the
``*_upon_acceptance*`` commands). Where poorconn crashes, this one works or
fails with a one-line error: IPv6 hosts are served, a missing command is a
usage error, a port in use or an unknown host exits with status 1, and Ctrl-C
stops the server cleanly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from sockwork.compat.poorconn import simulation
from sockwork.compat.poorconn.server import HTTPServer, simulation_of

__all__ = ["COMMANDS", "build_parser", "main"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8000

# command -> (function, help, options). Options: "t" (required float), "length" (int, 1024).
COMMANDS: dict[str, tuple[Callable[..., object], str, tuple[str, ...]]] = {
    "close_upon_acceptance": (
        simulation.close_upon_acceptance,
        "close every connection as soon as it is accepted (clients see EOF)",
        (),
    ),
    "delay_before_sending": (
        simulation.delay_before_sending,
        "delay_before_sending on the listening socket, which never sends: no effect, "
        "as in poorconn (use delay_before_sending_upon_acceptance)",
        ("t", "length"),
    ),
    "delay_before_sending_once": (
        simulation.delay_before_sending_once,
        "delay_before_sending_once on the listening socket, which never sends: no effect, "
        "as in poorconn (use delay_before_sending_upon_acceptance_once)",
        ("t",),
    ),
    "delay_before_sending_upon_acceptance": (
        simulation.delay_before_sending_upon_acceptance,
        "slow down every connection: wait T seconds before each L-byte chunk it sends",
        ("t", "length"),
    ),
    "delay_before_sending_upon_acceptance_once": (
        simulation.delay_before_sending_upon_acceptance_once,
        "wait T seconds before the first send of every connection",
        ("t",),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m sockwork.compat.poorconn``."""
    parser = argparse.ArgumentParser(
        prog="python -m sockwork.compat.poorconn",
        description="Serve the current directory over HTTP under a poorconn simulation.",
        epilog=(
            "Example: python -m sockwork.compat.poorconn -p 8000 "
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
        "-p", "--port", type=int, default=DEFAULT_PORT, help="port to bind (default: %(default)s)"
    )
    commands = parser.add_subparsers(
        title="Simulation commands", dest="command", metavar="COMMAND", required=True
    )
    for name, (_, summary, options) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        if "t" in options:
            sub.add_argument("--t", type=float, required=True, metavar="T", help="seconds to wait")
        if "length" in options:
            sub.add_argument(
                "--length",
                type=int,
                default=1024,
                metavar="L",
                help="bytes sent after each wait (default: %(default)s)",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line until Ctrl-C; returns 0 then.

    Raises:
        SystemExit: status 1 without arguments (the help goes to stderr) or when the
            server cannot start, 2 on a usage error, 0 after ``--help``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        raise SystemExit(1)
    args = parser.parse_args(argv)
    function, _, options = COMMANDS[args.command]
    values = [getattr(args, option) for option in options]
    try:
        httpd = HTTPServer(
            os.getcwd(),
            host=args.host,
            port=args.port,
            simulation=simulation_of(function, *values),
            threaded=False,
            log_requests=True,
        )
    except (OSError, OverflowError) as exc:
        print(f"cannot serve on {args.host!r} port {args.port}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    with httpd:
        print(
            f"Serving {os.getcwd()} at {httpd.url}/ with {args.command}; Ctrl-C stops", flush=True
        )
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            print("interrupted, stopping", file=sys.stderr)
    return 0
