"""Small network programs, each with a bug and a correct twin: the exploration corpus.

Each module is a program with a buggy and a correct variant of one interface and
an ordinary test, ``test(variant)``, that passes on both on a good network. Under
faults the correct twin keeps its contract (:mod:`sockwork.testing.contract`):
the right answer, or a clean network error of the types it promises, within its
deadline; the buggy one breaks it under some fault schedule.

``PROGRAMS`` lists them with the bug each one has; :meth:`Program.test` gives the
callable for ``sockwork.faults.explore`` and :meth:`Program.argv` the command line
for ``sockwork explore -- ...``.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

__all__ = ["HERE", "PROGRAMS", "Program", "program"]

HERE = Path(__file__).resolve().parent

_NAMES = (
    "length_prefix",
    "short_write",
    "read_timeout",
    "content_length",
    "connect_timeout",
    "dns_failure",
    "accept_loop",
    "double_charge",
    "half_close",
    "refused_retry",
    "line_split",
    "reset_shutdown",
    "slow_client",
    "stale_reply",
    "partial_header",
    "greeting_eof",
    "async_reader",
    "server_one_recv",
)


@dataclass(frozen=True)
class Program:
    """One corpus program: its module, the bug of its buggy variant, how to run it."""

    name: str
    module: ModuleType

    @property
    def bug(self) -> str:
        """The bug class of the buggy variant, in words."""
        return str(self.module.BUG)

    @property
    def path(self) -> Path:
        """The program's file (run it with ``python PATH VARIANT``)."""
        return HERE / f"{self.name}.py"

    @property
    def serves(self) -> bool:
        """True when the program is a client that can use a server already running."""
        return hasattr(self.module, "serve")

    def test(self, variant: str, server: tuple[str, int] | None = None) -> Callable[[], None]:
        """The ordinary test of ``variant`` as a callable without arguments."""
        if variant not in ("buggy", "correct"):
            raise ValueError(f"variant must be 'buggy' or 'correct', got {variant!r}")
        run: Callable[..., None] = self.module.test
        return (
            functools.partial(run, variant)
            if server is None
            else functools.partial(run, variant, server)
        )

    def argv(self, variant: str, server: tuple[str, int] | None = None) -> list[str]:
        """The command line of ``variant`` (exit status 0 when its test passes)."""
        argv = [sys.executable, str(self.path), variant]
        if server is not None:
            argv += ["--server", f"{server[0]}:{server[1]}"]
        return argv


def program(name: str) -> Program:
    """Return the corpus program called ``name``."""
    return Program(name, importlib.import_module(f"{__name__}.{name}"))


PROGRAMS = tuple(program(name) for name in _NAMES)
