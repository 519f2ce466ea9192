"""poorconn's simulation functions and controllers, with poorconn 0.2.1's exact semantics.

Each function replaces methods of one socket object (``send``/``sendall`` or
``accept``) with wrappers that wait, chop or close and then call what was there
before. That is poorconn's model, and code written for poorconn relies on it:

- the wait is a plain ``time.sleep`` in the calling thread, before the call: a
  socket timeout shorter than ``t`` does not turn it into ``TimeoutError``, and a
  non-blocking socket (or an asyncio loop) waits too;
- wrappers stack: two simulations on one socket add their delays, and a wrapper
  the application installed before (``s.send = my_send``) is delayed too;
- only ``send``, ``sendall`` and ``accept`` are touched (``sendmsg``, ``sendto``
  and ``recv*`` pass unchanged); on an ``SSLSocket``, whose ``sendall`` loops over
  ``self.send``, ``delay_before_sending`` delays each chunk twice;
- ``close_upon_acceptance`` makes ``accept()`` return the connection it has just
  shut down and closed;
- arguments are not checked: ``t < 0`` fails at send time (``time.sleep``), and
  ``length <= 0`` behaves as in poorconn.

The fault engine (:mod:`sockwork.faults`) does better on each point (timeouts,
asyncio, every sending method, TLS once per chunk, validation, undo); it is the
native API, and ``docs/compat-poorconn.md`` maps each function to it.
"""

# Rules:
# - Every wrapper is an instance attribute installed with setattr on the socket
#   object (so a plain socket.socket raises poorconn's AttributeError "...is read-only")
#   and calls the attribute it replaced, read at install time.
# - Controllers are read when a call happens (t, length) or, for the
#   *_upon_acceptance* functions, when a connection is accepted.
# - No other state lives here: nothing to undo, as in poorconn (the patches go
#   with the socket object).
# - Each function reads the methods it wraps (``s.accept``, ``s.send``...) before
#   it allocates anything else. poorconn's own suite checks that a method was
#   replaced with ``id(s.accept)`` before and after, and the "before" is a
#   temporary bound method, freed at once: the read here, a bound method of the
#   same size, then takes the freed block (pymalloc reuses the last freed block of
#   a size class first) and keeps it for the socket's lifetime, so neither the
#   wrapper nor a later temporary can get that address. Allocating the controller
#   first let a garbage collection run in between, after which the read could get
#   another block and the "after" the old address (a failure by allocation luck).

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from sockwork.faults.patch import PatchableSocket, make_socket_patchable

__all__ = [
    "DelayBeforeSendingController",
    "DelayBeforeSendingOnceController",
    "DelayBeforeSendingUponAcceptanceController",
    "DelayBeforeSendingUponAcceptanceOnceController",
    "PatchableSocket",
    "close_upon_acceptance",
    "delay_before_sending",
    "delay_before_sending_once",
    "delay_before_sending_upon_acceptance",
    "delay_before_sending_upon_acceptance_once",
    "make_socket_patchable",
]

_Accept = Callable[[], tuple[socket.socket, Any]]
_Data = bytes | bytearray | memoryview


def _install(s: socket.socket, name: str, wrapper: Callable[..., Any]) -> None:
    """Set ``wrapper`` as ``s.<name>`` (AttributeError on a socket without ``__dict__``)."""
    setattr(s, name, wrapper)


class DelayBeforeSendingController:
    """Controls :func:`delay_before_sending`: ``t`` and ``length`` are read at every call."""

    __slots__ = ("t", "length")

    def __init__(self, t: float, length: int) -> None:
        self.t = t
        self.length = length


def delay_before_sending(
    s: socket.socket, t: float, length: int = 1024
) -> DelayBeforeSendingController:
    """Wait ``t`` seconds before sending each ``length``-byte chunk on ``s``.

    ``s.send(data)`` sleeps ``t``, then sends at most ``length`` bytes and returns
    how many were sent (a short write). ``s.sendall(data)`` sleeps ``t`` before
    each ``length``-byte slice. ``s`` must be patchable (see
    :func:`make_socket_patchable`); the returned controller's ``t`` and ``length``
    can be changed at any time.

    Raises:
        AttributeError: ``s`` is a plain socket (its methods are read-only).
    """
    send = s.send  # first: see the rules at the top
    sendall = s.sendall
    controller = DelayBeforeSendingController(t, length)

    def delayed_send(data: _Data, *args: Any) -> int:
        time.sleep(controller.t)
        return send(data[: controller.length], *args)

    def delayed_sendall(data: _Data, *args: Any) -> None:
        t, step = controller.t, controller.length
        for start in range(0, len(data), step):
            time.sleep(t)
            sendall(data[start : start + step], *args)

    _install(s, "send", delayed_send)
    _install(s, "sendall", delayed_sendall)
    return controller


class DelayBeforeSendingOnceController:
    """Controls :func:`delay_before_sending_once`: ``t`` is read at call time; reset() re-arms."""

    __slots__ = ("t", "_first_time", "_lock")

    def __init__(self, t: float) -> None:
        self.t = t
        self._first_time = True
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Make the next ``send`` or ``sendall`` wait ``t`` again."""
        with self._lock:
            self._first_time = True

    def _use(self) -> bool:
        """True once after construction or :meth:`reset`: the caller must wait."""
        with self._lock:
            first, self._first_time = self._first_time, False
            return first


def delay_before_sending_once(s: socket.socket, t: float) -> DelayBeforeSendingOnceController:
    """Wait ``t`` seconds before the first ``send`` or ``sendall`` on ``s``; data is not chopped.

    ``s`` must be patchable (see :func:`make_socket_patchable`).

    Raises:
        AttributeError: ``s`` is a plain socket (its methods are read-only).
    """
    send, sendall = s.send, s.sendall  # first: see the rules at the top
    controller = DelayBeforeSendingOnceController(t)
    _install(s, "send", _waiting_once(send, controller))
    _install(s, "sendall", _waiting_once(sendall, controller))
    return controller


def _waiting_once(
    method: Callable[..., Any], controller: DelayBeforeSendingOnceController
) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if controller._use():
            time.sleep(controller.t)
        return method(*args, **kwargs)

    return call


def close_upon_acceptance(s: socket.socket) -> None:
    """Shut down and close every connection the listening socket ``s`` accepts.

    ``s.accept()`` returns ``(conn, address)`` as usual, but ``conn`` has been shut
    down and closed (``conn.fileno() == -1``); the client sees its connect
    succeed, then EOF (or a reset when it sends). ``s`` must be patchable.

    Raises:
        AttributeError: ``s`` is a plain socket (its methods are read-only).
    """
    accept: _Accept = s.accept  # first: see the rules at the top

    def accept_and_close() -> tuple[socket.socket, Any]:
        conn, address = accept()
        try:
            conn.shutdown(socket.SHUT_RDWR)
        finally:
            conn.close()
        return conn, address

    _install(s, "accept", accept_and_close)


class DelayBeforeSendingUponAcceptanceController:
    """Controls :func:`delay_before_sending_upon_acceptance`; read at each accept."""

    __slots__ = ("t", "length")

    def __init__(self, t: float, length: int) -> None:
        self.t = t
        self.length = length


def delay_before_sending_upon_acceptance(
    s: socket.socket, t: float, length: int = 1024
) -> DelayBeforeSendingUponAcceptanceController:
    """Apply :func:`delay_before_sending` to every connection the listening socket ``s`` accepts.

    ``s.accept()`` returns a patchable copy of each connection, delayed with the
    controller's ``t`` and ``length`` at the time of the accept (later changes
    affect later connections only). ``s`` must be patchable.

    Raises:
        AttributeError: ``s`` is a plain socket (its methods are read-only).
    """
    accept: _Accept = s.accept  # first: see the rules at the top
    controller = DelayBeforeSendingUponAcceptanceController(t, length)
    _on_each_accept(
        s, accept, lambda conn: delay_before_sending(conn, controller.t, controller.length)
    )
    return controller


class DelayBeforeSendingUponAcceptanceOnceController:
    """Controls :func:`delay_before_sending_upon_acceptance_once`; ``t`` is read at each accept."""

    __slots__ = ("t",)

    def __init__(self, t: float) -> None:
        self.t = t


def delay_before_sending_upon_acceptance_once(
    s: socket.socket, t: float
) -> DelayBeforeSendingUponAcceptanceOnceController:
    """Apply :func:`delay_before_sending_once` to every connection the listening ``s`` accepts.

    Each connection waits ``t`` (the controller's value at accept time) before its
    first ``send`` or ``sendall``. ``s`` must be patchable.

    Raises:
        AttributeError: ``s`` is a plain socket (its methods are read-only).
    """
    accept: _Accept = s.accept  # first: see the rules at the top
    controller = DelayBeforeSendingUponAcceptanceOnceController(t)
    _on_each_accept(s, accept, lambda conn: delay_before_sending_once(conn, controller.t))
    return controller


def _on_each_accept(
    s: socket.socket, accept: _Accept, simulate: Callable[[socket.socket], object]
) -> None:
    """Make ``s.accept()`` (``accept``, read first) return patchable copies with ``simulate``."""

    def accept_and_simulate() -> tuple[socket.socket, Any]:
        conn, address = accept()
        conn = make_socket_patchable(conn, (":sending",))
        simulate(conn)
        return conn, address

    _install(s, "accept", accept_and_simulate)
