"""Readiness of non-blocking receivers: hide a socket from poll/epoll while its data waits.

# Strategy:
A non-blocking receiver whose data is not due yet must not look readable, or a
selector loop would call it again at once. Linux honours SO_RCVLOWAT in poll and
epoll for TCP, and tcp_set_rcvlowat() signals EPOLLIN when lowering it makes the
socket readable (net/ipv4/tcp.c, Linux >= 4.18): raise it while the data waits,
lower it back when due, and the loop sleeps until then. Elsewhere (or when the
socket stays readable: half its buffer full, EOF, an error) the caller naps.
"""

from __future__ import annotations

import socket
import sys
import threading
import weakref

from sockwork.faults import kernel
from sockwork.faults.budget import INF, now, wake_waiters
from sockwork.faults.state import REGISTRY_LOCK, STATES, SocketState

__all__ = ["forget", "loud", "loud_all", "notify_changed", "quiet"]

_QUIETED: dict[int, tuple[weakref.ref[socket.socket], int, threading.Timer | None]] = {}
_RCVLOWAT_HIGH = 1 << 30  # the kernel caps it at half the receive buffer


def quiet(sock: socket.socket, state: SocketState, until: float) -> bool:
    """Hide ``sock``'s readability until ``until`` (inf: until the faults change)."""
    if not sys.platform.startswith("linux") or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    key = id(state)
    with REGISTRY_LOCK:
        entry = _QUIETED.get(key)
    if entry is None:
        try:
            original = int(kernel.getsockopt(sock, socket.SOL_SOCKET, socket.SO_RCVLOWAT))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, _RCVLOWAT_HIGH)
        except OSError:
            return False
    else:
        original = entry[1]
        if entry[2] is not None:
            entry[2].cancel()
    timer = None
    if until != INF:
        ref = weakref.ref(sock)

        def wake() -> None:
            target = ref()
            if target is not None:
                loud(target, state)

        timer = threading.Timer(max(0.0, until - now()), wake)
        timer.daemon = True
    with REGISTRY_LOCK:
        _QUIETED[key] = (weakref.ref(sock), original, timer)
    if timer is not None:
        timer.start()
    if kernel.wait_readable(sock, 0):  # still readable: hiding does not work here
        loud(sock, state)
        return False
    return True


def loud(sock: socket.socket, state: SocketState) -> None:
    """Undo :func:`quiet`: the socket reports readiness again (and wakes waiters)."""
    with REGISTRY_LOCK:
        entry = _QUIETED.pop(id(state), None)
    if entry is None:
        return
    if entry[2] is not None:
        entry[2].cancel()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, entry[1])
    except OSError:
        pass


def loud_all() -> None:
    """Undo :func:`quiet` on every socket (the faults changed: readiness may too)."""
    with REGISTRY_LOCK:
        entries = list(_QUIETED.items())
    for key, (ref, _, _) in entries:
        sock = ref()
        state = STATES.get(id(sock)) if sock is not None else None
        if sock is not None and state is not None and id(state) == key:
            loud(sock, state)
        else:
            with REGISTRY_LOCK:
                _QUIETED.pop(key, None)


def forget(state: SocketState) -> None:
    """Drop what :func:`quiet` keeps for ``state`` (its socket is closing)."""
    with REGISTRY_LOCK:
        entry = _QUIETED.pop(id(state), None)
    if entry is not None and entry[2] is not None:
        entry[2].cancel()


def notify_changed() -> None:
    """Wake every thread waiting on a fault, and every hidden receiver: the faults changed."""
    wake_waiters()
    loud_all()
