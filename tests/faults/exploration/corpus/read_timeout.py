"""A client whose reads have no timeout: it hangs forever on a stalled server.

Protocol: ``TIME\\n`` asks for the server's clock, answered ``<seconds>\\n``. The
buggy client gives the connect a timeout but then reads with none
(``settimeout(None)``): when the reply never comes (``Stall``, ``Latency``), it
waits forever.

Contract: a number, or ConnectionError/TimeoutError, within 3 s.
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

BUG = "no read timeout (hangs on a stalled peer)"
CLOCK = 1_700_000_000


def _handle(conn: socket.socket) -> None:
    buffer = bytearray()
    while True:
        try:
            line = _kit.recv_line(conn, buffer)
        except ConnectionError:
            return
        conn.sendall(f"{CLOCK}\n".encode() if line == b"TIME" else b"ERR\n")


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the clock server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


def _ask(sock: socket.socket) -> int:
    sock.sendall(b"TIME\n")
    return int(_kit.recv_line(sock, bytearray()))


def buggy_clock(address: _kit.Address) -> int:
    """Ask the time: the connect has a timeout, the read has none."""
    with socket.create_connection(address, timeout=1.0) as sock:
        sock.settimeout(None)
        return _ask(sock)


def correct_clock(address: _kit.Address) -> int:
    """Ask the time with a 1 s timeout on every operation."""
    with socket.create_connection(address, timeout=1.0) as sock:
        return _ask(sock)


VARIANTS = {"buggy": buggy_clock, "correct": correct_clock}


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the server's clock comes back."""
    clock = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as address:
        with contract(ConnectionError, TimeoutError, within=3.0):
            assert clock(address) == CLOCK


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
