"""A client that connects without a timeout (it sets one only after connecting).

``sock.connect(address)`` on a blocking socket waits for the kernel's SYN retries
(about two minutes) when the server does not answer (``ConnectTimeout``); the
buggy client sets its 1 s timeout only once connected.

Contract: the greeting, or ConnectionError/TimeoutError, within 3 s.
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

BUG = "no connect timeout"
GREETING = b"hello from the server"


def _handle(conn: socket.socket) -> None:
    conn.sendall(GREETING + b"\n")


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the greeting server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


def buggy_greeting(address: _kit.Address) -> bytes:
    """Read the greeting: connect() first, the timeout after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.connect(address)
        sock.settimeout(1.0)
        return _kit.recv_line(sock, bytearray())


def correct_greeting(address: _kit.Address) -> bytes:
    """Read the greeting with a 1 s timeout from the connect on."""
    with socket.create_connection(address, timeout=1.0) as sock:
        return _kit.recv_line(sock, bytearray())


VARIANTS = {"buggy": buggy_greeting, "correct": correct_greeting}


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the greeting comes."""
    greeting = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as address:
        with contract(ConnectionError, TimeoutError, within=3.0):
            assert greeting(address) == GREETING


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
