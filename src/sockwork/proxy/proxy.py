"""FaultProxy: a loopback TCP proxy that applies sockwork faults per direction.

# Strategy:
# - One asyncio loop runs everything: the listener, every connection and every
#   fault. The loop is either our own, in a daemon thread (``with FaultProxy(...)``),
#   or the caller's (``async with FaultProxy(...)``). Control methods (add, remove,
#   disable...) are plain functions that run on the loop thread; from another thread
#   they are handed over with call_soon_threadsafe and waited for. Because each runs
#   as one loop callback with no await, every change is atomic: no chunk is forwarded
#   while a fault table is half-updated.
# - Each connection is two asyncio Protocols (client side, upstream side) and two
#   one-way pipes. With no fault, data_received writes straight into the other
#   transport (the fast path: no queue, no task, no copy of our own); flow control is
#   the transports' own: when the destination's write buffer passes its high-water
#   mark the source stops reading, so a slow reader slows the sender (TCP backpressure).
# - With faults, a pipe hands each chunk to its executor (``sockwork.proxy.pipe``),
#   which runs the sans-IO fault plan and carries out its actions.
# - Half-close: an EOF from one side becomes write_eof() (shutdown(SHUT_WR)) on the
#   other, and the opposite direction keeps flowing (RFC 9293 section 3.6). The
#   connection closes when both directions have ended or either socket is lost.
# - A reset from one peer is passed on as a reset (SO_LINGER 0, then close), so the
#   other peer sees ECONNRESET as it would without the proxy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TypeVar

from sockwork.proxy.pipe import Pipe, PipeOwner

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "DIRECTIONS",
    "ConnectionEvent",
    "Direction",
    "FaultProxy",
    "InstalledFault",
    "ProxyCounters",
    "Scope",
]

Direction = Literal["upstream", "downstream"]
Scope = Literal["all", "new"]

#: Toxiproxy's stream names: ``upstream`` is client -> server, ``downstream`` is server -> client.
DIRECTIONS: tuple[Direction, ...] = ("upstream", "downstream")

_T = TypeVar("_T")

# A chunk stays in a transport's buffer until this many bytes are queued; then the
# source stops reading. Large enough to keep loopback busy, small enough to bound memory.
_WRITE_HIGH_WATER = 512 * 1024
_CONNECT_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 5.0
_LINGER_ZERO = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class InstalledFault:
    """A fault installed on a proxy: its name, the fault object and its direction."""

    name: str
    fault: object
    direction: Direction


@dataclass(frozen=True)
class ProxyCounters:
    """A snapshot of a proxy's counters since it started.

    ``bytes_upstream`` counts bytes delivered to the upstream server (client -> server),
    ``bytes_downstream`` bytes delivered to clients; ``received_*`` count bytes read
    from the source before faults (a blackhole reads without delivering).
    """

    connections_total: int
    connections_open: int
    connections_refused: int
    received_upstream: int
    received_downstream: int
    bytes_upstream: int
    bytes_downstream: int
    faults_fired: Mapping[str, int]


@dataclass(frozen=True)
class ConnectionEvent:
    """What happened to one proxied connection: ``opened``, ``failed`` (upstream) or ``closed``."""

    kind: Literal["opened", "failed", "closed"]
    connection_id: int
    client: tuple[str, int]
    bytes_upstream: int = 0
    bytes_downstream: int = 0
    faults_fired: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class _Counters:
    connections_total: int = 0
    connections_refused: int = 0
    received: dict[str, int] = field(default_factory=lambda: {"upstream": 0, "downstream": 0})
    sent: dict[str, int] = field(default_factory=lambda: {"upstream": 0, "downstream": 0})
    faults_fired: dict[str, int] = field(default_factory=dict)


def _reset(transport: asyncio.Transport) -> None:
    """Close a transport with an RST: SO_LINGER 0, then close without flushing."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


class _Side(asyncio.Protocol):
    """One socket of a proxied connection (the client's or the upstream's)."""

    def __init__(self, conn: _Connection, role: Direction) -> None:
        # role is the direction this side's bytes travel: the client side feeds "upstream".
        self.conn = conn
        self.role = role
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        self.conn.side_made(self)

    def data_received(self, data: bytes) -> None:
        self.conn.pipes[self.role].feed(data)

    def eof_received(self) -> bool:
        self.conn.pipes[self.role].feed_eof()
        return True  # keep the transport open: the other direction may still flow

    def pause_writing(self) -> None:
        # Our write buffer is full: the pipe that writes into us stops reading its source.
        self.conn.pipes[_other(self.role)].hold("backpressure")

    def resume_writing(self) -> None:
        self.conn.pipes[_other(self.role)].release("backpressure")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn.side_lost(self, exc)


def _other(direction: Direction) -> Direction:
    return "downstream" if direction == "upstream" else "upstream"


class _Connection(PipeOwner):
    """One client connection and its upstream connection, joined by two pipes."""

    def __init__(self, proxy: FaultProxy, connection_id: int) -> None:
        self.proxy = proxy
        self.id = connection_id
        self.client = _Side(self, "upstream")
        self.server = _Side(self, "downstream")
        self.client_address: tuple[str, int] = ("", 0)
        rng = proxy._connection_rng(connection_id)
        self.pipes: dict[Direction, Pipe] = {
            "upstream": Pipe(self, "upstream", rng=random.Random(rng.getrandbits(64))),
            "downstream": Pipe(self, "downstream", rng=random.Random(rng.getrandbits(64))),
        }
        self.connect_task: asyncio.Task[None] | None = None
        self.closed = False
        self.failed = False
        self.fired: list[str] = []

    # --- PipeOwner: what a pipe needs from its connection -----------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the connection runs on."""
        return self.proxy._require_loop()

    def source(self, direction: Direction) -> asyncio.Transport | None:
        """The transport a direction reads from."""
        return (self.client if direction == "upstream" else self.server).transport

    def destination(self, direction: Direction) -> asyncio.Transport | None:
        """The transport a direction writes to."""
        return (self.server if direction == "upstream" else self.client).transport

    def count_received(self, direction: Direction, n: int) -> None:
        """Count n bytes read from a direction's source."""
        self.proxy._counters.received[direction] += n

    def count_sent(self, direction: Direction, n: int) -> None:
        """Count n bytes written to a direction's destination."""
        self.proxy._counters.sent[direction] += n

    def fault_fired(self, name: str) -> None:
        """Count one firing of the fault called ``name``."""
        fired = self.proxy._counters.faults_fired
        fired[name] = fired.get(name, 0) + 1
        self.fired.append(name)

    def pipe_finished(self, direction: Direction) -> None:
        """A direction has delivered its EOF; close when both have."""
        if all(p.finished for p in self.pipes.values()):
            self.close()

    def close(self, *, reset: bool = False) -> None:
        """Close both sockets: with FIN after flushing, or at once with an RST."""
        if self.closed:
            return
        self.closed = True
        if self.connect_task is not None:
            self.connect_task.cancel()
        for pipe in self.pipes.values():
            pipe.stop()
        for side in (self.client, self.server):
            if side.transport is not None and not side.lost:
                if reset:
                    _reset(side.transport)
                else:
                    side.transport.close()
        self._maybe_forget()

    def abort(self) -> None:
        """Close both sockets at once, dropping unsent data (FIN, not RST)."""
        if self.connect_task is not None:
            self.connect_task.cancel()
        self.closed = True
        for pipe in self.pipes.values():
            pipe.stop()
        for side in (self.client, self.server):
            if side.transport is not None and not side.lost:
                side.transport.abort()
        self._maybe_forget()

    def reset_side(self, direction: Direction) -> None:
        """Reset the connection on behalf of a fault in ``direction`` (both peers see RST)."""
        self.close(reset=True)

    # --- life cycle -------------------------------------------------------------------

    def side_made(self, side: _Side) -> None:
        if side is self.client:
            assert side.transport is not None
            peer = side.transport.get_extra_info("peername")
            if isinstance(peer, tuple):
                self.client_address = (str(peer[0]), int(peer[1]))
            # Nothing is read from the client until the upstream answers.
            side.transport.pause_reading()
            self.connect_task = self.loop.create_task(self._connect())
        else:
            self.proxy._connection_opened(self)
            for pipe in self.pipes.values():
                pipe.start()

    async def _connect(self) -> None:
        host, port = self.proxy.upstream
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: self.server, host, port),
                _CONNECT_TIMEOUT,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            # Like Toxiproxy: the client was accepted, so a dead upstream is "connected, then EOF".
            self.failed = True
            self.proxy._connection_failed(self, exc)
            self.close()
        finally:
            self.connect_task = None

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        other = self.server if side is self.client else self.client
        if not self.closed:
            self.closed = True
            for pipe in self.pipes.values():
                pipe.stop()
            if self.connect_task is not None:
                self.connect_task.cancel()
            if other.transport is not None and not other.lost:
                if isinstance(exc, ConnectionResetError):
                    _reset(other.transport)  # a reset is passed on as a reset
                else:
                    other.transport.close()
        self._maybe_forget()

    def _maybe_forget(self) -> None:
        sides = [s for s in (self.client, self.server) if s.transport is not None]
        if self.connect_task is None and all(s.lost for s in sides):
            self.proxy._connection_closed(self)


class FaultProxy:
    """A loopback TCP proxy to ``upstream`` that applies faults per direction.

    Use it as a context manager: ``with FaultProxy(upstream=(host, port)) as proxy:``
    runs it on an asyncio loop in a background thread; ``async with`` runs it on the
    running loop. ``proxy.address`` is where clients connect.

    Directions follow Toxiproxy: ``"upstream"`` is client -> server, ``"downstream"``
    is server -> client.

    Args:
        upstream: the ``(host, port)`` every connection is forwarded to.
        listen: the ``(host, port)`` to listen on; port 0 picks a free port.
        seed: seeds every random choice (jitter, probabilities); None picks one,
            reported as ``proxy.seed`` so a run can be replayed.
        enabled: start accepting at once (False: connections are refused until ``enable()``).
        on_event: called on the loop thread with a :class:`ConnectionEvent` when a
            connection opens, fails to reach the upstream, or closes.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        seed: int | None = None,
        enabled: bool = True,
        on_event: Callable[[ConnectionEvent], None] | None = None,
    ) -> None:
        host, port = upstream
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"upstream port must be an int in 1..65535, got {port!r}")
        lhost, lport = listen
        if not isinstance(lport, int) or not 0 <= lport < 65536:
            raise ValueError(f"listen port must be an int in 0..65535, got {lport!r}")
        self.upstream: tuple[str, int] = (str(host), port)
        self._listen = (str(lhost), lport)
        self.seed: int = seed if seed is not None else random.SystemRandom().getrandbits(32)
        self._on_event = on_event
        self._want_enabled = enabled
        self._faults: dict[str, _Entry] = {}
        self._connections: dict[int, _Connection] = {}
        self._next_id = 0
        self._counters = _Counters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._address: tuple[str, int] | None = None
        self._refusing = False
        self._started = False
        self._closed = False
        self._idle: asyncio.Event | None = None

    # --- public surface ---------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` clients connect to (known once started)."""
        if self._address is None:
            raise RuntimeError("the proxy is not started; use it as a context manager first")
        return self._address

    @property
    def enabled(self) -> bool:
        """True while the proxy accepts connections (``disable()`` makes it False)."""
        return self._want_enabled

    @property
    def counters(self) -> ProxyCounters:
        """A snapshot of the counters: connections, bytes each way, faults fired."""
        return self._call(self._snapshot)

    @property
    def faults(self) -> tuple[InstalledFault, ...]:
        """The installed faults, in the order they were added."""
        return tuple(InstalledFault(e.name, e.fault, e.direction) for e in self._faults.values())

    def add(
        self,
        fault: object,
        *,
        direction: Direction = "downstream",
        name: str | None = None,
        scope: Scope = "all",
    ) -> str:
        """Install ``fault`` on ``direction``; returns its name.

        Args:
            fault: a ``sockwork.faults`` fault object.
            direction: ``"upstream"`` (client -> server) or ``"downstream"`` (server -> client).
            name: a unique name; default ``<type>_<direction>`` as Toxiproxy does.
            scope: ``"all"`` applies to open connections and new ones, atomically;
                ``"new"`` only to connections accepted from now on.

        Raises:
            ValueError: bad direction or scope, or a fault with that name exists.
        """
        _check_direction(direction)
        _check_scope(scope)
        if name is None:
            name = f"{type(fault).__name__.lower()}_{direction}"
        return self._call(lambda: self._add(name, fault, direction, scope))

    def update(self, name: str, fault: object, *, scope: Scope = "all") -> None:
        """Replace the fault called ``name`` (same direction), atomically.

        With ``scope="all"`` open connections restart it with the new values; with
        ``"new"`` they keep the old one and only later connections get the new one.

        Raises:
            KeyError: no fault has that name.
        """
        _check_scope(scope)
        self._call(lambda: self._update(name, fault, scope))

    def remove(self, name: str) -> None:
        """Remove the fault called ``name`` from the proxy and from open connections.

        Raises:
            KeyError: no fault has that name.
        """
        self._call(lambda: self._remove(name))

    def clear(self) -> None:
        """Remove every fault."""
        self._call(self._clear)

    def disable(self) -> None:
        """Stop accepting (clients get ECONNREFUSED) and close every open connection."""
        self._call(self._disable)

    def enable(self) -> None:
        """Accept connections again on the same address."""
        self._call(self._enable)

    # --- background-thread life cycle ---------------------------------------------------

    def start(self) -> None:
        """Start the proxy on its own asyncio loop in a daemon thread."""
        if self._started:
            raise RuntimeError("the proxy was already started")
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._begin(loop))
            except BaseException as exc:  # report the failure (e.g. address in use) to start()
                ready.set_exception(exc)
                return
            ready.set_result(None)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())

        name = f"sockwork-proxy-{id(self):x}"
        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            loop.close()
            self._thread = None
            raise

    def close(self) -> None:
        """Stop accepting, close every connection and stop the thread (idempotent)."""
        if self._thread is None:
            return
        loop = self._require_loop()
        if not self._closed:
            future = asyncio.run_coroutine_threadsafe(self._end(), loop)
            future.result()
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join()
        self._thread = None
        loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- running-loop life cycle -------------------------------------------------------

    async def aclose(self) -> None:
        """Close the proxy started with ``async with`` (or ``await proxy.astart()``)."""
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.close)
        elif not self._closed and self._started:
            await self._end()

    async def astart(self) -> None:
        """Start the proxy on the running loop."""
        if self._started:
            raise RuntimeError("the proxy was already started")
        await self._begin(asyncio.get_running_loop())

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- internals: run on the loop thread ----------------------------------------------

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the proxy is not started; use it as a context manager first")
        return self._loop

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the loop thread and return its result (directly when already there)."""
        loop = self._loop
        if loop is None or self._closed or self._thread is None:
            return fn()
        if self._thread is threading.current_thread():
            return fn()
        result: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(fn())
            except BaseException as exc:
                result.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return result.result()

    async def _begin(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._started = True
        self._idle = asyncio.Event()
        self._idle.set()
        sock = self._bind(self._listen)
        host, port = sock.getsockname()[:2]
        self._address = (str(host), int(port))
        if self._want_enabled:
            await self._serve(sock)
        else:
            sock.close()
            self._refusing = True

    def _bind(self, address: tuple[str, int]) -> socket.socket:
        host, port = address
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _serve(self, sock: socket.socket) -> None:
        loop = self._require_loop()
        self._server = await loop.create_server(self._accepted, sock=sock, start_serving=True)

    def _listen_now(self) -> None:
        """Listen again on our address; the kernel queues connects until the server starts."""
        if self._server is not None or self._closed or self._address is None:
            return
        sock = self._bind(self._address)
        self._refusing = False
        task = self._require_loop().create_task(self._serve(sock))
        self._server_task = task
        task.add_done_callback(lambda t: setattr(self, "_server_task", None))

    def _stop_listening(self) -> None:
        if self._server_task is not None:
            self._server_task.cancel()
        if self._server is not None:
            self._server.close()
            self._server = None
        self._refusing = True

    def _accepted(self) -> asyncio.Protocol:
        self._next_id += 1
        conn = _Connection(self, self._next_id)
        self._counters.connections_total += 1
        self._connections[conn.id] = conn
        assert self._idle is not None
        self._idle.clear()
        for entry in self._faults.values():
            conn.pipes[entry.direction].install(entry.name, entry.fault, entry.generation)
        return conn.client

    def _connection_rng(self, connection_id: int) -> random.Random:
        return random.Random(f"{self.seed}:{connection_id}")

    def _connection_opened(self, conn: _Connection) -> None:
        self._emit(ConnectionEvent("opened", conn.id, conn.client_address))

    def _connection_failed(self, conn: _Connection, exc: BaseException) -> None:
        self._counters.connections_refused += 1
        text = f"upstream {self.upstream[0]}:{self.upstream[1]}: {exc!r}"
        self._emit(ConnectionEvent("failed", conn.id, conn.client_address, error=text))

    def _connection_closed(self, conn: _Connection) -> None:
        if self._connections.pop(conn.id, None) is None:
            return
        if not conn.failed:
            self._emit(
                ConnectionEvent(
                    "closed",
                    conn.id,
                    conn.client_address,
                    bytes_upstream=conn.pipes["upstream"].sent,
                    bytes_downstream=conn.pipes["downstream"].sent,
                    faults_fired=tuple(conn.fired),
                )
            )
        if not self._connections and self._idle is not None:
            self._idle.set()

    def _emit(self, event: ConnectionEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    async def _end(self) -> None:
        self._closed = True
        self._stop_listening()
        for conn in list(self._connections.values()):
            conn.abort()
        if self._idle is not None and self._connections:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), _CLOSE_TIMEOUT)
        # Let transports run their connection_lost callbacks before the loop stops.
        await asyncio.sleep(0)

    def _snapshot(self) -> ProxyCounters:
        c = self._counters
        return ProxyCounters(
            connections_total=c.connections_total,
            connections_open=len(self._connections),
            connections_refused=c.connections_refused,
            received_upstream=c.received["upstream"],
            received_downstream=c.received["downstream"],
            bytes_upstream=c.sent["upstream"],
            bytes_downstream=c.sent["downstream"],
            faults_fired=dict(c.faults_fired),
        )

    def _add(self, name: str, fault: object, direction: Direction, scope: Scope) -> str:
        if name in self._faults:
            raise ValueError(f"a fault named {name!r} exists; remove it or pick another name")
        entry = _Entry(name, fault, direction, generation=_next_generation())
        self._faults[name] = entry
        if scope == "all":
            for conn in self._connections.values():
                conn.pipes[direction].install(name, fault, entry.generation)
        self._apply_listener_faults()
        return name

    def _update(self, name: str, fault: object, scope: Scope) -> None:
        old = self._faults.get(name)
        if old is None:
            raise KeyError(f"no fault named {name!r}")
        entry = _Entry(name, fault, old.direction, generation=_next_generation())
        self._faults[name] = entry
        if scope == "all":
            for conn in self._connections.values():
                conn.pipes[old.direction].install(name, fault, entry.generation)
        self._apply_listener_faults()

    def _remove(self, name: str) -> None:
        entry = self._faults.pop(name, None)
        if entry is None:
            raise KeyError(f"no fault named {name!r}")
        for conn in list(self._connections.values()):
            conn.pipes[entry.direction].uninstall(name)
        self._apply_listener_faults()

    def _clear(self) -> None:
        for name in list(self._faults):
            self._remove(name)

    def _disable(self) -> None:
        self._want_enabled = False
        self._stop_listening()
        for conn in list(self._connections.values()):
            conn.abort()

    def _enable(self) -> None:
        self._want_enabled = True
        self._apply_listener_faults()

    def _apply_listener_faults(self) -> None:
        """Close the listener while a Refuse fault is installed (or the proxy is disabled)."""
        if self._closed or not self._started:
            return
        refuse = any(_is_refuse(e.fault) for e in self._faults.values())
        if refuse or not self._want_enabled:
            if not self._refusing:
                self._stop_listening()
        elif self._refusing or self._server is None:
            self._listen_now()

    # Used by the Toxiproxy server to change addresses of a live proxy.
    async def _restart(self, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
        self._stop_listening()
        for conn in list(self._connections.values()):
            conn.abort()
        self.upstream = upstream
        sock = self._bind(listen)
        host, port = sock.getsockname()[:2]
        self._listen = listen
        self._address = (str(host), int(port))
        if self._want_enabled and not any(_is_refuse(e.fault) for e in self._faults.values()):
            self._refusing = False
            await self._serve(sock)
        else:
            sock.close()


@dataclass(frozen=True)
class _Entry:
    name: str
    fault: object
    direction: Direction
    generation: int


_generation = 0


def _next_generation() -> int:
    global _generation
    _generation += 1
    return _generation


def _is_refuse(fault: object) -> bool:
    return type(fault).__name__ == "Refuse"


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(
            f"direction must be 'upstream' (client -> server) or 'downstream' "
            f"(server -> client), got {direction!r}"
        )


def _check_scope(scope: str) -> None:
    if scope not in ("all", "new"):
        raise ValueError(f"scope must be 'all' or 'new', got {scope!r}")
