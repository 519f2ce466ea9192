"""The kernel path (os.splice): same bytes, same endings, live switches to and from faults."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import select
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from sockwork.faults import Bandwidth, Coalesce, Latency, Slice
from sockwork.proxy import FaultProxy, splice
from sockwork.proxy.pipe import Pipe
from tests.conftest import IN_CI
from tests.proxy.conftest import MakeUpstream, Upstream, recv_all, recv_exactly, wait_until

pytestmark = pytest.mark.skipif(
    not splice.AVAILABLE and not IN_CI,  # CI runs on Linux: there it must not be skipped
    reason="os.splice is Linux-only; the ordinary path is tested by every other test",
)


@pytest.fixture(params=[True, False], ids=["splice", "no-splice"])
def kernel_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    """Run the test with the kernel path, and again with it forced off."""
    monkeypatch.setattr(splice, "AVAILABLE", request.param)
    yield request.param


def pipes(proxy: FaultProxy) -> dict[str, Pipe]:
    """The two pipes of the proxy's only open connection."""
    (conn,) = proxy._require_hub().connections.values()
    return dict(conn.pipes)


def exchange(client: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` from a thread while reading as many bytes back."""
    sender = threading.Thread(target=client.sendall, args=(payload,))
    sender.start()
    try:
        return recv_exactly(client, len(payload))
    finally:
        sender.join()


def test_splice_bytes_are_identical_and_counted(echo_server: Upstream, kernel_path: bool) -> None:
    payload = os.urandom(8_000_000)
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as client:
            assert exchange(client, payload[:1000]) == payload[:1000]
            assert {d: p.splicing for d, p in pipes(proxy).items()} == {
                "upstream": kernel_path,
                "downstream": kernel_path,
            }
            assert exchange(client, payload) == payload
        counters = proxy.counters
    size = len(payload) + 1000
    assert (counters.received_upstream, counters.bytes_upstream) == (size, size)
    assert (counters.received_downstream, counters.bytes_downstream) == (size, size)


def test_splice_half_close_and_reply_after_it(
    make_upstream: MakeUpstream, kernel_path: bool
) -> None:
    def reply_after_eof(conn: socket.socket) -> None:
        got = recv_all(conn)
        conn.sendall(struct.pack("!I", len(got)) + got[::-1])
        conn.shutdown(socket.SHUT_WR)

    server = make_upstream(reply_after_eof)
    payload = os.urandom(300_000)
    with FaultProxy(upstream=server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as client:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
            assert recv_all(client) == struct.pack("!I", len(payload)) + payload[::-1]


def test_splice_resets_are_passed_on(make_upstream: MakeUpstream, kernel_path: bool) -> None:
    def reset_after_a_byte(conn: socket.socket) -> None:
        conn.recv(1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = make_upstream(reset_after_a_byte)
    with FaultProxy(upstream=server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"x")
            with pytest.raises(ConnectionResetError):
                client.recv(1)


def test_splice_faults_switched_live_under_load_lose_and_reorder_nothing(
    echo_server: Upstream,
) -> None:
    # Both directions carry 12 MB while byte-level faults come and go, each change made
    # when another 256 KiB came back: splice -> fault -> splice, live, on this connection.
    payload = random.Random(3).randbytes(12_000_000)
    faults = [
        ("slice", Slice(5000, min_bytes=700)),
        ("lag", Latency(0.002)),
        ("coalesce", Coalesce(window=0.001)),
        ("cap", Bandwidth(200_000_000)),
    ]
    seen_splicing = seen_faulted = 0
    with FaultProxy(upstream=echo_server.address, seed=11) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as client:
            sender = threading.Thread(target=client.sendall, args=(payload,))
            sender.start()
            received = bytearray()
            toggles = 0
            active: str | None = None
            try:
                while len(received) < len(payload):
                    chunk = client.recv(min(1 << 18, len(payload) - len(received)))
                    assert chunk, "the proxy closed the connection"
                    received += chunk
                    if len(received) < (toggles + 1) << 18:
                        continue
                    toggles += 1
                    if active is None:
                        seen_splicing += any(p.splicing for p in pipes(proxy).values())
                        active, fault = faults[(toggles // 2) % len(faults)]
                        proxy.add(fault, direction="both", name=active)
                        seen_faulted += not any(p.splicing for p in pipes(proxy).values())
                    else:
                        proxy.remove(active)
                        active = None
            finally:
                sender.join()
            assert bytes(received) == payload
    assert seen_faulted >= 10
    assert seen_splicing >= 5  # the kernel path came back after faults were removed


def test_splice_faults_switched_live_on_many_connections_at_once(echo_server: Upstream) -> None:
    # Four connections share the proxy's one splice thread while proxy-wide faults come and
    # go: every connection's bytes come back whole and in order, both directions.
    payloads = [random.Random(i).randbytes(3_000_000) for i in range(4)]
    results: list[bytes] = [b""] * len(payloads)
    with FaultProxy(upstream=echo_server.address, seed=5) as proxy:
        clients = [socket.create_connection(proxy.address, timeout=20) for _ in payloads]

        def talk(i: int) -> None:
            results[i] = exchange(clients[i], payloads[i])

        threads = [threading.Thread(target=talk, args=(i,)) for i in range(len(clients))]
        try:
            for t in threads:
                t.start()
            toggles = 0
            while any(t.is_alive() for t in threads) and toggles < 400:
                proxy.add(Slice(3000), direction="both", name="cut")
                proxy.remove("cut")
                proxy.add(Latency(0.001), direction="upstream", name="lag")
                proxy.remove("lag")
                toggles += 1
            for t in threads:
                t.join(30)
        finally:
            for c in clients:
                c.close()
    assert toggles >= 2
    assert [r == p for r, p in zip(results, payloads, strict=True)] == [True] * len(payloads)


def test_splice_worker_with_one_event_per_wake_up_and_tiny_batches_loses_nothing(
    echo_server: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker takes at most _MAX_EVENTS events per epoll call and moves _BATCH chunks
    # of at most _CHUNK bytes per Splicer before serving the others: with these tiny,
    # events are left in the kernel for the next call and every bulk direction goes round
    # the "again" queue (no edge comes for bytes already waiting), on six connections at
    # once. Every byte still comes back, in order, spliced all the way.
    monkeypatch.setattr(splice, "_MAX_EVENTS", 1)
    monkeypatch.setattr(splice, "_BATCH", 1)
    monkeypatch.setattr(splice, "_CHUNK", 4096)
    payloads = [random.Random(i).randbytes(600_000) for i in range(6)]
    results: list[bytes] = [b""] * len(payloads)
    with FaultProxy(upstream=echo_server.address) as proxy:
        clients = [socket.create_connection(proxy.address, timeout=20) for _ in payloads]
        try:
            assert [exchange(c, b"warm") for c in clients] == [b"warm"] * len(clients)

            def talk(i: int) -> None:
                results[i] = exchange(clients[i], payloads[i])

            threads = [threading.Thread(target=talk, args=(i,)) for i in range(len(clients))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            conns = proxy._require_hub().connections.values()
            assert all(p.splicing for conn in conns for p in conn.pipes.values())
        finally:
            for c in clients:
                c.close()
    assert [r == p for r, p in zip(results, payloads, strict=True)] == [True] * len(payloads)


def test_splice_bytes_move_while_the_event_loop_is_busy(echo_server: Upstream) -> None:
    # Spliced bytes never go through the proxy's event loop: with the loop blocked in a
    # callback, a round trip and a bulk transfer through a spliced connection complete.
    payload = os.urandom(4_000_000)
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as client:
            assert exchange(client, b"warm") == b"warm"
            assert all(p.splicing for p in pipes(proxy).values())
            loop_blocked, release = threading.Event(), threading.Event()

            def block() -> None:
                loop_blocked.set()
                release.wait(20)

            proxy._require_loop().call_soon_threadsafe(block)
            try:
                assert loop_blocked.wait(5)
                assert exchange(client, payload) == payload
            finally:
                release.set()
            # The worker counts a chunk after its splice returns: the client may have
            # read the last bytes before they are counted.
            total = len(payload) + 4

            def counted() -> bool:
                c = proxy.counters
                return c.bytes_upstream == c.bytes_downstream == total

            wait_until(counted, timeout=10.0)
            counters = proxy.counters
    assert counters.bytes_upstream == counters.bytes_downstream == total


def test_splice_a_bulk_connection_does_not_starve_another(echo_server: Upstream) -> None:
    # One connection streams without pause; another's 200 round trips all complete
    # meanwhile (the thread serves every connection's events between batches).
    stop = threading.Event()
    with FaultProxy(upstream=echo_server.address) as proxy:
        with (
            socket.create_connection(proxy.address, timeout=10) as bulk,
            socket.create_connection(proxy.address, timeout=10) as chat,
        ):

            def stream() -> None:
                chunk = bytes(1 << 20)
                with contextlib.suppress(OSError):
                    while not stop.is_set():
                        bulk.sendall(chunk)

            def drain() -> None:
                with contextlib.suppress(OSError):
                    while bulk.recv(1 << 20):
                        pass

            workers = [threading.Thread(target=stream), threading.Thread(target=drain)]
            for w in workers:
                w.start()
            try:
                for i in range(200):
                    message = struct.pack("!I", i) * 16
                    chat.sendall(message)
                    assert recv_exactly(chat, len(message)) == message
                assert proxy.counters.received_upstream > 200 * 64
            finally:
                stop.set()
                bulk.shutdown(socket.SHUT_WR)
                for w in workers:
                    w.join(10)


def test_splice_without_a_worker_thread_uses_the_transports(
    echo_server: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_thread(*args: object, **kwargs: object) -> splice.SpliceWorker:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(splice, "SpliceWorker", no_thread)
    payload = os.urandom(1_000_000)
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as client:
            assert exchange(client, payload) == payload
            assert not any(p.splicing for p in pipes(proxy).values())


def test_splice_worker_bug_falls_back_to_the_transports(
    echo_server: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug in the worker must cost the connection its kernel path, not its bytes.
    real_pump = splice.Splicer.pump
    crashes = 0

    def buggy(self: splice.Splicer, worker: splice.SpliceWorker, events: int) -> None:
        nonlocal crashes
        # The worker may still call a splicer that has just crashed (an event already
        # taken from epoll); the real pump() then returns at once: so must this one.
        if self.received == 0 and not self.failed and crashes < 2:
            crashes += 1
            raise ZeroDivisionError("a bug")
        real_pump(self, worker, events)

    monkeypatch.setattr(splice.Splicer, "pump", buggy)
    payload = os.urandom(2_000_000)
    reported: list[object] = []
    with FaultProxy(upstream=echo_server.address) as proxy:
        loop = proxy._require_loop()
        proxy._call(lambda: loop.set_exception_handler(lambda _, ctx: reported.append(ctx)))
        with socket.create_connection(proxy.address, timeout=10) as client:
            assert exchange(client, payload) == payload
            assert not any(p.splicing for p in pipes(proxy).values())
    assert crashes == 2
    assert [type(c["exception"]) for c in reported] == [ZeroDivisionError] * 2  # type: ignore[index]


def test_splice_refused_by_the_kernel_falls_back(
    echo_server: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    def refusing(*args: object, **kwargs: object) -> int:
        nonlocal calls
        calls += 1
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "splice", refusing)
    payload = os.urandom(2_000_000)
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as client:
            assert exchange(client, payload) == payload
            assert not any(p.splicing for p in pipes(proxy).values())
    assert calls == 2  # each direction tried once, then used the transports


def test_splice_without_descriptors_uses_the_transports(
    echo_server: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fds(*args: object, **kwargs: object) -> splice.Splicer:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(splice.Splicer, "open", no_fds)
    payload = os.urandom(1_000_000)
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as client:
            assert exchange(client, payload) == payload
            assert not any(p.splicing for p in pipes(proxy).values())


def test_splice_a_fault_after_bytes_counts_spliced_bytes(
    echo_server: Upstream, kernel_path: bool
) -> None:
    from sockwork.faults import CloseAfter

    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as client:
            assert exchange(client, b"a" * 50_000) == b"a" * 50_000
            # after_bytes counts every byte of the direction, spliced ones too.
            proxy.add(CloseAfter(0, after_bytes=60_000), direction="downstream")
            client.sendall(b"b" * 20_000)
            got = recv_all(client)
    assert got == b"b" * 10_000


def test_splice_bytes_held_in_the_kernel_pipe_go_first_when_a_fault_arrives(
    make_upstream: MakeUpstream,
) -> None:
    # The server does not read: the upstream direction's kernel pipe fills and stays
    # full. Adding a fault then writes those bytes to the server first, in order.
    release, done = threading.Event(), threading.Event()
    got: list[bytes] = []

    def slow_reader(conn: socket.socket) -> None:
        release.wait(10)
        got.append(recv_all(conn))
        done.set()

    server = make_upstream(slow_reader)
    payload = random.Random(5).randbytes(6_000_000)
    with FaultProxy(upstream=server.address) as proxy:
        client = socket.create_connection(proxy.address, timeout=10)
        with client:
            sent = 0
            client.settimeout(0.5)
            try:
                while sent < len(payload):  # until back-pressure stops the client
                    sent += client.send(payload[sent : sent + 65536])
            except TimeoutError:
                pass
            upstream = pipes(proxy)["upstream"]
            splicer = upstream._splicer
            assert upstream.splicing and splicer is not None

            def held() -> int:  # bytes in the kernel pipe, read on the proxy's loop
                return proxy._call(lambda: splicer._pending)

            wait_until(lambda: held() > 0)  # stuck: the server's buffers are full

            def add_now() -> int:  # the check and the change in one loop step
                pending = splicer._pending
                proxy.add(Slice(1000), direction="upstream", name="cut")
                return pending

            assert proxy._call(add_now) > 0
            assert not upstream.splicing
            release.set()
            client.settimeout(10)
            client.sendall(payload[sent:])
            client.shutdown(socket.SHUT_WR)
            assert done.wait(20)
    assert got == [payload]


def test_splice_small_writes_against_a_full_destination_lose_nothing(
    make_upstream: MakeUpstream,
) -> None:
    # Reads shorter than the kernel pipe's slots end without a failing read; the source
    # edges that come while the destination is full must still be served once it drains.
    release, done = threading.Event(), threading.Event()
    got: list[bytes] = []

    def late_reader(conn: socket.socket) -> None:
        release.wait(20)
        got.append(recv_all(conn))
        done.set()

    server = make_upstream(late_reader)
    stream = b"".join(struct.pack("!I", i) * 25 for i in range(400_000))  # 40 MB
    with FaultProxy(upstream=server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.setblocking(False)
            offset = 0
            while select.select([], [client], [], 0.5)[1]:  # until back-pressure holds
                with contextlib.suppress(BlockingIOError):
                    offset += client.send(stream[offset : offset + 100])
            assert 0 < offset < len(stream) - 30_000
            assert pipes(proxy)["upstream"].splicing
            release.set()
            client.setblocking(True)
            for _ in range(300):  # small writes while the server drains
                client.sendall(stream[offset : offset + 100])
                offset += 100
            client.shutdown(socket.SHUT_WR)
            assert done.wait(20)
    assert got == [stream[:offset]]
