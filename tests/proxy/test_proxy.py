"""FaultProxy with no fault: forwarding, half-close, resets, enable/disable, life cycle."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import threading
import time

import pytest

from sockwork.faults.vocabulary import Latency
from sockwork.proxy import ConnectionEvent, FaultProxy
from tests.proxy.conftest import (
    MakeUpstream,
    Upstream,
    free_port,
    open_fds,
    recv_all,
    recv_exactly,
)


def test_proxy_forwards_both_ways(echo_server: Upstream) -> None:
    payload = os.urandom(300_000)
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            sender = threading.Thread(target=client.sendall, args=(payload,))
            sender.start()
            assert recv_exactly(client, len(payload)) == payload
            sender.join()
        assert proxy.address[0] == "127.0.0.1"


def test_proxy_propagates_half_close_and_the_reply_still_flows(
    make_upstream: MakeUpstream,
) -> None:
    def reply_after_eof(conn: socket.socket) -> None:
        request = recv_all(conn)  # returns only once the client's FIN arrived
        conn.sendall(b"got " + request)

    server = make_upstream(reply_after_eof)
    with FaultProxy(upstream=server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"question")
            client.shutdown(socket.SHUT_WR)
            assert recv_all(client) == b"got question"


def test_proxy_counters_count_connections_and_bytes(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        for _ in range(3):
            with socket.create_connection(proxy.address, timeout=5) as client:
                client.sendall(b"x" * 1000)
                assert recv_exactly(client, 1000) == b"x" * 1000
        deadline = time.monotonic() + 5
        while proxy.counters.connections_open and time.monotonic() < deadline:
            time.sleep(0.01)
        counters = proxy.counters
    assert counters.connections_total == 3
    assert counters.connections_open == 0
    assert counters.bytes_upstream == 3000
    assert counters.bytes_downstream == 3000


def test_proxy_upstream_refusing_closes_the_client_at_once() -> None:
    events: list[ConnectionEvent] = []
    port = free_port()
    with FaultProxy(upstream=("127.0.0.1", port), on_event=events.append) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            started = time.monotonic()
            assert client.recv(10) == b""
            assert time.monotonic() - started < 1.0
        assert proxy.counters.connections_failed == 1
    assert [e.kind for e in events] == ["failed"]
    assert f"127.0.0.1:{port}" in str(events[0].error)
    assert "ConnectionRefusedError" in str(events[0].error)


def test_proxy_disable_refuses_and_closes_open_connections(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        client = socket.create_connection(proxy.address, timeout=5)
        with client:
            client.sendall(b"a")
            assert client.recv(1) == b"a"
            proxy.disable()
            assert proxy.enabled is False
            assert client.recv(1) == b""
        with pytest.raises(ConnectionRefusedError) as info:
            socket.create_connection(proxy.address, timeout=5).close()
        assert info.value.errno == errno.ECONNREFUSED
        proxy.enable()
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"b")
            assert client.recv(1) == b"b"


def test_proxy_passes_an_upstream_reset_on_as_a_reset(make_upstream: MakeUpstream) -> None:
    def reset_at_once(conn: socket.socket) -> None:
        conn.recv(1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = make_upstream(reset_at_once)
    with FaultProxy(upstream=server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"x")
            with pytest.raises(ConnectionResetError):
                client.recv(10)


def test_proxy_reports_connection_events(echo_server: Upstream) -> None:
    events: list[ConnectionEvent] = []
    closed = threading.Event()

    def on_event(event: ConnectionEvent) -> None:
        events.append(event)
        if event.kind == "closed":
            closed.set()

    with FaultProxy(upstream=echo_server.address, on_event=on_event) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"hello")
            assert recv_exactly(client, 5) == b"hello"
        assert closed.wait(5)
    assert [e.kind for e in events] == ["opened", "closed"]
    assert events[1].bytes_upstream == 5 and events[1].bytes_downstream == 5
    assert events[1].client == client_address(events[0])


def client_address(event: ConnectionEvent) -> tuple[str, int]:
    return event.client


def test_proxy_start_on_an_address_in_use_leaves_no_thread_or_descriptor(
    echo_server: Upstream,
) -> None:
    # Each failed start leaked the splice thread (with its epoll and pipe); the
    # Toxiproxy API's 500 for a taken listen address left one behind every time.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        baseline = open_fds()
        for _ in range(3):
            proxy = FaultProxy(upstream=echo_server.address, listen=taken.getsockname())
            with pytest.raises(OSError) as info:
                proxy.start()
            assert info.value.errno == errno.EADDRINUSE
            proxy.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("sockwork-proxy")]
        assert open_fds() == baseline


def test_proxy_close_ends_everything_within_one_second(echo_server: Upstream) -> None:
    proxy = FaultProxy(upstream=echo_server.address)
    proxy.start()
    clients = [socket.create_connection(proxy.address, timeout=5) for _ in range(10)]
    try:
        for c in clients:
            c.sendall(b"x")
            assert c.recv(1) == b"x"
        started = time.monotonic()
        proxy.close()
        assert time.monotonic() - started < 1.0
        for c in clients:
            assert c.recv(1) == b""
        assert not [t for t in threading.enumerate() if t.name.startswith("sockwork-proxy")]
    finally:
        for c in clients:
            c.close()


def test_proxy_runs_inside_a_running_loop(echo_server: Upstream) -> None:
    async def main() -> bytes:
        async with FaultProxy(upstream=echo_server.address) as proxy:
            reader, writer = await asyncio.open_connection(*proxy.address)
            writer.write(b"ping")
            writer.write_eof()
            data = await reader.read()
            writer.close()
            await writer.wait_closed()
            return data

    assert asyncio.run(main()) == b"ping"


def test_proxy_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="upstream port"):
        FaultProxy(upstream=("127.0.0.1", 0))
    with FaultProxy(upstream=("127.0.0.1", 9)) as proxy:
        with pytest.raises(ValueError, match="direction"):
            proxy.add(Latency(0.1), direction="sideways")
        with pytest.raises(ValueError, match="scope"):
            proxy.add(Latency(0.1), scope="old")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not a fault"):
            proxy.add(object())  # type: ignore[arg-type]
        with pytest.raises(KeyError):
            proxy.remove("nothing")


def test_proxy_resolves_names_and_leaves_no_threads(echo_server: Upstream) -> None:
    def ours() -> set[threading.Thread]:  # the proxy's loop and asyncio's look-up workers
        return {t for t in threading.enumerate() if t.name.startswith(("sockwork-", "asyncio_"))}

    before = ours()
    with FaultProxy(
        upstream=("localhost", echo_server.address[1]), listen=("localhost", 0)
    ) as proxy:
        assert proxy.address[0] == "127.0.0.1"
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"n")
            assert recv_exactly(client, 1) == b"n"
    assert ours() <= before


def test_proxy_half_close_from_the_server_side(make_upstream: MakeUpstream) -> None:
    heard: list[bytes] = []
    done = threading.Event()

    def speak_first(conn: socket.socket) -> None:
        conn.sendall(b"banner")
        conn.shutdown(socket.SHUT_WR)  # done talking, still listening
        heard.append(recv_all(conn))
        done.set()

    server = make_upstream(speak_first)
    with FaultProxy(upstream=server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            assert recv_all(client) == b"banner"  # EOF reached the client...
            client.sendall(b"late words")  # ...and the other direction still flows
            client.shutdown(socket.SHUT_WR)
            assert client.recv(1) == b""
            # Before closing the proxy, which drops what it has not forwarded yet: the
            # client's EOF came earlier, so its recv() does not wait for the proxy.
            assert done.wait(5)
    assert heard == [b"late words"]


def test_proxy_on_a_running_loop_takes_control_calls_from_other_threads(
    echo_server: Upstream,
) -> None:
    async def main() -> float:
        async with FaultProxy(upstream=echo_server.address) as proxy:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: proxy.add(Latency(0.2), name="slow"))
            assert [f.name for f in proxy.faults] == ["slow"]
            reader, writer = await asyncio.open_connection(*proxy.address)
            started = time.monotonic()
            writer.write(b"hi")
            assert await reader.readexactly(2) == b"hi"
            elapsed = time.monotonic() - started
            writer.close()
            await writer.wait_closed()
            return elapsed

    assert 0.19 <= asyncio.run(main()) < 0.6
