"""Socket pairs and helpers for the fault tests."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from sockwork.faults import dispatch, tls


@pytest.fixture(autouse=True)
def _socket_class_restored() -> Iterator[None]:
    """Every test leaves socket.socket exactly as it found it."""
    before = _patchable_attributes()
    getaddrinfo = socket.getaddrinfo
    yield
    assert _patchable_attributes() == before, "socket.socket or ssl.SSLSocket was not restored"
    assert socket.getaddrinfo is getaddrinfo
    assert not dispatch.installed()


def _patchable_attributes() -> dict[str, object]:
    found = {name: socket.socket.__dict__.get(name) for name in dispatch._PATCHED_NAMES}
    found.update((f"ssl.{name}", ssl.SSLSocket.__dict__.get(name)) for name in tls.PATCHED_NAMES)
    return found


def tcp_pair(timeout: float | None = 5.0) -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on loopback: (client, server side)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=timeout)
        server, _ = listener.accept()
    server.settimeout(timeout)
    return client, server


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = tcp_pair()
    with a, b:
        yield a, b


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(5.0)
        yield sock


def recv_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Read until EOF."""
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
        assert sum(map(len, chunks)) <= limit


def elapsed(start: float) -> float:
    return time.monotonic() - start
