from __future__ import annotations

import itertools

import pytest

from sockwork.faults import (
    CloseAfter,
    CloseOnAccept,
    ConnectTimeout,
    DnsFailure,
    Latency,
    Refuse,
    Slice,
    Stall,
)
from sockwork.faults.exploration.candidates import EXPLORED_KINDS, candidates, singles
from sockwork.faults.exploration.trace import Trace, TraceEvent


def _client_trace(*, resolve: bool = False, timeout: float | None = 2.0) -> Trace:
    """A client alone (its server elsewhere): sends 4+12 bytes, reads 4+12."""
    events = []
    if resolve:
        events.append(TraceEvent(kind="resolve", time=0.0, index=1, host="db.local", outcome="ok"))
    events += [
        TraceEvent(kind="connect", time=0.0, index=1, role="client", outcome="ok"),
        TraceEvent(kind="open", time=0.0, index=1, role="client"),
        TraceEvent(kind="send", time=0.0, index=1, role="client", size=4, timeout=timeout),
        TraceEvent(
            kind="send", time=0.0, index=1, role="client", offset=4, size=12, timeout=timeout
        ),
        TraceEvent(kind="recv", time=0.0, index=1, role="client", size=4, timeout=timeout),
        TraceEvent(
            kind="recv", time=0.0, index=1, role="client", offset=4, size=12, timeout=timeout
        ),
        TraceEvent(kind="close", time=0.0, index=1, role="client"),
    ]
    return Trace(tuple(events), duration=0.01)


def _both_ends_trace() -> Trace:
    """Client and server in one process; the server's connection opened first."""
    return Trace(
        (
            TraceEvent(kind="connect", time=0.0, index=1, role="client", outcome="ok"),
            TraceEvent(kind="accept", time=0.0, index=1, role="server", outcome="ok"),
            TraceEvent(kind="open", time=0.0, index=1, role="server"),
            TraceEvent(kind="open", time=0.0, index=2, role="client"),
            TraceEvent(kind="send", time=0.0, index=2, role="client", size=16),
            TraceEvent(kind="recv", time=0.0, index=1, role="server", size=16),
            TraceEvent(kind="send", time=0.0, index=1, role="server", size=16),
            TraceEvent(kind="recv", time=0.0, index=2, role="client", size=16),
        ),
        duration=0.01,
    )


def test_candidates_start_with_one_fault_then_pairs_then_combinations() -> None:
    sizes = [len(s.faults) for s in itertools.islice(candidates(_client_trace(), seed=0), 3000)]
    first_pair = sizes.index(2)
    assert set(sizes[:first_pair]) == {1}
    assert 3 in sizes and sizes.index(3) > first_pair


def test_candidates_put_the_one_byte_reads_first_and_waits_after_cuts() -> None:
    one = singles(_client_trace(), timeout=2.5)
    assert one[0].faults == (Slice(1, direction="recv"),)
    waiting = [
        i for i, s in enumerate(one) if isinstance(s.faults[0], (Stall, Latency, ConnectTimeout))
    ]
    cutting = [i for i, s in enumerate(one) if isinstance(s.faults[0], (CloseAfter, Refuse))]
    assert waiting and cutting and max(cutting) < min(waiting)


def test_candidates_place_cuts_and_splits_at_the_traced_boundaries() -> None:
    faults = {s.faults[0] for s in singles(_client_trace(), timeout=None)}
    # the header/payload boundary at byte 4, the middle of the payload, just after 0
    assert CloseAfter(4, direction="recv", connections={1}) in faults
    assert CloseAfter(10, direction="recv", reset=True, connections={1}) in faults
    assert CloseAfter(1, direction="send", connections={1}) in faults
    assert Slice(16, direction="recv", after_bytes=4, connections={1}) in faults
    assert Stall(direction="recv", after_bytes=4, connections={1}) in faults
    assert Refuse(connections={1}) in faults and Refuse() in faults
    assert not any(isinstance(f, Latency) for f in faults)  # no timeout given


def test_candidates_try_latency_above_the_given_timeout() -> None:
    faults = {s.faults[0] for s in singles(_client_trace(), timeout=2.55)}
    assert Latency(2.55, direction="recv") in faults


def test_candidates_fail_each_look_up() -> None:
    faults = {s.faults[0] for s in singles(_client_trace(resolve=True))}
    assert DnsFailure("noname", connections={1}) in faults
    assert DnsFailure("again", connections={1}) in faults


def test_candidates_select_a_role_when_one_process_holds_both_ends() -> None:
    one = singles(_both_ends_trace())
    assert all(s.role in ("client", "server") for s in one)
    client = {s.faults[0] for s in one if s.role == "client"}
    server = {s.faults[0] for s in one if s.role == "server"}
    # connections are counted among the role: the client's is #1 although the plan's is #2
    assert CloseAfter(8, direction="recv", connections={1}) in client
    assert CloseOnAccept(connections={1}) in server
    pairs = [
        s
        for s in itertools.islice(candidates(_both_ends_trace(), seed=0), 2000)
        if len(s.faults) > 1
    ]
    assert pairs and all(s.role is not None for s in pairs)


def test_candidates_are_deduplicated() -> None:
    keys = [s.key() for s in itertools.islice(candidates(_client_trace(), seed=3), 5000)]
    assert len(keys) == len(set(keys))


def test_candidates_same_seed_same_sequence_other_seed_other_combinations() -> None:
    def run(seed: int) -> list[object]:
        return [s.key() for s in itertools.islice(candidates(_client_trace(), seed=seed), 3000)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_candidates_restricted_to_kinds() -> None:
    kinds = {
        type(f).__name__
        for s in candidates(_client_trace(), seed=0, kinds={"Refuse"})
        for f in s.faults
    }
    assert kinds == {"Refuse"}


def test_candidates_reject_unknown_kinds_naming_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown or unexplorable fault kind.*Teleport.*choose among"
    ):
        next(candidates(_client_trace(), seed=0, kinds={"Teleport"}))


def test_candidates_of_an_empty_trace_are_none() -> None:
    assert list(candidates(Trace(), seed=0)) == []


def test_long_streams_are_sliced_in_bounded_pieces() -> None:
    big = Trace(
        (
            TraceEvent(kind="open", time=0.0, index=1, role="client"),
            TraceEvent(kind="recv", time=0.0, index=1, role="client", size=1_000_000),
        )
    )
    (first, *_) = singles(big)
    (fault,) = first.faults
    assert isinstance(fault, Slice) and 400 <= fault.max_bytes <= 1000


def test_explored_kinds_are_fault_classes() -> None:
    from sockwork.faults.vocabulary import FAULT_TYPES

    assert set(EXPLORED_KINDS) <= set(FAULT_TYPES)
