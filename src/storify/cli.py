"""The ``storify`` command: ``storify serve`` runs a store, ``storify simulate`` shops in it."""

from __future__ import annotations

import argparse
import asyncio
import errno
import hmac
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from types import FrameType
from typing import cast

from sockwork.address import format_address, parse_address, parse_float, parse_int, parse_port
from sockwork.cli import argument_type
from sockwork.console.ssh import DEFAULT_HOST_KEY, PasswordCheck
from sockwork.errors import MessageTooLarge, ProtocolError
from storify.conditions import DEFAULT_CONDITIONS, NetworkConditions
from storify.database import redact
from storify.errors import SchemaTooNew, StoreError, StoreUnavailable
from storify.money import format_price
from storify.notice import Notices
from storify.repl import StoreREPL, check_store_name
from storify.service import (
    DEFAULT_API_PORT,
    DEFAULT_POOR_PORT,
    DEFAULT_PORT,
    DEFAULT_SSH_PORT,
    SshOptions,
    StoreService,
)
from storify.simulate import NETWORK_ERRORS, SimulationResult, progress_stream, run_simulation
from storify.store import MAX_BATCH, Store

__all__ = [
    "announcement",
    "build_parser",
    "exposure_warning",
    "lan_address",
    "listen_host",
    "main",
]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


# Numbers on the command line are ASCII and finite: int() and float() also read "٣" (3)
# or "６５４３２", and float() reads "inf" and "nan". sockwork.address parses them.
_whole = argument_type(partial(parse_int, what="number"))
_port = argument_type(partial(parse_port, what="port"))
_address = argument_type(partial(parse_address, what="the API address", zero=False))
_at_least_zero = argument_type(partial(parse_int, what="number", low=0))


def _seconds(text: str) -> float:
    """Return the positive, finite number of seconds written in ``text`` (``5``, ``0.5``)."""
    value = argument_type(partial(parse_float, what="seconds", low=0.0))(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _conditions(text: str) -> NetworkConditions:
    try:
        return NetworkConditions.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _pool_size(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the whole ``storify`` command."""
    parser = argparse.ArgumentParser(
        prog="storify",
        description="A store whose manager works at the console while customers shop over "
        "telnet and programs shop through a framed JSON API.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the store: manager console here, customers over telnet, programs over the API",
        description="Run the store. The manager's console runs in this terminal (type help); "
        "customers connect with telnet; programs use the API.",
    )
    serve.add_argument(
        "--name", default="OPEN", help="the store's name, 1 to 40 printable characters (OPEN)"
    )
    serve.add_argument(
        "--db",
        default="store.db",
        metavar="PATH|URL",
        help="the database: a SQLite file or sqlite:///PATH (store.db), or "
        "postgresql://USER@HOST/DBNAME, which several store servers can share",
    )
    serve.add_argument(
        "--db-pool",
        type=_pool_size,
        default=10,
        metavar="N",
        help="PostgreSQL: connections this server opens at most (10)",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help='address to listen on (127.0.0.1); "" or 0.0.0.0 opens the store to the network',
    )
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"telnet port ({DEFAULT_PORT}; 0: any)"
    )
    serve.add_argument(
        "--api-port",
        type=_port,
        default=DEFAULT_API_PORT,
        help=f"API port ({DEFAULT_API_PORT}; 0: any)",
    )
    serve.add_argument(
        "--demo", action="store_true", help="put a small catalog on sale if the store is empty"
    )
    serve.add_argument(
        "--poor-network",
        type=_conditions,
        metavar="SPEC",
        help=f"open a rehearsal port with these conditions, e.g. {DEFAULT_CONDITIONS!r}",
    )
    serve.add_argument(
        "--poor-port",
        type=_port,
        metavar="PORT",
        help=f"rehearsal port, forwarding to the telnet port ({DEFAULT_POOR_PORT}); "
        f"alone it means --poor-network {DEFAULT_CONDITIONS!r}",
    )
    serve.add_argument(
        "--no-console",
        action="store_true",
        help="no manager console: serve until interrupted (SIGINT or SIGTERM)",
    )
    ssh = serve.add_argument_group(
        "SSH", "customers may shop over SSH too (needs the sockwork[ssh] extra)"
    )
    ssh.add_argument(
        "--ssh-port",
        type=_port,
        metavar="PORT",
        help=f"serve customers over SSH on PORT (e.g. {DEFAULT_SSH_PORT}; 0: any)",
    )
    ssh.add_argument(
        "--authorized-keys", metavar="FILE", help="OpenSSH authorized_keys: customers' keys"
    )
    ssh.add_argument(
        "--ssh-password-env",
        metavar="VAR",
        help="customers may log in with the password held in environment variable VAR",
    )
    ssh.add_argument(
        "--ssh-anonymous", action="store_true", help="anyone may shop over SSH without a login"
    )
    ssh.add_argument(
        "--host-key",
        metavar="FILE",
        default=DEFAULT_HOST_KEY,
        help=f"the SSH host key, generated (mode 0600) if missing ({DEFAULT_HOST_KEY})",
    )
    serve.add_argument(
        "--quiet",
        action="store_true",
        help="do not show customers as they connect and leave ('quiet off' at the console "
        "shows them again)",
    )
    serve.add_argument(
        "--durable",
        action="store_true",
        help="fsync every commit (SQLite synchronous=FULL): orders survive power loss too",
    )
    serve.add_argument(
        "--max-batch",
        type=_pool_size,
        default=MAX_BATCH,
        metavar="N",
        help=f"checkouts committed together at most (group commit, {MAX_BATCH}); "
        "1 commits each checkout alone",
    )
    serve.add_argument(
        "--max-per-address",
        type=_at_least_zero,
        metavar="N",
        help="telnet customers at once from one address; 0 for no limit (10)",
    )
    serve.add_argument(
        "--first-line-timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="a telnet customer who types nothing for this long after connecting is "
        "disconnected (60)",
    )
    serve.set_defaults(run=_run_serve)

    simulate = commands.add_parser(
        "simulate",
        help="run simulated customers against the API and check the books",
        description="Drive simulated customers through the API concurrently, then report "
        "purchases/s, latency and retries, and check that no stock was lost or oversold.",
    )
    simulate.add_argument(
        "--customers", type=_whole, default=10, help="customers shopping at once (10)"
    )
    simulate.add_argument("--duration", type=_seconds, default=5.0, help="seconds of shopping (5)")
    simulate.add_argument(
        "--api",
        type=_address,
        default=("127.0.0.1", DEFAULT_API_PORT),
        metavar="HOST:PORT",
        help=f"the store's API (127.0.0.1:{DEFAULT_API_PORT})",
    )
    simulate.add_argument("--seed", type=_whole, help="makes the customers' choices reproducible")
    simulate.add_argument("--timeout", type=_seconds, default=5.0, help="seconds per attempt (5)")
    simulate.add_argument("--attempts", type=_whole, default=5, help="tries per checkout (5)")
    simulate.add_argument(
        "--reconnect-every",
        type=_whole,
        metavar="N",
        help="each customer opens a new connection after N checkouts (default: never)",
    )
    simulate.add_argument(
        "--poor-network",
        type=_conditions,
        metavar="SPEC",
        help="shop through an embedded sockwork proxy with these conditions, "
        "e.g. 'latency=20ms,reset=5%%'",
    )
    simulate.set_defaults(run=_run_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``storify`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    run = cast(Callable[[argparse.Namespace], int], args.run)
    return run(args)


def _say(text: str) -> None:
    print(text, flush=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def exposure_warning(host: str) -> str | None:
    """Return the warning printed when ``host`` is not loopback (None when it is)."""
    if host in _LOOPBACK or host.startswith("127."):
        return None
    shown = "every interface" if host in ("", "0.0.0.0", "::") else host
    return (
        f"storify: warning: --host {host!r} opens the store to the network ({shown}); telnet "
        "and the API are cleartext, without passwords. Use it only on a network you trust."
    )


def listen_host(host: str) -> str:
    """Return the address to bind for ``--host``: ``""`` (every interface) becomes 0.0.0.0."""
    return "0.0.0.0" if host == "" else host


_WILDCARDS = ("", "0.0.0.0", "::")
# Documentation addresses (RFC 5737, RFC 3849): connecting a UDP socket to one sends
# nothing, but makes the kernel pick the source address of the default route.
_PROBES = ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1"))


def lan_address() -> str | None:
    """Return this machine's address on its default route (what a friend can connect to).

    None when there is no such route (no network, or only loopback).
    """
    for family, probe in _PROBES:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                udp.connect((probe, 9))
                address = str(udp.getsockname()[0])
        except OSError:
            continue
        if not address.startswith("127.") and address not in ("::1", *_WILDCARDS):
            return address
    return None


def announcement(
    service: StoreService,
    name: str,
    db: str,
    *,
    program: str = "storify",
    lan: Callable[[], str | None] = lan_address,
) -> list[str]:
    """Return the lines ``storify serve`` prints to say where to connect.

    A store listening on every interface (``--host ""``) names this machine's address
    (``lan()``; its host name when there is none), and the loopback address for here.
    """
    telnet_host, port = service.telnet_address
    everywhere = telnet_host in _WILDCARDS
    shared = (lan() or socket.gethostname()) if everywhere else None

    def reachable(host: str) -> str:
        return shared if shared is not None and host in _WILDCARDS else host

    api_host, api_port = service.api_address
    lines = [
        f"{name} store is open ({db}). From another terminal:",
        f"  customers: telnet {reachable(telnet_host)} {port}",
        f"  programs:  {program} simulate --api "
        f"{format_address((reachable(api_host), api_port))}  (framed JSON API)",
    ]
    poor = service.poor_address
    if poor is not None and service.poor_network is not None:
        lines.append(
            f"  poor link: telnet {reachable(poor[0])} {poor[1]}"
            f"  ({service.poor_network.describe()})"
        )
    ssh = service.ssh
    if ssh is not None:
        ssh_host, ssh_port = ssh.address
        lines.insert(
            2,
            f"  customers: ssh -p {ssh_port} {reachable(ssh_host)}"
            f"  (host key {ssh.host_key_fingerprint})",
        )
    if everywhere:
        lines.append(f"  (listening on every interface; on this machine: telnet 127.0.0.1 {port})")
    return lines


def _run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="storify: %(message)s")
    try:
        name = check_store_name(args.name)
    except ValueError as error:
        print(f"storify serve: --name: {error}", file=sys.stderr)
        return 2
    conditions: NetworkConditions | None = args.poor_network
    if conditions is None and args.poor_port is not None:
        conditions = NetworkConditions.parse(DEFAULT_CONDITIONS)
    try:
        ssh = _ssh_options(args)
    except ValueError as error:
        print(f"storify: {error}", file=sys.stderr)
        return 2
    warning = exposure_warning(args.host)
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    store = _open_store(args)
    if store is None:
        return 1
    if args.durable and store.kind == "postgresql":
        print(
            "storify: note: --durable is SQLite's; on PostgreSQL every commit is as durable "
            "as the server's synchronous_commit makes it (on by default)",
            file=sys.stderr,
        )
    notices = Notices(sys.stdout, quiet=args.quiet)
    try:
        try:
            if args.demo and store.seed_demo():
                _say(f"Put the demo catalog on sale in {store.database}.")
        except StoreUnavailable as error:
            print(f"storify: cannot seed the demo catalog: {error.reason}", file=sys.stderr)
            return 1
        service = StoreService(
            store,
            name=name,
            host=listen_host(args.host),
            port=args.port,
            api_port=args.api_port,
            poor_network=conditions,
            poor_port=DEFAULT_POOR_PORT if args.poor_port is None else args.poor_port,
            ssh=ssh,
            notices=notices,
            max_per_address=(
                "auto" if args.max_per_address is None else args.max_per_address or None
            ),
            first_line_timeout=args.first_line_timeout,
        )
        try:
            service.start()
        except (ImportError, ValueError, PermissionError, FileNotFoundError) as error:
            # SSH set-up: the extra is missing, or a key file is missing or unsafe.
            print(f"storify: cannot serve over SSH: {error}", file=sys.stderr)
            return 1
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                print(
                    f"storify: a port is already in use ({error}); is another store running? "
                    "Choose others with --port, --api-port (and --poor-port), or 0 for any.",
                    file=sys.stderr,
                )
                return 1
            raise
        # SIGTERM closes the store like Ctrl-C (signal handlers live in the main thread).
        # The handler is in place before the addresses are announced: whoever reads them
        # may send SIGTERM at once.
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
        try:
            for line in announcement(service, name, store.database, program=_program()):
                _say(line)
            if args.no_console:
                service.wait()
            else:
                StoreREPL(store, front=service, name=name, notices=notices).cmdloop()
        except KeyboardInterrupt:
            _say("")
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
            service.close()
        notices.close()  # the last customers' goodbyes, before the totals
        try:
            count, revenue = store.totals()
        except StoreUnavailable:
            _say(f"{name} is closed (the database is unavailable: no totals).")
            return 0
        _say(f"{name} is closed: {count} order(s), {format_price(revenue)} in total.")
        return 0
    finally:
        notices.close()
        store.close()


def _ssh_options(args: argparse.Namespace) -> SshOptions | None:
    """Return the SSH settings asked for on the command line (None: no SSH)."""
    if args.ssh_port is None:
        if args.authorized_keys or args.ssh_password_env or args.ssh_anonymous:
            raise ValueError(
                "--authorized-keys, --ssh-password-env and --ssh-anonymous need --ssh-port"
            )
        return None
    check: PasswordCheck | None = None
    if args.ssh_password_env:
        password = os.environ.get(args.ssh_password_env)
        if not password:
            raise ValueError(f"environment variable {args.ssh_password_env} is not set or empty")
        secret = password.encode("utf-8")

        def same(username: str, typed: str) -> bool:
            return hmac.compare_digest(typed.encode("utf-8"), secret)

        check = same

    if args.authorized_keys is None and check is None and not args.ssh_anonymous:
        raise ValueError(
            "--ssh-port needs a way to log in: --authorized-keys FILE, --ssh-password-env VAR, "
            "or --ssh-anonymous"
        )
    return SshOptions(
        port=args.ssh_port,
        host_key=args.host_key,
        authorized_keys=args.authorized_keys,
        check_password=check,
        allow_anonymous=args.ssh_anonymous,
    )


def _open_store(args: argparse.Namespace) -> Store | None:
    """Open ``--db``; on failure print one line saying why and return None."""
    try:
        return Store(
            args.db,
            synchronous="FULL" if args.durable else "NORMAL",
            pool_size=args.db_pool,
            max_batch=args.max_batch,
        )
    except StoreUnavailable as error:
        reason = error.reason
    except (SchemaTooNew, ValueError, ImportError, RuntimeError) as error:
        reason = " ".join(str(error).split())
    print(f"storify: cannot open the database {redact(args.db)!r}: {reason}", file=sys.stderr)
    return None


def _program() -> str:
    """Return how this command was invoked, to print commands the user can paste."""
    invoked = sys.argv[0] if sys.argv and sys.argv[0] else "storify"
    return "python -m storify" if invoked.endswith("__main__.py") else invoked


def _run_simulate(args: argparse.Namespace) -> int:
    if args.customers < 1 or args.attempts < 1:
        print("storify simulate: --customers and --attempts must be at least 1", file=sys.stderr)
        return 2
    if args.reconnect_every is not None and args.reconnect_every < 1:
        print("storify simulate: --reconnect-every must be at least 1", file=sys.stderr)
        return 2
    address: tuple[str, int] = args.api
    conditions: NetworkConditions | None = args.poor_network
    try:
        if conditions is None:
            result = _simulate(args, address)
        else:
            from sockwork.proxy import FaultProxy

            with FaultProxy(upstream=address, seed=args.seed) as proxy:
                for fault, direction in conditions.faults():
                    proxy.add(fault, direction=direction)
                _say(f"Shopping through a proxy: {conditions.describe()}.")
                result = _simulate(args, proxy.address)
    except (*NETWORK_ERRORS, ValueError, StoreError) as error:
        where = format_address(address)
        print(f"storify simulate: {_failure(error, where, args.timeout)}", file=sys.stderr)
        return 1
    _say(result.summary())
    return 0 if result.ok else 1


def _failure(error: BaseException, where: str, timeout: float) -> str:
    """Return one line saying why the simulation could not shop at ``where``."""
    if isinstance(error, StoreError):  # the store answered the catalog with an error
        return f"the store's API at {where} refused to list its products: {error}"
    if isinstance(error, (MessageTooLarge, ProtocolError, ValueError)):
        if isinstance(error, MessageTooLarge):
            detail = f"its reply announced a message of {error.size} bytes"
        else:
            detail = str(error)
        return (
            f"{where} does not answer like the store's API ({detail}); give the API port "
            "(storify serve prints it after --api), not the telnet port"
        )
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)) and not str(error):
        return (
            f"no reply from the store's API at {where} within {timeout:g} s; is it the API "
            "port (storify serve prints it after --api)? --timeout waits longer"
        )
    reason = str(error) or type(error).__name__
    return f"cannot reach the store's API at {where} ({reason}); is `storify serve` running?"


def _simulate(args: argparse.Namespace, address: tuple[str, int]) -> SimulationResult:
    return run_simulation(
        address,
        customers=args.customers,
        duration=args.duration,
        seed=args.seed,
        timeout=args.timeout,
        attempts=args.attempts,
        reconnect_every=args.reconnect_every,
        progress=progress_stream(),
    )
