"""Faults injected into the sockets of one test, undone at the end, reported on failure.

:class:`NetFaults` is what the ``netfaults`` pytest fixture yields; it works
without pytest as a context manager::

    with NetFaults(seed=7) as net:
        net.inject(Latency(0.05), match=...)
        ...                      # every socket created in here is slowed down
    print(net.describe())        # the seed and what each fault did
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import ExitStack
from types import TracebackType
from typing import TYPE_CHECKING

from sockwork.faults import Fault, Handle, Match, Target, inject

if TYPE_CHECKING:
    from typing import Self

__all__ = ["NetFaults"]


class NetFaults:
    """A group of ``sockwork.faults.inject`` scopes that share one seed and end together.

    Each :meth:`inject` call opens a scope seeded from ``seed`` and its position
    (the first call uses ``seed`` itself), so a run with the same seed makes the
    same random choices. :meth:`close` (or leaving the ``with`` block) ends every
    scope, newest first, restoring the sockets.

    Args:
        seed: the seed the random choices of every scope derive from.
    """

    def __init__(self, *, seed: int) -> None:
        self.seed = seed
        self._stack = ExitStack()
        self._handles: list[Handle] = []
        self._closed = False

    @property
    def handles(self) -> tuple[Handle, ...]:
        """The handles of the scopes opened so far, oldest first."""
        return tuple(self._handles)

    def inject(
        self,
        *faults: Fault,
        match: Match | Callable[[Target], bool] | None = None,
        seed: int | None = None,
    ) -> Handle:
        """Start injecting ``faults`` (filtered by ``match``) until the end of the test.

        Returns the scope's handle: ``update(...)`` changes the faults,
        ``remove()`` ends the scope early, ``report`` says what they did.
        ``seed`` fixes this scope's seed (a reproduction printed by ``explore``);
        by default it derives from the run's seed.
        """
        if self._closed:
            raise RuntimeError("these netfaults are closed; inject() before the test ends")
        if seed is None:
            seed = (
                self.seed
                if not self._handles
                else random.Random(f"{self.seed}/{len(self._handles)}").randrange(2**32)
            )
        handle = self._stack.enter_context(inject(*faults, match=match, seed=seed))
        self._handles.append(handle)
        return handle

    def describe(self) -> str:
        """Return the seed, how to replay it, and the report of every scope."""
        lines = [f"seed {self.seed}: replay with --sockwork-seed={self.seed}"]
        if not self._handles:
            lines.append("no faults were injected")
        lines.extend(str(handle.report) for handle in self._handles)
        return "\n".join(lines)

    def close(self) -> None:
        """End every scope, newest first; the sockets behave normally again."""
        self._closed = True
        self._stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
