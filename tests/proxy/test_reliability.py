"""Reliability: no leaked fds, tasks or threads; failures stay on their own connection."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import struct
import threading
import time

from sockwork.faults import Latency, Stall
from sockwork.proxy import FaultProxy
from tests.proxy.conftest import MakeUpstream, Upstream, open_fds, recv_exactly


def wait_until_idle(proxy: FaultProxy) -> None:
    deadline = time.monotonic() + 5
    while proxy.counters.connections_open and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.counters.connections_open == 0


def test_reliability_1000_cycles_leave_no_fds_or_tasks(echo_server: Upstream) -> None:
    async def main() -> tuple[int, int, int]:
        async with FaultProxy(upstream=echo_server.address) as proxy:
            await asyncio.sleep(0)
            gc.collect()  # sockets leaked by earlier tests must not close during ours
            before = open_fds()
            for _ in range(1000):
                reader, writer = await asyncio.open_connection(*proxy.address)
                writer.write(b"c")
                assert await reader.readexactly(1) == b"c"
                writer.close()
                await writer.wait_closed()
            for _ in range(500):  # until the proxy saw every close
                if proxy.counters.connections_open == 0:
                    break
                await asyncio.sleep(0.01)
            tasks = len(asyncio.all_tasks()) - 1  # all but this one
            return before, open_fds(), tasks

    before, after, tasks = asyncio.run(main())
    assert after == before
    assert tasks == 0


def test_reliability_100_concurrent_connections(echo_server: Upstream) -> None:
    gc.collect()  # sockets leaked by earlier tests must not close during ours
    baseline = open_fds()
    with FaultProxy(upstream=echo_server.address) as proxy:
        running = open_fds()
        clients = [socket.create_connection(proxy.address, timeout=5) for _ in range(100)]
        try:
            for i, c in enumerate(clients):
                c.sendall(struct.pack("!I", i) * 100)
            for i, c in enumerate(clients):
                assert recv_exactly(c, 400) == struct.pack("!I", i) * 100
            assert proxy.counters.connections_open == 100
        finally:
            for c in clients:
                c.close()
        wait_until_idle(proxy)
        assert open_fds() == running
    assert open_fds() == baseline
    assert not [t for t in threading.enumerate() if t.name.startswith("sockwork-proxy")]


def test_reliability_a_vanishing_client_does_not_disturb_others(echo_server: Upstream) -> None:
    payload = os.urandom(2_000_000)
    with FaultProxy(upstream=echo_server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as steady:
            doomed = socket.create_connection(proxy.address, timeout=5)
            doomed.sendall(b"d" * 100_000)  # in flight when it vanishes
            doomed.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            doomed.close()  # an RST, as from a killed process
            sender = threading.Thread(target=steady.sendall, args=(payload,))
            sender.start()
            assert recv_exactly(steady, len(payload)) == payload
            sender.join()
        wait_until_idle(proxy)


def test_reliability_a_vanishing_upstream_does_not_disturb_others(
    make_upstream: MakeUpstream,
) -> None:
    count = 0
    lock = threading.Lock()

    def handler(conn: socket.socket) -> None:
        nonlocal count
        with lock:
            count += 1
            mine = count
        if mine == 1:  # the first connection's server dies mid-transfer
            conn.recv(10)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        while data := conn.recv(65536):
            conn.sendall(data)

    server = make_upstream(handler)
    with FaultProxy(upstream=server.address) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as first:
            first.sendall(b"x" * 10)
            with socket.create_connection(proxy.address, timeout=5) as second:
                try:
                    assert first.recv(10) == b""  # reset passed on (or EOF): either way, gone
                except ConnectionResetError:
                    pass
                second.sendall(b"still here")
                assert recv_exactly(second, 10) == b"still here"


def test_reliability_close_with_faults_in_flight_is_quick(echo_server: Upstream) -> None:
    proxy = FaultProxy(upstream=echo_server.address)
    proxy.start()
    proxy.add(Latency(5.0), direction="downstream")
    proxy.add(Stall(), direction="upstream", name="stall")
    clients = [socket.create_connection(proxy.address, timeout=5) for _ in range(5)]
    try:
        for c in clients:
            c.sendall(b"q" * 1000)
        started = time.monotonic()
        proxy.close()
        assert time.monotonic() - started < 1.0
        for c in clients:
            try:
                assert c.recv(10) == b""
            except ConnectionResetError:
                pass  # unread data at close turns the FIN into an RST: closed either way
    finally:
        for c in clients:
            c.close()


def test_reliability_a_reader_that_stops_slows_the_sender_with_bounded_buffers(
    make_upstream: MakeUpstream,
) -> None:
    release = threading.Event()
    server = make_upstream(lambda conn: release.wait(10))  # accepts, never reads
    try:
        with FaultProxy(upstream=server.address) as proxy:
            with socket.create_connection(proxy.address, timeout=1) as client:
                sent = 0
                chunk = b"b" * 65536
                try:
                    while sent < 200_000_000:
                        sent += client.send(chunk)
                except TimeoutError:
                    pass
                # The sender was stopped: what it got rid of fits in the kernel buffers
                # of both hops plus the proxy's 512 KiB write buffer; without
                # back-pressure the proxy would have swallowed all 200 MB.
                assert sent < 64_000_000
                assert proxy.counters.received_upstream <= sent
    finally:
        release.set()
