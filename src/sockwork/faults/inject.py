"""Per-scope faults: ``with inject(*faults, match=...) as handle:``.

Every TCP connection made (``connect``, ``connect_ex``, ``create_connection``,
asyncio) or accepted in the block, and every name look-up (``getaddrinfo``), goes
through the faults when ``match`` selects it. On exit, also on an exception,
the faults leave every socket and ``socket`` is restored exactly.

# Rules:
- Scopes may nest and may run in several threads; each is one layer with its own
  plan and seed. The class-level patch is counted, so the last scope out restores.
- A connection is selected when it starts in the scope: sockets connected or
  accepted before it keep their behaviour (use :func:`sockwork.faults.apply`).
- Only stream sockets (TCP, Unix stream) are selected; look-ups of numeric
  addresses never fail (no DNS is involved).
- :func:`fired` reads the innermost scope still active in the process (the one
  entered last), else the one that ended last: one registry for the process, not
  one per thread, read under the scopes' lock and the plan's lock.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sockwork.faults import dispatch
from sockwork.faults.attempt import resolve_decision
from sockwork.faults.budget import sleep_until
from sockwork.faults.patch import Handle
from sockwork.faults.plan import Observer
from sockwork.faults.report import Event
from sockwork.faults.state import attach, lookup
from sockwork.faults.vocabulary import Fault

__all__ = ["Injection", "Match", "Target", "fired", "inject"]

_real_getaddrinfo = socket.getaddrinfo

Role = Literal["client", "server", "resolve"]


@dataclass(frozen=True)
class Target:
    """What ``match`` is asked about: a connect (client), an accept (server) or a look-up.

    ``host``/``port`` are the remote address for a client, the listening address
    for a server, and the name and port looked up for a resolve.
    """

    role: Role
    host: str | None
    port: int | None


@dataclass(frozen=True)
class Match:
    """Select connections by ``role``, ``host`` and ``port`` (None matches anything)."""

    role: Role | None = None
    host: str | None = None
    port: int | None = None

    def __call__(self, target: Target) -> bool:
        """Return True when ``target`` is selected."""
        return (
            (self.role is None or self.role == target.role)
            and (self.host is None or self.host == target.host)
            and (self.port is None or self.port == target.port)
        )


MatchSpec = Match | Callable[[Target], bool] | None

_SCOPES: list[Injection] = []
_SCOPES_LOCK = threading.Lock()
_LAST: Injection | None = None  # the scope that ended last (for fired())


def _split(address: object) -> tuple[str | None, int | None]:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return (
            str(host) if host is not None else None,
            int(port) if isinstance(port, int) else None,
        )
    if isinstance(address, (str, bytes)):
        return (address.decode() if isinstance(address, bytes) else address), None
    return None, None


def _is_stream(sock: socket.socket) -> bool:
    try:
        return sock.type == socket.SOCK_STREAM
    except OSError:
        return False


def _selecting(target: Target, sock: socket.socket) -> list[Injection]:
    with _SCOPES_LOCK:
        scopes = list(_SCOPES)
    state = lookup(sock)
    present = {id(layer.scope) for layer in state.layers} if state is not None else set()
    return [s for s in scopes if id(s._scope) not in present and s._selects(target)]


def _client_hook(sock: socket.socket, address: object) -> None:
    if not _is_stream(sock):
        return
    host, port = _split(address)
    for scope in _selecting(Target("client", host, port), sock):
        attach(sock, scope._scope, connected=False, role="client")


def _server_hook(sock: socket.socket) -> None:
    if not _is_stream(sock):
        return
    try:
        host, port = _split(sock.getsockname())
    except OSError:
        host, port = None, None
    for scope in _selecting(Target("server", host, port), sock):
        attach(sock, scope._scope, connected=False, role="server")


def _is_numeric(host: object) -> bool:
    if host is None:
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


_GAI_ERRORS = {
    "noname": (socket.EAI_NONAME, "Name or service not known"),
    "again": (socket.EAI_AGAIN, "Temporary failure in name resolution"),
}


def _getaddrinfo(host: object, port: object, *args: object, **kwargs: object) -> object:
    with _SCOPES_LOCK:
        scopes = list(_SCOPES)
    if scopes and not _is_numeric(host):
        name = host.decode() if isinstance(host, bytes) else str(host)
        target = Target("resolve", name, port if isinstance(port, int) else None)
        chosen = [s for s in scopes if s._selects(target)]
        if chosen:
            until, failure = resolve_decision([s._scope for s in chosen], name)
            sleep_until(until)
            if failure is not None:
                code, message = _GAI_ERRORS[failure.kind]
                raise socket.gaierror(code, message)
    return _real_getaddrinfo(host, port, *args, **kwargs)  # type: ignore[arg-type]


def _set_patches(on: bool) -> None:
    if on:
        dispatch.set_hooks(_client_hook, _server_hook)
        socket.getaddrinfo = _getaddrinfo  # type: ignore[assignment]
    else:
        dispatch.set_hooks(None, None)
        socket.getaddrinfo = _real_getaddrinfo


class Injection(Handle):
    """The :class:`Handle` of an ``inject`` scope: active inside its ``with`` block."""

    def __init__(
        self,
        faults: tuple[Fault, ...],
        *,
        match: MatchSpec = None,
        seed: int | None = None,
        observer: Observer | None = None,
    ) -> None:
        if match is not None and not callable(match):
            raise TypeError(f"match must be a Match, a callable or None, got {match!r}")
        super().__init__(faults, seed=seed, observer=observer)
        self._match = match
        self._entered = False

    def _selects(self, target: Target) -> bool:
        return self._active and (self._match is None or bool(self._match(target)))

    def __enter__(self) -> Injection:
        if self._entered:
            raise RuntimeError("an inject() scope can be entered only once; call inject() again")
        self._entered = True
        self._start()
        with _SCOPES_LOCK:
            _SCOPES.append(self)
            if len(_SCOPES) == 1:
                _set_patches(True)
        return self

    def remove(self) -> None:
        """Leave the scope: remove the faults everywhere and restore ``socket``."""
        global _LAST
        with _SCOPES_LOCK:
            if self in _SCOPES:
                _SCOPES.remove(self)
                _LAST = self
                if not _SCOPES:
                    _set_patches(False)
        super().remove()


def inject(*faults: Fault, match: MatchSpec = None, seed: int | None = None) -> Injection:
    """Return a scope in which new connections and look-ups suffer ``faults``.

    Use it as ``with inject(Latency(0.2), match=Match(port=8080)) as handle:``;
    ``handle.report`` says what fired and ``handle.seed`` replays the run.

    Args:
        faults: fault objects from :mod:`sockwork.faults`.
        match: a :class:`Match`, or a callable taking a :class:`Target` and returning
            True for the connections and look-ups to affect; None: all of them.
        seed: the seed of the scope's random generator (random when None).
    """
    return Injection(faults, match=match, seed=seed)


def fired(fault_type: type[Fault] | None = None) -> list[Event]:
    """Return what the faults of the current ``inject`` scope did so far, in order.

    The current scope is the innermost one still active in this process (the one
    entered last), or else the one that ended last; ``[]`` before any scope. Each
    :class:`~sockwork.faults.Event` says which fault acted (``what``: ``"fired"``,
    ``"close"``, ``"reset"``, ``"half-close"``, ``"refuse"``...), on which
    connection (``kind``, ``connection`` index, ``label`` with role and address),
    in which direction and at which byte offset: a test can decide whether an
    outcome is acceptable given what the network really did. Under ``sockwork
    run`` the scope is the one the program was started in.

    Safe to call from any thread, during or after the scope. With scopes active in
    several threads at once, "innermost" is the one entered last anywhere in the
    process: read ``handle.report`` of your own scope instead.

    Args:
        fault_type: only the events of faults of this class (e.g. ``HalfClose``).
    """
    scope = _fired_scope()
    if scope is None:
        return []
    return scope.report.fired(fault_type)


def _fired_scope() -> Injection | None:
    """The scope :func:`fired` reads: the innermost active one, else the last ended."""
    with _SCOPES_LOCK:
        return _SCOPES[-1] if _SCOPES else _LAST
