"""A health check that crashes when the name does not resolve.

``is_up(host, port)`` promises a bool: True when the service answers ``PONG``,
False when it cannot be reached. The buggy one catches ConnectionError and
TimeoutError only, so a failed look-up (``DnsFailure``: ``socket.gaierror``, an
OSError that is neither) escapes as an exception.

Contract: True, or False when a fault fired; never an exception; within 3 s.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator

from sockwork.testing.contract import contract, fired_events

try:
    from . import _kit
except ImportError:  # run as a script
    import _kit  # type: ignore[no-redef]

BUG = "DNS error unhandled"


def _handle(conn: socket.socket) -> None:
    if _kit.recv_line(conn, bytearray()) == b"PING":
        conn.sendall(b"PONG\n")


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the ping server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


def _ping(host: str, port: int) -> bool:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, socket.AF_INET, socket.SOCK_STREAM
    )[0]
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(1.0)
        sock.connect(address)
        sock.sendall(b"PING\n")
        return _kit.recv_line(sock, bytearray()) == b"PONG"


def buggy_is_up(host: str, port: int) -> bool:
    """Ping the service; network errors (but not look-up errors) mean down."""
    try:
        return _ping(host, port)
    except (ConnectionError, TimeoutError):
        return False


def correct_is_up(host: str, port: int) -> bool:
    """Ping the service; any OSError (look-ups included) means down."""
    try:
        return _ping(host, port)
    except OSError:
        return False


VARIANTS = {"buggy": buggy_is_up, "correct": correct_is_up}


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the service is up (looked up by name)."""
    is_up = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as (_, port):
        with contract(within=3.0):
            up = is_up("localhost", port)
            assert up or fired_events(), "down although no fault fired"


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
