"""``sockwork serve``: serve a Cmd class or a function to telnet users."""

from __future__ import annotations

import argparse
import cmd
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
        "--idle-timeout",
        type=_SECONDS,
        default=900.0,
        help="seconds a session may wait for its user; 0 for never (900)",
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
    server = ConsoleServer(
        app,
        args.host,
        args.port,
        max_clients=args.max_clients or None,
        idle_timeout=args.idle_timeout or None,
        password=password,
        ssl=context,
    )
    # The handler is in place before the address is announced: whoever reads it may
    # send SIGTERM at once.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        host, port = server.address
        print(
            f"sockwork: serving {args.target} on {host} port {port} (telnet {host} {port})",
            file=sys.stderr,
            flush=True,
        )
        if args.no_console:
            server.serve_forever()
        else:
            server.start()
            _run_console(app)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM ends the server like Ctrl-C does: every session is closed properly.
    raise KeyboardInterrupt


def _run_console(app: App) -> None:
    """Run one instance of the program on the local terminal, as it would run alone."""
    program = app()
    if isinstance(program, cmd.Cmd):
        adapt_cmd(program).cmdloop()
