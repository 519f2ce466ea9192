"""Queue and memory accounting for the front ends (sans-IO: no sockets, threads or clocks).

:class:`MemoryBudget` bounds the receive memory of all the connections of one server:
each connection reserves what its decoder holds or has committed to (a large frame
counts at its announced size from its header on) and stops reading while its
reservation does not fit.
"""

# Rules:
# - A connection's charge is ``max(0, decoder.commitment - base)``: the first ``base``
#   bytes of each connection (its 64 KiB receive buffer) are free, so idle connections
#   never exhaust the budget and a small message can always be read.
# - Memory already allocated is always charged (it exists); what a large frame will still
#   allocate is charged only if it fits. A connection whose charge does not fit waits,
#   in FIFO order, and reads nothing meanwhile. A frame once reserved is never paused by
#   the budget, so reserved frames always finish and give their memory back: waiters
#   cannot deadlock each other.
# - Waiters are woken in order, and the first that still does not fit stops the wake-up
#   (no starvation of a large frame by a stream of small ones).

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

__all__ = ["DEFAULT_MAX_BUFFERED", "MemoryBudget"]

DEFAULT_MAX_BUFFERED: Final = 64 * 1024 * 1024
"""Default bound on the receive memory of all of a server's connections (64 MiB)."""


class MemoryBudget:
    """Bytes of receive memory shared by the connections of one server.

    Args:
        limit: bytes that the connections' charges may add up to.
        base: bytes of each connection that are not charged (its small receive buffer).
    """

    def __init__(self, limit: int, *, base: int) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"max_buffered must be an int >= 1 (bytes), not {limit!r}")
        self.limit: Final = limit
        self.base: Final = base
        self.used = 0
        # Waiting connections: a callable that retries and returns True once it fits.
        self._waiters: deque[Callable[[], bool]] = deque()
        self._waking = False

    def __repr__(self) -> str:
        return f"MemoryBudget(used={self.used}, limit={self.limit}, waiting={len(self._waiters)})"

    @property
    def waiting(self) -> int:
        """Connections that stopped reading until their reservation fits."""
        return len(self._waiters)

    def charge(
        self, held: int, *, waiting: bool, commitment: int, allocated: int
    ) -> tuple[int, bool]:
        """Move one connection's charge from ``held`` towards its decoder's needs.

        Args:
            held: what the connection is charged now.
            waiting: the connection already waits its turn (nothing new is reserved).
            commitment: the decoder's ``commitment`` (allocated + still to allocate).
            allocated: the decoder's ``capacity`` (allocated now).

        Returns:
            ``(new_charge, fits)``: when ``fits`` is False the connection must stop
            reading and :meth:`wait`.
        """
        target = commitment - self.base if commitment > self.base else 0
        if target <= held:
            if target < held:
                self.used -= held - target
                self._wake()
            return target, True
        if not waiting and self.used - held + target <= self.limit:
            self.used += target - held
            return target, True
        # What exists is charged anyway; the rest waits until it fits.
        floor = allocated - self.base if allocated > self.base else 0
        if floor > held:
            self.used += floor - held
            held = floor
        return held, False

    def release(self, held: int) -> None:
        """Give back a connection's whole charge (it closed)."""
        if held:
            self.used -= held
            self._wake()

    def wait(self, retry: Callable[[], bool]) -> None:
        """Queue ``retry``; it is called when memory frees, and returns True once it fits."""
        self._waiters.append(retry)

    def forget(self, retry: Callable[[], bool]) -> None:
        """Drop a waiter whose connection is gone."""
        try:
            self._waiters.remove(retry)
        except ValueError:
            pass
        self._wake()

    def _wake(self) -> None:
        if self._waking:  # a waiter's retry gave memory back: the running loop goes on
            return
        self._waking = True
        try:
            waiters = self._waiters
            while waiters and self.used < self.limit:
                if not waiters[0]():
                    return
                waiters.popleft()
        finally:
            self._waking = False
