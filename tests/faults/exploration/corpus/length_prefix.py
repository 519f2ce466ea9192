"""A client of a length-prefixed quote service; the bug: one recv taken as one message.

Protocol: a request and a reply are each a 4-byte big-endian length and that many
bytes. The buggy client reads the reply with one ``recv`` and takes what came as
the whole message; a slow link or a split read (``Slice``) hands it half a reply.

Contract: the right quote, or ConnectionError/TimeoutError, within 3 s.
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
except ImportError:  # run as a script: python length_prefix.py VARIANT
    import _kit  # type: ignore[no-redef]

BUG = "one recv taken as one message"
QUOTES = {b"wilde": b"I can resist everything except temptation. " * 20}


def _send_message(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("!I", len(payload)) + payload)


def _handle(conn: socket.socket) -> None:
    buffer = _kit.recv_exactly(conn, 4)
    (size,) = struct.unpack("!I", buffer)
    name = _kit.recv_exactly(conn, size)
    _send_message(conn, QUOTES.get(name, b""))


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the quote server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


def buggy_quote(address: _kit.Address, name: bytes) -> bytes:
    """Ask for a quote: the reply is read with one recv."""
    with socket.create_connection(address, timeout=1.0) as sock:
        _send_message(sock, name)
        data = sock.recv(65536)
        (size,) = struct.unpack("!I", data[:4])
        return data[4 : 4 + size]


def correct_quote(address: _kit.Address, name: bytes) -> bytes:
    """Ask for a quote: read the header, then exactly the announced bytes."""
    with socket.create_connection(address, timeout=1.0) as sock:
        _send_message(sock, name)
        (size,) = struct.unpack("!I", _kit.recv_exactly(sock, 4))
        return _kit.recv_exactly(sock, size)


VARIANTS = {"buggy": buggy_quote, "correct": correct_quote}


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the quote comes back whole."""
    quote = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as address:
        with contract(ConnectionError, TimeoutError, within=3.0):
            assert quote(address, b"wilde") == QUOTES[b"wilde"]


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
