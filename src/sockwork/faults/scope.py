"""The faults of one scope as the executor sees them: plan, lock, seed and sockets.

A :class:`~sockwork.faults.patch.Handle` (made by ``apply`` or ``inject``) wraps
one Scope; the executor modules (state, attempt, dispatch...) are given the Scope,
never the Handle, so they depend on this module and not on the public API above
them.
"""

# Rules:
# - The plan is not thread-safe: every call into it goes through open(), decide()
#   or forget(), or holds ``lock`` (state.SocketState does, around its streams).
# - Never call open(), decide() or forget() while holding state.REGISTRY_LOCK.

from __future__ import annotations

import random
import socket
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TypeVar

from sockwork.faults.budget import now
from sockwork.faults.plan import Connection, Observer, Plan
from sockwork.faults.vocabulary import Fault

__all__ = ["Scope"]

T = TypeVar("T")


class Scope:
    """One scope's plan, the lock that guards it, its seed and the sockets it is on.

    Attributes:
        seed: the seed of the plan's random generator.
        plan: the sans-IO :class:`~sockwork.faults.plan.Plan` (call it under ``lock``).
        lock: guards ``plan``.
        sockets: the sockets this scope has layers on (weakly held).
    """

    __slots__ = ("seed", "plan", "lock", "sockets", "__weakref__")

    def __init__(
        self, faults: Iterable[Fault], *, seed: int, observer: Observer | None = None
    ) -> None:
        self.seed = seed
        self.lock = threading.Lock()
        self.plan = Plan(faults, rng=random.Random(seed), now=now(), seed=seed, observer=observer)
        self.sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    def open(self, label: str) -> Connection:
        """Open the plan's connection for a socket that is connected now."""
        with self.lock:
            return self.plan.open(now=now(), label=label)

    def decide(self, call: Callable[[Plan, float], T], at: float) -> T:
        """Return ``call(plan, at)``, made under the lock (connect, accept, look-up)."""
        with self.lock:
            return call(self.plan, at)

    def forget(self, conns: Iterable[Connection]) -> None:
        """Close the plan's connections (their sockets closed or lost this scope)."""
        with self.lock:
            for conn in conns:
                conn.close()
