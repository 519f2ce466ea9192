"""Keep thousands of session threads that end at once from stampeding on the GIL.

One thread per session (docs/console.md, "Sessions and threads") costs nothing while
the sessions wait, but when thousands of them wake together (every client left at
once) they all queue for the GIL at the same moment. :class:`EndingSessions` counts
the sessions whose client left and, while a crowd of them is ending, lengthens the
interpreter's switch interval so that the queue stays cheap; its ``gate`` lets their
threads through one at a time.
"""

# Strategy:
# - Why: a CPython thread waiting for the GIL wakes every switch interval (5 ms by
#   default) to ask the holder to drop it (take_gil, CPython 3.11 to 3.13). N waiters
#   make N / interval wake-ups a second, all on the GIL's one mutex; past about 10^5 a
#   second, handing the GIL over costs milliseconds. Measured (docs/benchmarks.md,
#   Console, "Ending many sessions"): 2,000 clients leaving at once took 3.5 to 6.7 s
#   and 5 to 11 s of CPU to end, 11,000 took 50 s with a load average past 1,000, and
#   an operator's thread waited 3 to 5 s for the GIL meanwhile.
# - What: sessions report when their client hangs up (begin) and when their thread is
#   done (end). Sessions the server ends (close(), a kick) are not counted: it wakes
#   them one after the other and competes with them for the GIL, which paces it, and a
#   longer interval there only let the closing thread keep the GIL (measured slower).
#   While at least `crowd`
#   sessions are ending at once, the switch interval is raised to `per_thread` seconds
#   per live thread of the process (25 µs: at most 40,000 wake-ups a second however many
#   threads wait), between the interval in force and `ceiling`. Ending sessions only
#   run short stretches between blocking calls, so the GIL still changes hands at each
#   of them; the longer interval only delays taking it from a thread that computes.
# - The gate: an ending session's thread reads its end of stream holding `gate` (only
#   around a non-blocking recv(): nothing a client does can hold it). Threads woken
#   together then pass it one by one: each queues for the GIL once to reach the gate,
#   and the rest of the teardown is done by a handful at a time, so a thread that is
#   not ending (the operator's) waits behind a few of them, not thousands.
# - Restored when fewer than `crowd` are ending (hysteresis: a few sessions stuck in
#   their program's code do not keep it raised), and only if the interval is still the
#   one set here: code that changed it meanwhile keeps its own value.
# - Process-wide, one instance (ENDING) shared by every server; begin/end take a token
#   (the session) so that both are idempotent, and a lock. Nothing here blocks. The
#   caller makes sure that no begin() comes after the end() of the same session (the
#   Session checks under its lock), else the count would keep it forever.
# - Both transports count (telnet: a hang-up or end of input; SSH: the connection lost
#   or input ended, before the server ended the session). Only telnet threads take the
#   gate: an SSH thread waits on a condition that the one asyncio loop notifies, one
#   lost connection after another, not on a socket the kernel wakes with thousands of
#   others (docs/console.md, "Limits and known behaviour"; not measured for SSH).

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Hashable

__all__ = ["ENDING", "EndingSessions"]


class EndingSessions:
    """Count the sessions that are ending; lengthen the switch interval while many are.

    Args:
        crowd: sessions ending at once from which the interval is raised.
        per_thread: seconds of switch interval per live thread while raised.
        ceiling: the longest interval set.
        threads: how many threads the process has (``threading.active_count``).
        get_interval: reads the switch interval (``sys.getswitchinterval``).
        set_interval: sets it (``sys.setswitchinterval``).

    Raises:
        ValueError: ``crowd`` below 1, ``per_thread`` or ``ceiling`` not positive.
    """

    def __init__(
        self,
        *,
        crowd: int = 16,
        per_thread: float = 25e-6,
        ceiling: float = 0.5,
        threads: Callable[[], int] = threading.active_count,
        get_interval: Callable[[], float] = sys.getswitchinterval,
        set_interval: Callable[[float], None] = sys.setswitchinterval,
    ) -> None:
        if crowd < 1:
            raise ValueError(f"crowd must be >= 1 session, got {crowd!r}")
        if not per_thread > 0 or not ceiling > 0:
            raise ValueError(
                f"per_thread and ceiling must be > 0 seconds, got {per_thread!r}, {ceiling!r}"
            )
        self.crowd = crowd
        self.per_thread = per_thread
        self.ceiling = ceiling
        self._threads = threads
        self._get = get_interval
        self._set = set_interval
        self._lock = threading.Lock()
        self.gate = threading.Lock()
        """Held by an ending session's thread while it reads its end (see the strategy)."""
        self._ending: set[Hashable] = set()
        self._previous: float | None = None  # the interval to put back, while raised
        self._raised_to = 0.0

    @property
    def ending(self) -> int:
        """Sessions that began ending and whose thread is not done yet."""
        return len(self._ending)

    @property
    def raised(self) -> bool:
        """True while the switch interval is lengthened by this object."""
        return self._previous is not None

    def begin(self, session: Hashable) -> None:
        """``session`` is ending (its thread will wake and end): count it, once."""
        with self._lock:
            self._ending.add(session)
            if self._previous is None and len(self._ending) >= self.crowd:
                current = self._get()
                wanted = min(self.ceiling, self._threads() * self.per_thread)
                if wanted > current:
                    self._previous = current
                    self._set(wanted)
                    # Read back: the interpreter keeps whole microseconds.
                    self._raised_to = self._get()

    def end(self, session: Hashable) -> None:
        """The thread of ``session`` is done (a session never begun is ignored)."""
        with self._lock:
            self._ending.discard(session)
            if self._previous is not None and len(self._ending) < self.crowd:
                previous, self._previous = self._previous, None
                if self._get() == self._raised_to:  # else someone else set it since
                    self._set(previous)


ENDING = EndingSessions()
"""The process's one counter, shared by every console server."""
