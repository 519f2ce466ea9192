"""The one selector thread that drives every background :class:`~sockwork.frames.Endpoint`."""

# Strategy:
# - A process has at most one reactor thread ("sockwork-endpoints"). The first attach()
#   starts it; the release of the last attached connection stops it, so a process with no
#   open endpoint holds no thread and no selector.
# - Only the reactor thread touches the selector. Other threads ask for a change through
#   call_soon(), which queues a callable and wakes the thread with one byte on a
#   socketpair; wake-ups are coalesced (one byte until the thread has run the queue).
# - The thread never waits with a timeout: it wakes on readiness or on call_soon() only,
#   so an idle or back-pressured connection costs no CPU (Stockings defect 5).
# - Handlers run with no reactor lock held; they take their own connection's lock. Lock
#   order is always connection lock -> _registry_lock, never the reverse.
# - A handler that raises is a bug in sockwork: the error is handed back to that handler
#   (``_on_crash``) so its connection ends with the error, and the thread keeps serving the
#   others.

from __future__ import annotations

import os
import selectors
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

__all__ = ["Handler", "Reactor", "attach", "current_thread_count"]


class Handler(Protocol):
    """What the reactor calls back when a registered socket is ready."""

    def _on_events(self, events: int) -> None:
        """Handle readiness ``events`` (``selectors.EVENT_READ``/``EVENT_WRITE`` bits)."""

    def _on_crash(self, error: BaseException) -> None:
        """End the connection because ``_on_events`` raised ``error`` (a sockwork bug)."""


class Reactor:
    """A selector and the daemon thread that waits on it; use :func:`attach` to get one."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._wake_send.setblocking(False)
        self.selector.register(self._wake_recv, selectors.EVENT_READ, None)
        self._calls: deque[Callable[[], None]] = deque()
        self._woken = False
        self._calls_lock = threading.Lock()
        self._closed = False  # the wake-up sockets are closed; guarded by _calls_lock
        self.users = 0  # attached connections not yet released; guarded by _registry_lock
        self.stopping = False  # set under _registry_lock when users drops to 0
        # Daemon: a forgotten endpoint must not keep the interpreter alive; the atexit hook
        # in endpoint.py flushes open endpoints before daemon threads are frozen.
        self.thread = threading.Thread(target=self._run, name="sockwork-endpoints", daemon=True)

    def in_thread(self) -> bool:
        """Return True when called from this reactor's thread."""
        return threading.current_thread() is self.thread

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the reactor thread, after the current round of events."""
        with self._calls_lock:
            if self._closed:  # stopped: no endpoint of this reactor is left to serve
                return
            self._calls.append(callback)
            if self._woken:
                return
            self._woken = True
        try:
            self._wake_send.send(b"\0")
        except OSError:  # full of wake-ups (the thread will wake), or just stopped
            pass

    def detach(self) -> None:
        """Record that one attached connection is released; the last one stops the thread.

        Called in the reactor thread, from the connection's release.
        """
        global _current
        with _registry_lock:
            self.users -= 1
            if self.users == 0:
                self.stopping = True
                if _current is self:
                    _current = None

    def _run_calls(self) -> None:
        with self._calls_lock:
            calls = self._calls
            self._calls = deque()
            self._woken = False
        for callback in calls:
            callback()

    def _run(self) -> None:
        select = self.selector.select
        try:  # if this thread dies, the finally clause makes the next attach() start a new one
            while True:
                self._run_calls()
                if self.stopping:
                    break
                for key, events in select():
                    handler: Handler | None = key.data
                    if handler is None:
                        self._drain_wake()
                        continue
                    try:
                        handler._on_events(events)
                    except Exception as exc:  # a sockwork bug: end that connection, serve the rest
                        handler._on_crash(exc)
        finally:
            global _current
            with _registry_lock:
                self.stopping = True
                if _current is self:
                    _current = None
            with self._calls_lock:
                self._closed = True
                self._wake_send.close()
            self.selector.close()
            self._wake_recv.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_recv.recv(4096):
                pass
        except BlockingIOError:
            pass


_registry_lock = threading.Lock()
_current: Reactor | None = None


def attach() -> Reactor:
    """Return the process's running reactor (starting one if needed), counting one more user.

    The caller must eventually make the reactor thread call :meth:`Reactor.detach` once.
    """
    global _current
    with _registry_lock:
        reactor = _current
        if reactor is None:
            reactor = Reactor()
            reactor.thread.start()
            _current = reactor
        reactor.users += 1
        return reactor


def _forget_after_fork() -> None:
    # The child of a fork has none of the parent's threads: its first endpoint must start
    # a reactor of its own. Endpoints inherited from the parent are unusable there.
    global _current, _registry_lock
    _current = None
    _registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def current_thread_count() -> int:
    """Return how many reactor threads are alive (0 or 1; more would be a bug)."""
    return sum(1 for t in threading.enumerate() if t.name == "sockwork-endpoints")
