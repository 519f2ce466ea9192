"""Budgets: endless waits skipped during exploration runs, real delays kept."""

from __future__ import annotations

import time

import pytest

from sockwork.faults import ConnectTimeout, Latency, Stall, apply, inject
from sockwork.faults.budget import skipping_endless_waits
from tests.faults.conftest import tcp_pair


def test_skipping_endless_waits_times_a_stalled_read_out_at_once() -> None:
    client, server = tcp_pair(timeout=30.0)
    with client, server, apply(client, Stall(direction="recv")):
        server.sendall(b"x")
        start = time.monotonic()
        with skipping_endless_waits(), pytest.raises(TimeoutError, match="timed out"):
            client.recv(1)
        assert time.monotonic() - start < 5.0  # not the socket's 30 s


def test_skipping_endless_waits_keeps_real_delays() -> None:
    client, server = tcp_pair(timeout=5.0)
    with client, server, apply(client, Latency(0.2, direction="recv")):
        server.sendall(b"x")
        start = time.monotonic()
        with skipping_endless_waits():
            assert client.recv(1) == b"x"
        assert time.monotonic() - start >= 0.19


def test_skipping_endless_waits_times_a_connect_never_answered_out_at_once() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener, inject(ConnectTimeout()):
        start = time.monotonic()
        with skipping_endless_waits(), pytest.raises(TimeoutError):
            socket.create_connection(listener.getsockname(), timeout=30.0)
        assert time.monotonic() - start < 5.0


def test_endless_waits_are_waited_out_outside_the_block() -> None:
    client, server = tcp_pair(timeout=0.3)
    with client, server, apply(client, Stall(direction="recv")):
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            client.recv(1)
        assert time.monotonic() - start >= 0.29
