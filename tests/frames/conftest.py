"""Fixtures for the frames tests: connected socket pairs that are always closed."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest


def make_tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Return two connected TCP sockets on loopback (client, server side)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST instead of a FIN (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected loopback TCP sockets, closed after the test."""
    a, b = make_tcp_pair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()
