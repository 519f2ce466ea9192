from __future__ import annotations

import socket

from sockwork.faults.exploration.recorder import Recorder
from tests.faults.exploration.programs import careful_exchange, echo_server


def test_recorder_traces_both_ends_with_offsets_timeouts_and_closes() -> None:
    # The recorder first: the server's accept() then goes through it.
    with Recorder() as recorder, echo_server() as address:
        assert careful_exchange(address) == b"hello, world"
    trace = recorder.trace
    kinds = [e.kind for e in trace.events]
    assert kinds.count("connect") == 1 and kinds.count("accept") == 1
    client = next(c for c in trace.connections() if c.role == "client")
    server = next(c for c in trace.connections() if c.role == "server")
    assert client.sent == 16 and client.received == 16
    assert client.recvs == ((0, 4), (4, 12))  # header, then payload
    assert server.recvs == ((0, 4), (4, 12))
    assert client.timeouts == frozenset({2.0})
    assert trace.longest_timeout == 2.0
    assert "close" in kinds and "shutdown" in kinds
    assert trace.duration > 0


def test_recorder_traces_look_ups_and_refused_attempts() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with Recorder() as recorder:
        socket.getaddrinfo("localhost", port)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            pass
    events = recorder.trace.events
    assert events[0].kind == "resolve" and events[0].host == "localhost"
    connect = next(e for e in events if e.kind == "connect")
    assert (connect.index, connect.role, connect.port) == (1, "client", port)
    assert not any(e.kind == "open" for e in events)  # the connection never opened


def test_recorder_of_a_quiet_block_is_empty_and_bounded() -> None:
    with Recorder() as recorder:
        pass
    assert recorder.trace.empty
    with Recorder(max_events=3) as small, echo_server() as address:
        careful_exchange(address)
    assert len(small.trace.events) == 3 and small.trace.dropped > 0
