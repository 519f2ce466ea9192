"""An SMTP-style client that parses the end of the stream as a greeting.

The server greets each connection with ``220 ready\\r\\n``. The buggy client
reads the line with ``makefile().readline()`` and parses its first three bytes
as the code, whatever came: when the server closes at once (``CloseOnAccept``)
or mid-line (``CloseAfter``), it parses ``""`` or a piece and raises ValueError
or a wrong-code RuntimeError. The correct client treats an unfinished line as
a closed connection.

Contract: the greeting's code, or ConnectionError/TimeoutError, within 3 s.
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

BUG = "end of stream (EOF) parsed as a message"


def _handle(conn: socket.socket) -> None:
    conn.sendall(b"220 mail.example ready\r\n")


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the greeting server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


def _read_greeting(address: _kit.Address) -> bytes:
    with socket.create_connection(address, timeout=1.0) as sock, sock.makefile("rb") as stream:
        return stream.readline()


def buggy_greet(address: _kit.Address) -> int:
    """Return the server's greeting code; whatever came is parsed."""
    code = int(_read_greeting(address)[:3])
    if code != 220:
        raise RuntimeError(f"server not ready: {code}")
    return code


def correct_greet(address: _kit.Address) -> int:
    """Return the server's greeting code; an unfinished line is a closed connection."""
    line = _read_greeting(address)
    if not line.endswith(b"\n"):
        raise ConnectionError(f"connection closed during the greeting ({line!r})")
    code = int(line[:3])
    if code != 220:
        raise RuntimeError(f"server not ready: {code}")
    return code


VARIANTS = {"buggy": buggy_greet, "correct": correct_greet}


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the server is ready."""
    greet = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as address:
        with contract(ConnectionError, TimeoutError, within=3.0):
            assert greet(address) == 220


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
