"""Shrinking: the smallest schedule that still fails.

:func:`shrink` takes a failing schedule and a predicate that reruns the test, and
returns a schedule with the fewest faults, then for each fault the earliest
connection, the smallest byte offset and the mildest parameters that still fail.

# Rules:
- Sans-IO: the predicate does the running; shrinking only proposes schedules.
- Every proposal is strictly simpler than the schedule it replaces (fewer faults,
  or a fault replaced by a simpler one by :func:`simpler`), so shrinking ends.
- At most ``budget`` proposals are tried; the best schedule found so far is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from sockwork.faults.exploration.schedule import Schedule
from sockwork.faults.vocabulary import (
    AcceptDelay,
    CloseAfter,
    CloseOnAccept,
    ConnectDelay,
    Fault,
    Latency,
    Slice,
    StreamFault,
)

__all__ = ["shrink", "simpler"]


def _smaller_ints(value: int) -> list[int]:
    """0, then halfway, then one less: a short descending search."""
    out = []
    for v in (0, value // 2, value - 1):
        if 0 <= v < value and v not in out:
            out.append(v)
    return out


def _replace(fault: Fault, **changes: object) -> Fault | None:
    try:
        return dataclasses.replace(fault, **changes)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def simpler(fault: Fault) -> Iterator[Fault]:
    """Yield faults simpler than ``fault``, most promising first.

    Simpler means: an earlier single connection; a smaller byte offset or count;
    FIN rather than RST; a shorter delay; one direction rather than both.
    """
    c = fault.connections
    if isinstance(c, frozenset) and len(c) == 1:
        (k,) = tuple(c)
        for earlier in range(1, k):
            f = _replace(fault, connections={earlier})
            if f is not None:
                yield f
    if isinstance(fault, StreamFault):
        if fault.direction == "both":
            for d in ("recv", "send"):
                f = _replace(fault, direction=d)
                if f is not None:
                    yield f
        for v in _smaller_ints(fault.after_bytes):
            f = _replace(fault, after_bytes=v)
            if f is not None:
                yield f
    if isinstance(fault, CloseAfter):
        if fault.reset:
            f = _replace(fault, reset=False)
            if f is not None:
                yield f
        for v in _smaller_ints(fault.bytes):
            f = _replace(fault, bytes=v)
            if f is not None:
                yield f
    if isinstance(fault, CloseOnAccept) and fault.reset:
        f = _replace(fault, reset=False)
        if f is not None:
            yield f
    if isinstance(fault, (Latency, ConnectDelay, AcceptDelay)):
        half = round(fault.seconds / 2, 3)
        if half >= 0.001:
            f = _replace(fault, seconds=half)
            if f is not None:
                yield f
    if isinstance(fault, Slice) and fault.after_bytes and fault.max_bytes > 1:
        # A split at an offset is milder than 1-byte pieces, but "Slice(1)" is the
        # plainer reproduction when it fails too.
        f = _replace(fault, max_bytes=1, after_bytes=0)
        if f is not None:
            yield f


def shrink(
    schedule: Schedule, still_fails: Callable[[Schedule], bool], *, budget: int = 100
) -> Schedule:
    """Return the simplest schedule found that still fails (``schedule`` itself at worst).

    Args:
        schedule: a schedule under which the test failed.
        still_fails: reruns the test under a proposal; True when it fails again.
        budget: the most proposals to try.
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    best = schedule
    tried: set[tuple[object, ...]] = {schedule.key()}
    left = budget

    def attempt(proposal: Schedule) -> bool:
        nonlocal left, best
        key = proposal.key()
        if key in tried or left <= 0:
            return False
        tried.add(key)
        left -= 1
        if still_fails(proposal):
            best = proposal
            return True
        return False

    # 1. Fewest faults: drop one at a time while that still fails.
    changed = True
    while changed and left > 0 and len(best.faults) > 1:
        changed = False
        for i in range(len(best.faults)):
            rest = best.faults[:i] + best.faults[i + 1 :]
            if attempt(best.with_faults(rest)):
                changed = True
                break
    # 2. Each fault, simpler: earliest connection, smallest offset, mildest parameters.
    changed = True
    while changed and left > 0:
        changed = False
        for i, fault in enumerate(best.faults):
            for option in simpler(fault):
                faults = best.faults[:i] + (option,) + best.faults[i + 1 :]
                if attempt(best.with_faults(faults)):
                    changed = True
                    break
            if changed:
                break
    return best
