"""Upstream servers for the proxy tests: an echo server and a scripted one, on 127.0.0.1:0."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest


class Upstream:
    """A threaded TCP server on 127.0.0.1:0 running ``handler(conn)`` per connection."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.accepted = 0
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._stopping:
                    conn.close()
                    return
                self.accepted += 1
                self._conns.append(conn)
                t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._stopping = True
        # shutdown() wakes a thread blocked in accept(); close() alone does not on Linux.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._thread.join(5)
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(5)


def echo(conn: socket.socket) -> None:
    """Echo every byte back; on EOF, shut down the sending side and return."""
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


def echo_then_marker(
    done: threading.Event, marker: bytes = b"END"
) -> Callable[[socket.socket], None]:
    """An echo handler that, on EOF, sends ``marker``, closes, and sets ``done``."""

    def handler(conn: socket.socket) -> None:
        while data := conn.recv(65536):
            conn.sendall(data)
        conn.sendall(marker)
        conn.close()
        done.set()

    return handler


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still false after {timeout} s: {condition}"
        time.sleep(0.005)


@pytest.fixture
def echo_server() -> Iterator[Upstream]:
    server = Upstream(echo)
    yield server
    server.close()


MakeUpstream = Callable[[Callable[[socket.socket], None]], Upstream]


@pytest.fixture
def make_upstream() -> Iterator[MakeUpstream]:
    servers: list[Upstream] = []

    def make(handler: Callable[[socket.socket], None]) -> Upstream:
        server = Upstream(handler)
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.close()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes, or fewer if the peer closes first."""
    chunks = []
    while n:
        data = sock.recv(min(n, 1 << 20))
        if not data:
            break
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def recv_all(sock: socket.socket) -> bytes:
    """Read until EOF."""
    chunks = []
    while data := sock.recv(1 << 20):
        chunks.append(data)
    return b"".join(chunks)


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def free_port() -> int:
    """A port nothing listens on right now (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
