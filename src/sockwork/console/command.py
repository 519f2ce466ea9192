"""``sockwork serve``: serve a Cmd class or a function to telnet (and SSH) users."""

from __future__ import annotations

import argparse
import cmd
import hmac
import importlib
import os
import signal
import ssl
import sys
import threading
from functools import partial
from typing import cast

from sockwork.address import parse_float, parse_int, parse_port
from sockwork.cli import argument_type
from sockwork.console.server import App, ConsoleServer, adapt_cmd
from sockwork.console.ssh import DEFAULT_HOST_KEY, PasswordCheck, SshConsoleServer

__all__ = ["load_app", "register", "run_serve"]

# Numbers are ASCII and finite: "٣" is not 3, "inf" is not a timeout (sockwork.address).
_PORT = argument_type(partial(parse_port, what="port"))
_COUNT = argument_type(partial(parse_int, what="max clients", low=0))
_SECONDS = argument_type(partial(parse_float, what="idle timeout", low=0.0))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` sub-command to the ``sockwork`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a cmd.Cmd class or a print()/input() function to telnet clients",
        description=(
            "Serve package.module:Thing (a cmd.Cmd subclass, a factory or a function) to "
            "telnet clients, one fresh instance per session, while the local console "
            "keeps its own instance unless --no-console."
        ),
    )
    parser.add_argument("target", metavar="package.module:Thing", help="what to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=_PORT, default=0, help="port to listen on (0 picks one)")
    parser.add_argument(
        "--max-clients", type=_COUNT, default=100, help="sessions at once; 0 for no limit (100)"
    )
    parser.add_argument(
        "--max-per-address",
        type=int,
        help="sessions at once from one client address; 0 for no limit (a tenth of --max-clients)",
    )
    parser.add_argument(
        "--first-line-timeout",
        type=float,
        default=60.0,
        help="seconds a new client may take to type its first line; 0 for never (60)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_SECONDS,
        default=900.0,
        help="seconds a session may wait for its user; 0 for never (900)",
    )
    parser.add_argument(
        "--write-timeout",
        type=float,
        default=30.0,
        help="seconds a client may take no output before it is disconnected (30)",
    )
    parser.add_argument(
        "--password-env",
        metavar="VAR",
        help="ask clients for the password held in environment variable VAR",
    )
    parser.add_argument("--certfile", help="PEM certificate: speak TLS instead of plain telnet")
    parser.add_argument("--keyfile", help="PEM private key for --certfile (if not in it)")
    parser.add_argument(
        "--no-console", action="store_true", help="do not run the program on the local console"
    )
    ssh = parser.add_argument_group(
        "SSH", "serve over SSH too (needs the sockwork[ssh] extra); --password-env applies to both"
    )
    ssh.add_argument(
        "--ssh-port", type=int, metavar="PORT", help="serve over SSH on PORT (0 picks one)"
    )
    ssh.add_argument(
        "--authorized-keys", metavar="FILE", help="OpenSSH authorized_keys: these keys may log in"
    )
    ssh.add_argument(
        "--host-key",
        metavar="FILE",
        default=DEFAULT_HOST_KEY,
        help=f"the server's private key, generated (mode 0600) if missing ({DEFAULT_HOST_KEY})",
    )
    ssh.add_argument(
        "--allow-anonymous", action="store_true", help="let anyone log in over SSH (a warning)"
    )
    ssh.add_argument("--no-telnet", action="store_true", help="serve over SSH only")
    parser.set_defaults(run=run_serve)


def load_app(target: str) -> App:
    """Import ``package.module:Thing`` (the current directory first) and return Thing.

    Raises:
        ValueError: ``target`` is not of that form or Thing is not callable.
        ImportError: the module cannot be imported.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected package.module:Thing, got {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    thing: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        try:
            thing = getattr(thing, part)
        except AttributeError:
            raise ValueError(f"{module_name} has no attribute {attribute!r}") from None
    if not callable(thing):
        raise ValueError(f"{target} is not a cmd.Cmd class or a callable")
    return cast(App, thing)


def run_serve(args: argparse.Namespace) -> int:
    """Run ``sockwork serve``; returns the exit status."""
    try:
        app = load_app(args.target)
    except (ValueError, ImportError) as error:
        print(f"sockwork serve: {error}", file=sys.stderr)
        return 2
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            print(
                f"sockwork serve: environment variable {args.password_env} is not set or empty",
                file=sys.stderr,
            )
            return 2
    context = None
    if args.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile, args.keyfile)
    elif args.keyfile:
        print("sockwork serve: --keyfile needs --certfile", file=sys.stderr)
        return 2
    if args.no_telnet and args.ssh_port is None:
        print("sockwork serve: --no-telnet needs --ssh-port", file=sys.stderr)
        return 2
    ssh_server = None
    if args.ssh_port is not None:
        try:
            ssh_server = _ssh_server(app, args, password)
        except (ImportError, ValueError, OSError) as error:
            print(f"sockwork serve: {error}", file=sys.stderr)
            return 2
    servers: list[ConsoleServer | SshConsoleServer] = [] if ssh_server is None else [ssh_server]
    if not args.no_telnet:
        per_address = args.max_per_address
        try:
            telnet = ConsoleServer(
                app,
                args.host,
                args.port,
                max_clients=args.max_clients or None,
                max_per_address="auto" if per_address is None else per_address or None,
                first_line_timeout=args.first_line_timeout or None,
                idle_timeout=args.idle_timeout or None,
                write_timeout=args.write_timeout,
                password=password,
                ssl=context,
            )
        except (ValueError, OSError) as error:
            if ssh_server is not None:
                ssh_server.close()
            if isinstance(error, ValueError):
                print(f"sockwork serve: {error}", file=sys.stderr)
                return 2
            # EADDRINUSE, EACCES, an unknown host...: one line, as the other commands.
            print(
                f"sockwork serve: cannot listen on {args.host}:{args.port}: {error}",
                file=sys.stderr,
            )
            return 1
        servers.insert(0, telnet)
    # The handler is in place and the servers are started before the address is
    # announced: whoever reads it may send SIGTERM at once (it used to land in start(),
    # and close() then failed on a thread not yet started: exit 1, a traceback).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        for server in servers:
            server.start()
        for server in servers:
            print(_announcement(args.target, server), file=sys.stderr, flush=True)
        if args.no_console:
            threading.Event().wait()  # until Ctrl-C or SIGTERM
        else:
            _run_console(app)
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.close()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _ssh_server(app: App, args: argparse.Namespace, password: str | None) -> SshConsoleServer:
    check: PasswordCheck | None = None
    if password is not None:
        secret = password.encode("utf-8")

        def same(username: str, typed: str) -> bool:
            return hmac.compare_digest(typed.encode("utf-8"), secret)

        check = same

    return SshConsoleServer(
        app,
        args.host,
        args.ssh_port,
        host_key=args.host_key,
        authorized_keys=args.authorized_keys,
        check_password=check,
        allow_anonymous=args.allow_anonymous,
        max_clients=args.max_clients or None,
        idle_timeout=args.idle_timeout or None,
    )


def _announcement(target: str, server: ConsoleServer | SshConsoleServer) -> str:
    host, port = server.address
    if isinstance(server, ConsoleServer):
        return f"sockwork: serving {target} on {host} port {port} (telnet {host} {port})"
    key = "new host key" if server.host_key_created else "host key"
    return (
        f"sockwork: serving {target} over SSH on {host} port {port} (ssh -p {port} {host}); "
        f"{key} {server.host_key_path}: {server.host_key_fingerprint}"
    )


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM ends the server like Ctrl-C does: every session is closed properly.
    raise KeyboardInterrupt


def _run_console(app: App) -> None:
    """Run one instance of the program on the local terminal, as it would run alone."""
    program = app()
    if isinstance(program, cmd.Cmd):
        adapt_cmd(program).cmdloop()
