"""Faults applied by FaultProxy, observed from the client: timings, bytes, exceptions."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time

import pytest

from sockwork.faults import (
    AcceptDelay,
    Bandwidth,
    Blackhole,
    CloseAfter,
    CloseOnAccept,
    Coalesce,
    ConnectDelay,
    ConnectTimeout,
    Latency,
    Refuse,
    ResetPeer,
    Slice,
    SlowClose,
    Stall,
    Timeout,
)
from sockwork.proxy import FaultProxy
from tests.proxy.conftest import MakeUpstream, Upstream, recv_all, recv_exactly


# Latency bounds: below, the fault's own value (a delay is never shorter); above,
# generous (a loaded machine stretches any round trip; only a gross over-delay
# fails). "No latency" means shorter than the smallest latency the test applies.
def round_trip(client: socket.socket, payload: bytes = b"ping") -> float:
    started = time.monotonic()
    client.sendall(payload)
    assert recv_exactly(client, len(payload)) == payload
    return time.monotonic() - started


def test_latency_downstream_delays_each_reply(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(Latency(0.2), direction="downstream")
        with socket.create_connection(proxy.address, timeout=5) as client:
            elapsed = round_trip(client)
    assert 0.19 <= elapsed < 1.5


def test_latency_added_to_an_open_connection_and_removed(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            assert round_trip(client) < 0.19
            name = proxy.add(Latency(0.2), direction="upstream")
            assert name == "latency_upstream"
            assert 0.19 <= round_trip(client) < 1.5
            proxy.update(name, Latency(0.3))
            assert 0.29 <= round_trip(client) < 1.5
            proxy.remove(name)
            assert round_trip(client) < 0.19


def test_scope_new_spares_open_connections(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as old:
            round_trip(old)
            proxy.add(Latency(0.25), direction="downstream", scope="new")
            assert round_trip(old) < 0.24
            with socket.create_connection(proxy.address, timeout=5) as new:
                assert round_trip(new) >= 0.24


def test_scope_new_update_keeps_open_connections_on_the_old_values(
    echo_server: Upstream,
) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(Latency(0.25), direction="downstream", name="lag")
        with socket.create_connection(proxy.address, timeout=5) as old:
            assert round_trip(old) >= 0.24
            proxy.update("lag", Latency(0.001), scope="new")
            assert round_trip(old) >= 0.24  # still the old values
            with socket.create_connection(proxy.address, timeout=5) as new:
                assert round_trip(new) < 0.24
            assert [f.fault for f in proxy.faults] == [Latency(0.001)]


def test_bandwidth_limits_each_connection(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(Bandwidth(100_000), direction="downstream")
        with socket.create_connection(proxy.address, timeout=5) as client:
            elapsed = round_trip(client, b"x" * 30_000)
    assert 0.25 <= elapsed < 1.5  # 30 kB at 100 kB/s: 0.3 s


def test_bandwidth_shared_by_a_group_spans_connections(echo_server: Upstream) -> None:
    times: list[float] = []

    def transfer(address: tuple[str, int]) -> None:
        with socket.create_connection(address, timeout=5) as client:
            times.append(round_trip(client, b"y" * 20_000))

    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(Bandwidth(100_000, group="proxy"), direction="downstream")
        threads = [threading.Thread(target=transfer, args=(proxy.address,)) for _ in range(2)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = time.monotonic() - started
    # 40 kB through one shared 100 kB/s budget: 0.4 s (per connection it would be 0.2 s).
    assert len(times) == 2
    assert 0.35 <= total < 2.0


def test_slice_delivers_short_reads_to_the_server(make_upstream: MakeUpstream) -> None:
    sizes: list[int] = []
    done = threading.Event()

    def record(conn: socket.socket) -> None:
        while data := conn.recv(65536):
            sizes.append(len(data))
        done.set()

    server = make_upstream(record)
    with FaultProxy(upstream=server.address, seed=7) as proxy:
        proxy.add(Slice(8, min_bytes=1, delay=0.002), direction="upstream")
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"z" * 200)
        assert done.wait(5)
    assert sum(sizes) == 200
    # The server's kernel may merge two pieces that land between its reads, so the
    # bound holds for most reads, not necessarily for every one.
    assert len(sizes) >= 10
    assert sorted(sizes)[len(sizes) // 2] <= 8


def test_close_after_cuts_with_fin(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(CloseAfter(100), direction="downstream")
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"a" * 1000)
            assert recv_all(client) == b"a" * 100


def test_close_after_with_reset_gives_econnreset(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(CloseAfter(100, reset=True), direction="downstream")
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"a" * 1000)
            received = b""
            with pytest.raises(ConnectionResetError) as info:
                while True:
                    data = client.recv(65536)
                    assert data, "expected a reset, got EOF"
                    received += data
            assert info.value.errno == errno.ECONNRESET
            assert len(received) <= 100


def test_reset_peer_resets_an_open_connection(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            round_trip(client)
            proxy.add(ResetPeer(0.1), direction="upstream")
            started = time.monotonic()
            client.sendall(b"doomed")
            with pytest.raises(ConnectionResetError):
                client.recv(10)
            assert 0.09 <= time.monotonic() - started < 1.0


def test_stall_gives_the_sender_backpressure(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(Stall(), direction="upstream")
        with socket.create_connection(proxy.address, timeout=0.5) as client:
            with pytest.raises(TimeoutError):
                client.sendall(b"s" * 50_000_000)
        assert proxy.counters.bytes_upstream == 0


def test_blackhole_reads_and_discards(make_upstream: MakeUpstream) -> None:
    got: list[bytes] = []
    server = make_upstream(lambda conn: got.append(recv_all(conn)))
    with FaultProxy(upstream=server.address) as proxy:
        proxy.add(Blackhole(), direction="upstream")
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"b" * 2_000_000)  # no back-pressure: all of it is accepted
            deadline = time.monotonic() + 5
            while proxy.counters.received_upstream < 2_000_000 and time.monotonic() < deadline:
                time.sleep(0.01)
        counters = proxy.counters
    assert counters.received_upstream == 2_000_000
    assert counters.bytes_upstream == 0


def test_timeout_discards_then_closes(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(Timeout(0.2), direction="upstream")
        with socket.create_connection(proxy.address, timeout=5) as client:
            started = time.monotonic()
            client.sendall(b"lost")
            assert client.recv(10) == b""
            assert 0.19 <= time.monotonic() - started < 1.0


def test_slow_close_holds_the_eof_back(make_upstream: MakeUpstream) -> None:
    server = make_upstream(lambda conn: conn.sendall(b"bye"))
    with FaultProxy(upstream=server.address) as proxy:
        proxy.add(SlowClose(0.3), direction="downstream")
        with socket.create_connection(proxy.address, timeout=5) as client:
            started = time.monotonic()
            assert recv_exactly(client, 3) == b"bye"
            assert time.monotonic() - started < 0.25
            assert client.recv(10) == b""
            assert 0.29 <= time.monotonic() - started < 1.0


def test_refuse_closes_the_listener_for_real_econnrefused(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as survivor:
            round_trip(survivor)  # accepted by the proxy, not just queued in the kernel
            proxy.add(Refuse())
            with pytest.raises(ConnectionRefusedError) as info:
                socket.create_connection(proxy.address, timeout=5).close()
            assert info.value.errno == errno.ECONNREFUSED
            assert round_trip(survivor) < 0.5  # open connections keep working
            proxy.remove("refuse")
            with socket.create_connection(proxy.address, timeout=5) as client:
                round_trip(client)


def test_close_on_accept_with_reset(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(CloseOnAccept(reset=True, connections=1))
        with pytest.raises(ConnectionResetError):
            # The RST may even beat connect() back to the client thread on a busy machine.
            with socket.create_connection(proxy.address, timeout=5) as first:
                first.recv(10)
        with socket.create_connection(proxy.address, timeout=5) as second:
            round_trip(second)
    assert echo_server.accepted == 1


def test_accept_delay_holds_the_connection_back(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(AcceptDelay(0.3))
        with socket.create_connection(proxy.address, timeout=5) as client:
            assert 0.29 <= round_trip(client) < 1.0


def test_probability_zero_is_a_true_no_op(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(CloseAfter(0, reset=True, probability=0.0), direction="both")
        with socket.create_connection(proxy.address, timeout=5) as client:
            assert round_trip(client, b"q" * 1000) < 0.5
        assert proxy.report.events == ()


def test_half_close_still_flows_through_faults(make_upstream: MakeUpstream) -> None:
    def reply_after_eof(conn: socket.socket) -> None:
        conn.sendall(b"got " + recv_all(conn))

    server = make_upstream(reply_after_eof)
    with FaultProxy(upstream=server.address) as proxy:
        proxy.add(Latency(0.05), direction="both")
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"question")
            client.shutdown(socket.SHUT_WR)
            assert recv_all(client) == b"got question"


def test_counters_and_report_name_the_faults_that_fired(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address, seed=3) as proxy:
        proxy.add(Latency(0.01), direction="both", name="lag")
        for _ in range(2):
            with socket.create_connection(proxy.address, timeout=5) as client:
                round_trip(client)
        counters = proxy.counters
        report = proxy.report
    assert counters.faults_fired == {"lag": 4}  # two connections, two directions each
    assert report.seed == 3
    assert len(report.fired(Latency)) == 4


def test_probability_draws_replay_with_the_same_seed(make_upstream: MakeUpstream) -> None:
    server = make_upstream(lambda conn: (conn.sendall(b"hi"), recv_all(conn)))

    def run(seed: int) -> list[bool]:
        cut: list[bool] = []
        with FaultProxy(upstream=server.address, seed=seed) as proxy:
            proxy.add(CloseAfter(0, probability=0.5), direction="downstream")
            for _ in range(12):
                with socket.create_connection(proxy.address, timeout=5) as client:
                    cut.append(recv_exactly(client, 2) == b"")
        return cut

    first = run(11)
    assert run(11) == first
    assert True in first and False in first  # 12 draws at 0.5: both outcomes occur


def test_connect_timeout_leaves_new_clients_hanging(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as survivor:
            round_trip(survivor)
            proxy.add(ConnectTimeout())
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                socket.create_connection(proxy.address, timeout=0.3).close()
            assert 0.29 <= time.monotonic() - started < 1.0
            assert round_trip(survivor) < 0.5  # open connections keep working
            proxy.remove("connecttimeout")
            with socket.create_connection(proxy.address, timeout=5) as client:
                round_trip(client)


def test_connect_faults_a_proxy_cannot_make_are_rejected() -> None:
    with FaultProxy(upstream=("127.0.0.1", 9)) as proxy:
        with pytest.raises(ValueError, match="cannot produce ConnectDelay"):
            proxy.add(ConnectDelay(1.0))
        with pytest.raises(ValueError, match="no probability"):
            proxy.add(Refuse(probability=0.5))
        with pytest.raises(ValueError, match="no probability"):
            proxy.add(ConnectTimeout(connections=2))


def test_faults_added_before_start_apply_from_the_first_connection(
    echo_server: Upstream,
) -> None:
    proxy = FaultProxy(upstream=echo_server.address)
    proxy.add(Latency(0.2), direction="upstream", name="early")
    with proxy:
        assert [f.name for f in proxy.faults] == ["early"]
        with socket.create_connection(proxy.address, timeout=5) as client:
            assert 0.19 <= round_trip(client) < 1.5


def test_coalesce_merges_chunks_into_one_read(make_upstream: MakeUpstream) -> None:
    sizes: list[int] = []
    done = threading.Event()

    def record(conn: socket.socket) -> None:
        while data := conn.recv(65536):
            sizes.append(len(data))
        done.set()

    server = make_upstream(record)
    with FaultProxy(upstream=server.address) as proxy:
        # 1 s: five writes 10 ms apart stay inside it even on a loaded machine (0.3 s
        # did not: [20, 30] was seen).
        proxy.add(Coalesce(window=1.0), direction="upstream")
        with socket.create_connection(proxy.address, timeout=5) as client:
            for _ in range(5):
                client.sendall(b"w" * 10)
                time.sleep(0.01)  # five separate writes, well inside the window
        assert done.wait(5)
    assert sizes == [50]


def test_faults_work_on_the_running_loop(echo_server: Upstream) -> None:
    async def main() -> float:
        async with FaultProxy(upstream=echo_server.address) as proxy:
            proxy.add(Latency(0.2), direction="downstream")
            reader, writer = await asyncio.open_connection(*proxy.address)
            started = time.monotonic()
            writer.write(b"hi")
            assert await reader.readexactly(2) == b"hi"
            elapsed = time.monotonic() - started
            writer.close()
            await writer.wait_closed()
            return elapsed

    assert 0.19 <= asyncio.run(main()) < 1.5


def test_scope_new_keeps_absolute_connection_numbers(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as first:
            round_trip(first)
            proxy.add(CloseAfter(0, connections={1, 3}), direction="downstream", scope="new")
            assert round_trip(first) < 0.5  # connection 1 is open: "new" spares it
        outcomes = []
        for _ in range(2):  # connections 2 and 3
            with socket.create_connection(proxy.address, timeout=5) as client:
                client.sendall(b"?")
                try:
                    outcomes.append(client.recv(1))
                except ConnectionResetError:
                    outcomes.append(b"")  # the cut raced our unread "?" into an RST
    assert outcomes == [b"?", b""]


def test_after_bytes_counts_bytes_that_passed_before_the_fault(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as client:
            round_trip(client, b"a" * 100)  # 100 bytes downstream with no fault
            proxy.add(CloseAfter(10, after_bytes=150), direction="downstream")
            client.sendall(b"b" * 100)
            # Active from byte 150, cut 10 bytes later: 60 of the 100 arrive, then EOF.
            assert recv_all(client) == b"b" * 60


def test_removing_a_stall_lets_the_held_data_through(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(Stall(), direction="upstream", name="stall")
        with socket.create_connection(proxy.address, timeout=0.3) as client:
            client.sendall(b"held")
            with pytest.raises(TimeoutError):
                client.recv(4)
            proxy.remove("stall")
            client.settimeout(5)
            assert recv_exactly(client, 4) == b"held"
