"""Reliability: no leaked fds, tasks or threads; failures stay on their own connection."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import queue
import socket
import struct
import threading
import time

import pytest

import sockwork.proxy.proxy as proxy_module
from sockwork.faults import Latency, Stall
from sockwork.faults.plan import Plan
from sockwork.proxy import ConnectionEvent, FaultProxy
from sockwork.proxy.pipe import Pipe
from tests.proxy.conftest import (
    MakeUpstream,
    Upstream,
    echo_then_marker,
    open_fds,
    recv_exactly,
    wait_until,
)


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


def test_reliability_closed_connections_leave_no_state_in_the_plan(echo_server: Upstream) -> None:
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(Latency(0.001), direction="downstream", name="lag")
        for _ in range(300):
            with socket.create_connection(proxy.address, timeout=5) as client:
                client.sendall(b"c")
                assert recv_exactly(client, 1) == b"c"
        wait_until_idle(proxy)
        assert proxy._require_plan().connections_open == 0  # not only after 256 closes
        assert proxy.counters.faults_fired == {"lag": 300}


def test_reliability_counters_and_closing_events_outlive_the_bounded_report(
    echo_server: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plan keeping only 2 events stands for a long-lived proxy past the default 10,000.
    monkeypatch.setattr(proxy_module, "Plan", functools.partial(Plan, max_events=2))
    closed: queue.SimpleQueue[ConnectionEvent] = queue.SimpleQueue()

    def on_event(event: ConnectionEvent) -> None:
        if event.kind == "closed":
            closed.put(event)

    with FaultProxy(upstream=echo_server.address, on_event=on_event) as proxy:
        proxy.add(Latency(0.001), direction="both", name="lag")
        for _ in range(5):
            with socket.create_connection(proxy.address, timeout=5) as client:
                client.sendall(b"c")
                assert recv_exactly(client, 1) == b"c"
            assert closed.get(timeout=5).faults_fired == ("lag", "lag")
        assert proxy.counters.faults_fired == {"lag": 10}  # 5 connections, 2 directions
        assert len(proxy.report.events) == 2 and proxy.report.dropped == 8


def test_reliability_held_data_released_to_a_closed_client_ends_cleanly(
    make_upstream: MakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 9 item 6, timer path: the latency expires by itself after the client closed.
    # Writing the held marker makes the client's kernel answer RST; passing the EOF on
    # then meets ENOTCONN. The connection must end, and no callback may crash.
    done = threading.Event()
    upstream = make_upstream(echo_then_marker(done))
    closed: queue.SimpleQueue[ConnectionEvent] = queue.SimpleQueue()

    def on_event(event: ConnectionEvent) -> None:
        if event.kind == "closed":
            closed.put(event)

    with FaultProxy(upstream=upstream.address, on_event=on_event) as proxy:
        proxy.add(Latency(0.1), direction="downstream", name="lag")
        with socket.create_connection(proxy.address, timeout=5) as client:
            client.sendall(b"r")
            assert recv_exactly(client, 1) == b"r"
        assert done.wait(5)
        event = closed.get(timeout=5)
        assert event.bytes_upstream == 1 and event.bytes_downstream in (1, 4)
        assert proxy.counters.connections_open == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_reliability_a_failing_connection_does_not_fail_a_fault_change(
    echo_server: Upstream, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Removing or updating a fault never fails because of one connection: a connection
    # whose step raises is reported to the loop's exception handler and closed.
    with FaultProxy(upstream=echo_server.address) as proxy:
        proxy.add(Latency(0.01), direction="downstream", name="lag")
        with (
            socket.create_connection(proxy.address, timeout=5) as doomed,
            socket.create_connection(proxy.address, timeout=5) as steady,
        ):
            for c in (doomed, steady):
                c.sendall(b"1")
                assert recv_exactly(c, 1) == b"1"
            broken = proxy._require_hub().connections[1]  # doomed's, the first accepted
            original = Pipe.faults_changed

            def faults_changed(pipe: Pipe) -> None:
                if pipe.owner is broken:
                    raise OSError(107, "Transport endpoint is not connected")
                original(pipe)

            monkeypatch.setattr(Pipe, "faults_changed", faults_changed)
            proxy.remove("lag")  # does not raise
            assert proxy.faults == ()
            with pytest.raises(ConnectionResetError):
                doomed.recv(1)  # closed with an RST: it ended abnormally
            steady.sendall(b"2")
            assert recv_exactly(steady, 1) == b"2"
            wait_until(lambda: proxy.counters.connections_open == 1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "faults changed" in errors[0].getMessage()
    assert isinstance(errors[0].exc_info and errors[0].exc_info[1], OSError)
