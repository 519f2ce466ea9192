"""Hypothesis strategies for fault schedules and chunkings.

This module needs Hypothesis (``pip install hypothesis``, part of sockwork's
``test`` extra); sockwork itself does not depend on it, and neither
``sockwork.testing`` nor the pytest plugin imports this module.

- :func:`chunkings` splits a payload into the chunks a reader may see (short
  reads) or a writer may hand to ``send`` (short writes).
- :func:`faults` draws one fault of the vocabulary with small, valid parameters;
  :func:`fault_schedules` draws a tuple of them with triggers (``after_bytes``,
  ``after_seconds``, ``connections``), ready for ``sockwork.faults.inject``.
- :func:`seeds` draws a seed for the injector's random choices.

Every duration is bounded by ``max_seconds`` so a property test stays fast, and
faults that only end through a socket timeout (``Stall``, ``Blackhole``,
``Timeout`` with ``seconds=0``, ``ConnectTimeout``) are drawn only when asked for
in ``kinds``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - hypothesis is in the test extra
    raise ImportError(
        "sockwork.testing.strategies needs Hypothesis: pip install hypothesis (or sockwork[test])"
    ) from exc

from sockwork.faults import (
    AcceptDelay,
    Bandwidth,
    Blackhole,
    CloseAfter,
    CloseOnAccept,
    Coalesce,
    ConnectDelay,
    ConnectTimeout,
    DnsFailure,
    Fault,
    HalfClose,
    Latency,
    Refuse,
    ResetPeer,
    Slice,
    SlowClose,
    Stall,
    Timeout,
)

__all__ = [
    "HANGING_KINDS",
    "TERMINATING_KINDS",
    "chunk_sizes",
    "chunkings",
    "fault_schedules",
    "faults",
    "seeds",
]

TERMINATING_KINDS: tuple[type[Fault], ...] = (
    Latency,
    Bandwidth,
    Slice,
    Coalesce,
    CloseAfter,
    HalfClose,
    ResetPeer,
    SlowClose,
    Refuse,
    ConnectDelay,
    AcceptDelay,
    CloseOnAccept,
    DnsFailure,
)
"""Fault kinds that let every operation end without a socket timeout (the default)."""

HANGING_KINDS: tuple[type[Fault], ...] = (Stall, Blackhole, Timeout, ConnectTimeout)
"""Fault kinds after which an operation ends only through a socket timeout."""


def chunk_sizes(*, min_size: int = 1, max_size: int = 65536) -> st.SearchStrategy[int]:
    """Draw a chunk size in ``min_size..max_size``, shrinking towards 1-byte chunks."""
    if min_size < 1 or max_size < min_size:
        raise ValueError(f"chunk_sizes: need 1 <= min_size <= max_size, got {min_size}..{max_size}")
    return st.integers(min_value=min_size, max_value=max_size)


def chunkings(data: bytes, *, max_chunks: int | None = None) -> st.SearchStrategy[list[bytes]]:
    """Draw a split of ``data`` into non-empty chunks whose concatenation is ``data``.

    Shrinks towards fewer chunks (the whole payload at once). ``b""`` gives ``[]``.

    Args:
        data: the payload to split.
        max_chunks: at most this many chunks (default: one per byte).
    """
    if max_chunks is not None and max_chunks < 1:
        raise ValueError(f"chunkings: max_chunks must be >= 1, got {max_chunks}")
    if not data:
        return st.just([])
    limit = len(data) - 1 if max_chunks is None else min(len(data) - 1, max_chunks - 1)
    if limit == 0:
        return st.just([bytes(data)])
    cuts = st.sets(st.integers(min_value=1, max_value=len(data) - 1), max_size=limit)

    def split(points: set[int]) -> list[bytes]:
        edges = [0, *sorted(points), len(data)]
        return [bytes(data[a:b]) for a, b in pairwise(edges)]

    return cuts.map(split)


def seeds() -> st.SearchStrategy[int]:
    """Draw a seed for the injector's random generator (32-bit, like ``--sockwork-seed``)."""
    return st.integers(min_value=0, max_value=2**32 - 1)


def faults(
    *,
    kinds: Sequence[type[Fault]] = TERMINATING_KINDS,
    max_seconds: float = 0.05,
    max_bytes: int = 4096,
    directions: Sequence[str] = ("send", "recv", "both"),
    triggers: bool = False,
) -> st.SearchStrategy[Fault]:
    """Draw one fault of the given ``kinds`` with valid, small parameters.

    Args:
        kinds: fault classes to draw from (default: those that always terminate).
        max_seconds: upper bound of every duration (latency, delays, jitter...).
        max_bytes: upper bound of byte counts (slice sizes, ``CloseAfter.bytes``...).
        directions: directions stream faults may take.
        triggers: also draw ``probability``, ``connections``, ``after_seconds`` and
            ``after_bytes`` (otherwise they keep their defaults: always active).
    """
    if not kinds:
        raise ValueError("faults: kinds must name at least one fault class")
    if max_seconds < 0 or max_bytes < 1:
        raise ValueError(
            f"faults: need max_seconds >= 0 and max_bytes >= 1, got {max_seconds}, {max_bytes}"
        )
    unknown = [k.__name__ for k in kinds if k not in _BUILDERS]
    if unknown:
        raise ValueError(f"faults: no strategy for {', '.join(unknown)}")
    bounds = _Bounds(
        seconds=st.floats(min_value=0.0, max_value=max_seconds, allow_nan=False),
        sizes=st.integers(min_value=1, max_value=max_bytes),
        direction=st.sampled_from(list(directions)),
        triggers=triggers,
        max_seconds=max_seconds,
        max_bytes=max_bytes,
    )
    return st.one_of([_BUILDERS[k](bounds) for k in kinds])


def fault_schedules(
    *,
    kinds: Sequence[type[Fault]] = TERMINATING_KINDS,
    max_faults: int = 3,
    max_seconds: float = 0.05,
    max_bytes: int = 4096,
    directions: Sequence[str] = ("send", "recv", "both"),
) -> st.SearchStrategy[tuple[Fault, ...]]:
    """Draw a schedule: up to ``max_faults`` faults, each with its own triggers.

    Triggers (``after_bytes``, ``after_seconds``, ``connections``, ``probability``)
    decide when each fault starts, so together they describe a sequence of network
    conditions. Shrinks towards fewer, simpler faults. Arguments as for :func:`faults`.
    """
    if max_faults < 0:
        raise ValueError(f"fault_schedules: max_faults must be >= 0, got {max_faults}")
    one = faults(
        kinds=kinds,
        max_seconds=max_seconds,
        max_bytes=max_bytes,
        directions=directions,
        triggers=True,
    )
    return st.lists(one, max_size=max_faults).map(tuple)


@dataclass(frozen=True)
class _Bounds:
    """The bounded strategies one call of :func:`faults` builds every fault from."""

    seconds: st.SearchStrategy[float]
    sizes: st.SearchStrategy[int]
    direction: st.SearchStrategy[str]
    triggers: bool
    max_seconds: float
    max_bytes: int

    def options(self) -> dict[str, st.SearchStrategy[object]]:
        """Strategies for the options every fault has (empty: keep the defaults)."""
        if not self.triggers:
            return {}
        return {
            "probability": st.sampled_from([1.0, 0.5, 0.0]),
            "connections": st.none() | st.integers(min_value=1, max_value=3),
            "after_seconds": st.just(0.0) | st.floats(min_value=0.0, max_value=self.max_seconds),
        }

    def stream(self) -> dict[str, st.SearchStrategy[object]]:
        """Strategies for the options of stream faults: direction and triggers."""
        options = {"direction": self.direction, **self.options()}
        if self.triggers:
            options["after_bytes"] = st.integers(min_value=0, max_value=self.max_bytes)
        return options


@st.composite
def _slice(draw: st.DrawFn, bounds: _Bounds) -> Fault:
    high = draw(bounds.sizes)
    low = draw(st.integers(min_value=1, max_value=high))
    return draw(
        st.builds(
            Slice,
            st.just(high),
            min_bytes=st.just(low),
            delay=st.just(0.0) | bounds.seconds,
            **bounds.stream(),
        )
    )


_BUILDERS: dict[type[Fault], Callable[[_Bounds], st.SearchStrategy[Fault]]] = {
    Latency: lambda b: st.builds(Latency, b.seconds, jitter=st.just(0.0) | b.seconds, **b.stream()),
    # At least 16 KiB/s, so a few KiB pass within a fraction of a second.
    Bandwidth: lambda b: st.builds(
        Bandwidth, st.floats(min_value=16384.0, max_value=1e8), **b.stream()
    ),
    Slice: _slice,
    Coalesce: lambda b: st.builds(Coalesce, window=b.seconds, max_bytes=b.sizes, **b.stream()),
    CloseAfter: lambda b: st.builds(
        CloseAfter,
        st.integers(min_value=0, max_value=b.max_bytes),
        reset=st.booleans(),
        **b.stream(),
    ),
    HalfClose: lambda b: st.builds(
        HalfClose, st.integers(min_value=0, max_value=b.max_bytes), **b.stream()
    ),
    ResetPeer: lambda b: st.builds(ResetPeer, b.seconds, **b.stream()),
    SlowClose: lambda b: st.builds(SlowClose, b.seconds, **b.stream()),
    Stall: lambda b: st.builds(Stall, **b.stream()),
    Blackhole: lambda b: st.builds(Blackhole, **b.stream()),
    Timeout: lambda b: st.builds(Timeout, b.seconds, reset=st.booleans(), **b.stream()),
    Refuse: lambda b: st.builds(Refuse, **b.options()),
    ConnectDelay: lambda b: st.builds(ConnectDelay, b.seconds, **b.options()),
    ConnectTimeout: lambda b: st.builds(ConnectTimeout, kernel_timeout=b.seconds, **b.options()),
    AcceptDelay: lambda b: st.builds(AcceptDelay, b.seconds, **b.options()),
    CloseOnAccept: lambda b: st.builds(CloseOnAccept, reset=st.booleans(), **b.options()),
    DnsFailure: lambda b: st.builds(
        DnsFailure, st.sampled_from(["noname", "again"]), delay=b.seconds, **b.options()
    ),
}
