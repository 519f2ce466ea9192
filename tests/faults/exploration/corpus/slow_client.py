"""A server that serves one client at a time: one slow client blocks all the others.

The buggy server handles connections one after the other in its accept thread,
so a client whose request does not arrive (``Stall``, ``Latency`` on that
connection) holds every other client up until the server's 1 s read timeout;
their own 0.5 s deadline passes first. The correct server gives each connection
its own thread.

Contract (it reads what fired): each client gets its answer, or
ConnectionError/TimeoutError when a fault touched its own connection (or any
client-side socket), within 3 s.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sockwork.testing.contract import Accept, contract

try:
    from . import _kit
except ImportError:  # run as a script
    import _kit  # type: ignore[no-redef]

if TYPE_CHECKING:
    from sockwork.faults import Event

BUG = "server blocks all clients on one slow client"


def _handle(conn: socket.socket) -> None:
    number = int(_kit.recv_line(conn, bytearray()))
    conn.sendall(f"{number * number}\n".encode())


def _touched(port: list[int]) -> Accept:
    """An error is excused by a fault on this client's connection, as far as we can tell.

    Server-side events name the client's port (``port[0]``, 0 before the connect);
    client-side ones name only the server, so any of those excuses every client.
    """

    def accept(error: BaseException, fired: Sequence[Event]) -> bool:
        for event in fired:
            role, _, peer = event.label.partition(" ")
            if role != "server" or event.kind != "stream" or not port[0]:
                return True
            if peer.endswith(f":{port[0]}"):
                return True
        return False

    return accept


def _square(address: _kit.Address, number: int, connected: threading.Event) -> None:
    port = [0]
    with contract(ConnectionError, TimeoutError, within=3.0, accept=_touched(port)):
        try:
            sock = socket.create_connection(address, timeout=0.5)
        finally:
            connected.set()
        with sock:
            port[0] = sock.getsockname()[1]
            sock.sendall(f"{number}\n".encode())
            assert int(_kit.recv_line(sock, bytearray())) == number * number


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: two clients, the second connecting after the first, both answered."""
    failures: list[BaseException] = []
    with _kit.Server(_handle, threaded=variant == "correct") as squares:
        first_in = threading.Event()

        def first() -> None:
            try:
                _square(squares.address, 7, first_in)
            except BaseException as error:  # noqa: BLE001 - re-raised below
                failures.append(error)
            finally:
                first_in.set()

        thread = threading.Thread(target=first, daemon=True)
        thread.start()
        first_in.wait(1.0)
        try:
            _square(squares.address, 12, threading.Event())
        finally:
            thread.join(3.0)
    if failures:
        raise failures[0]


if __name__ == "__main__":
    sys.exit(_kit.main(test))
