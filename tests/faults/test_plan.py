"""The plan, driven in virtual time by a tiny executor."""

from __future__ import annotations

import random

import pytest

from sockwork.faults.plan import (
    Action,
    Close,
    Deliver,
    Discard,
    Fail,
    Hang,
    Plan,
    Proceed,
    Read,
    Refused,
    Stalled,
    Stream,
    Wait,
    combine,
)
from sockwork.faults.vocabulary import (
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
    Latency,
    Refuse,
    ResetPeer,
    Slice,
    SlowClose,
    Stall,
    Timeout,
)


def make_plan(*faults: Fault, seed: int = 1) -> Plan:
    return Plan(faults, rng=random.Random(seed), now=0.0, seed=seed)


def pump(stream: Stream, n: int, now: float = 0.0, *, limit: int = 100_000):
    """Feed n bytes at `now` and run the stream to the end; return (pieces, end action, time).

    pieces are (time, kind, count) for each Deliver/Discard.
    """
    stream.feed(n, now)
    pieces: list[tuple[float, str, int]] = []
    for _ in range(limit):
        action = stream.next(now)
        if isinstance(action, Wait):
            assert action.until > now
            now = action.until
        elif isinstance(action, (Deliver, Discard)):
            pieces.append((now, type(action).__name__, action.n))
            stream.passed(action.n, now)
        else:
            return pieces, action, now
    raise AssertionError("stream never settled")


def test_plan_without_faults_delivers_everything_at_once() -> None:
    conn = make_plan().open(now=0.0)
    assert conn.send.idle and conn.recv.idle
    pieces, end, _ = pump(conn.send, 1000)
    assert pieces == [(0.0, "Deliver", 1000)]
    assert end == Read(None, None)


def test_plan_latency_holds_each_chunk_and_keeps_order() -> None:
    stream = make_plan(Latency(0.2, direction="send")).open(now=0.0).send
    stream.feed(10, 0.0)
    assert stream.next(0.0) == Wait(0.2)
    stream.feed(5, 0.1)
    assert stream.next(0.2) == Deliver(10)  # the first chunk only: the second is due at 0.3
    stream.passed(10, 0.2)
    wait = stream.next(0.2)
    assert wait == Wait(pytest.approx(0.3))
    assert isinstance(wait, Wait)
    assert stream.next(wait.until) == Deliver(5)


def test_plan_latency_jitter_is_seeded_and_bounded() -> None:
    def dues(seed: int) -> list[float]:
        stream = make_plan(Latency(0.1, jitter=0.05), seed=seed).open(now=0.0).recv
        result = []
        for i in range(20):
            stream.feed(1, float(i))
            action = stream.next(float(i))
            assert isinstance(action, Wait)
            result.append(action.until - i)
            stream.passed(1, action.until)
        return result

    first = dues(7)
    assert first == dues(7)
    assert first != dues(8)
    assert all(0.05 <= d < 0.15 for d in first)


def test_plan_bandwidth_paces_bytes() -> None:
    stream = make_plan(Bandwidth(1000)).open(now=0.0).send
    pieces, _, end = pump(stream, 1000)
    assert all(count <= 50 for _, _, count in pieces)
    assert sum(count for _, _, count in pieces) == 1000
    assert pieces[-1][0] == pytest.approx(0.95)  # the first slice goes at once
    assert end == pytest.approx(1.0)  # then nothing is read before the budget refills


def test_plan_bandwidth_group_is_shared() -> None:
    plan = make_plan(Bandwidth(1000, group="uplink"))
    a, b = plan.open(now=0.0).send, plan.open(now=0.0).send
    a.feed(50, 0.0)
    assert a.next(0.0) == Deliver(50)
    a.passed(50, 0.0)
    b.feed(50, 0.0)
    assert b.next(0.0) == Wait(pytest.approx(0.05))  # b waits for a's share


def test_plan_slice_short_writes_within_bounds_then_delay() -> None:
    stream = make_plan(Slice(8, min_bytes=3, delay=0.01)).open(now=0.0).send
    pieces, _, end = pump(stream, 100)
    sizes = [count for _, _, count in pieces]
    assert sum(sizes) == 100
    assert all(3 <= s <= 8 for s in sizes[:-1])
    assert len(set(sizes)) > 1
    assert end == pytest.approx(0.01 * len(sizes))


def test_plan_slice_after_unfeed_redraws_a_piece() -> None:
    stream = make_plan(Slice(4, min_bytes=4)).open(now=0.0).send
    stream.feed(10, 0.0)
    assert stream.next(0.0) == Deliver(4)
    stream.passed(4, 0.0)
    assert stream.unfeed() == 6
    assert stream.pending == 0 and stream.offset == 4


@pytest.mark.parametrize("reset", [False, True])
def test_plan_close_after_cuts_right_after_the_last_byte(reset: bool) -> None:
    stream = make_plan(CloseAfter(10, reset=reset)).open(now=0.0).recv
    pieces, end, _ = pump(stream, 25)
    assert pieces == [(0.0, "Deliver", 10)]
    assert end == Close(reset)
    assert stream.next(1.0) == Close(reset)  # forever
    assert stream.closed == Close(reset)


def test_plan_close_after_zero_closes_before_any_byte() -> None:
    stream = make_plan(CloseAfter(0)).open(now=0.0).recv
    assert stream.next(0.0) == Close(False)


def test_plan_after_bytes_starts_exactly_at_the_offset() -> None:
    stream = make_plan(Stall(after_bytes=100)).open(now=0.0).recv
    pieces, end, _ = pump(stream, 150)
    assert pieces == [(0.0, "Deliver", 100)]
    assert end == Stalled()
    assert stream.pending == 50


def test_plan_after_seconds_activates_later() -> None:
    stream = make_plan(Stall(after_seconds=2.0)).open(now=0.0).recv
    assert stream.next(0.0) == Read(None, 2.0)
    assert stream.next(2.0) == Stalled()


def test_plan_blackhole_discards() -> None:
    stream = make_plan(Blackhole()).open(now=0.0).send
    pieces, end, _ = pump(stream, 500)
    assert pieces == [(0.0, "Discard", 500)]
    assert end == Read(None, None)


def test_plan_timeout_discards_then_closes_after_idle_time() -> None:
    stream = make_plan(Timeout(1.0)).open(now=0.0).recv
    pieces, end, _ = pump(stream, 10, now=0.5)
    assert pieces == [(0.5, "Discard", 10)]
    assert end == Read(None, 1.5)  # re-armed by the chunk at 0.5
    assert stream.next(1.5) == Close(False)


def test_plan_timeout_zero_never_closes() -> None:
    stream = make_plan(Timeout(0)).open(now=0.0).recv
    assert stream.next(1e9) == Read(None, None)


def test_plan_reset_peer_waits_for_data_then_resets() -> None:
    stream = make_plan(ResetPeer(0.5)).open(now=0.0).recv
    assert stream.next(10.0) == Read(None, None)  # idle connections are never reset
    stream.feed(5, 10.0)
    assert stream.next(10.0) == Discard(5)
    stream.passed(5, 10.0)
    assert stream.next(10.0) == Wait(10.5)
    assert stream.next(10.5) == Close(True)


def test_plan_slow_close_holds_the_eof() -> None:
    stream = make_plan(SlowClose(0.3)).open(now=0.0).send
    stream.feed(4, 0.0)
    stream.feed_eof(0.0)
    assert stream.next(0.0) == Deliver(4)
    stream.passed(4, 0.0)
    assert stream.next(0.0) == Wait(0.3)
    assert stream.next(0.3) == Close(False)


def test_plan_eof_without_faults_forwards_at_once() -> None:
    stream = make_plan().open(now=0.0).recv
    stream.feed_eof(0.0)
    assert stream.next(0.0) == Close(False)


def test_plan_coalesce_waits_for_more_bytes() -> None:
    stream = make_plan(Coalesce(window=0.01)).open(now=0.0).recv
    stream.feed(3, 0.0)
    assert stream.next(0.0) == Wait(0.01)
    stream.feed(4, 0.005)
    assert stream.next(0.01) == Deliver(7)


def test_plan_stall() -> None:
    stream = make_plan(Stall()).open(now=0.0).recv
    assert stream.next(0.0) == Stalled()
    assert make_plan(Stall()).open(now=0.0).send.next(0.0) == Read(None, None)


def test_plan_probability_zero_is_a_true_noop() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    plan = Plan([CloseAfter(0, probability=0), Refuse(probability=0)], rng=rng, now=0.0)
    conn = plan.open(now=0.0)
    assert conn.recv.idle and conn.send.idle
    assert plan.connect(now=0.0) == (Proceed(),)
    assert rng.getstate() == state  # no draw at all
    assert plan.report.events == ()
    assert not plan.has_stream_faults


def test_plan_probability_is_per_connection_and_seeded() -> None:
    def pattern(seed: int) -> list[bool]:
        plan = make_plan(CloseAfter(0, probability=0.5, direction="recv"), seed=seed)
        return [isinstance(plan.open(now=0.0).recv.next(0.0), Close) for _ in range(40)]

    first = pattern(11)
    assert first == pattern(11)
    assert 5 < sum(first) < 35


def test_plan_connect_faults() -> None:
    plan = make_plan(Refuse(connections=2), ConnectDelay(0.5, connections=[3]))
    assert plan.connect(now=0.0) == (Refused(),)
    assert plan.connect(now=0.0) == (Refused(),)
    assert plan.connect(now=1.0) == (Wait(1.5), Proceed())
    assert plan.connect(now=2.0) == (Proceed(),)
    assert [e.what for e in plan.report.events] == ["refuse", "refuse", "delay"]
    assert [e.connection for e in plan.report.events] == [1, 2, 3]


def test_plan_connect_timeout_and_delay_combine() -> None:
    plan = make_plan(ConnectDelay(0.1), ConnectTimeout(kernel_timeout=5))
    assert plan.connect(now=1.0) == (Wait(1.1), Hang(6.0))


def test_plan_accept_faults() -> None:
    plan = make_plan(AcceptDelay(0.2), CloseOnAccept(reset=True, connections=[2]))
    assert plan.accept(now=0.0) == (Wait(0.2), Proceed())
    assert plan.accept(now=1.0) == (Wait(1.2), Close(True))


def test_plan_resolve_faults() -> None:
    plan = make_plan(DnsFailure("again", delay=0.1, connections=1))
    assert plan.resolve(now=0.0, label="example.org") == (Wait(0.1), Fail("again"))
    assert plan.resolve(now=0.0) == (Proceed(),)
    event = plan.report.events[0]
    assert (event.kind, event.what, event.label) == ("resolve", "fail", "example.org")


def test_plan_connect_fault_after_seconds() -> None:
    plan = make_plan(Refuse(after_seconds=5))
    assert plan.connect(now=1.0) == (Proceed(),)
    assert plan.connect(now=5.0) == (Refused(),)


def test_plan_report_names_fault_connection_direction_and_offset() -> None:
    fault = CloseAfter(10, reset=True)
    plan = make_plan(fault, seed=42)
    plan.open(now=0.0)
    conn = plan.open(now=0.0, label="client 127.0.0.1:80")
    pump(conn.send, 30)
    report = plan.report
    assert report.seed == 42
    kinds = [(e.what, e.connection, e.direction, e.offset) for e in report.events]
    assert kinds == [("fired", 2, "send", 0), ("reset", 2, "send", 10)]
    assert report.fired(CloseAfter) == list(report.events)
    assert report.fired(Latency) == []
    text = str(report)
    assert "seed=42" in text and "reset" in text and "byte 10" in text and "127.0.0.1:80" in text


def test_plan_update_keeps_state_of_unchanged_faults() -> None:
    keep = CloseAfter(10)
    plan = make_plan(keep)
    stream = plan.open(now=0.0).send
    stream.feed(6, 0.0)
    assert stream.next(0.0) == Deliver(6)
    stream.passed(6, 0.0)
    plan.update([keep, Latency(1.0, direction="send")], now=0.0)
    stream.feed(10, 0.0)
    assert stream.next(0.0) == Wait(1.0)
    assert stream.next(1.0) == Deliver(4)  # CloseAfter still counts from 0
    plan.update([], now=1.0)
    assert stream.idle


def test_plan_rejects_non_faults() -> None:
    with pytest.raises(TypeError, match="not a fault"):
        make_plan("latency")  # type: ignore[arg-type]


def test_plan_stream_checks_counts() -> None:
    stream = make_plan().open(now=0.0).send
    with pytest.raises(ValueError):
        stream.feed(-1, 0.0)
    stream.feed(3, 0.0)
    with pytest.raises(ValueError):
        stream.passed(4, 0.0)


def test_plan_forgets_a_connection_when_it_closes() -> None:
    plan = make_plan(Latency(0.1), Slice(4), CloseAfter(3, direction="send"))
    kept = plan.open(now=0.0)
    for i in range(10_000):
        conn = plan.open(now=float(i))
        conn.recv.feed(10, float(i))
        assert isinstance(conn.recv.next(float(i)), Wait)
        conn.close()
        conn.close()  # idempotent
    assert plan.connections_open == 1  # only the one still open
    plan.update([Latency(0.2)], now=1.0)  # an update still reaches the open one
    kept.recv.feed(1, 1.0)
    assert kept.recv.next(1.0) == Wait(1.2)
    kept.close()
    assert plan.connections_open == 0


def test_plan_report_keeps_the_latest_events_and_counts_the_dropped() -> None:
    seen: list[object] = []
    plan = Plan(
        [CloseAfter(0, reset=True, direction="send")],
        rng=random.Random(1),
        now=0.0,
        seed=1,
        max_events=5,
        on_event=seen.append,
    )
    conns = []
    for i in range(10):
        conn = plan.open(now=float(i), label=f"c{i}")
        assert conn.send.next(float(i)) == Close(True)
        conns.append(conn)
    report = plan.report
    assert len(seen) == 20  # "fired" then "reset" on each connection
    assert report.events == tuple(seen[-5:])
    assert report.dropped == 15
    assert str(report).splitlines()[0] == (
        "sockwork faults report (seed=1): 5 event(s) (and 15 earlier event(s) dropped)"
    )
    # Each connection keeps its own events, whatever the report dropped.
    assert [(e.what, e.connection) for e in conns[0].events] == [("fired", 1), ("reset", 1)]
    assert conns[0].events == seen[:2]
    assert "dropped" not in str(make_plan().report)


def test_plan_report_is_bounded_by_default() -> None:
    plan = make_plan(CloseAfter(0, direction="send"))
    for _ in range(6_000):
        conn = plan.open(now=0.0)
        conn.send.next(0.0)
        conn.close()
    assert len(plan.report.events) == 10_000
    assert plan.report.dropped == 2_000


@pytest.mark.parametrize("bad, error", [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_plan_max_events_is_checked(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_events"):
        Plan([], rng=random.Random(1), now=0.0, max_events=bad)  # type: ignore[arg-type]


# --- combine: stacked plans on one socket --------------------------------------------


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ([], Read(None, None)),
        ([Deliver(5)], Deliver(5)),
        ([Deliver(5), Close(True), Wait(9.0)], Close(True)),
        ([Wait(3.0), Stalled(), Deliver(1)], Stalled()),
        ([Wait(3.0), Wait(7.0), Deliver(1)], Wait(7.0)),
        ([Read(10, 5.0), Read(None, 2.0), Deliver(4)], Read(10, 2.0)),
        ([Read(None, None), Read(None, None)], Read(None, None)),
        ([Deliver(8), Discard(3)], Discard(3)),
        ([Deliver(8), Deliver(3)], Deliver(3)),
    ],
)
def test_combine_applies_the_plans_rule_to_stacked_actions(
    actions: list[Action], expected: Action
) -> None:
    assert combine(actions) == expected


def test_event_json_round_trip() -> None:
    from sockwork.faults import HalfClose
    from sockwork.faults.plan import Event

    event = Event(HalfClose(5, connections={2}), "half-close", "stream", 2, "send", 5, 0.25, "c")
    data = event.to_json()
    assert data == {
        "fault": {"type": "HalfClose", "bytes": 5, "connections": [2]},
        "what": "half-close",
        "kind": "stream",
        "connection": 2,
        "direction": "send",
        "offset": 5,
        "at": 0.25,
        "label": "c",
    }
    assert Event.from_json(data) == event
    with pytest.raises(ValueError, match="malformed fault event"):
        Event.from_json({"what": "fired"})
