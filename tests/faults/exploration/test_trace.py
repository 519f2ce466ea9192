from __future__ import annotations

import json

import pytest

from sockwork.faults.exploration.trace import Trace, TraceEvent


def _trace() -> Trace:
    return Trace(
        (
            TraceEvent(
                kind="resolve", time=0.0, index=1, host="example.com", port=80, outcome="ok"
            ),
            TraceEvent(
                kind="connect",
                time=0.001,
                index=1,
                role="client",
                host="127.0.0.1",
                port=80,
                outcome="ok",
            ),
            TraceEvent(kind="open", time=0.002, index=1, role="client", host="127.0.0.1", port=80),
            TraceEvent(
                kind="open", time=0.002, index=2, role="server", host="127.0.0.1", port=5555
            ),
            TraceEvent(
                kind="send", time=0.003, index=1, role="client", offset=0, size=4, timeout=2.0
            ),
            TraceEvent(
                kind="send", time=0.003, index=1, role="client", offset=4, size=12, timeout=2.0
            ),
            TraceEvent(kind="recv", time=0.004, index=2, role="server", offset=0, size=16),
            TraceEvent(kind="shutdown", time=0.005, index=1, role="client"),
            TraceEvent(kind="eof", time=0.006, index=2, role="server"),
            TraceEvent(kind="close", time=0.007, index=1, role="client"),
        ),
        duration=0.01,
    )


def test_trace_json_round_trip_is_exact() -> None:
    trace = _trace()
    data = json.loads(json.dumps(trace.to_json()))
    assert data["format"] == 1
    assert Trace.from_json(data) == trace


def test_trace_connections_sum_up_each_stream_by_role() -> None:
    client, server = _trace().connections()
    assert (client.index, client.role, client.role_index) == (1, "client", 1)
    assert (server.index, server.role, server.role_index) == (2, "server", 1)
    assert client.sends == ((0, 4), (4, 12)) and client.sent == 16
    assert client.boundaries("send") == (4,)
    assert client.fin_sent and not client.eof_seen
    assert server.received == 16 and server.boundaries("recv") == ()
    assert server.eof_seen
    assert client.timeouts == frozenset({2.0})


def test_trace_attempts_and_timeouts() -> None:
    trace = _trace()
    assert [e.host for e in trace.attempts("resolve")] == ["example.com"]
    assert trace.attempts("accept") == ()
    assert trace.longest_timeout == 2.0
    assert not trace.empty and Trace().empty


def test_trace_event_rejects_unknown_kind_and_bad_index() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        TraceEvent(kind="teleport", time=0.0, index=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index must be >= 1"):
        TraceEvent(kind="send", time=0.0, index=0)


def test_trace_from_json_rejects_other_formats_and_malformed_events() -> None:
    with pytest.raises(ValueError, match="unsupported trace format"):
        Trace.from_json({"format": 2, "events": []})
    with pytest.raises(ValueError, match="malformed trace event"):
        Trace.from_json({"format": 1, "events": [{"kind": "send"}]})


def test_trace_excerpt_shows_the_window_around_an_offset() -> None:
    text = _trace().excerpt(index=1, around=4, limit=2)
    assert "send #1 client bytes 0..4" in text
    assert "later event(s)" in text
