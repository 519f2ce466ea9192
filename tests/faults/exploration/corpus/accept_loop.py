"""An echo-upper server whose accept loop dies when a client resets its connection.

The buggy server handles each connection inside its accept loop with no error
handling: the first ``ConnectionResetError`` (a client that resets, ``CloseAfter``
with ``reset=True``) ends the loop, and the server silently stops serving. The
correct one keeps a failed connection to itself and accepts the next.

Contract: each request gets its answer or ConnectionError/TimeoutError within
3 s, and the server is still serving at the end.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading

from sockwork.testing.contract import contract

try:
    from . import _kit
except ImportError:  # run as a script
    import _kit  # type: ignore[no-redef]

BUG = "server accept loop dies when a client resets"


def _answer(conn: socket.socket) -> None:
    conn.settimeout(1.0)
    conn.sendall(_kit.recv_line(conn, bytearray()).upper() + b"\n")


class UpperServer:
    """A one-thread server answering each line with the line in upper case."""

    def __init__(self, variant: str) -> None:
        self._careful = variant == "correct"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address: _kit.Address = self._listener.getsockname()[:2]
        self._changed = threading.Condition()
        self._accepted = self._finished = 0
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

    def _loop(self) -> None:
        try:
            while not self._stopping:
                try:
                    conn, _ = self._listener.accept()
                except OSError:
                    continue
                with self._changed:
                    self._accepted += 1
                with conn:
                    if self._careful:
                        try:
                            _answer(conn)
                        except OSError:
                            pass  # that client's problem; serve the next one
                    else:
                        _answer(conn)  # the bug: one client's error ends the loop
                with self._changed:
                    self._finished += 1
                    self._changed.notify_all()
        except OSError as error:
            self.died = error  # the loop is over: nobody accepts any more
        finally:
            with self._changed:
                self._changed.notify_all()

    def serving(self, timeout: float) -> bool:
        """Wait until every accepted connection was handled; True if still serving."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._finished == self._accepted or not self._thread.is_alive(), timeout
            )
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
        assert upper.serving(timeout=1.0), "the server stopped accepting connections"


if __name__ == "__main__":
    sys.exit(_kit.main(test))
