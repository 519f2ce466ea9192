"""Deadlines that no readiness event will announce, and Closes that are due now.

# Strategy:
Some faults act at a time with nothing to read or write (Timeout closes an idle
connection, ResetPeer resets after it discarded the data): no call of the
application would come to carry the action out, so a timer re-asks the plan at
that time and performs a due Close. The cut itself wakes selectors (hang-up).
A half-close due before any byte (``HalfClose(0)``) is carried out
when the connection is established (:func:`act_on_open`): a blocking connect, an
accept, ``apply`` on a connected socket, or a non-blocking connect once
``getsockopt(SO_ERROR)`` reports it done (never before: a shutdown during the
handshake would abort it).
"""

from __future__ import annotations

import socket
import threading
import weakref

from sockwork.faults import kernel
from sockwork.faults.action import Action, Close, Read, Wait
from sockwork.faults.budget import INF, now
from sockwork.faults.cut import cut, half_close
from sockwork.faults.state import REGISTRY_LOCK, SocketState, lookup

__all__ = ["act_on_due", "act_on_open", "unwatch", "watch_deadline"]


_WATCHED: dict[tuple[int, str], tuple[float, threading.Timer]] = {}


def unwatch(state: SocketState) -> None:
    """Cancel the deadline timers of ``state`` (its socket closed or lost its faults)."""
    with REGISTRY_LOCK:
        for direction in ("send", "recv"):
            entry = _WATCHED.pop((id(state), direction), None)
            if entry is not None:
                entry[1].cancel()


def watch_deadline(sock: socket.socket, state: SocketState, direction: str, action: Action) -> None:
    """Re-ask the plan at the deadline in ``action`` when nothing else would (a timer)."""
    if isinstance(action, Read):
        until = action.until
    elif isinstance(action, Wait):
        until = action.until
    else:
        return
    if until is None or until == INF or state.pending(direction):
        return
    key = (id(state), direction)
    ref = weakref.ref(sock)

    def fire() -> None:
        with REGISTRY_LOCK:
            entry = _WATCHED.get(key)
            if entry is not None and entry[0] == until:
                del _WATCHED[key]
        target = ref()
        if target is None or lookup(target) is not state or state.cut is not None:
            return
        if state.idle(direction) or state.pending(direction):
            return
        act_on_due(target, state, direction)

    timer = threading.Timer(max(0.0, until - now()) + 0.0005, fire)
    timer.daemon = True
    with REGISTRY_LOCK:
        scheduled = _WATCHED.get(key)
        if scheduled is not None and scheduled[0] <= until:
            return
        if scheduled is not None:
            scheduled[1].cancel()
        _WATCHED[key] = (until, timer)
    timer.start()


def act_on_due(sock: socket.socket, state: SocketState, direction: str) -> None:
    """Carry out a Close due now (e.g. right after the last byte passed), or watch for
    the next deadline."""
    action = state.next(direction, now())
    if isinstance(action, Close):
        if action.half:
            half_close(sock, state, direction)
            return
        if direction == "recv" and not action.reset and state.eof_reached():
            return  # the peer's own EOF: the application will read it
        cut(sock, state, action.reset)
    else:
        watch_deadline(sock, state, direction, action)


def act_on_open(sock: socket.socket, state: SocketState, *, check: bool = False) -> None:
    """The connection of ``sock`` is established: carry out a half-close due before any
    byte (``HalfClose(0)``), which no send or receive may come to do.

    ``check``: make sure first that the handshake is over (a shutdown during it
    would abort the connection).
    """
    if state.cut is not None or not state.layers:
        return
    at = now()
    for direction in ("send", "recv"):
        if not state.idle(direction) and state.close_due(direction, at):
            if check:
                try:
                    kernel.getpeername(sock)
                except OSError:
                    return  # still connecting (or failed): the first send/recv will do it
                check = False
            act_on_due(sock, state, direction)
