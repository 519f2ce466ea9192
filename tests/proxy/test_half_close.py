"""HalfClose through FaultProxy: one direction ends with a FIN, the other keeps flowing."""

from __future__ import annotations

import socket
import threading

from sockwork.faults import HalfClose
from sockwork.proxy import FaultProxy
from sockwork.proxy.fault import fault_for
from sockwork.proxy.toxic import parse_toxic
from tests.proxy.conftest import MakeUpstream, recv_all, recv_exactly, wait_until


def answer_after_eof(received: list[bytes], done: threading.Event) -> object:
    """A handler that reads to EOF, then answers ``got:<bytes>`` and closes."""

    def handler(conn: socket.socket) -> None:
        data = recv_all(conn)
        received.append(data)
        conn.sendall(b"got:" + data)
        done.set()

    return handler


def test_upstream_half_close_server_answers_after_the_fin(make_upstream: MakeUpstream) -> None:
    received: list[bytes] = []
    done = threading.Event()
    server = make_upstream(answer_after_eof(received, done))  # type: ignore[arg-type]
    with FaultProxy(upstream=server.address) as proxy:
        name = proxy.add(HalfClose(5))  # "send" is upstream
        assert name == "halfclose_upstream"
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"helloworld")  # the client never shuts down its side
            assert recv_all(client) == b"got:hello"
        assert done.wait(5)
        report = proxy.report
    assert received == [b"hello"]
    assert [(e.what, e.direction, e.offset) for e in report.fired(HalfClose)] == [
        ("fired", "send", 0),
        ("half-close", "send", 5),
    ]


def test_downstream_half_close_client_reads_eof_and_still_sends(
    make_upstream: MakeUpstream,
) -> None:
    got: list[bytes] = []

    def greet_then_listen(conn: socket.socket) -> None:
        conn.sendall(b"abcdefgh")
        got.append(recv_exactly(conn, 2))

    server = make_upstream(greet_then_listen)
    with FaultProxy(upstream=server.address) as proxy:
        proxy.add(HalfClose(3, direction="recv"))
        assert proxy.faults[0].direction == "downstream"
        with socket.create_connection(proxy.address, timeout=5) as client:
            assert recv_all(client) == b"abc"  # EOF after 3 bytes: the rest is dropped
            client.sendall(b"ok")  # the upstream direction still flows
            wait_until(lambda: got)
    assert got == [b"ok"]


def test_half_close_at_zero_gives_the_server_eof_at_once(make_upstream: MakeUpstream) -> None:
    received: list[bytes] = []
    done = threading.Event()
    server = make_upstream(answer_after_eof(received, done))  # type: ignore[arg-type]
    with FaultProxy(upstream=server.address) as proxy:
        proxy.add(HalfClose(0), direction="upstream")
        with socket.create_connection(proxy.address, timeout=5) as client:
            assert recv_all(client) == b"got:"  # the client sent nothing, and waited
    assert received == [b""]


def test_half_close_toxic_is_served_under_its_own_name() -> None:
    spec = parse_toxic({"type": "half_close", "stream": "upstream", "attributes": {"bytes": 7}})
    assert fault_for(spec) == HalfClose(7, direction="send")
    spec = parse_toxic({"type": "half_close", "attributes": {"bytes": 2}, "toxicity": 0.5})
    assert fault_for(spec) == HalfClose(2, direction="recv", probability=0.5)
