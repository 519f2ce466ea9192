"""The ``sockwork`` command.

Each pillar that has commands keeps them in its own ``command`` module, which
exposes ``register(subparsers)``: it adds its sub-commands and sets ``run`` (a
``Callable[[argparse.Namespace], int]``) as each one's default. This module only
assembles them, so a pillar's options live beside the code they drive.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

__all__ = ["argument_type", "main"]

T = TypeVar("T")

# Modules whose register() adds sub-commands, in the order of the help text.
_COMMAND_MODULES: tuple[str, ...] = (
    "sockwork.faults.command",
    "sockwork.proxy.command",
    "sockwork.console.command",
)


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a text parser as an argparse ``type=``: its ValueError is a one-line usage error.

    argparse reports a ValueError as "invalid <name> value"; the parser's own message
    (``sockwork.address`` names the option and the accepted range) says more. Exit status 2.
    """

    def convert(text: str) -> T:
        try:
            return parse(text)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the whole ``sockwork`` command."""
    from sockwork import __version__

    parser = argparse.ArgumentParser(
        prog="sockwork",
        description="Complete messages over TCP, poor networks on demand, consoles over telnet.",
    )
    parser.add_argument("--version", action="version", version=f"sockwork {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sockwork`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    run = cast(Callable[[argparse.Namespace], int], args.run)
    return run(args)
