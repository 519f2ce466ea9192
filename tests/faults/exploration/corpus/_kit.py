"""What the corpus programs share: a small TCP server, a deadline, a command line.

Every corpus program is one module with a buggy and a correct variant of the same
interface and one ordinary test, ``test(variant)``, that passes on both when the
network is good. The correct variant keeps its contract under any fault: the right
answer, or a clean network error of the types it promises, within its deadline.

The module runs two ways:

- in-process: ``test("buggy")`` (what ``sockwork.faults.explore`` calls);
- as a command line: ``python path/to/program.py buggy`` exits 0 when the test
  passes, 1 when it fails (the traceback on stderr); ``--server HOST:PORT`` points
  a client program at a server already running (``python program.py serve``
  starts one, prints ``listening on HOST PORT`` and serves until stdin closes).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import select
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Protocol

__all__ = ["Address", "Server", "main", "recv_exactly", "recv_line"]

Address = tuple[str, int]
VARIANTS = ("buggy", "correct")


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes; ConnectionError when the stream ends first."""
    parts: list[bytes] = []
    missing = size
    while missing:
        chunk = sock.recv(missing)
        if not chunk:
            raise ConnectionError(f"connection closed {missing} byte(s) short of {size}")
        parts.append(chunk)
        missing -= len(chunk)
    return b"".join(parts)


def recv_line(sock: socket.socket, buffer: bytearray, *, limit: int = 65536) -> bytes:
    """Read one ``\\n``-terminated line through ``buffer`` (kept between calls)."""
    while True:
        end = buffer.find(b"\n")
        if end >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            return line
        if len(buffer) > limit:
            raise ValueError(f"line longer than {limit} bytes")
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed in the middle of a line")
        buffer += chunk


class Server:
    """A TCP server on 127.0.0.1, port 0, serving each connection with ``handle``.

    ``threaded``: one thread per connection (False: one connection at a time, in
    the accept thread). Errors of one connection are kept in ``errors`` and never
    stop the server. ``drain()`` waits until every connection already made has been
    served; ``stop()`` wakes every thread and joins it (bounded).
    """

    def __init__(
        self,
        handle: Callable[[socket.socket], None],
        *,
        threaded: bool = True,
        timeout: float = 1.0,
        host: str = "127.0.0.1",
    ) -> None:
        self._handle = handle
        self._threaded = threaded
        self._timeout = timeout
        self._listener = socket.create_server((host, 0))
        self._listener.setblocking(False)  # accept() only once select() saw a connection
        self.address: Address = self._listener.getsockname()[:2]
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._served = threading.Condition(self._lock)
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._accepter = threading.Thread(target=self._serve, name="corpus-server", daemon=True)

    def __enter__(self) -> Server:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        while True:
            # Wait for a connection outside the lock, take it off the queue inside it
            # (the listener does not block): drain() then never sees a connection that
            # left the queue without being counted as open.
            try:
                select.select([self._listener], [], [])
            except (OSError, ValueError):  # closed by stop()
                return
            with self._lock:
                if self._stopping:
                    return
                try:
                    conn, _ = self._listener.accept()
                except BlockingIOError:
                    continue  # an accept fault holds the connection back, or closed it
                except OSError as error:
                    if error.errno in (errno.EBADF, errno.EINVAL):
                        return  # the listener was shut down: nothing more will come
                    continue  # a connection that died before accept returned it
                conn.settimeout(self._timeout)
                self._open.add(conn)
                if self._threaded:
                    thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
                    self._threads.append(thread)
                    thread.start()
            if not self._threaded:
                self._run(conn)

    def _run(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        except Exception as error:  # noqa: BLE001 - kept for the test to look at
            self.errors.append(error)
        finally:
            conn.close()
            with self._lock:
                self._open.discard(conn)
                self._served.notify_all()

    def drain(self, timeout: float = 5.0) -> None:
        """Wait (``timeout`` at most) until no connection waits to be accepted and every
        accepted one has been served: what a test judges must not depend on whether the
        server thread ran before the client returned."""
        deadline = time.monotonic() + timeout
        with self._served:
            # Under the lock the accept thread cannot be between taking a connection
            # off the queue and counting it; a queued one has no event to await (poll).
            while self._open or select.select([self._listener], [], [], 0)[0]:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._served.wait(min(remaining, 0.02))

    def stop(self) -> None:
        """Stop accepting, wake and close every connection, join the threads (2 s at most)."""
        with self._lock:
            self._stopping = True
            conns = list(self._open)
            threads = list(self._threads)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self._listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._accepter.is_alive() and self._accepter is not threading.current_thread():
            self._accepter.join(2.0)
        for thread in threads:
            thread.join(2.0)


class Test(Protocol):
    """A corpus program's ordinary test."""

    def __call__(self, variant: str = ..., server: Address | None = ...) -> None: ...


def main(
    test: Test,
    argv: list[str] | None = None,
    *,
    serve: Callable[[], contextlib.AbstractContextManager[Address]] | None = None,
) -> int:
    """Run a corpus program from the command line; return its exit status."""
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=(*VARIANTS, "serve") if serve else VARIANTS)
    if serve is not None:
        parser.add_argument("--server", metavar="HOST:PORT", help="a server already running")
    args = parser.parse_args(argv)
    if args.variant == "serve":
        assert serve is not None
        with serve() as (host, port):
            print(f"listening on {host} {port}", flush=True)
            sys.stdin.read()  # until the parent closes our stdin
        return 0
    server = None
    if getattr(args, "server", None):
        host, _, port = args.server.rpartition(":")
        server = (host, int(port))
    try:
        if server is None:
            test(args.variant)
        else:
            test(args.variant, server)
    except BaseException:  # noqa: BLE001 - the exit status is the verdict
        traceback.print_exc()
        return 1
    return 0


@contextlib.contextmanager
def maybe_server(
    server: Address | None, serve: Callable[[], contextlib.AbstractContextManager[Address]]
) -> Iterator[Address]:
    """Yield ``server`` when given, else the address of a server started for the test."""
    if server is not None:
        yield server
    else:
        with serve() as address:
            yield address
