"""A server that takes a half-close for a hang-up and drops the reply.

Clients may end their request side with ``shutdown(SHUT_WR)`` (``HalfClose``) and
still wait for the answer. The buggy server, before answering, checks whether
the client "went away" by peeking at its socket: end of stream there only means
the client will send nothing more, yet it drops the reply. The correct server
answers; end of stream only ends the requests.

Contract (it reads what fired): the answer, or ConnectionError/TimeoutError when
some fault other than a half-close of the request side fired, within 3 s.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from sockwork.testing.contract import contract

try:
    from . import _kit
except ImportError:  # run as a script
    import _kit  # type: ignore[no-redef]

if TYPE_CHECKING:
    from sockwork.faults import Event

BUG = "half-close taken as the peer being gone"
WORK = 0.02  # the server's work on a request: a look-up that takes 20 ms
WORDS = {b"sock": b"a knitted foot cover", b"work": b"effort toward a result"}


def _gone(conn: socket.socket) -> bool:
    """Has the client closed its side? (the bug: a FIN also ends a half-close)."""
    conn.setblocking(False)
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    finally:
        conn.settimeout(1.0)


def _handler(variant: str) -> Callable[[socket.socket], None]:
    def handle(conn: socket.socket) -> None:
        word = _kit.recv_line(conn, bytearray())
        time.sleep(WORK)
        if variant == "buggy" and _gone(conn):
            return  # nobody to answer
        conn.sendall(WORDS.get(word, b"?") + b"\n")

    return handle


@contextlib.contextmanager
def _serve(variant: str) -> Iterator[_kit.Address]:
    with _kit.Server(_handler(variant)) as server:
        yield server.address


def define(address: _kit.Address, word: bytes) -> bytes:
    """Ask the dictionary server for ``word``."""
    with socket.create_connection(address, timeout=1.0) as sock:
        sock.sendall(word + b"\n")
        return _kit.recv_line(sock, bytearray())


def _request_side_half_close(event: Event) -> bool:
    role = event.label.partition(" ")[0]
    return type(event.fault).__name__ == "HalfClose" and (role, event.direction) in {
        ("client", "send"),
        ("server", "recv"),
    }


def reply_cut(error: BaseException, fired: Sequence[Event]) -> bool:
    """A missing answer is excused by any fault but a half-close of the request side."""
    return not all(_request_side_half_close(event) for event in fired)


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the definition comes back."""
    with _serve(variant) as address:
        with contract(ConnectionError, TimeoutError, within=3.0, accept=reply_cut):
            assert define(address, b"sock") == WORDS[b"sock"]


if __name__ == "__main__":
    sys.exit(_kit.main(test))
