"""Properties of the plan under random faults and chunkings (Hypothesis)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sockwork.faults.plan import Close, Deliver, Discard, Plan, Read, Stalled, Wait
from sockwork.faults.vocabulary import (
    Bandwidth,
    Blackhole,
    CloseAfter,
    Coalesce,
    Fault,
    Latency,
    Slice,
    SlowClose,
    Stall,
)

stream_faults = st.one_of(
    st.builds(Latency, st.floats(0, 1), jitter=st.floats(0, 0.5)),
    st.builds(Bandwidth, st.floats(10, 1e6)),
    st.builds(
        lambda hi, lo: Slice(hi, min_bytes=min(lo, hi)), st.integers(1, 100), st.integers(1, 100)
    ),
    st.builds(Coalesce, window=st.floats(0, 0.1)),
    st.builds(CloseAfter, st.integers(0, 500), reset=st.booleans()),
    st.builds(SlowClose, st.floats(0, 1)),
    st.builds(Stall, after_bytes=st.integers(0, 500)),
    st.builds(Blackhole, after_bytes=st.integers(0, 500)),
)


def drive(faults: list[Fault], chunks: list[int], seed: int) -> list[tuple[str, int, float]]:
    """Feed chunks one by one and run the stream; return what happened, in order."""
    stream = Plan(faults, rng=random.Random(seed), now=0.0).open(now=0.0).send
    now = 0.0
    log: list[tuple[str, int, float]] = []
    queue = list(chunks)
    for _ in range(100_000):
        action = stream.next(now)
        if isinstance(action, Read):
            if not queue:
                if stream.eof:
                    break
                stream.feed_eof(now)
                continue
            stream.feed(queue.pop(0), now)
        elif isinstance(action, Wait):
            assert action.until > now
            now = action.until
        elif isinstance(action, (Deliver, Discard)):
            assert 1 <= action.n <= stream.pending
            log.append((type(action).__name__, action.n, now))
            stream.passed(action.n, now)
        elif isinstance(action, Close):
            log.append(("Close", int(action.reset), now))
            break
        else:
            assert isinstance(action, Stalled)
            log.append(("Stalled", stream.pending, now))
            break
    else:
        raise AssertionError("the stream never settled")
    return log


@settings(max_examples=150, deadline=None)
@given(
    st.lists(stream_faults, max_size=3),
    st.lists(st.integers(1, 300), max_size=8),
    st.integers(0, 2**32),
)
def test_plan_properties_bytes_are_conserved_and_replayable(
    faults: list[Fault], chunks: list[int], seed: int
) -> None:
    log = drive(faults, chunks, seed)
    assert log == drive(faults, chunks, seed)  # the same seed replays the same run
    moved = sum(n for kind, n, _ in log if kind in ("Deliver", "Discard"))
    assert moved <= sum(chunks)
    times = [t for _, _, t in log]
    assert times == sorted(times)  # time only moves forward
    ends = [kind for kind, _, _ in log if kind in ("Close", "Stalled")]
    if not ends:
        raise AssertionError("a finished stream ends with a Close (the forwarded EOF)")
    if ends == ["Close"] and not any(isinstance(f, (CloseAfter, Stall)) for f in faults):
        assert moved == sum(chunks)  # nothing is lost unless a fault cuts or stalls
    for f in faults:
        if isinstance(f, Slice) and not any(isinstance(g, Blackhole) for g in faults):
            assert all(n <= f.max_bytes for kind, n, _ in log if kind == "Deliver")
        if isinstance(f, CloseAfter):
            assert moved <= f.bytes
