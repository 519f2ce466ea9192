"""A key-value server that reads each request with one ``recv``.

Protocol: ``SET <key> <value>\\n`` answered ``OK\\n``, ``GET <key>\\n`` answered
with the value. The buggy server takes one ``recv`` as one request: when a
request arrives in pieces (``Slice`` on the client's sends or the server's
reads) it stores part of the value and says OK. The correct one reads a line.

Contract: what was set is what is got, or ConnectionError/TimeoutError, within 3 s.
"""

from __future__ import annotations

import socket
import sys
import threading

from sockwork.testing.contract import contract

try:
    from . import _kit
except ImportError:  # run as a script
    import _kit  # type: ignore[no-redef]

BUG = "server takes one recv as one request"
VALUE = b"the quick brown fox jumps over the lazy dog " * 6


class Store:
    """The server: a dict behind a lock."""

    def __init__(self, variant: str) -> None:
        self._careful = variant == "correct"
        self._lock = threading.Lock()
        self._data: dict[bytes, bytes] = {}

    def handle(self, conn: socket.socket) -> None:
        """Serve one request."""
        if self._careful:
            request = _kit.recv_line(conn, bytearray())
        else:
            request = conn.recv(65536).rstrip(b"\n")
        verb, _, rest = request.partition(b" ")
        if verb == b"SET":
            key, _, value = rest.partition(b" ")
            with self._lock:
                self._data[key] = value
            conn.sendall(b"OK\n")
        elif verb == b"GET":
            with self._lock:
                value = self._data.get(rest, b"")
            conn.sendall(value + b"\n")
        else:
            conn.sendall(b"ERR\n")


def _call(address: _kit.Address, request: bytes) -> bytes:
    with socket.create_connection(address, timeout=1.0) as sock:
        sock.sendall(request + b"\n")
        return _kit.recv_line(sock, bytearray())


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: a value set is the value got."""
    with _kit.Server(Store(variant).handle) as store:
        with contract(ConnectionError, TimeoutError, within=3.0):
            assert _call(store.address, b"SET motto " + VALUE) == b"OK"
            assert _call(store.address, b"GET motto") == VALUE


if __name__ == "__main__":
    sys.exit(_kit.main(test))
