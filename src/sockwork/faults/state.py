"""Per-socket fault state: the layers on each socket, and the registry that finds them.

# Rules:
- A socket with no faults costs one dictionary look-up per call: states live in
  ``STATES`` keyed by ``id()``, with a weak reference to check identity (an id can
  be reused once a socket is gone).
- One socket may carry several layers (stacked ``apply``/``inject`` scopes). Each
  layer has its own plan and connection; their decisions combine with
  ``plan.combine``, the plan's own rule for the faults of one stream.
- A layer's plan is called only under its scope's lock (plans are not
  thread-safe); ``REGISTRY_LOCK`` guards the registries of every executor module.
"""

from __future__ import annotations

import socket
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from sockwork.faults import kernel
from sockwork.faults.action import Action, Wait, combine
from sockwork.faults.plan import Connection

if TYPE_CHECKING:
    from sockwork.faults.scope import Scope

__all__ = [
    "REGISTRY_LOCK",
    "STATES",
    "Layer",
    "PendingSends",
    "SocketState",
    "address_label",
    "attach",
    "lookup",
    "open_layers",
    "rekey",
]

T = TypeVar("T")


class PendingSends(Protocol):
    """A socket's outbox (:class:`sockwork.faults.outbox.Outbox`), as the executor uses it."""

    busy: bool
    """True while earlier bytes are still waiting to be sent."""

    def raise_error(self) -> None:
        """Raise the error a background send met, once."""
        ...

    def adopt(self, view: memoryview, *, whole: bool) -> int:
        """Take bytes that are not due yet; return how many were taken."""
        ...

    def put(self, data: object, *, whole: bool) -> int:
        """Queue bytes behind earlier ones; return how many were taken."""
        ...

    def finish_with(self, how: int | None) -> bool:
        """Send the rest, then shut down (``how``) or close (None); False if empty."""
        ...


class Layer:
    """One scope's faults on one socket: the scope, and the plan's connection once open."""

    __slots__ = ("scope", "conn")

    def __init__(self, scope: Scope, conn: Connection | None) -> None:
        self.scope = scope
        self.conn = conn


class SocketState:
    """The faults attached to one socket, and what they already did to it."""

    def __init__(self, sock: socket.socket) -> None:
        self.ref = weakref.ref(sock)
        self.layers: list[Layer] = []
        self.cut: str | None = None  # None, "fin", "reset", "reset-seen"
        self.half_closed: set[str] = set()  # directions a HalfClose ended ("send", "recv")
        self.shut_write = False  # the application called shutdown(SHUT_WR or SHUT_RDWR)
        self.connect_due: float | None = None  # non-blocking connect held back until
        self.connect_address: object = None
        self.connect_hang = False
        self.accept_decision: tuple[float, Action] | None = None  # kept across a timeout
        self.outbox: PendingSends | None = None  # non-blocking sends handed over early
        self.plaintext = bytearray()  # TLS: decrypted bytes the plan saw, not yet delivered

    # -- streams over all layers --

    def _live(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.conn is not None]

    def idle(self, direction: str) -> bool:
        """True when no fault acts on ``direction`` (a fast path may skip the plan)."""
        if self.cut is not None:
            return False
        for layer in self.layers:
            if layer.conn is not None:
                stream = layer.conn.send if direction == "send" else layer.conn.recv
                if not stream.idle:
                    return False
        return True

    def _each(self, direction: str, call: Callable[..., T], *args: object) -> list[T]:
        results = []
        for layer in self._live():
            assert layer.conn is not None
            stream = layer.conn.send if direction == "send" else layer.conn.recv
            with layer.scope.lock:
                results.append(call(stream, *args))
        return results

    def feed(self, direction: str, n: int, now: float) -> None:
        """Tell every layer that ``n`` more bytes are waiting in ``direction``."""
        self._each(direction, lambda s, *a: s.feed(*a), n, now)

    def feed_eof(self, direction: str, now: float) -> None:
        """Tell every layer that ``direction`` reached its end (EOF or FIN)."""
        self._each(direction, lambda s, *a: s.feed_eof(*a), now)

    def passed(self, direction: str, n: int, now: float) -> None:
        """Tell every layer that ``n`` bytes were delivered or discarded."""
        self._each(direction, lambda s, *a: s.passed(*a), n, now)

    def unfeed(self, direction: str) -> None:
        """Take back the pending bytes of ``direction`` (they were not passed)."""
        self._each(direction, lambda s: s.unfeed())

    def pending(self, direction: str) -> int:
        """Bytes fed to ``direction`` and not yet passed."""
        values = self._each(direction, lambda s: s.pending)
        return values[0] if values else 0

    def next(self, direction: str, now: float) -> Action:
        """What to do next in ``direction``, over all layers."""
        return combine(self._each(direction, lambda s, *a: s.next(*a), now))

    def eof_reached(self) -> bool:
        """True when the receiving stream has seen the peer's end of stream."""
        for layer in self._live():
            assert layer.conn is not None
            if layer.conn.recv.eof:
                return True
        return False

    def close_due(self, direction: str, now: float) -> bool:
        """True when a fault would end ``direction`` now, before any byte moves."""
        due = self._each(direction, lambda s, *a: s.close_due(*a), now)
        return any(due)

    def fin_due(self, now: float) -> float | None:
        """The application ends its data: when may the FIN go? None: now (SlowClose holds it)."""
        if self.idle("send"):
            return None
        self.feed_eof("send", now)
        action = self.next("send", now)
        return action.until if isinstance(action, Wait) else None


# -- registry ----------------------------------------------------------------------

STATES: dict[int, SocketState] = {}
REGISTRY_LOCK = threading.RLock()


def lookup(sock: socket.socket) -> SocketState | None:
    """Return the fault state of ``sock``, or None when it has none."""
    state = STATES.get(id(sock))
    if state is None or state.ref() is not sock:
        return None
    return state


def _forget(key: int, ref: weakref.ref[socket.socket]) -> None:
    with REGISTRY_LOCK:
        state = STATES.get(key)
        if state is not None and state.ref is ref:
            del STATES[key]


def _state_for(sock: socket.socket) -> SocketState:
    with REGISTRY_LOCK:
        state = lookup(sock)
        if state is None:
            state = SocketState(sock)
            key = id(sock)
            state.ref = weakref.ref(sock, lambda r, key=key: _forget(key, r))  # type: ignore[misc]
            STATES[key] = state
        return state


def rekey(old: socket.socket, new: socket.socket) -> None:
    """Move the fault state of ``old`` to ``new`` (same fd, new Python object)."""
    with REGISTRY_LOCK:
        state = lookup(old)
        if state is None:
            return
        del STATES[id(old)]
        key = id(new)
        state.ref = weakref.ref(new, lambda r, key=key: _forget(key, r))  # type: ignore[misc]
        STATES[key] = state
        for layer in state.layers:
            layer.scope.sockets.add(new)


def address_label(role: str, address: object) -> str:
    """How a connection is named in the report: ``"client 127.0.0.1:8080"``."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{role} {address[0]}:{address[1]}"
    return f"{role} {address!r}"


def _label(sock: socket.socket, role: str) -> str:
    try:
        peer = kernel.getpeername(sock)
    except OSError:
        return role
    return role if peer is None else address_label(role, peer)


def attach(sock: socket.socket, scope: Scope, *, connected: bool, role: str = "") -> None:
    """Add ``scope``'s layer to ``sock``; open its connection when already connected."""
    state = _state_for(sock)
    conn = scope.open(_label(sock, role)) if connected else None
    with REGISTRY_LOCK:
        state.layers.append(Layer(scope, conn))
    scope.sockets.add(sock)


def open_layers(sock: socket.socket, state: SocketState, role: str) -> None:
    """``sock`` is connected now: open the plan's connection of every layer."""
    for layer in state.layers:
        if layer.conn is None:
            layer.conn = layer.scope.open(_label(sock, role))
