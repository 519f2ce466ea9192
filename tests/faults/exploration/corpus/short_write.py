"""An upload client that ignores what ``send()`` returns (a short write).

Protocol: the client sends a file and half-closes (``shutdown(SHUT_WR)``); the
server reads to the end and answers ``<bytes> <sha256 hex>\\n``. The buggy client
uploads with one ``send`` and never looks at the count it returns: on a busy link
(``Slice`` on sends) only part of the file goes, and the server's receipt is
for a shorter file.

Contract: a receipt for the whole file, or ConnectionError/TimeoutError, within 3 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import sys
from collections.abc import Iterator

from sockwork.testing.contract import contract

try:
    from . import _kit
except ImportError:  # run as a script
    import _kit  # type: ignore[no-redef]

BUG = "send() return value ignored (short write)"
FILE = bytes(range(256)) * 40


def _handle(conn: socket.socket) -> None:
    digest = hashlib.sha256()
    size = 0
    while chunk := conn.recv(65536):
        digest.update(chunk)
        size += len(chunk)
    conn.sendall(f"{size} {digest.hexdigest()}\n".encode())


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the upload server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


def _receipt(sock: socket.socket) -> tuple[int, str]:
    """End the upload (half-close) and read the server's receipt."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError as error:  # ENOTCONN: the server already reset the connection
        raise ConnectionResetError(error.errno, f"upload cut: {error.strerror}") from error
    size, digest = _kit.recv_line(sock, bytearray()).decode().split()
    return int(size), digest


def buggy_upload(address: _kit.Address, data: bytes) -> tuple[int, str]:
    """Upload ``data``: one send(), its count ignored."""
    with socket.create_connection(address, timeout=1.0) as sock:
        sock.send(data)
        return _receipt(sock)


def correct_upload(address: _kit.Address, data: bytes) -> tuple[int, str]:
    """Upload ``data`` with sendall()."""
    with socket.create_connection(address, timeout=1.0) as sock:
        sock.sendall(data)
        return _receipt(sock)


VARIANTS = {"buggy": buggy_upload, "correct": correct_upload}


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the receipt names the whole file."""
    upload = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as address:
        with contract(ConnectionError, TimeoutError, within=3.0):
            assert upload(address, FILE) == (len(FILE), hashlib.sha256(FILE).hexdigest())


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
