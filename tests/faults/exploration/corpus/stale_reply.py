"""A key-value client that reads a late reply as the answer to its next request.

The client keeps one connection for all its requests. When a reply is late
(``Latency`` above its 0.5 s timeout) the request fails with TimeoutError, but
the buggy client keeps the connection: the late reply is still on its way, and
the next request reads it as its own answer. The correct client closes a
connection whose request failed and opens a new one for the next.

Contract: each answer right, or ConnectionError/TimeoutError, within 3 s.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator

from sockwork.testing.contract import contract

try:
    from . import _kit
except ImportError:  # run as a script
    import _kit  # type: ignore[no-redef]

BUG = "a reply matched to the wrong request after a timeout"
# Four look-ups: a reply held back longer than two 0.5 s timeouts (the explorer tries
# 1.25 times the server's 1 s) still lands in a later look-up's wait when the server
# thread answered late (up to 0.7 s late instead of 0.2 s with three).
STORE = {b"alpha": b"1", b"beta": b"2", b"gamma": b"3", b"delta": b"4"}


def _handle(conn: socket.socket) -> None:
    buffer = bytearray()
    while True:
        try:
            key = _kit.recv_line(conn, buffer)
        except ConnectionError:
            return
        conn.sendall(STORE.get(key, b"") + b"\n")


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the key-value server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


class Client:
    """A key-value client over one kept connection."""

    def __init__(self, address: _kit.Address, *, careful: bool) -> None:
        self._address = address
        self._careful = careful
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    def get(self, key: bytes) -> bytes:
        """Return the value of ``key``."""
        if self._sock is None:
            self._sock = socket.create_connection(self._address, timeout=0.5)
            self._buffer = bytearray()
        try:
            self._sock.sendall(key + b"\n")
            return _kit.recv_line(self._sock, self._buffer)
        except OSError:
            if self._careful:  # the connection is in an unknown state: drop it
                self._sock.close()
                self._sock = None
            raise

    def close(self) -> None:
        """Close the connection."""
        if self._sock is not None:
            self._sock.close()


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: four look-ups on one client."""
    with _kit.maybe_server(server, serve) as address:
        client = Client(address, careful=variant == "correct")
        try:
            for key, value in STORE.items():
                with contract(ConnectionError, TimeoutError, within=3.0):
                    assert client.get(key) == value
        finally:
            client.close()


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
