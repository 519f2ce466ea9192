"""Per-scope faults with inject(): connections made or accepted in the block."""

from __future__ import annotations

import errno
import socket
import sys
import threading
import time

import pytest

from sockwork.faults import (
    Bandwidth,
    CloseAfter,
    ConnectDelay,
    DnsFailure,
    HalfClose,
    Latency,
    Match,
    Refuse,
    Target,
    dispatch,
    fired,
    inject,
)

from .conftest import elapsed, recv_all


def test_inject_refuses_the_first_connections_then_lets_through(listener: socket.socket) -> None:
    address = listener.getsockname()
    with inject(Refuse(connections=2), seed=1) as handle:
        for _ in range(2):
            with pytest.raises(ConnectionRefusedError) as info:
                socket.create_connection(address, timeout=2)
            assert info.value.errno == errno.ECONNREFUSED
        with socket.create_connection(address, timeout=2):
            pass
        assert [(e.what, e.connection) for e in handle.report.events] == [
            ("refuse", 1),
            ("refuse", 2),
        ]
        assert "seed=1" in str(handle.report)


def test_inject_affects_both_ends_made_in_the_block(listener: socket.socket) -> None:
    with inject(CloseAfter(3, direction="send", connections=1)):
        client = socket.create_connection(listener.getsockname(), timeout=2)
        conn, _ = listener.accept()  # stream #2 (server side): unaffected
        with client, conn:
            client.sendall(b"abcdef")
            assert recv_all(conn) == b"abc"
            conn.sendall(b"server")


def test_inject_leaves_existing_connections_alone(listener: socket.socket) -> None:
    client = socket.create_connection(listener.getsockname(), timeout=2)
    conn, _ = listener.accept()
    with client, conn:
        with inject(CloseAfter(0)):
            client.sendall(b"still fine")
            assert conn.recv(100) == b"still fine"


def test_inject_match_filters_by_port_and_role(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with socket.create_server(("127.0.0.1", 0)) as other:
        with inject(Refuse(), match=Match(port=port, role="client")):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2)
            with socket.create_connection(other.getsockname(), timeout=2):
                pass
        seen: list[Target] = []

        def spy(target: Target) -> bool:
            seen.append(target)
            return False

        with inject(Refuse(), match=spy):
            with socket.create_connection(other.getsockname(), timeout=2):
                pass
        assert seen == [Target("client", "127.0.0.1", other.getsockname()[1])]


def test_inject_restores_on_exception(listener: socket.socket) -> None:
    with pytest.raises(ConnectionRefusedError) as info:
        with inject(Refuse(), seed=99):
            socket.create_connection(listener.getsockname(), timeout=2)
    assert not dispatch.installed()
    if hasattr(info.value, "__notes__"):
        assert "seed=99" in info.value.__notes__[0]
    with socket.create_connection(listener.getsockname(), timeout=2):
        pass


def test_inject_scopes_nest(listener: socket.socket) -> None:
    with inject(ConnectDelay(0.1)):
        with inject(Refuse()):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(listener.getsockname(), timeout=2)
        start = time.monotonic()
        with socket.create_connection(listener.getsockname(), timeout=2):
            assert 0.09 <= elapsed(start) < 1.0
    assert not dispatch.installed()


def test_inject_cannot_be_entered_twice() -> None:
    scope = inject()
    with scope:
        pass
    with pytest.raises(RuntimeError, match="once"):
        with scope:
            pass


@pytest.mark.parametrize(
    ("kind", "code", "message"),
    [
        ("noname", socket.EAI_NONAME, "Name or service not known"),
        ("again", socket.EAI_AGAIN, "Temporary failure in name resolution"),
    ],
)
def test_inject_dns_failure(kind: str, code: int, message: str) -> None:
    with inject(DnsFailure(kind, delay=0.1)) as handle:  # type: ignore[arg-type]
        start = time.monotonic()
        with pytest.raises(socket.gaierror) as info:
            socket.getaddrinfo("localhost", 80)
        assert info.value.errno == code
        assert message in str(info.value)
        assert 0.09 <= elapsed(start) < 1.0
        with pytest.raises(socket.gaierror):
            socket.create_connection(("localhost", 9), timeout=1)
        assert socket.getaddrinfo("127.0.0.1", 80)  # numeric: no DNS involved
        assert [e.label for e in handle.report.events] == ["localhost", "localhost"]
    assert socket.getaddrinfo("localhost", 80)


def test_inject_is_thread_safe(listener: socket.socket) -> None:
    listener.listen(64)
    address = listener.getsockname()
    errors: list[BaseException] = []
    refused = []

    def worker() -> None:
        try:
            for _ in range(5):
                try:
                    with socket.create_connection(address, timeout=2):
                        pass
                except ConnectionRefusedError:
                    refused.append(1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def acceptor() -> None:
        listener.settimeout(0.5)
        try:
            while True:
                conn, _ = listener.accept()
                conn.close()
        except TimeoutError:
            pass

    with inject(Refuse(connections=range(1, 11)), match=Match(role="client")):
        threads = [threading.Thread(target=worker) for _ in range(4)]
        acceptor_thread = threading.Thread(target=acceptor)
        acceptor_thread.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        acceptor_thread.join()
    assert errors == []
    assert len(refused) == 10  # exactly the first ten attempts, across threads


def test_inject_latency_on_a_blocking_round_trip(listener: socket.socket) -> None:
    with inject(Latency(0.1)):
        client = socket.create_connection(listener.getsockname(), timeout=2)
        conn, _ = listener.accept()
        with client, conn:
            start = time.monotonic()
            client.sendall(b"ping")
            assert conn.recv(10) == b"ping"
            conn.sendall(b"pong")
            assert client.recv(10) == b"pong"
            assert 0.19 <= elapsed(start) < 1.0  # one-way latency, each direction once


def test_inject_bandwidth_group_is_shared_by_connections(listener: socket.socket) -> None:
    def transfer(fault: Bandwidth) -> float:
        with inject(fault, match=Match(role="client")):
            clients = [
                socket.create_connection(listener.getsockname(), timeout=5) for _ in range(2)
            ]
            servers = [listener.accept()[0] for _ in range(2)]
            start = time.monotonic()
            threads = [threading.Thread(target=c.sendall, args=(bytes(20_000),)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = elapsed(start)
        for s in clients + servers:
            s.close()
        return took

    separate = transfer(Bandwidth(100_000, direction="send"))
    shared = transfer(Bandwidth(100_000, group="uplink", direction="send"))
    assert 0.1 <= separate < 0.6  # each connection: 20 KB at 100 KB/s
    assert 0.3 <= shared < 1.2  # both share 100 KB/s: 40 KB


def test_inject_forgets_each_connection_when_its_socket_closes(listener: socket.socket) -> None:
    with inject(Latency(0.001, connections=range(2, 2**62))) as handle:
        for _ in range(300):
            with socket.create_connection(listener.getsockname(), timeout=2) as client:
                conn, _ = listener.accept()
                with conn:
                    client.sendall(b"x")
                    assert conn.recv(1) == b"x"
        assert handle._scope.plan.connections_open == 0  # the plan holds no closed connection
        assert handle.report.fired(Latency)  # the faults were on those connections


# --- fired(): what the current scope's faults did ---------------------------------------


def test_fired_is_empty_before_any_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    # sockwork.faults.inject is also the name of the function: reach the module.
    monkeypatch.setattr(sys.modules["sockwork.faults.inject"], "_LAST", None)
    assert fired() == []


def test_fired_names_the_fault_and_the_connection_during_and_after(
    listener: socket.socket,
) -> None:
    address = listener.getsockname()
    with inject(Refuse(connections={2}), HalfClose(3, connections={1}), seed=1) as handle:
        with socket.create_connection(address, timeout=2) as first:
            server, _ = listener.accept()
            with server:
                first.sendall(b"abcdef")
                assert recv_all(server) == b"abc"  # the half-close ended the request
        assert [(e.what, e.kind, e.connection) for e in fired()] == [
            ("fired", "stream", 1),
            ("half-close", "stream", 1),
        ]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=2)
        during = fired()
        assert [(e.what, e.kind, e.connection) for e in fired(Refuse)] == [("refuse", "connect", 2)]
        assert fired(HalfClose)[-1].offset == 3
        assert fired(HalfClose)[-1].label.startswith("client 127.0.0.1:")
    assert fired() == during == list(handle.report.events)  # the last scope that ended


def test_fired_reads_the_innermost_active_scope(listener: socket.socket) -> None:
    address = listener.getsockname()
    with inject(Refuse(connections=1), match=Match(port=1)) as outer:
        with inject(Refuse(connections=1), seed=2) as inner:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(address, timeout=2)
            assert [e.what for e in fired()] == ["refuse"]
            assert fired() == list(inner.report.events)
        assert fired() == list(outer.report.events) == []  # back to the outer scope
    assert fired() == []  # the outer one ended last


def test_fired_from_another_thread_while_the_scope_runs(listener: socket.socket) -> None:
    address = listener.getsockname()
    seen: list[list[str]] = []
    refused = threading.Event()
    release = threading.Event()

    def body() -> None:
        with inject(Refuse(connections=1)):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(address, timeout=2)
            refused.set()
            release.wait(5)

    thread = threading.Thread(target=body)
    thread.start()
    try:
        assert refused.wait(5)
        seen.append([e.what for e in fired()])
    finally:
        release.set()
        thread.join(5)
    assert seen == [["refuse"]]
