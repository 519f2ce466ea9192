"""A static-file HTTP server whose listening socket can be made to behave poorly.

It is what poorconn's pytest fixture and CLI serve. By default it serves each
connection on its own thread and logs nothing; the fixture and the CLI ask for
poorconn's server instead (``threaded=False``: one request at a time, so a
slowed-down response holds up the next client; ``log_requests=True``: an access
line per request on stderr). Either way it takes IPv4 or IPv6 hosts, binds port 0
for an ephemeral port, does not print a traceback when a client gives up, and
stops every thread it started on close. It works without pytest; the
``poorconn_http_server`` fixture is a thin layer on it.
"""

# Rules:
# - ``httpd.socket`` is reassigned to what the simulation returns: making a socket
#   patchable may return a new object and detach the old one.
# - close() shuts down the connections still being served, so a response slowed
#   down by a long delay ends at its next send instead of holding up teardown.
# - ``threaded=False`` keeps socketserver's one-request-at-a-time loop (poorconn's
#   server); the connection is still tracked so close() can cut it.

from __future__ import annotations

import http.server
import os
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from sockwork.faults.patch import make_socket_patchable

if TYPE_CHECKING:
    from typing import Self

__all__ = ["HTTPServer", "Server", "Simulation", "serve", "simulation_of", "url_of"]

Simulation = Callable[[socket.socket], socket.socket]
"""Applied to the listening socket; returns the socket to listen on (maybe a patchable copy)."""

_POLL_INTERVAL = 0.05


def simulation_of(function: Callable[..., object], *args: object) -> Simulation:
    """Return a :data:`Simulation` that applies ``function(s, *args)`` to a patchable ``s``.

    The listening socket is made patchable (poorconn's first step; it may become a
    new object), then ``function`` (one of poorconn's simulation functions) is
    applied to it. If ``function`` raises, the patchable socket is closed.
    """

    def simulate(s: socket.socket) -> socket.socket:
        s = make_socket_patchable(s)
        try:
            function(s, *args)
        except BaseException:
            s.close()
            raise
        return s

    return simulate


@dataclass(frozen=True)
class Server:
    """A running server and the URL of its root (poorconn's ``Server``, frozen)."""

    server: socketserver.BaseServer
    """The server object; ``server.server_address`` holds the bound address and port."""
    url: str
    """The URL of the root directory, e.g. ``http://127.0.0.1:40123`` or ``http://[::1]:40123``."""


def url_of(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """Return the ``http://`` URL of a bound socket address, bracketing IPv6 hosts."""
    host, port = address[0], address[1]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler that does not log every request to stderr."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        """Drop the access log line (tests and the CLI print their own output)."""


class HTTPServer(http.server.ThreadingHTTPServer):
    """Serve ``directory`` over HTTP on ``host``:``port`` (IPv4 or IPv6; port 0 picks one).

    ``threaded=False`` serves one request at a time (as ``http.server.HTTPServer``
    and poorconn do); ``log_requests=True`` writes the standard access line of each
    request to stderr.

    ``host`` is resolved with ``getaddrinfo`` and the first address (IPv4 first) is bound, so
    ``"::1"`` and ``"localhost"`` work as well as ``"127.0.0.1"``. The listening
    socket is :attr:`socket`; ``simulation`` is called with it and returns the
    socket to listen on (typically ``make_socket_patchable(s)`` with a poorconn
    function applied to it). Use as a context manager or call
    :meth:`start` and :meth:`close`.

    Raises:
        OverflowError: ``port`` is not in 0..65535 (as ``socket.bind`` says).
        socket.gaierror: ``host`` does not resolve.
        OSError: the address cannot be bound (in use, not local...).
    """

    daemon_threads = False
    block_on_close = True

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        simulation: Simulation | None = None,
        threaded: bool = True,
        log_requests: bool = False,
    ) -> None:
        self.threaded = threaded
        if not 0 <= port <= 65535:
            # getaddrinfo would wrap it around (70000 -> 4464); bind() raises this.
            raise OverflowError(f"port must be 0-65535, got {port}")
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        # IPv4 first, as http.server (and poorconn) bind "localhost" to 127.0.0.1.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        family, _, _, _, sockaddr = infos[0]
        self.address_family = family
        root = os.fspath(directory)

        base = http.server.SimpleHTTPRequestHandler if log_requests else _QuietHandler

        class Handler(base):  # type: ignore[valid-type,misc]
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=root, **kwargs)

        super().__init__((str(sockaddr[0]), int(sockaddr[1])), Handler)
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if simulation is not None:
            try:
                self.socket = simulation(self.socket)
            except BaseException:
                self.server_close()
                raise

    @property
    def url(self) -> str:
        """The URL of the served directory's root."""
        return url_of(self.server_address)  # type: ignore[arg-type]

    def start(self) -> Self:
        """Serve in a background thread until :meth:`close`; returns ``self``."""
        if self._thread is not None:
            raise RuntimeError("the server is already started; start() it only once")
        # A short poll interval keeps close() quick: shutdown() waits for the next poll.
        self._thread = threading.Thread(
            target=self.serve_forever,
            args=(_POLL_INTERVAL,),
            name=f"sockwork HTTP server {self.url}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, cut the connections still being served, and join every thread."""
        # Cut first: a single-threaded server only sees shutdown() between requests.
        self._cut_active()
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self._cut_active()
        self.server_close()

    def _cut_active(self) -> None:
        with self._active_lock:
            active = list(self._active)
        for conn in active:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler, or never connected

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        """Serve one connection (on a thread if threaded), remembering it so close() can cut it."""
        with self._active_lock:
            self._active.add(request)
        if self.threaded:
            super().process_request(request, client_address)
        else:
            socketserver.BaseServer.process_request(self, request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        """Close a served connection and forget it."""
        with self._active_lock:
            self._active.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: object, client_address: object) -> None:
        """Ignore a client that went away or a connection the simulation closed; report the rest."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the client gave up: expected on a poor network
        if isinstance(exc, OSError) and getattr(request, "fileno", lambda: 0)() == -1:
            return  # the simulation closed the connection upon acceptance
        super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def serve(
    directory: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    simulation: Simulation | None = None,
    threaded: bool = True,
    log_requests: bool = False,
) -> Iterator[Server]:
    """Serve ``directory`` in a background thread for the duration of the block.

    Yields a frozen :class:`Server` ``(server, url)``; on exit the server stops and
    every thread it started is joined. Arguments as for :class:`HTTPServer`.
    """
    with HTTPServer(
        directory,
        host=host,
        port=port,
        simulation=simulation,
        threaded=threaded,
        log_requests=log_requests,
    ) as httpd:
        httpd.start()
        yield Server(server=httpd, url=httpd.url)
