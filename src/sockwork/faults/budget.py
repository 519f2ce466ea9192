"""Time as the executor spends it: the clock, a caller's budget from the socket timeout.

# Rules:
- Blocking sockets wait in the calling thread, never past the socket's timeout: a
  wait that would end after it raises ``TimeoutError("timed out")``, as CPython does.
- Non-blocking sockets (timeout 0, asyncio) never wait: a call that is not due
  naps at most ``POLL_NAP`` (0.2 ms, to spare the CPU of a selector loop that
  calls again at once) and raises ``BlockingIOError``.
- Waiters sleep on ``CHANGED`` so that new faults (``Handle.update``/``remove``)
  and cuts wake them at once.
- An *endless* wait (a stalled stream, a connection attempt never answered) on a
  blocking socket with a timeout can only end in that timeout. While
  :func:`skipping_endless_waits` is on (exploration runs many schedules and must not
  sit out each timeout), it raises the timeout at once: the caller sees the same
  ``TimeoutError``, only sooner. Waits that end in a delivery are never shortened.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from sockwork.faults import kernel

__all__ = [
    "CHANGED",
    "INF",
    "POLL_NAP",
    "Budget",
    "now",
    "skipping_endless_waits",
    "sleep_until",
    "wake_waiters",
]

POLL_NAP = 0.0002
INF = float("inf")
CHANGED = threading.Condition()
_SKIPS = [0]  # > 0 while some caller asked endless waits to time out at once
_SKIPS_LOCK = threading.Lock()


@contextlib.contextmanager
def skipping_endless_waits() -> Iterator[None]:
    """Within the block, endless waits of sockets with a timeout time out at once."""
    with _SKIPS_LOCK:
        _SKIPS[0] += 1
    try:
        yield
    finally:
        with _SKIPS_LOCK:
            _SKIPS[0] -= 1


def now() -> float:
    """The executor's clock (``time.monotonic()``), the ``now`` every plan is fed."""
    return time.monotonic()


def wake_waiters() -> None:
    """Wake every thread waiting on a fault: the faults changed or a connection was cut."""
    with CHANGED:
        CHANGED.notify_all()


class Budget:
    """The caller's time budget, from the socket's timeout."""

    __slots__ = ("deadline", "nonblocking")

    def __init__(self, sock: socket.socket) -> None:
        timeout = sock.gettimeout()
        self.nonblocking = timeout == 0.0
        self.deadline = None if timeout is None else now() + timeout

    def wait(self, until: float, *, endless: bool = False) -> None:
        """Wait until ``until``; raise what a slow network would when the budget ends first.

        ``endless``: nothing will pass before the budget ends (a stall, an attempt
        never answered); see ``# Rules:`` for when it times out at once.
        """
        if (
            endless
            and _SKIPS[0]
            and self.deadline is not None
            and until > self.deadline
            and not self.nonblocking
        ):
            raise kernel.timeout_error()
        if self.nonblocking:
            if until > now():
                time.sleep(min(POLL_NAP, max(0.0, until - now())))
            if until > now():
                raise kernel.would_block()
            return
        end = until if self.deadline is None else min(until, self.deadline)
        start = now()
        if end > start:
            with CHANGED:
                CHANGED.wait(None if end == INF else end - start)
        if self.deadline is not None and now() >= self.deadline and until > self.deadline:
            raise kernel.timeout_error()

    def remaining(self, until: float | None = None) -> float | None:
        """Seconds left before the budget or ``until`` ends (None: no limit)."""
        ends = [t for t in (self.deadline, until) if t is not None]
        if not ends:
            return None
        return max(0.0, min(ends) - now())


def sleep_until(until: float) -> None:
    """Sleep in the calling thread until ``until`` (DNS look-ups have no socket timeout)."""
    while True:
        left = until - now()
        if left <= 0:
            return
        time.sleep(left)
