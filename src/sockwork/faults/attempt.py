"""Connection attempts through the faults: connect, accept and name look-ups.

# Rules:
- Each attempt is decided once over every layer: the latest Wait, then the first
  terminal that is not Proceed (Refused, Hang, Close, Fail).
- Blocking sockets wait within their timeout; a held-back non-blocking connect
  raises EINPROGRESS and ``getsockopt(SO_ERROR)`` answers EINPROGRESS until it is
  due; a non-blocking accept keeps its decision across calls (and timeouts).
- Faults raise what the network raises: ECONNREFUSED, ETIMEDOUT, TimeoutError.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from sockwork.faults import kernel
from sockwork.faults.action import Action, Close, Fail, Hang, Proceed, Refused, Wait
from sockwork.faults.budget import POLL_NAP, Budget, now
from sockwork.faults.deadline import act_on_open
from sockwork.faults.plan import Plan
from sockwork.faults.state import SocketState, address_label, open_layers

if TYPE_CHECKING:
    from sockwork.faults.scope import Scope

__all__ = ["accept", "connect", "pending_connect_error", "resolve_decision"]


def _decide(
    scopes: Iterable[Scope], call: Callable[[Plan, float], tuple[Action, ...]]
) -> tuple[float, Action]:
    """Decide one attempt over every scope: (latest wait end, first non-Proceed)."""
    until = 0.0
    terminal: Action = Proceed()
    at = now()
    for scope in scopes:
        actions = scope.decide(call, at)
        for a in actions:
            if isinstance(a, Wait):
                until = max(until, a.until)
            elif not isinstance(a, Proceed) and isinstance(terminal, Proceed):
                terminal = a
    return until, terminal


def _scopes(state: SocketState) -> list[Scope]:
    return [layer.scope for layer in state.layers]


def connect(sock: socket.socket, state: SocketState, address: object, *, ex: bool) -> int | None:
    """Connect through the connect faults; returns connect_ex's errno when ``ex``."""
    budget = Budget(sock)
    if budget.nonblocking:
        return _connect_nonblocking(sock, state, address, ex=ex)
    label = address_label("client", address)
    until, terminal = _decide(_scopes(state), lambda p, now: p.connect(now=now, label=label))
    try:
        if until:
            budget.wait(until)
        if isinstance(terminal, Refused):
            raise kernel.oserror(ConnectionRefusedError, errno.ECONNREFUSED)
        if isinstance(terminal, Hang):
            budget.wait(terminal.until, endless=True)
            raise kernel.oserror(TimeoutError, errno.ETIMEDOUT)
    except OSError as exc:
        if ex and exc.errno is not None:
            return exc.errno
        if ex and isinstance(exc, TimeoutError):
            return errno.EAGAIN  # what connect_ex returns on a socket timeout
        raise
    if ex:
        code = kernel.connect_ex(sock, address)  # type: ignore[arg-type]
        if code == 0:
            open_layers(sock, state, "client")
            act_on_open(sock, state)
        return code
    kernel.connect(sock, address)  # type: ignore[arg-type]
    open_layers(sock, state, "client")
    act_on_open(sock, state)
    return None


def _connect_nonblocking(
    sock: socket.socket, state: SocketState, address: object, *, ex: bool
) -> int | None:
    label = address_label("client", address)
    until, terminal = _decide(_scopes(state), lambda p, now: p.connect(now=now, label=label))
    if isinstance(terminal, Refused):
        if ex:
            return errno.ECONNREFUSED
        raise kernel.oserror(ConnectionRefusedError, errno.ECONNREFUSED)
    if isinstance(terminal, Hang):
        until = max(until, terminal.until)
        state.connect_hang = True
    if until > now():
        # Held back: report "in progress"; getsockopt(SO_ERROR) answers until it is due.
        state.connect_due = until
        state.connect_address = address
        if ex:
            return errno.EINPROGRESS
        raise kernel.would_block(errno.EINPROGRESS)
    return _start_connect(sock, state, address, ex=ex)


def _start_connect(
    sock: socket.socket, state: SocketState, address: object, *, ex: bool
) -> int | None:
    if state.connect_hang:
        state.connect_hang = False
        if ex:
            return errno.ETIMEDOUT
        raise kernel.oserror(TimeoutError, errno.ETIMEDOUT)
    open_layers(sock, state, "client")
    if ex:
        code = kernel.connect_ex(sock, address)  # type: ignore[arg-type]
        if code == 0:
            act_on_open(sock, state)
        return code
    kernel.connect(sock, address)  # type: ignore[arg-type]  # EINPROGRESS: not yet
    act_on_open(sock, state)
    return None


def pending_connect_error(sock: socket.socket, state: SocketState) -> int | None:
    """SO_ERROR of a held-back non-blocking connect; None when nothing is held back."""
    due = state.connect_due
    if due is None:
        return None
    if now() < due:
        time.sleep(POLL_NAP)
        return errno.EINPROGRESS
    state.connect_due = None
    address, state.connect_address = state.connect_address, None
    code = _start_connect(sock, state, address, ex=True)
    if code in (0, None):
        return None
    return code


def accept(
    sock: socket.socket, state: SocketState, wrap: Callable[[socket.socket, SocketState], None]
) -> tuple[socket.socket, object]:
    """Accept through the accept faults; ``wrap`` attaches the layers to the new socket."""
    budget = Budget(sock)
    while True:
        decision = state.accept_decision
        if decision is None:
            if budget.nonblocking or budget.deadline is not None:
                if not kernel.wait_readable(sock, budget.remaining()):
                    if budget.nonblocking:
                        raise kernel.would_block()
                    raise kernel.timeout_error()
            elif not kernel.wait_readable(sock, None):
                continue
            decision = _decide(_scopes(state), lambda p, at: p.accept(now=at, label="server"))
            state.accept_decision = decision
        until, terminal = decision
        budget.wait(until)  # raises TimeoutError/BlockingIOError and keeps the decision
        state.accept_decision = None
        conn, address = kernel.accept(sock)
        if isinstance(terminal, Close):
            if terminal.reset:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                kernel.shutdown_quietly(conn, socket.SHUT_RDWR)
            kernel.close(conn)
            if budget.nonblocking:
                raise kernel.would_block()
            continue
        wrap(conn, state)
        return conn, address


def resolve_decision(scopes: Iterable[Scope], host: str) -> tuple[float, Fail | None]:
    """Decide one name look-up over ``scopes``: (wait end, failure or None)."""
    until, terminal = _decide(scopes, lambda p, at: p.resolve(now=at, label=host))
    return until, terminal if isinstance(terminal, Fail) else None
