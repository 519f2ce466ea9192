"""A client that promises ConnectionError yet crashes with OSError after a reset.

The client tidies up with ``shutdown(SHUT_RDWR)`` before closing. After the
connection was reset (``CloseAfter`` with ``reset=True``), the socket is no longer
connected and ``shutdown`` raises ``OSError`` ENOTCONN, which replaces the
``ConnectionResetError`` the caller was promised. The correct client only closes.

Contract: the balance, or ConnectionError/TimeoutError, within 3 s.
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

BUG = "reset on an established connection crashes a client that promises ConnectionError"
BALANCE = 1234


def _handle(conn: socket.socket) -> None:
    if _kit.recv_line(conn, bytearray()) == b"BALANCE":
        conn.sendall(f"{BALANCE}\n".encode())


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the balance server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


def _balance(sock: socket.socket) -> int:
    sock.sendall(b"BALANCE\n")
    return int(_kit.recv_line(sock, bytearray()))


def buggy_balance(address: _kit.Address) -> int:
    """Ask the balance; shut the connection down, then close it."""
    with socket.create_connection(address, timeout=1.0) as sock:
        try:
            return _balance(sock)
        finally:
            sock.shutdown(socket.SHUT_RDWR)


def correct_balance(address: _kit.Address) -> int:
    """Ask the balance; close the connection."""
    with socket.create_connection(address, timeout=1.0) as sock:
        return _balance(sock)


VARIANTS = {"buggy": buggy_balance, "correct": correct_balance}


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the balance comes back."""
    balance = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as address:
        with contract(ConnectionError, TimeoutError, within=3.0):
            assert balance(address) == BALANCE


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
