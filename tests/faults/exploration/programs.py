"""Small programs for the exploration tests: a length-prefixed echo server, two clients."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

MESSAGE = b"hello, world"


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _serve_one(listener: socket.socket) -> None:
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    with conn:
        conn.settimeout(2.0)
        try:
            header = _read_exact(conn, 4)
            payload = _read_exact(conn, struct.unpack(">I", header)[0])
            conn.sendall(header + payload)
        except OSError:
            return


@contextmanager
def echo_server() -> Iterator[tuple[str, int]]:
    """A server answering one length-prefixed message with the same message."""
    listener = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=_serve_one, args=(listener,), daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        # A client that never came (a refused connect) must not keep accept() waiting.
        listener.shutdown(socket.SHUT_RDWR)
        thread.join(5)
        listener.close()


def naive_exchange(address: tuple[str, int]) -> bytes:
    """Bug: takes one recv() as one whole message."""
    with socket.create_connection(address, timeout=2.0) as sock:
        sock.sendall(struct.pack(">I", len(MESSAGE)) + MESSAGE)
        data = sock.recv(1024)
        (n,) = struct.unpack(">I", data[:4])
        return data[4 : 4 + n]


def careful_exchange(address: tuple[str, int]) -> bytes:
    """Reads exactly the header, then exactly the payload."""
    with socket.create_connection(address, timeout=2.0) as sock:
        sock.sendall(struct.pack(">I", len(MESSAGE)) + MESSAGE)
        (n,) = struct.unpack(">I", _read_exact(sock, 4))
        return _read_exact(sock, n)


def contract(exchange: Callable[[tuple[str, int]], bytes]) -> Callable[[], None]:
    """The test as a contract: the right answer, or a clean network error (OSError)."""

    def test() -> None:
        with echo_server() as address:
            try:
                answer = exchange(address)
            except OSError:
                return  # a clean network error is kept by the contract
            assert answer == MESSAGE, answer

    return test


naive_client_test = contract(naive_exchange)
careful_client_test = contract(careful_exchange)
