"""An echo-upper server whose accept loop dies when a client resets its connection.

The server answers each line of a connection until the client closes it. The
buggy server does so inside its accept loop with no error handling: the first
``ConnectionResetError`` (a client that resets, ``CloseAfter`` with ``reset=True``)
ends the loop, and the server silently stops serving. The correct one keeps a
failed connection to itself and accepts the next.

Contract: each request gets its answer or ConnectionError/TimeoutError within
3 s, and the server is still serving at the end.
"""

from __future__ import annotations

import contextlib
import select
import socket
import sys
import threading
import time

from sockwork.testing.contract import contract

try:
    from . import _kit
except ImportError:  # run as a script
    import _kit  # type: ignore[no-redef]

BUG = "server accept loop dies when a client resets"


def _answer(conn: socket.socket) -> None:
    """Answer each line with the line in upper case until the client closes."""
    conn.settimeout(1.0)
    with conn.makefile("rb") as lines:
        for line in lines:
            conn.sendall(line.upper())


class UpperServer:
    """A one-thread server answering each line with the line in upper case."""

    def __init__(self, variant: str) -> None:
        self._careful = variant == "correct"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)  # accept() only once select() saw a connection
        self.address: _kit.Address = self._listener.getsockname()[:2]
        self._changed = threading.Condition()
        self._busy = False
        self._stopping = False
        self.died: OSError | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> UpperServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(2.0)

    def _accept(self) -> socket.socket | None:
        """The next connection, taken off the queue while ``serving()`` cannot look."""
        select.select([self._listener], [], [])
        with self._changed:
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return None  # an accept fault holds it back, or closed it
            self._busy = True
        return conn

    def _loop(self) -> None:
        try:
            while not self._stopping:
                try:
                    conn = self._accept()
                except (OSError, ValueError):
                    return  # the listener was closed
                if conn is None:
                    continue
                with conn:
                    if self._careful:
                        try:
                            _answer(conn)
                        except OSError:
                            pass  # that client's problem; serve the next one
                    else:
                        _answer(conn)  # the bug: one client's error ends the loop
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
        except OSError as error:
            self.died = error  # the loop is over: nobody accepts any more
        finally:
            with self._changed:
                self._changed.notify_all()

    def _idle(self) -> bool:
        queued = select.select([self._listener], [], [], 0)[0]
        return not self._busy and not queued

    def serving(self, timeout: float) -> bool:
        """Wait until every connection made so far was handled; True if still serving."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._thread.is_alive() and not self._idle():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(min(remaining, 0.02))  # a queued connection sends no event
        return self._thread.is_alive()


def _ask(address: _kit.Address, word: bytes) -> bytes:
    with socket.create_connection(address, timeout=0.5) as sock:
        sock.sendall(word + b"\n")
        return _kit.recv_line(sock, bytearray())


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: three clients get their answers; the server still serves."""
    with UpperServer(variant) as upper:
        for word in (b"one", b"two", b"three"):
            with contract(ConnectionError, TimeoutError, within=3.0):
                assert _ask(upper.address, word) == word.upper()
        assert upper.serving(timeout=3.0), "the server stopped accepting connections"


if __name__ == "__main__":
    sys.exit(_kit.main(test))
