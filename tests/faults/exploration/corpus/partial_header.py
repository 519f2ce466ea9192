"""A client that reads a 4-byte message header with one ``recv(4)``.

Protocol: a reply is a 4-byte big-endian length and that many bytes. The buggy
client reads the body carefully but takes ``recv(4)`` as the whole header: when
the header comes in pieces (``Slice``) it decodes 1 to 3 bytes and fails with
``struct.error``, which it does not promise.

Contract: the record, or ConnectionError/TimeoutError, within 3 s.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
from collections.abc import Iterator

from sockwork.testing.contract import contract

try:
    from . import _kit
except ImportError:  # run as a script
    import _kit  # type: ignore[no-redef]

BUG = "partial header taken as a whole header"
RECORD = b'{"id": 42, "name": "sockwork", "tags": ["tcp", "faults"]}'


def _handle(conn: socket.socket) -> None:
    if _kit.recv_line(conn, bytearray()) == b"GET 42":
        conn.sendall(struct.pack("!I", len(RECORD)) + RECORD)


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the record server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


def buggy_record(address: _kit.Address) -> bytes:
    """Fetch record 42: the header is one recv(4)."""
    with socket.create_connection(address, timeout=1.0) as sock:
        sock.sendall(b"GET 42\n")
        (size,) = struct.unpack("!I", sock.recv(4))
        return _kit.recv_exactly(sock, size)


def correct_record(address: _kit.Address) -> bytes:
    """Fetch record 42: header and body are each read exactly."""
    with socket.create_connection(address, timeout=1.0) as sock:
        sock.sendall(b"GET 42\n")
        (size,) = struct.unpack("!I", _kit.recv_exactly(sock, 4))
        return _kit.recv_exactly(sock, size)


VARIANTS = {"buggy": buggy_record, "correct": correct_record}


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the record comes back."""
    record = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as address:
        with contract(ConnectionError, TimeoutError, within=3.0):
            assert record(address) == RECORD


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
