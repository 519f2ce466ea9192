"""A client that gives up on the first refused connection instead of retrying.

The service restarts now and then; its clients promise to retry a refused
connection up to three times (50 ms apart). The buggy client connects once: one
refused attempt (``Refuse``) fails the call.

Contract (it reads what fired): the answer; ConnectionRefusedError only when
three connects were refused; another ConnectionError/TimeoutError only when a
fault fired; within 3 s.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from sockwork.testing.contract import contract

try:
    from . import _kit
except ImportError:  # run as a script
    import _kit  # type: ignore[no-redef]

if TYPE_CHECKING:
    from sockwork.faults import Event

BUG = "refused connection not retried"
ATTEMPTS = 3
STATUS = b"all systems nominal"


def _handle(conn: socket.socket) -> None:
    if _kit.recv_line(conn, bytearray()) == b"STATUS":
        conn.sendall(STATUS + b"\n")


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the status server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


def _status(sock: socket.socket) -> bytes:
    sock.sendall(b"STATUS\n")
    return _kit.recv_line(sock, bytearray())


def buggy_status(address: _kit.Address) -> bytes:
    """Ask the status, connecting once."""
    with socket.create_connection(address, timeout=1.0) as sock:
        return _status(sock)


def correct_status(address: _kit.Address) -> bytes:
    """Ask the status; a refused connect is retried up to three times."""
    for attempt in range(ATTEMPTS):
        try:
            sock = socket.create_connection(address, timeout=1.0)
        except ConnectionRefusedError:
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.05)
            continue
        with sock:
            return _status(sock)
    raise AssertionError("unreachable")


VARIANTS = {"buggy": buggy_status, "correct": correct_status}


def refused_enough(error: BaseException, fired: Sequence[Event]) -> bool:
    """Refused is fine after ATTEMPTS refusals; any other network error after any fault."""
    if isinstance(error, ConnectionRefusedError):
        return sum(event.what == "refuse" for event in fired) >= ATTEMPTS
    return bool(fired)


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the status comes back."""
    status = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as address:
        with contract(ConnectionError, TimeoutError, within=3.0, accept=refused_enough):
            assert status(address) == STATUS


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
