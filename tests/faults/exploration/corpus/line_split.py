"""A client of a line-based listing that splits each read into lines.

Protocol: ``LIST\\n`` is answered with one name per line and a ``.`` line. The
buggy client splits every ``recv`` into lines on its own, so a line that comes
in two reads (``Slice``) becomes two names. The correct one keeps the unfinished
tail of a read for the next.

Contract: the whole listing, or ConnectionError/TimeoutError, within 3 s.
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

BUG = "a line split across recvs"
NAMES = [f"release-{n:03d}.tar.gz".encode() for n in range(12)]


def _handle(conn: socket.socket) -> None:
    if _kit.recv_line(conn, bytearray()) == b"LIST":
        conn.sendall(b"".join(name + b"\n" for name in NAMES) + b".\n")


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the listing server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


def buggy_listing(address: _kit.Address) -> list[bytes]:
    """List the names: each read is split into lines as it comes."""
    names: list[bytes] = []
    with socket.create_connection(address, timeout=1.0) as sock:
        sock.sendall(b"LIST\n")
        while True:
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("connection closed before the end of the listing")
            for line in data.splitlines():
                if line == b".":
                    return names
                names.append(line)


def correct_listing(address: _kit.Address) -> list[bytes]:
    """List the names, reading whole lines."""
    names: list[bytes] = []
    buffer = bytearray()
    with socket.create_connection(address, timeout=1.0) as sock:
        sock.sendall(b"LIST\n")
        while (line := _kit.recv_line(sock, buffer)) != b".":
            names.append(line)
    return names


VARIANTS = {"buggy": buggy_listing, "correct": correct_listing}


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the listing comes back."""
    listing = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as address:
        with contract(ConnectionError, TimeoutError, within=3.0):
            assert listing(address) == NAMES


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
