"""Stream faults on synchronous ``ssl.SSLSocket``s act on the plaintext, once per call."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from sockwork.faults import CloseAfter, Latency, Match, Slice, apply, inject

from .conftest import elapsed, tcp_pair

T = 0.4  # a delay long enough to tell one wait from two on a loaded machine

Contexts = tuple[ssl.SSLContext, ssl.SSLContext]


def handshake(
    contexts: Contexts,
    client: socket.socket,
    server: socket.socket,
) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    """Wrap a connected TCP pair in TLS (server side in a thread): (client, server)."""
    wrapped: list[ssl.SSLSocket] = []
    thread = threading.Thread(
        target=lambda: wrapped.append(contexts[0].wrap_socket(server, server_side=True))
    )
    thread.start()
    try:
        tls = contexts[1].wrap_socket(client, server_hostname="localhost")
    finally:
        thread.join()
    return tls, wrapped[0]


@pytest.fixture
def tls(tls_contexts: Contexts) -> Iterator[tuple[ssl.SSLSocket, ssl.SSLSocket]]:
    client, server = handshake(tls_contexts, *tcp_pair())
    with client, server:
        yield client, server


def read_exactly(sock: socket.socket, n: int, read: Callable[[int], bytes] | None = None) -> bytes:
    data = b""
    while len(data) < n:
        chunk = (read or sock.recv)(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


def test_tls_recv_latency_waits_once(tls: tuple[ssl.SSLSocket, ssl.SSLSocket]) -> None:
    client, server = tls
    with apply(client, Latency(T)):
        server.sendall(b"hello")
        start = time.monotonic()
        data = client.recv(100)  # SSLSocket.recv calls self.read: one pass through the faults
        took = elapsed(start)
    assert data == b"hello"
    assert T * 0.9 <= took < 2 * T * 0.9


def test_tls_sendall_latency_waits_once(tls: tuple[ssl.SSLSocket, ssl.SSLSocket]) -> None:
    client, server = tls
    with apply(client, Latency(T, direction="send")):
        start = time.monotonic()
        client.sendall(b"x" * 300)  # SSLSocket.sendall loops over self.send
        took = elapsed(start)
    assert T * 0.9 <= took < 2 * T * 0.9
    assert read_exactly(server, 300) == b"x" * 300


def test_tls_slice_short_reads_of_plaintext(tls: tuple[ssl.SSLSocket, ssl.SSLSocket]) -> None:
    client, server = tls
    payload = bytes(range(256)) * 4
    server.sendall(payload)
    buffer = bytearray(100)
    with apply(client, Slice(3)):
        pieces = [client.recv(100), client.read(100)]
        n = client.recv_into(buffer)
        pieces.append(bytes(buffer[:n]))
        assert all(1 <= len(p) <= 3 for p in pieces)
        got = b"".join(pieces)
        rest = read_exactly(client, len(payload) - len(got))
    assert got + rest == payload


def test_tls_slice_short_writes_of_plaintext(tls: tuple[ssl.SSLSocket, ssl.SSLSocket]) -> None:
    client, server = tls
    with apply(client, Slice(10, min_bytes=10, direction="send")):
        assert client.send(b"a" * 100) == 10
        assert client.write(b"b" * 100) == 10
        client.sendall(b"c" * 95)
    assert read_exactly(server, 115) == b"a" * 10 + b"b" * 10 + b"c" * 95


def test_tls_latency_respects_timeout_and_keeps_the_data(
    tls: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    client, server = tls
    with apply(client, Latency(1.0)):
        server.sendall(b"late")
        client.settimeout(0.1)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            client.recv(100)
        assert elapsed(start) < 0.6
        client.settimeout(5.0)
        assert client.recv(100) == b"late"
        assert elapsed(start) >= 0.9


def test_tls_plaintext_read_ahead_is_handed_back_after_remove(
    tls: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    client, server = tls
    handle = apply(client, Latency(5.0))
    server.sendall(b"kept")
    client.settimeout(0.1)
    with pytest.raises(TimeoutError):
        client.recv(100)  # the plaintext was decrypted, and waits for its due time
    handle.remove()
    client.settimeout(5.0)
    start = time.monotonic()
    assert client.pending() == 4
    assert client.recv(100) == b"kept"
    server.sendall(b"more")
    assert client.recv(100) == b"more"
    assert elapsed(start) < 1.0


def test_tls_close_after_cuts_the_plaintext_stream(
    tls: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    client, server = tls
    with apply(client, CloseAfter(5, direction="send")):
        client.sendall(b"12345")
        with pytest.raises(BrokenPipeError):
            client.sendall(b"67890")
    assert read_exactly(server, 5) == b"12345"
    assert server.recv(100) == b""  # EOF without close_notify: a ragged EOF, suppressed


def test_tls_nonblocking_recv_not_due_wants_read(tls: tuple[ssl.SSLSocket, ssl.SSLSocket]) -> None:
    client, server = tls
    with apply(client, Latency(T)):
        server.sendall(b"soon")
        client.setblocking(False)
        start = time.monotonic()
        with pytest.raises(ssl.SSLWantReadError):
            client.recv(100)
        data = b""
        while not data and elapsed(start) < 5.0:
            try:
                data = client.recv(100)
            except ssl.SSLWantReadError:
                time.sleep(0.01)  # polling is the point of this test: no event to wait for
    assert data == b"soon"
    assert elapsed(start) >= T * 0.9


def test_tls_faults_applied_before_wrapping_follow_the_fd(tls_contexts: Contexts) -> None:
    raw_client, raw_server = tcp_pair()
    handle = apply(raw_client, Slice(2))
    client, server = handshake(tls_contexts, raw_client, raw_server)  # the handshake is untouched
    with handle, client, server:
        server.sendall(b"abcdef")
        assert client.recv(100) in (b"a", b"ab")
    assert raw_client.fileno() == -1


def test_tls_inject_reaches_client_and_accepted_sockets(tls_contexts: Contexts) -> None:
    with socket.create_server(("127.0.0.1", 0)) as raw_listener:
        port = raw_listener.getsockname()[1]
        with (
            tls_contexts[0].wrap_socket(raw_listener, server_side=True) as listener,
            inject(Slice(4, min_bytes=4), match=Match(port=port)) as handle,
        ):
            accepted: list[ssl.SSLSocket] = []
            thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
            thread.start()
            raw = socket.create_connection(("127.0.0.1", port), timeout=5.0)
            client = tls_contexts[1].wrap_socket(raw, server_hostname="localhost")
            thread.join()
            server = accepted[0]
            with client, server:
                server.settimeout(5.0)
                assert client.send(b"0123456789") == 4  # client side: short write
                client.sendall(b"456789")
                assert server.recv(100) == b"0123"  # server side: short read
                assert read_exactly(server, 6) == b"456789"
    assert {event.label.split()[0] for event in handle.report.fired(Slice)} == {"client", "server"}
