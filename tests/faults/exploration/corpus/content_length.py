"""An HTTP/1.0 client that accepts a truncated body (FIN mid-message) as complete.

The server answers ``GET`` with a ``Content-Length`` and closes. The buggy client
reads until the end of the stream and returns whatever body came: when the
connection ends early (``CloseAfter``, FIN), it returns a short body as if it
were the document. The correct one checks ``Content-Length``.

Contract: the whole document, or ConnectionError/TimeoutError, within 3 s.
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

BUG = "truncation (FIN mid-message) accepted as a complete message"
DOCUMENT = b"<html>" + b"<p>sockwork</p>" * 200 + b"</html>"


def _handle(conn: socket.socket) -> None:
    request = bytearray()
    while b"\r\n\r\n" not in request:
        chunk = conn.recv(4096)
        if not chunk:
            return
        request += chunk
    head = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(DOCUMENT)
    conn.sendall(head + DOCUMENT)


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the HTTP server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


def _get(address: _kit.Address) -> bytes:
    with socket.create_connection(address, timeout=1.0) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        response = bytearray()
        while chunk := sock.recv(65536):
            response += chunk
    return bytes(response)


def _split(response: bytes) -> tuple[dict[str, str], bytes]:
    head, separator, body = response.partition(b"\r\n\r\n")
    if not separator:
        raise ConnectionError("connection closed inside the response head")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return {name.lower(): value for name, value in headers.items()}, body


def buggy_get(address: _kit.Address) -> bytes:
    """GET /: the body is whatever came before the end of the stream."""
    _, body = _split(_get(address))
    return body


def correct_get(address: _kit.Address) -> bytes:
    """GET /: the body must be as long as Content-Length says."""
    headers, body = _split(_get(address))
    if len(body) != int(headers["content-length"]):
        raise ConnectionError(f"body cut at {len(body)} of {headers['content-length']} bytes")
    return body


VARIANTS = {"buggy": buggy_get, "correct": correct_get}


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the document comes back."""
    get = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as address:
        with contract(ConnectionError, TimeoutError, within=3.0):
            assert get(address) == DOCUMENT


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
