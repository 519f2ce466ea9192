"""A client that never notices the end of the stream and spins forever.

Protocol: ``TAIL\\n`` is answered with log lines and an ``END`` line. The buggy
client appends whatever ``recv`` returns and looks for ``END``; when the server
goes away early (``CloseAfter``), ``recv`` returns ``b""`` at once, every time,
and the loop never ends (a busy hang, not a blocked one). The correct client
treats ``b""`` as the connection closing.

Contract: the log lines, or ConnectionError/TimeoutError, within 3 s.
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

BUG = "end of stream not handled (busy loop)"
LOG = [f"2026-12-07 10:{minute:02d} job {minute} done".encode() for minute in range(10)]


def _handle(conn: socket.socket) -> None:
    if _kit.recv_line(conn, bytearray()) == b"TAIL":
        conn.sendall(b"".join(line + b"\n" for line in LOG) + b"END\n")


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the log server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


def _tail(address: _kit.Address, *, careful: bool) -> list[bytes]:
    lines: list[bytes] = []
    buffer = bytearray()
    with socket.create_connection(address, timeout=1.0) as sock:
        sock.sendall(b"TAIL\n")
        while True:
            chunk = sock.recv(4096)
            if careful and not chunk:
                raise ConnectionError("connection closed before END")
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                if line == b"END":
                    return lines
                lines.append(line)


def buggy_tail(address: _kit.Address) -> list[bytes]:
    """Read the log until END; the end of the stream goes unnoticed."""
    return _tail(address, careful=False)


def correct_tail(address: _kit.Address) -> list[bytes]:
    """Read the log until END; the end of the stream is an error."""
    return _tail(address, careful=True)


VARIANTS = {"buggy": buggy_tail, "correct": correct_tail}


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the log comes back."""
    tail = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as address:
        with contract(ConnectionError, TimeoutError, within=3.0):
            assert tail(address) == LOG


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
