"""poorconn's simulation functions and controllers, as a thin layer over sockwork.faults.

Each function turns its arguments into faults of :mod:`sockwork.faults` and
applies them with :func:`sockwork.faults.apply`; the engine does the waiting,
the chunking and the closing. What is left here is poorconn's shape: which
socket the faults go on, which controller is returned, and when "once" is over.

- ``delay_before_sending(s, t, length)`` = ``Latency(t)`` + ``Slice(length,
  min_bytes=length, delay=t)`` on the send direction: wait ``t`` before each
  call, pass at most ``length`` bytes at a time, ``t`` apart.
- ``delay_before_sending_once(s, t)`` = ``Latency(t)`` until the first sending
  call returns.
- ``close_upon_acceptance(s)`` = ``CloseOnAccept()`` on the listening socket.
- The ``*_upon_acceptance*`` variants apply the matching function to each
  connection ``s.accept()`` returns (a patchable copy), with the controller's
  values at that time.

Unlike poorconn, ``t`` and ``length`` are checked when given (also when set on a
controller), and the engine covers ``sendmsg`` and ``sendto`` and respects
socket timeouts.
"""

# Rules:
# - No waiting, slicing or closing here: only faults handed to the engine. A
#   controller's setters call Handle.update, so a new value applies to the next call.
# - poorconn has no undo, so each scope ends when its socket is closed: close() is
#   wrapped to remove the handle. That is why every function needs a patchable socket
#   (as poorconn's do): an instance attribute can only be set on one.
# - Wrappers installed here (close, the accept hook, the end of "once") call the
#   method that was in place, so they stack with each other and with the engine's
#   class-level dispatch.

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from sockwork.faults import (
    CloseOnAccept,
    Fault,
    Handle,
    Latency,
    PatchableSocket,
    Slice,
    apply,
    make_socket_patchable,
)

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
    "on_each_accept",
    "patched",
]

_SENDING = ("send", "sendall", "sendmsg", "sendto")

_F = TypeVar("_F", bound=Callable[..., object])


def _check_t(t: object) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"t must be a number of seconds, got {type(t).__name__} {t!r}")
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"t must be a finite number of seconds >= 0, got {t!r}")
    return float(t)


def _check_length(length: object) -> int:
    if isinstance(length, bool) or not isinstance(length, int):
        raise TypeError(
            f"length must be an int number of bytes, got {type(length).__name__} {length!r}"
        )
    if length < 1:
        raise ValueError(
            f"length must be at least 1 byte, got {length!r} (poorconn would send nothing "
            "or loop forever)"
        )
    return length


def _require_patchable(s: socket.socket, function: str) -> None:
    if not hasattr(s, "__dict__"):
        raise AttributeError(
            f"{function}() needs a patchable socket: call s = make_socket_patchable(s) first"
        )


def _then(method: _F, after: Callable[[], None]) -> _F:
    """Return ``method`` followed by ``after()``, also when it raises."""

    def call(*args: object, **kwargs: object) -> object:
        try:
            return method(*args, **kwargs)
        finally:
            after()

    return call  # type: ignore[return-value]


def _apply_until_closed(s: socket.socket, function: str, *faults: Fault) -> Handle:
    """Apply ``faults`` to the patchable socket ``s``; they are removed when it is closed."""
    _require_patchable(s, function)
    handle = apply(s, *faults)
    s.close = _then(s.close, handle.remove)  # type: ignore[method-assign]
    return handle


def _delays(t: float, length: int) -> tuple[Fault, ...]:
    # Latency: each call's first piece waits t; Slice: pieces of exactly `length`
    # bytes, t apart. Together: wait t before each length-byte chunk.
    return (
        Latency(t, direction="send"),
        Slice(length, min_bytes=length, delay=t, direction="send"),
    )


class DelayBeforeSendingController:
    """Controls :func:`delay_before_sending`: a new ``t`` or ``length`` applies to the next call."""

    def __init__(self, handle: Handle, t: float, length: int) -> None:
        self._handle = handle
        self._t = t
        self._length = length

    @property
    def t(self) -> float:
        """Seconds to wait before each chunk."""
        return self._t

    @t.setter
    def t(self, value: float) -> None:
        self._t = _check_t(value)
        self._handle.update(*_delays(self._t, self._length))

    @property
    def length(self) -> int:
        """Bytes per chunk (a ``send`` passes at most this many)."""
        return self._length

    @length.setter
    def length(self, value: int) -> None:
        self._length = _check_length(value)
        self._handle.update(*_delays(self._t, self._length))


def delay_before_sending(
    s: socket.socket, t: float, length: int = 1024
) -> DelayBeforeSendingController:
    """Wait ``t`` seconds before each ``length``-byte chunk ``s`` sends, until ``s`` is closed.

    ``send`` waits, then sends at most ``length`` bytes (a short write);
    ``sendall``, ``sendmsg`` and ``sendto`` wait before each chunk. ``s`` must be
    patchable (see :func:`make_socket_patchable`).

    Raises:
        ValueError: ``t`` is negative or not finite, or ``length`` is below 1.
        TypeError: ``t`` is not a number or ``length`` not an int.
        AttributeError: ``s`` is not patchable.
    """
    t = _check_t(t)
    length = _check_length(length)
    handle = _apply_until_closed(s, "delay_before_sending", *_delays(t, length))
    return DelayBeforeSendingController(handle, t, length)


class DelayBeforeSendingOnceController:
    """Controls :func:`delay_before_sending_once`: ``t`` is read at call time; reset() re-arms."""

    def __init__(self, handle: Handle, t: float) -> None:
        self._handle = handle
        self._t = t
        self._armed = True
        self._lock = threading.Lock()

    @property
    def t(self) -> float:
        """Seconds the first sending call waits."""
        return self._t

    @t.setter
    def t(self, value: float) -> None:
        with self._lock:
            self._t = _check_t(value)
            if self._armed:
                self._handle.update(Latency(self._t, direction="send"))

    def reset(self) -> None:
        """Make the next sending call wait ``t`` again."""
        with self._lock:
            self._armed = True
            self._handle.update(Latency(self._t, direction="send"))

    def _disarm(self) -> None:
        with self._lock:
            if self._armed:
                self._armed = False
                self._handle.update()


def delay_before_sending_once(s: socket.socket, t: float) -> DelayBeforeSendingOnceController:
    """Wait ``t`` seconds before the first sending call on ``s``, once; data is not chopped.

    ``s`` must be patchable (see :func:`make_socket_patchable`).

    Raises:
        ValueError: ``t`` is negative or not finite.
        TypeError: ``t`` is not a number.
        AttributeError: ``s`` is not patchable.
    """
    t = _check_t(t)
    handle = _apply_until_closed(s, "delay_before_sending_once", Latency(t, direction="send"))
    controller = DelayBeforeSendingOnceController(handle, t)
    # The engine has no "first call only" trigger: end the delay when a call returns.
    for name in _SENDING:
        setattr(s, name, _then(getattr(s, name), controller._disarm))
    return controller


def close_upon_acceptance(s: socket.socket) -> None:
    """Close every connection the listening socket ``s`` accepts, as soon as it arrives.

    Clients see their connect succeed, then EOF. Unlike poorconn, ``s.accept()``
    does not return the closed connection: it waits for the next one.

    Raises:
        AttributeError: ``s`` is not patchable.
    """
    _apply_until_closed(s, "close_upon_acceptance", CloseOnAccept())


class DelayBeforeSendingUponAcceptanceController:
    """Controls :func:`delay_before_sending_upon_acceptance`; values are read at each accept."""

    def __init__(self, t: float, length: int) -> None:
        self._t = t
        self._length = length

    @property
    def t(self) -> float:
        """Seconds each connection accepted from now on waits before each chunk."""
        return self._t

    @t.setter
    def t(self, value: float) -> None:
        self._t = _check_t(value)

    @property
    def length(self) -> int:
        """Bytes per chunk for connections accepted from now on."""
        return self._length

    @length.setter
    def length(self, value: int) -> None:
        self._length = _check_length(value)


def delay_before_sending_upon_acceptance(
    s: socket.socket, t: float, length: int = 1024
) -> DelayBeforeSendingUponAcceptanceController:
    """Apply :func:`delay_before_sending` to every connection the listening socket ``s`` accepts.

    ``s.accept()`` returns patchable connections; ``t`` and ``length`` are read from
    the controller at each accept.

    Raises:
        ValueError: ``t`` is negative or not finite, or ``length`` is below 1.
        TypeError: ``t`` is not a number or ``length`` not an int.
        AttributeError: ``s`` is not patchable.
    """
    controller = DelayBeforeSendingUponAcceptanceController(_check_t(t), _check_length(length))
    _require_patchable(s, "delay_before_sending_upon_acceptance")
    on_each_accept(s, lambda conn: delay_before_sending(conn, controller.t, controller.length))
    return controller


class DelayBeforeSendingUponAcceptanceOnceController:
    """Controls :func:`delay_before_sending_upon_acceptance_once`; ``t`` is read at each accept."""

    def __init__(self, t: float) -> None:
        self._t = t

    @property
    def t(self) -> float:
        """Seconds the first sending call of each connection accepted from now on waits."""
        return self._t

    @t.setter
    def t(self, value: float) -> None:
        self._t = _check_t(value)


def delay_before_sending_upon_acceptance_once(
    s: socket.socket, t: float
) -> DelayBeforeSendingUponAcceptanceOnceController:
    """Apply :func:`delay_before_sending_once` to every connection ``s`` accepts.

    Raises:
        ValueError: ``t`` is negative or not finite.
        TypeError: ``t`` is not a number.
        AttributeError: ``s`` is not patchable.
    """
    controller = DelayBeforeSendingUponAcceptanceOnceController(_check_t(t))
    _require_patchable(s, "delay_before_sending_upon_acceptance_once")
    on_each_accept(s, lambda conn: delay_before_sending_once(conn, controller.t))
    return controller


def on_each_accept(s: socket.socket, simulate: Callable[[socket.socket], object]) -> None:
    """Make ``s.accept()`` return patchable connections with ``simulate(conn)`` applied.

    ``s`` must be patchable. Used by the ``*_upon_acceptance*`` functions and the CLI.
    """
    accept = s.accept

    def accept_and_simulate() -> tuple[socket.socket, object]:
        conn, address = accept()
        try:
            conn = make_socket_patchable(conn)
            simulate(conn)
        except BaseException:
            conn.close()
            raise
        return conn, address

    s.accept = accept_and_simulate  # type: ignore[method-assign]


def patched(s: socket.socket, simulate: Callable[[socket.socket], object]) -> socket.socket:
    """Return ``make_socket_patchable(s)`` with ``simulate`` applied to it.

    If ``simulate`` raises, the patchable socket is closed (``s`` itself is detached
    by then), so nothing leaks. Used by the pytest fixture and the CLI.
    """
    s = make_socket_patchable(s)
    try:
        simulate(s)
    except BaseException:
        s.close()
        raise
    return s
