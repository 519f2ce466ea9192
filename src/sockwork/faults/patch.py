"""Per-socket faults: ``apply(sock, *faults) -> Handle``, and poorconn's patchable sockets.

``apply`` works on any ``socket.socket`` (plain, :class:`PatchableSocket`,
``ssl.SSLSocket``, or a plain socket about to be wrapped in TLS): the engine
dispatches at the class level and keeps each socket's faults in a registry, so
the caller's reference stays valid. Patches
stack (each ``apply`` is a layer with its own plan and seed) and each undoes
itself with ``Handle.remove()`` or at the end of a ``with`` block.

:func:`make_socket_patchable` and :class:`PatchableSocket` keep poorconn 0.2.1's
semantics for code that sets its own instance attributes (``s.send = ...``): a
plain socket is detached and its fd re-attached to a new object that has a
``__dict__``; sockets that already have one (``PatchableSocket``, ``SSLSocket``)
are returned as they are. Faults applied to the old object move to the new one.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from sockwork.faults import dispatch
from sockwork.faults.deadline import act_on_open
from sockwork.faults.plan import Observer
from sockwork.faults.readiness import notify_changed
from sockwork.faults.report import Report
from sockwork.faults.scope import Scope
from sockwork.faults.state import attach, lookup, rekey
from sockwork.faults.vocabulary import Fault

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Handle", "PatchableSocket", "apply", "make_socket_patchable", "new_seed"]


def new_seed() -> int:
    """Return a fresh random seed (reported so that a run can be replayed)."""
    return int.from_bytes(os.urandom(4), "big")


class Handle:
    """The faults of one scope: change them, read the report, remove them.

    Made by :func:`apply` or :func:`sockwork.faults.inject`; usable as a context
    manager that removes the faults on exit, also when an exception escapes (the
    exception then gets a note with the seed, on Python 3.11+).

    Attributes:
        seed: the seed of the scope's random generator: pass it back to replay.
    """

    def __init__(
        self,
        faults: Iterable[Fault],
        *,
        seed: int | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.seed = new_seed() if seed is None else seed
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        # What the executor modules see; ``observer`` sees every attempt and byte of
        # the scope (exploration's recorder).
        self._scope = Scope(faults, seed=self.seed, observer=observer)
        self._active = False

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The faults in force."""
        with self._scope.lock:
            return self._scope.plan.faults

    @property
    def report(self) -> Report:
        """Which faults fired, on which connection, at which byte offset (with the seed)."""
        with self._scope.lock:
            return self._scope.plan.report

    @property
    def active(self) -> bool:
        """True until :meth:`remove`."""
        return self._active

    def update(self, *faults: Fault) -> None:
        """Replace the faults; open connections keep the state of faults that stay."""
        with self._scope.lock:
            self._scope.plan.update(faults, now=time.monotonic())
            streams = self._scope.plan.has_stream_faults
        if self._active:
            dispatch.set_stream_faults(self._scope, streams)
        notify_changed()

    def remove(self) -> None:
        """Remove the faults from every socket they are on; idempotent."""
        if not self._active:
            return
        self._active = False
        try:
            dispatch.set_stream_faults(self._scope, False)
            dispatch.detach_all(self._scope)
        finally:
            dispatch.uninstall()

    def _start(self) -> None:
        dispatch.install()
        self._active = True
        with self._scope.lock:
            streams = self._scope.plan.has_stream_faults
        dispatch.set_stream_faults(self._scope, streams)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.remove()
        finally:
            if exc is not None and hasattr(exc, "add_note"):
                exc.add_note(
                    f"sockwork faults: seed={self.seed} (pass seed= to replay)\n{self.report}"
                )

    def __repr__(self) -> str:
        state = "active" if self._active else "removed"
        return f"<{type(self).__name__} {state} seed={self.seed} faults={list(self.faults)!r}>"


def _is_connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def apply(sock: socket.socket, *faults: Fault, seed: int | None = None) -> Handle:
    """Make ``sock`` behave as if it were on a poor network; returns the :class:`Handle`.

    On a connected socket the stream faults act at once; on an unconnected one,
    connect faults act on its ``connect``; on a listening one, accept faults act on
    its ``accept`` and the accepted sockets get the stream faults. Calling ``apply``
    again stacks another layer.

    Raises:
        TypeError: ``sock`` is not a ``socket.socket`` or a fault is not a fault.
        ValueError: ``sock`` is closed.
    """
    if not isinstance(sock, socket.socket):
        raise TypeError(f"apply() needs a socket.socket, got {type(sock).__name__}")
    if sock.fileno() < 0:
        raise ValueError("apply() needs an open socket; this one is closed")
    handle = Handle(faults, seed=seed)
    handle._start()
    try:
        connected = _is_connected(sock)
        attach(sock, handle._scope, connected=connected, role="socket")
        state = lookup(sock)
        if connected and state is not None:
            act_on_open(sock, state)
    except BaseException:
        handle.remove()
        raise
    return handle


class PatchableSocket(socket.socket):
    """A ``socket.socket`` with a ``__dict__``, so instance attributes can replace methods.

    Use :meth:`create_from` (or :func:`make_socket_patchable`) to turn an existing
    socket into one. ``accept()`` still returns plain sockets and ``dup()`` copies
    no instance patches, as in poorconn.
    """

    @classmethod
    def create_from(cls, s: socket.socket) -> PatchableSocket:
        """Detach ``s``'s fd and return a new PatchableSocket on it (same timeout).

        Kernel state (options, bound, listening or connected) carries over; Python
        state on ``s`` does not, and ``s`` is left detached (``fileno() == -1``).
        Faults applied with :func:`apply` move to the new object.

        Raises:
            ValueError: ``s`` is closed ("negative file descriptor").
        """
        family, type_, proto = s.family, s.type, s.proto
        timeout = s.gettimeout()
        if s.fileno() < 0:
            raise ValueError("negative file descriptor")
        new = cls(family, type_, proto, fileno=s.fileno())
        rekey(s, new)
        s.detach()
        new.settimeout(timeout)
        return new


_GROUPS = {":sending": ("send", "sendall")}


def make_socket_patchable(
    s: socket.socket, funcs: Iterable[str] = (":sending", "accept")
) -> socket.socket:
    """Return a socket whose methods named by ``funcs`` can be replaced per instance.

    ``":sending"`` stands for ``send`` and ``sendall``. A socket that already allows
    it (a :class:`PatchableSocket`, an ``ssl.SSLSocket``) is returned unchanged, as
    is any socket when ``funcs`` is empty; otherwise the fd moves to a new
    :class:`PatchableSocket` and the old object is detached: update every holder.

    Raises:
        ValueError: ``s`` is closed.
        AttributeError: a name in ``funcs`` is not a socket method.
    """
    names = [name for group in funcs for name in _GROUPS.get(group, (group,))]
    for name in names:
        if not callable(getattr(s, name, None)):
            raise AttributeError(f"socket has no method {name!r} to patch")
    if not names or hasattr(s, "__dict__"):
        return s
    return PatchableSocket.create_from(s)
