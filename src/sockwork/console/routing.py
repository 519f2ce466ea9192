"""Route the standard streams of each thread to its own session.

:func:`install` puts one process-wide pair of proxies in ``sys.stdin``,
``sys.stdout`` and ``sys.stderr`` (and a routed ``getpass.getpass``). Each read or
write goes to the :class:`Streams` bound to the calling thread with :func:`bind`,
or to the streams that were there before :func:`install` (the real console) when
the thread is unbound. Unmodified ``print()``, ``input()``, ``sys.stdout.write()``,
``cmd.Cmd``, ``getpass.getpass()`` and ``help()`` then talk to the right user.

``install(mode="builtins")`` is the compatibility mode: it patches
``builtins.print`` and ``builtins.input`` instead and leaves ``sys.std*`` alone.
It misses ``sys.stdout.write``, tracebacks and code that captured ``print`` earlier.
"""

# Rules:
# - Dispatch is by threading.local: one thread per session. A thread started by a
#   session is unbound (it goes to the console) until bound explicitly with bind() or
#   started through wrap(); ContextVar inheritance (3.14 thread_inherit_context) plays
#   no part, so the policy is the same on every Python.
# - install()/uninstall() nest (a count per mode). The first install captures whatever
#   sys.std* are at that moment (pytest's capture objects, say) as the console; the last
#   uninstall puts back exactly those objects, and only where the proxy is still in
#   place, so a stream someone else installed after us is left alone.
# - A nested install("streams") puts a displaced proxy back in front of whatever replaced
#   it (that stream becomes the console): otherwise a server started while an earlier
#   one is still closing would serve with no routing, its sessions' print() going to
#   the console (pytest swaps sys.std* between a test's phases, so this is not rare).
# - isatty()/fileno()/encoding follow the current target: builtin input() uses GNU
#   readline only when sys.stdin.fileno() == 0 and sys.stdout.fileno() == 1 and both are
#   ttys (CPython bltinmodule.c), so the console keeps readline and sessions do not.
# - getpass.getpass opens /dev/tty first, which would read the operator's terminal from
#   a session thread: the routed version asks the session instead.
# - pydoc.pager (help()) is chosen once per process and cached: the routed version
#   gives sessions plain text and leaves the console's choice alone.

from __future__ import annotations

import builtins
import getpass as _getpass_module
import io
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, ParamSpec, TextIO, TypeVar, cast

__all__ = [
    "Streams",
    "bind",
    "current_streams",
    "install",
    "installed",
    "is_installed",
    "uninstall",
    "wrap",
]

# Originals, captured once at import (never re-read from a possibly patched module).
_real_print = builtins.print
_real_input = builtins.input
_real_getpass = _getpass_module.getpass

_T = TypeVar("_T")
_P = ParamSpec("_P")
Mode = Literal["streams", "builtins"]


@dataclass(frozen=True)
class Streams:
    """The standard streams of one session: where a bound thread reads and writes.

    Attributes:
        stdin: text stream with ``readline()``; an empty string means end of input.
        stdout: text stream for normal output.
        stderr: text stream for errors and tracebacks (often the same object as stdout).
        getpass: reads a secret without showing it; None reads a visible line.
        session: the owner (a :class:`~sockwork.console.session.Session`), if any.
    """

    stdin: TextIO
    stdout: TextIO
    stderr: TextIO
    getpass: Callable[[str], str] | None = None
    session: object = None


class _Binding(threading.local):
    streams: Streams | None = None


_binding = _Binding()


def current_streams() -> Streams | None:
    """Return the streams bound to the calling thread, or None for the console."""
    return _binding.streams


@contextmanager
def bind(streams: Streams | None) -> Iterator[None]:
    """Bind the calling thread to ``streams`` (None: the console) for the ``with`` block."""
    previous = _binding.streams
    _binding.streams = streams
    try:
        yield
    finally:
        _binding.streams = previous


def wrap(function: Callable[_P, _T]) -> Callable[_P, _T]:
    """Return ``function`` bound to the caller's current streams, to run in another thread.

    ``threading.Thread(target=wrap(work)).start()`` inside a session makes ``work``
    print to that session; without ``wrap`` the new thread writes to the console.
    """
    streams = _binding.streams

    def bound(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with bind(streams):
            return function(*args, **kwargs)

    bound.__wrapped__ = function  # type: ignore[attr-defined]
    bound.__name__ = getattr(function, "__name__", "bound")
    bound.__doc__ = function.__doc__
    return bound


# -- the proxies ---------------------------------------------------------------------


class _Console:
    """The streams captured by the first install(): where unbound threads go."""

    stdin: TextIO | None = None
    stdout: TextIO | None = None
    stderr: TextIO | None = None


_console = _Console()


class _RoutedStream:
    """A text stream that forwards every call to the current thread's target."""

    def __init__(self, name: Literal["stdin", "stdout", "stderr"]) -> None:
        self._name = name

    def _target(self) -> TextIO:
        streams = _binding.streams
        if streams is not None:
            return cast(TextIO, getattr(streams, self._name))
        target = getattr(_console, self._name)
        if target is None:  # pythonw and friends: no console at all
            return _NULL
        return cast(TextIO, target)

    # Output.
    def write(self, text: str) -> int:
        return self._target().write(text)

    def writelines(self, lines: list[str]) -> None:
        self._target().writelines(lines)

    def flush(self) -> None:
        self._target().flush()

    # Input.
    def read(self, size: int = -1) -> str:
        return self._target().read(size)

    def readline(self, size: int = -1) -> str:
        return self._target().readline(size)

    def readlines(self, hint: int = -1) -> list[str]:
        return self._target().readlines(hint)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._target().readline()
        if not line:
            raise StopIteration
        return line

    # What the target is.
    def isatty(self) -> bool:
        return self._target().isatty()

    def fileno(self) -> int:
        return self._target().fileno()

    def readable(self) -> bool:
        return self._target().readable()

    def writable(self) -> bool:
        return self._target().writable()

    def seekable(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return self._target().encoding

    @property
    def errors(self) -> str | None:
        return self._target().errors

    @property
    def closed(self) -> bool:
        return self._target().closed

    @property
    def name(self) -> object:
        return getattr(self._target(), "name", f"<{self._name}>")

    def close(self) -> None:
        # The proxy is process-wide: closing it would break every other thread.
        pass

    def __getattr__(self, attribute: str) -> object:
        return getattr(self._target(), attribute)

    def __repr__(self) -> str:
        return f"<sockwork routed {self._name} -> {self._target()!r}>"


class _NullStream(io.StringIO):
    """Where output goes when there is no console at all (sys.stdout is None)."""

    def write(self, text: str) -> int:
        return len(text)


_NULL = cast(TextIO, _NullStream())

_stdin = _RoutedStream("stdin")
_stdout = _RoutedStream("stdout")
_stderr = _RoutedStream("stderr")


def _routed_getpass(prompt: str = "Password: ", stream: TextIO | None = None) -> str:
    streams = _binding.streams
    if streams is None:
        return _real_getpass(prompt, stream)
    if streams.getpass is not None:
        return streams.getpass(prompt)
    streams.stdout.write(prompt)
    streams.stdout.flush()
    line = streams.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\r\n")


def _routed_print(
    *values: object,
    sep: str | None = " ",
    end: str | None = "\n",
    file: object = None,
    flush: bool = False,
) -> None:
    streams = _binding.streams
    if file is None and streams is not None:
        file = streams.stdout
    _real_print(*values, sep=sep, end=end, file=file, flush=flush)  # type: ignore[call-overload]


def _routed_input(prompt: object = "") -> str:
    streams = _binding.streams
    if streams is None:
        return _real_input(prompt)
    streams.stdout.write(str(prompt))
    streams.stdout.flush()
    line = streams.stdin.readline()
    if not line:
        raise EOFError
    return line[:-1] if line.endswith("\n") else line


class _Pager:
    """pydoc's pager, routed: plain text to a session, the console's own pager otherwise.

    pydoc picks its pager once, on first use, and caches it in the module global
    ``pydoc.pager``: without this, whoever calls help() first decides for everyone
    (a session could start ``less`` on the server's terminal).
    """

    def __init__(self) -> None:
        self.original: Callable[..., None] | None = None

    def __call__(self, text: str, title: str = "") -> None:
        import pydoc

        streams = _binding.streams
        if streams is not None:
            streams.stdout.write(pydoc.plain(text))
            if not text.endswith("\n"):
                streams.stdout.write("\n")
            return
        original = self.original
        assert original is not None
        try:
            if title:
                original(text, title)
            else:
                original(text)
        finally:
            # The original may have replaced itself with the pager it chose: keep that
            # choice for the console and keep routing in front of it.
            if pydoc.pager is not self:
                self.original = pydoc.pager
                pydoc.pager = self


_pager = _Pager()


def _install_pager() -> None:
    import pydoc

    _pager.original = pydoc.pager
    pydoc.pager = _pager


def _uninstall_pager() -> None:
    import pydoc

    if pydoc.pager is _pager and _pager.original is not None:
        pydoc.pager = _pager.original
    _pager.original = None


# -- install / uninstall -------------------------------------------------------------

_lock = threading.Lock()
_counts: dict[str, int] = {"streams": 0, "builtins": 0}


def _check_mode(mode: str) -> None:
    if mode not in _counts:
        raise ValueError(f"mode must be 'streams' or 'builtins', got {mode!r}")


def install(mode: Mode = "streams") -> None:
    """Start routing standard I/O by thread (nested calls are counted).

    A nested ``install()`` makes sure routing is in effect: a proxy that another stream
    replaced in ``sys.std*`` goes back in front of it (that stream is the console now).

    Args:
        mode: ``"streams"`` installs proxies as ``sys.stdin``/``stdout``/``stderr``;
            ``"builtins"`` patches ``builtins.print``/``input`` instead. Both route
            ``getpass.getpass``.
    """
    _check_mode(mode)
    with _lock:
        _counts[mode] += 1
        if _counts[mode] > 1:
            if mode == "streams":
                _replace_displaced_proxies()
            return
        if mode == "streams":
            _console.stdin, _console.stdout, _console.stderr = sys.stdin, sys.stdout, sys.stderr
            sys.stdin = cast(TextIO, _stdin)
            sys.stdout = cast(TextIO, _stdout)
            sys.stderr = cast(TextIO, _stderr)
        else:
            builtins.print = _routed_print
            builtins.input = _routed_input
        if sum(_counts.values()) == 1:
            _getpass_module.getpass = _routed_getpass
            _install_pager()


def _replace_displaced_proxies() -> None:
    # Called under _lock while routing is installed: a stream that took a proxy's place
    # becomes the console, and the proxy goes back in front of it.
    if sys.stdin is not _stdin:
        _console.stdin, sys.stdin = sys.stdin, cast(TextIO, _stdin)
    if sys.stdout is not _stdout:
        _console.stdout, sys.stdout = sys.stdout, cast(TextIO, _stdout)
    if sys.stderr is not _stderr:
        _console.stderr, sys.stderr = sys.stderr, cast(TextIO, _stderr)


def uninstall(mode: Mode = "streams") -> None:
    """Undo one :func:`install`; the last one restores exactly what was there before."""
    _check_mode(mode)
    with _lock:
        if _counts[mode] == 0:
            raise RuntimeError(f"routing mode {mode!r} is not installed")
        _counts[mode] -= 1
        if _counts[mode]:
            return
        if mode == "streams":
            if sys.stdin is _stdin:
                sys.stdin = cast(TextIO, _console.stdin)
            if sys.stdout is _stdout:
                sys.stdout = cast(TextIO, _console.stdout)
            if sys.stderr is _stderr:
                sys.stderr = cast(TextIO, _console.stderr)
            _console.stdin = _console.stdout = _console.stderr = None
        else:
            if builtins.print is _routed_print:
                builtins.print = _real_print
            if builtins.input is _routed_input:
                builtins.input = _real_input
        if sum(_counts.values()) == 0:
            if _getpass_module.getpass is _routed_getpass:
                _getpass_module.getpass = _real_getpass
            _uninstall_pager()


def is_installed(mode: Mode = "streams") -> bool:
    """Return True while routing in ``mode`` is installed."""
    _check_mode(mode)
    return _counts[mode] > 0


@contextmanager
def installed(mode: Mode = "streams") -> Iterator[None]:
    """Install routing for the ``with`` block, then restore what was there."""
    install(mode)
    try:
        yield
    finally:
        uninstall(mode)
