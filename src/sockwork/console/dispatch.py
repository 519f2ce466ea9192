"""One thread that waits for the input of every session and wakes their threads a few at a time.

A telnet session runs its program in a thread of its own (a ``cmd.Cmd`` blocks in
``input()``). When that thread needs bytes from its client it does not wait on its
socket itself: it hands the socket to the server's :class:`InputDispatcher` and
sleeps on a lock. The dispatcher waits for every such socket with one selector and
releases the threads whose socket is ready, at most ``limit`` of them at a time.
"""

# Strategy:
# - Why: CPython threads woken together all queue for the GIL, and each waiter wakes
#   every switch interval (5 ms) to ask for it. 8,000 session threads woken at once
#   (their clients all gone together) took 117 s of wall time and 134 s of CPU here
#   before they had all run (docs/benchmarks.md). A thread released by the dispatcher
#   acknowledges as soon as it runs (it holds the GIL then); no more than `limit`
#   released threads are unacknowledged at any time, so at most that many wait for the
#   GIL because of the dispatcher, whatever the number of sessions.
# - An idle session costs nothing: its socket sits in the selector, its thread in a
#   lock wait with its own timeout (the idle or first-line timeout); no thread wakes
#   until a byte, an end of stream or a timeout arrives.
# - Registration is one-shot: the dispatcher unregisters a socket before releasing its
#   thread, and a thread whose wait timed out unregisters it itself, under the
#   dispatcher's lock; a socket is never registered when its session closes it. A
#   release that crosses a timeout is consumed by the waiting thread (no lost wake-up).
# - epoll and kqueue take a registration made by another thread at once; with the
#   poll()/select() fallbacks the dispatcher is woken to pick it up.
# - stop() releases every waiting thread and makes later waits return at once: the
#   server stops it after its sessions, whose sockets are shut down by then (a read
#   returns end of stream).

from __future__ import annotations

import queue
import selectors
import socket
import threading
from dataclasses import dataclass, field

__all__ = ["InputDispatcher"]

_IMMEDIATE = (getattr(selectors, "EpollSelector", None), getattr(selectors, "KqueueSelector", None))


@dataclass(eq=False)
class _Waiter:
    """One thread's wait: a lock it sleeps on, released by the dispatcher."""

    lock: threading.Lock = field(default_factory=threading.Lock)


class InputDispatcher:
    """Wait for many sockets with one thread; wake their waiting threads a few at a time.

    Args:
        name: the thread's name.
        limit: released threads that may not have run yet (at least 1).

    Raises:
        ValueError: ``limit`` is below 1.
    """

    def __init__(self, name: str = "sockwork-console-input", *, limit: int = 16) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1 thread, got {limit!r}")
        self.limit = limit
        self._name = name
        self._lock = threading.Lock()  # _waiting and the selector's registrations
        self._waiting: dict[int, _Waiter] = {}
        # One token per thread that may be released and not have run yet: the
        # dispatcher takes one before releasing a thread, the thread puts it back as
        # soon as it runs. A C queue: no Python lock between the two sides.
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(limit):
            self._tokens.put(None)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._wake_on_register = False

    @property
    def waiting(self) -> int:
        """Threads waiting for their socket now."""
        with self._lock:
            return len(self._waiting)

    def start(self) -> None:
        """Start the thread (once)."""
        with self._lock:
            if self._thread is not None or self._stopping:
                raise RuntimeError("the input dispatcher is already started or stopped")
            self._selector = selectors.DefaultSelector()
            self._wake_on_register = not isinstance(
                self._selector, tuple(kind for kind in _IMMEDIATE if kind is not None)
            )
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._selector.register(self._wake_r, selectors.EVENT_READ)
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def wait(self, fileno: int, events: int, timeout: float | None) -> bool:
        """Wait until ``fileno`` is ready for ``events`` (selectors.EVENT_READ/WRITE).

        Returns:
            True when the socket is ready (a spurious True is possible: the caller
            reads or writes and finds out), False when ``timeout`` seconds passed.
            Before ``start()`` and after ``stop()`` the calling thread waits by itself.
        """
        waiter = _Waiter()
        waiter.lock.acquire()
        with self._lock:
            if self._stopping or self._selector is None:
                return _wait_alone(fileno, events, timeout)
            if fileno in self._waiting:
                raise RuntimeError(f"file descriptor {fileno} is already waited for")
            self._waiting[fileno] = waiter
            self._selector.register(fileno, events, waiter)
        if self._wake_on_register:
            self._wake()
        if waiter.lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._tokens.put(None)  # running: give the place back
            return True
        with self._lock:
            if self._waiting.get(fileno) is waiter:  # still registered: a real timeout
                del self._waiting[fileno]
                self._selector.unregister(fileno)
                return False
        # Taken by the dispatcher as the wait timed out: its release is on the way.
        waiter.lock.acquire()
        self._tokens.put(None)
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Release every waiting thread, make later waits return at once, end the thread."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._tokens.put(None)  # the dispatcher may be waiting for a place
        self._wake()
        if thread is not None:
            thread.join(timeout)

    def _wake(self) -> None:
        wake = self._wake_w
        if wake is None:
            return
        try:
            wake.send(b"x")
        except OSError:
            pass  # a wake-up is pending already (full), or the dispatcher is closed

    def _run(self) -> None:
        selector, wake_r = self._selector, self._wake_r
        assert selector is not None and wake_r is not None
        try:
            while not self._stopping:
                for key, _ in selector.select():
                    if key.fileobj is wake_r:
                        self._drain_wake(wake_r)
                        continue
                    with self._lock:
                        waiter = self._waiting.get(key.fd)
                        if waiter is None or waiter is not key.data:
                            continue  # that wait timed out (and maybe another began)
                        del self._waiting[key.fd]
                        selector.unregister(key.fd)
                    self._tokens.get()  # waits while `limit` released threads have not run
                    waiter.lock.release()
        finally:
            with self._lock:
                self._stopping = True
                for fileno, waiter in self._waiting.items():
                    selector.unregister(fileno)
                    waiter.lock.release()
                self._waiting.clear()
                selector.close()
                for sock in (self._wake_r, self._wake_w):
                    if sock is not None:
                        sock.close()

    @staticmethod
    def _drain_wake(wake_r: socket.socket) -> None:
        try:
            while wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass


def _wait_alone(fileno: int, events: int, timeout: float | None) -> bool:
    """Wait for one socket in the calling thread (no dispatcher running)."""
    with selectors.DefaultSelector() as selector:
        selector.register(fileno, events)
        return bool(selector.select(timeout))
