"""What each stream fault does to a stream: one state class a fault, fed by the stream.

# Rules:
- An effect belongs to one fault on one direction of one connection (made by
  :func:`effect_for` when the stream draws the fault). It keeps that fault's state
  (latency queue, token bucket, slice size, deadlines) and nothing else.
- It gives an opinion about the head of the stream: None (no constraint), an int (a
  cap on how many bytes may pass now), or an action (Wait, Read, Stalled, Close,
  Discard). :meth:`sockwork.faults.plan.Stream.next` combines the opinions; an effect
  never sees the others.
- An effect reads its stream (:class:`StreamView`) and never changes it. Randomness
  comes from the plan's ``random.Random`` only; ``Bandwidth`` faults with a ``group``
  share the plan's :class:`Bucket` of that name.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Protocol

from sockwork.faults.action import Close, Discard, Read, Stalled, Wait
from sockwork.faults.vocabulary import (
    Bandwidth,
    Blackhole,
    CloseAfter,
    Coalesce,
    HalfClose,
    Latency,
    ResetPeer,
    Slice,
    SlowClose,
    Stall,
    StreamFault,
    Timeout,
)

__all__ = ["Bucket", "ConnectionView", "Effect", "StreamView", "effect_for"]


class ConnectionView(Protocol):
    """What an effect reads of its connection."""

    @property
    def opened(self) -> float:
        """When the connection opened (the plan's clock)."""


class StreamView(Protocol):
    """What an effect reads of its stream (:class:`sockwork.faults.plan.Stream` is one)."""

    @property
    def conn(self) -> ConnectionView:
        """The connection of the stream."""

    @property
    def offset(self) -> int:
        """Bytes passed (delivered or discarded)."""

    @property
    def pending(self) -> int:
        """Bytes fed and not passed."""

    @property
    def eof(self) -> bool:
        """True once the source ended."""

    @property
    def eof_at(self) -> float | None:
        """When the source ended, if it did."""

    @property
    def head_arrival(self) -> float:
        """When the oldest pending byte was fed (``inf`` when nothing is pending)."""


class Bucket:
    """A token bucket: the time when the next byte may pass."""

    __slots__ = ("free_at",)

    def __init__(self) -> None:
        self.free_at = float("-inf")


_Opinion = int | Wait | Read | Stalled | Close | Discard | None


class Effect:
    """What one stream fault does to one stream: its state, and its opinion on the head.

    The base class has no effect (a user's subclass of ``StreamFault`` gets it). A fault
    becomes active once ``after_bytes`` have passed and ``after_seconds`` have gone by
    since the connection opened; the hooks are called only while it is active.
    """

    def __init__(
        self, fault: StreamFault, stream: StreamView, rng: random.Random, buckets: dict[str, Bucket]
    ) -> None:
        self.fault = fault
        self.stream = stream
        self.rng = rng
        self.start_offset: int | None = None  # offset at activation
        self.reported = False
        self.setup(buckets)

    def setup(self, buckets: dict[str, Bucket]) -> None:
        """Hook: make the fault's own state (``buckets``: the plan's shared budgets)."""

    def active(self, now: float) -> bool:
        """True once the fault is active; activates it (once) when its time has come."""
        if self.start_offset is not None:
            return True
        s = self.stream
        if s.offset >= self.fault.after_bytes and now >= s.conn.opened + self.fault.after_seconds:
            self.start_offset = s.offset
            self.activated(now)
            return True
        return False

    def would_start(self, now: float) -> int | None:
        """The offset the fault started (or would start) at by ``now``; pure."""
        if self.start_offset is not None:
            return self.start_offset
        s = self.stream
        if s.offset >= self.fault.after_bytes and now >= s.conn.opened + self.fault.after_seconds:
            return s.offset
        return None

    def activated(self, now: float) -> None:
        """Hook: the fault just became active."""

    def opinion(self, now: float) -> _Opinion:
        """The fault's say about the head of the stream now (see ``# Rules:``)."""
        return None

    def fed(self, n: int, now: float) -> None:
        """Hook: n bytes were fed (only called while active)."""

    def passed(self, n: int, now: float) -> None:
        """Hook: n bytes passed (only called while active)."""

    def unfed(self) -> None:
        """Hook: the pending bytes were taken back."""

    def closes(self, now: float) -> bool:
        """Hook: True when the fault would end the stream now, bytes or not (pure)."""
        return False


class _LatencyEffect(Effect):
    fault: Latency

    def setup(self, buckets: dict[str, Bucket]) -> None:
        self.due: deque[list[float]] = deque()  # [remaining bytes, due time]
        self.last_due = float("-inf")

    def fed(self, n: int, now: float) -> None:
        f = self.fault
        delay = f.seconds
        if f.jitter:
            delay = max(0.0, delay + self.rng.uniform(-f.jitter, f.jitter))
        due = max(now + delay, self.last_due)  # FIFO: never overtake an earlier chunk
        self.last_due = due
        self.due.append([float(n), due])

    def opinion(self, now: float) -> _Opinion:
        if not self.due:
            return None
        remaining, due = self.due[0]
        if due > now:
            return Wait(due)
        return int(remaining)

    def passed(self, n: int, now: float) -> None:
        while n > 0 and self.due:
            head = self.due[0]
            take = min(n, int(head[0]))
            head[0] -= take
            n -= take
            if head[0] <= 0:
                self.due.popleft()

    def unfed(self) -> None:
        self.due.clear()


class _BandwidthEffect(Effect):
    fault: Bandwidth

    def setup(self, buckets: dict[str, Bucket]) -> None:
        group = self.fault.group
        if group is None:
            self.bucket = Bucket()
        else:
            bucket = buckets.get(group)
            if bucket is None:
                bucket = buckets[group] = Bucket()
            self.bucket = bucket
        self.slice = max(1, int(self.fault.bytes_per_second / 20))

    def opinion(self, now: float) -> _Opinion:
        if self.bucket.free_at > now:
            return Wait(self.bucket.free_at)
        return self.slice

    def passed(self, n: int, now: float) -> None:
        b = self.bucket
        b.free_at = max(b.free_at, now) + n / self.fault.bytes_per_second


class _SliceEffect(Effect):
    fault: Slice

    def setup(self, buckets: dict[str, Bucket]) -> None:
        self.piece = 0
        self.next_at = float("-inf")

    def opinion(self, now: float) -> _Opinion:
        if self.next_at > now:
            return Wait(self.next_at)
        if self.piece <= 0:
            f = self.fault
            self.piece = self.rng.randint(f.min_bytes, f.max_bytes)
        return self.piece

    def passed(self, n: int, now: float) -> None:
        self.piece -= n
        if self.piece <= 0:
            self.piece = 0
            if self.fault.delay:
                self.next_at = now + self.fault.delay

    def unfed(self) -> None:
        self.piece = 0


class _CoalesceEffect(Effect):
    fault: Coalesce

    def opinion(self, now: float) -> _Opinion:
        s = self.stream
        if s.pending == 0:
            return None
        if s.pending < self.fault.max_bytes and not s.eof:
            until = s.head_arrival + self.fault.window
            if until > now:
                return Wait(until)
        return self.fault.max_bytes


class _CloseAfterEffect(Effect):
    fault: CloseAfter

    def opinion(self, now: float) -> _Opinion:
        assert self.start_offset is not None
        left = self.fault.bytes - (self.stream.offset - self.start_offset)
        if left <= 0:
            return Close(self.fault.reset)
        return left


class _HalfCloseEffect(Effect):
    fault: HalfClose

    def opinion(self, now: float) -> _Opinion:
        assert self.start_offset is not None
        left = self.fault.bytes - (self.stream.offset - self.start_offset)
        if left <= 0:
            return Close(half=True)
        return left

    def closes(self, now: float) -> bool:
        start = self.would_start(now)
        return start is not None and self.stream.offset - start >= self.fault.bytes


class _StallEffect(Effect):
    def opinion(self, now: float) -> _Opinion:
        return Stalled()


class _BlackholeEffect(Effect):
    def opinion(self, now: float) -> _Opinion:
        pending = self.stream.pending
        return Discard(pending) if pending else None


class _TimeoutEffect(Effect):
    fault: Timeout

    def setup(self, buckets: dict[str, Bucket]) -> None:
        self.deadline = float("inf")

    def activated(self, now: float) -> None:
        if self.fault.seconds > 0:
            self.deadline = now + self.fault.seconds

    def fed(self, n: int, now: float) -> None:
        if self.fault.seconds > 0:
            self.deadline = now + self.fault.seconds

    def opinion(self, now: float) -> _Opinion:
        if now >= self.deadline:
            return Close(self.fault.reset)
        pending = self.stream.pending
        if pending:
            return Discard(pending)
        return Read(None, None if self.deadline == float("inf") else self.deadline)


class _ResetPeerEffect(Effect):
    fault: ResetPeer

    def setup(self, buckets: dict[str, Bucket]) -> None:
        self.reset_at: float | None = None

    def fed(self, n: int, now: float) -> None:
        if self.reset_at is None:
            self.reset_at = now + self.fault.seconds

    def opinion(self, now: float) -> _Opinion:
        if self.reset_at is None:
            return None
        if now >= self.reset_at:
            return Close(True)
        pending = self.stream.pending
        if pending:
            return Discard(pending)
        return Wait(self.reset_at)


class _SlowCloseEffect(Effect):
    fault: SlowClose

    def opinion(self, now: float) -> _Opinion:
        s = self.stream
        if s.eof_at is None or s.pending:
            return None
        until = s.eof_at + self.fault.seconds
        return Wait(until) if until > now else None


_EFFECTS: dict[type[StreamFault], type[Effect]] = {
    Latency: _LatencyEffect,
    Bandwidth: _BandwidthEffect,
    Slice: _SliceEffect,
    Coalesce: _CoalesceEffect,
    CloseAfter: _CloseAfterEffect,
    HalfClose: _HalfCloseEffect,
    Stall: _StallEffect,
    Blackhole: _BlackholeEffect,
    Timeout: _TimeoutEffect,
    ResetPeer: _ResetPeerEffect,
    SlowClose: _SlowCloseEffect,
}


def effect_for(
    fault: StreamFault, stream: StreamView, rng: random.Random, buckets: dict[str, Bucket]
) -> Effect:
    """Return the state of ``fault`` on ``stream`` (``buckets``: the plan's shared budgets)."""
    for cls in type(fault).__mro__:
        effect = _EFFECTS.get(cls)
        if effect is not None:
            return effect(fault, stream, rng, buckets)
    # An unknown stream fault (a user subclass of StreamFault): no effect.
    return Effect(fault, stream, rng, buckets)
