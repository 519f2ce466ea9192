"""FaultProxy: a loopback TCP proxy that applies sockwork faults per direction.

# Strategy:
# - One asyncio loop runs everything: the listener, every connection and every
#   fault. The loop is either our own, in a daemon thread (``with FaultProxy(...)``),
#   or the caller's (``async with FaultProxy(...)``). Control methods (add, remove,
#   disable...) are plain functions that run on the loop thread; from another thread
#   they are handed over with call_soon_threadsafe and waited for. Each runs as one
#   loop callback with no await, so every change is atomic: no chunk is forwarded
#   while the fault table is half-updated.
# - The decisions are the sans-IO plan's (``sockwork.faults.plan.Plan``, one per proxy,
#   so Bandwidth groups and ``connections=`` triggers span the proxy); ``pipe.Pipe``
#   executes them. A fault cannot behave differently here and under socket patching.
# - Directions: Toxiproxy's ``upstream`` (client -> server) is the vocabulary's
#   ``"send"``, ``downstream`` (server -> client) is ``"recv"``: the proxy is the
#   client's network.
# - Each connection is two asyncio BufferedProtocols (client side, upstream side) and
#   two one-way pipes. Every read lands in one buffer shared by the proxy (the chunk is
#   written or copied before the next read). With no fault, a chunk is written straight
#   into the other transport; when the destination's write buffer passes its high-water
#   mark the source stops reading, so a slow reader slows the sender (back-pressure).
# - The accept loop is our own (add_reader + accept + connect_accepted_socket), so
#   closing the listener is synchronous and no accepted socket is ever orphaned.
# - Half-close: an EOF from one side becomes write_eof() (shutdown(SHUT_WR)) on the
#   other, and the opposite direction keeps flowing (RFC 9293 section 3.6). The
#   connection closes when both directions have ended or either socket is lost.
# - A reset from one peer is passed on as a reset (SO_LINGER 0, then close), so the
#   other peer sees ECONNRESET as it would without the proxy.
# - Refuse closes the listening socket while it is installed: clients get a real
#   ECONNREFUSED from the kernel. disable() does the same and closes open connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import random
import socket
import struct
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TypeVar

from sockwork.faults.plan import Close, Event, Plan, Report, Wait
from sockwork.faults.plan import Connection as PlanConnection
from sockwork.faults.vocabulary import (
    AcceptFault,
    ConnectFault,
    ConnectTimeout,
    DnsFault,
    Fault,
    Refuse,
    StreamFault,
)
from sockwork.proxy.pipe import Pipe

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

#: Toxiproxy's stream names: ``upstream`` is client -> server, ``downstream`` server -> client.
DIRECTIONS: tuple[Direction, ...] = ("upstream", "downstream")

# Proxy direction -> the fault vocabulary's direction (seen from the client).
_TO_FAULT_DIRECTION: dict[str, Literal["send", "recv", "both"]] = {
    "upstream": "send",
    "downstream": "recv",
    "both": "both",
}
_FROM_FAULT_DIRECTION = {"send": "upstream", "recv": "downstream", "both": "both"}

_T = TypeVar("_T")

# Bytes a transport may buffer before its source stops reading: large enough to keep
# loopback busy, small enough to bound memory per connection.
_WRITE_HIGH_WATER = 512 * 1024
_CONNECT_TIMEOUT = 10.0
_ACCEPT_BATCH = 64
_READ_SIZE = 1024 * 1024  # the most one read takes from a socket
_ACCEPT_RETRY = 0.1
_CLOSE_TIMEOUT = 5.0
_LINGER_ZERO = struct.pack("ii", 1, 0)

_Resolved = tuple[int, tuple[object, ...]]  # (family, sockaddr) as getaddrinfo gives them


@dataclass(frozen=True)
class InstalledFault:
    """A fault installed on a proxy: its name, the fault as given, and its direction."""

    name: str
    fault: Fault
    direction: str


@dataclass(frozen=True)
class ProxyCounters:
    """A snapshot of a proxy's counters since it started.

    ``bytes_upstream`` counts bytes delivered to the upstream server (client -> server),
    ``bytes_downstream`` bytes delivered to clients; ``received_*`` count bytes read
    from each source before faults (a blackhole reads without delivering).
    ``faults_fired`` maps a fault's name to the connections (and directions) it acted on.
    """

    connections_total: int
    connections_open: int
    connections_failed: int
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


def _reset(transport: asyncio.Transport) -> None:
    """Close a transport with an RST: SO_LINGER 0, then close without flushing."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


class _Side(asyncio.BufferedProtocol):
    """One socket of a proxied connection (the client's or the upstream's).

    A BufferedProtocol reading into the proxy's one receive buffer: each chunk is
    handed on (written, or copied by a fault's buffer) before the next read, so one
    buffer serves every connection of the loop and reads allocate nothing.
    """

    def __init__(self, conn: _Connection, role: Direction, buffer: memoryview) -> None:
        # role is the direction this side's bytes travel: the client side feeds "upstream".
        self.conn = conn
        self.role = role
        self.buffer = buffer
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        self.conn.side_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.pipes[self.role].feed(self.buffer[:nbytes])

    def eof_received(self) -> bool:
        self.conn.pipes[self.role].feed_eof()
        return True  # keep the transport open: the other direction may still flow

    def pause_writing(self) -> None:
        # Our write buffer is full: the pipe that writes into us stops reading its source.
        pipes = self.conn.pipes
        if pipes:
            pipes[_other(self.role)].hold("backpressure")

    def resume_writing(self) -> None:
        pipes = self.conn.pipes
        if pipes:
            pipes[_other(self.role)].release("backpressure")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn.side_lost(self, exc)


def _other(direction: Direction) -> Direction:
    return "downstream" if direction == "upstream" else "upstream"


class _Connection:
    """One client connection and its upstream connection, joined by two pipes."""

    def __init__(self, proxy: FaultProxy, connection_id: int) -> None:
        self.proxy = proxy
        self.loop = proxy._require_loop()
        self.id = connection_id
        self.client = _Side(self, "upstream", proxy._buffer)
        self.server = _Side(self, "downstream", proxy._buffer)
        self.client_address: tuple[str, int] = ("", 0)
        self.plan_conn: PlanConnection | None = None
        self.pipes: dict[Direction, Pipe] = {}
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.failed = False
        self.forgotten = False

    # --- what a pipe needs ------------------------------------------------------------

    def source(self, direction: Direction) -> asyncio.Transport | None:
        """The transport a direction reads from."""
        return (self.client if direction == "upstream" else self.server).transport

    def destination(self, direction: Direction) -> asyncio.Transport | None:
        """The transport a direction writes to."""
        return (self.server if direction == "upstream" else self.client).transport

    def pipe_finished(self, direction: Direction) -> None:
        """A direction has passed its EOF on; close when both have."""
        if all(p.finished for p in self.pipes.values()):
            self.close()

    def close(self, *, reset: bool = False) -> None:
        """Close both sockets: with FIN after flushing, or at once with an RST."""
        if self.closed:
            return
        self._stop()
        for side in (self.client, self.server):
            if side.transport is not None and not side.lost:
                if reset:
                    _reset(side.transport)
                else:
                    side.transport.close()
        self._maybe_forget()

    def abort(self) -> None:
        """Close both sockets at once, dropping unsent data (FIN, not RST)."""
        self._stop()
        for side in (self.client, self.server):
            if side.transport is not None and not side.lost:
                side.transport.abort()
        self._maybe_forget()

    def _stop(self) -> None:
        self.closed = True
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        for pipe in self.pipes.values():
            pipe.stop()
        if self.plan_conn is not None:
            self.plan_conn.close()

    # --- life cycle -------------------------------------------------------------------

    def side_made(self, side: _Side) -> None:
        if self.proxy._closed:
            self.abort()  # accepted (or connected) while the proxy was closing
            return
        if side is self.client:
            assert side.transport is not None
            peer = side.transport.get_extra_info("peername")
            if isinstance(peer, tuple):
                self.client_address = (str(peer[0]), int(peer[1]))
            # Nothing is read from the client until the upstream answers.
            side.transport.pause_reading()
            self.task = self.loop.create_task(self._begin())
        else:
            self._open_streams()

    async def _begin(self) -> None:
        proxy = self.proxy
        try:
            label = _format(self.client_address)
            actions = proxy._plan_accept(label)
            for action in actions:
                if isinstance(action, Wait):
                    await asyncio.sleep(max(0.0, action.until - self.loop.time()))
                elif isinstance(action, Close):
                    transport = self.client.transport
                    if transport is not None:
                        self._stop()
                        if action.reset:
                            _reset(transport)
                        else:
                            transport.close()
                    return
            host, port = proxy.upstream
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(lambda: self.server, host, port),
                    _CONNECT_TIMEOUT,
                )
            except (OSError, asyncio.TimeoutError) as exc:
                # As Toxiproxy: the client was accepted, so a dead upstream is
                # "connected, then EOF" (ECONNREFUSED needs Refuse or disable()).
                self.failed = True
                proxy._connection_failed(self, exc)
                self.close()
        finally:
            self.task = None
            if self.closed:
                self._maybe_forget()

    def _open_streams(self) -> None:
        proxy = self.proxy
        plan_conn = proxy._plan_open(_format(self.client_address))
        self.plan_conn = plan_conn
        self.pipes = {
            "upstream": Pipe(self, "upstream", plan_conn.send),
            "downstream": Pipe(self, "downstream", plan_conn.recv),
        }
        proxy._connection_opened(self)
        for pipe in self.pipes.values():
            pipe.start()

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        other = self.server if side is self.client else self.client
        if not self.closed:
            self._stop()
            if other.transport is not None and not other.lost:
                if isinstance(exc, ConnectionResetError):
                    _reset(other.transport)  # a reset is passed on as a reset
                else:
                    other.transport.close()
        self._maybe_forget()

    def _maybe_forget(self) -> None:
        # A connection is forgotten only once its client socket exists and is closed:
        # asyncio calls connection_made a loop step after creating the protocol.
        if self.client.transport is None:
            return
        sides = [s for s in (self.client, self.server) if s.transport is not None]
        if self.task is None and all(s.lost for s in sides) and not self.forgotten:
            self.forgotten = True
            self.proxy._connection_closed(self)


@dataclass(frozen=True)
class _Entry:
    name: str
    fault: Fault  # as given
    direction: str  # upstream | downstream | both | "" (not a stream fault)
    planned: Fault | None  # what the plan gets (direction and scope applied)


class FaultProxy:
    """A loopback TCP proxy to ``upstream`` that applies sockwork faults per direction.

    Use it as a context manager: ``with FaultProxy(upstream=(host, port)) as proxy:``
    runs it on an asyncio loop in a background thread; ``async with`` runs it on the
    running loop. ``proxy.address`` is where clients connect.

    Directions follow Toxiproxy: ``"upstream"`` is client -> server (the fault
    vocabulary's ``"send"``), ``"downstream"`` is server -> client (``"recv"``).

    Args:
        upstream: the ``(host, port)`` every connection is forwarded to.
        listen: the ``(host, port)`` to listen on; port 0 picks a free port.
        seed: seeds every random choice (jitter, probabilities, slicing); None picks
            one, kept in ``proxy.seed`` (and ``proxy.report``) so a run can be replayed.
        enabled: accept at once (False: connections are refused until ``enable()``).
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
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"upstream port must be an int in 1..65535, got {port!r}")
        lhost, lport = listen
        if isinstance(lport, bool) or not isinstance(lport, int) or not 0 <= lport < 65536:
            raise ValueError(f"listen port must be an int in 0..65535, got {lport!r}")
        self.upstream: tuple[str, int] = (str(host), port)
        self._listen = (str(lhost), lport)
        self.seed: int = seed if seed is not None else random.SystemRandom().getrandbits(32)
        self._on_event = on_event
        self._want_enabled = enabled
        self._entries: dict[str, _Entry] = {}
        self._names: dict[int, str] = {}  # id(planned fault) -> name, for the report
        self._fired: dict[str, int] = {}  # fault name -> firings (ProxyCounters.faults_fired)
        self._retired: list[Fault] = []  # keeps ids of removed faults valid
        self._connections: dict[int, _Connection] = {}
        self._next_id = 0
        self._accepts = 0
        self._streams = 0
        self._failed = 0
        self._received: dict[str, int] = {"upstream": 0, "downstream": 0}
        self._sent: dict[str, int] = {"upstream": 0, "downstream": 0}
        self._plan: Plan | None = None
        self._buffer = memoryview(bytearray(_READ_SIZE))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._tarpit: tuple[socket.socket, socket.socket] | None = None
        self._adopting: set[asyncio.Task[None]] = set()
        self._accept_retry: asyncio.TimerHandle | None = None
        self._address: tuple[str, int] | None = None
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
        """True unless ``disable()`` was called (a Refuse fault does not change it)."""
        return self._want_enabled

    @property
    def counters(self) -> ProxyCounters:
        """A snapshot of the counters: connections, bytes each way, faults fired."""
        return self._call(self._snapshot)

    @property
    def report(self) -> Report:
        """What the faults did (each firing, close and reset) and the seed that replays it."""
        return self._call(lambda: self._require_plan().report)

    @property
    def faults(self) -> tuple[InstalledFault, ...]:
        """The installed faults, in the order they were added."""
        return self._call(
            lambda: tuple(
                InstalledFault(e.name, e.fault, e.direction) for e in self._entries.values()
            )
        )

    def add(
        self,
        fault: Fault,
        *,
        direction: str | None = None,
        name: str | None = None,
        scope: Scope = "all",
    ) -> str:
        """Install ``fault``; returns its name.

        Args:
            fault: a ``sockwork.faults`` fault: a stream fault (Latency, Bandwidth,
                Slice, Coalesce, CloseAfter, Stall, Blackhole, Timeout, ResetPeer,
                SlowClose), an accept fault (AcceptDelay, CloseOnAccept) or Refuse.
            direction: ``"upstream"`` (client -> server), ``"downstream"`` (server ->
                client) or ``"both"``; None keeps the fault's own (``send`` is upstream,
                ``recv`` downstream). Ignored for accept faults and Refuse.
            name: a unique name; default ``<type>_<direction>`` as Toxiproxy does.
            scope: ``"all"`` applies to open connections and new ones, atomically;
                ``"new"`` only to connections accepted from now on.

        Raises:
            ValueError: bad direction or scope, a name in use, or a fault a proxy
                cannot produce (connect faults other than Refuse, DNS faults).
            TypeError: ``fault`` is not a sockwork fault.
        """
        entry_direction = _entry_direction(fault, direction)
        _check_scope(scope)
        if name is None:
            kind = type(fault).__name__.lower()
            name = f"{kind}_{entry_direction}" if entry_direction else kind
        chosen = name
        return self._call(lambda: self._add(chosen, fault, entry_direction, scope))

    def update(self, name: str, fault: Fault, *, scope: Scope = "all") -> None:
        """Replace the fault called ``name`` by ``fault``, in the same direction, atomically.

        With ``scope="all"`` open connections restart it with the new values; with
        ``"new"`` they drop it and only later connections get the new one.

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
        """Accept connections again on the same address.

        Raises:
            OSError: the address cannot be bound again (another socket took it while
                the proxy was disabled); the proxy stays disabled.
        """
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
            # Nothing may outlive the loop: finish whatever is still scheduled.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            # Name look-ups of a "localhost" upstream ran in the default executor.
            loop.run_until_complete(loop.shutdown_default_executor())

        name = f"sockwork-proxy-{id(self):x}"
        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            self._thread = None
            loop.close()
            raise

    def close(self) -> None:
        """Stop accepting, close every connection and stop the thread (idempotent)."""
        thread = self._thread
        if thread is None:
            return
        loop = self._require_loop()
        if not self._closed:
            asyncio.run_coroutine_threadsafe(self._end(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = None
        loop.close()

    def __enter__(self) -> Self:
        """Start in a background thread (see :meth:`start`)."""
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

    async def astart(self) -> None:
        """Start the proxy on the running loop."""
        if self._started:
            raise RuntimeError("the proxy was already started")
        await self._begin(asyncio.get_running_loop())

    async def aclose(self) -> None:
        """Close a proxy started with ``async with`` or ``astart()`` (idempotent)."""
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.close)
        elif self._started and not self._closed:
            await self._end()

    async def __aenter__(self) -> Self:
        """Start on the running loop (see :meth:`astart`)."""
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def restart(self, *, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
        """Move a proxy started on the running loop: listen anew, forward anew.

        Open connections are dropped (as Toxiproxy does). The new address is bound
        before the old listener is closed, so a failure changes nothing: the proxy
        keeps its address, its upstream and its connections. The Toxiproxy server uses
        it when a PATCH changes ``listen`` or ``upstream``.

        Raises:
            OSError: the new address cannot be bound (in use, not local...).
        """
        sock = None
        wanted = await self._aresolve(listen)
        if wanted != self._resolve(self.address):  # numeric: no look-up
            sock = self._bind_to(wanted)  # may raise: nothing has changed yet
        for conn in list(self._connections.values()):
            conn.abort()
        self.upstream = upstream
        if sock is not None:
            self._stop_listening()
            self._listen = listen
            host, port = sock.getsockname()[:2]
            self._address = (str(host), int(port))
            if self._should_listen():
                self._serve(sock)
            else:
                sock.close()
                self._sync_listener()
        await asyncio.sleep(0)

    # --- internals: everything below runs on the loop thread ----------------------------

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the proxy is not started; use it as a context manager first")
        return self._loop

    def _require_plan(self) -> Plan:
        if self._plan is None:
            raise RuntimeError("the proxy is not started; use it as a context manager first")
        return self._plan

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the loop thread and return its result (directly when already there)."""
        loop = self._loop
        if loop is None or self._loop_thread is threading.current_thread():
            return fn()
        if self._closed or not loop.is_running():
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
        self._loop_thread = threading.current_thread()
        planned = [e.planned for e in self._entries.values() if e.planned is not None]
        self._fired = {}
        self._plan = Plan(planned, rng=random.Random(self.seed), now=loop.time(), seed=self.seed,
                          on_event=self._plan_event)
        self._idle = asyncio.Event()
        self._idle.set()
        sock = self._bind_to(await self._aresolve(self._listen))
        host, port = sock.getsockname()[:2]
        self._address = (str(host), int(port))
        self._started = True
        if self._should_listen():
            self._serve(sock)
        else:
            sock.close()
            self._sync_listener()

    @staticmethod
    def _pick(infos: Sequence[tuple[object, ...]]) -> _Resolved:
        # "localhost" may resolve to ::1 first; clients mostly dial 127.0.0.1 (Go does too).
        family, _, _, _, sockaddr = min(infos, key=lambda info: info[0] != socket.AF_INET)
        assert isinstance(family, int) and isinstance(sockaddr, tuple)
        return family, sockaddr

    def _resolve(self, address: tuple[str, int]) -> _Resolved:
        """The family and socket address to bind (blocks on a name: numeric only)."""
        host, port = address
        flags = socket.AI_PASSIVE
        return self._pick(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags))

    async def _aresolve(self, address: tuple[str, int]) -> _Resolved:
        """The family and socket address to bind, looked up without blocking the loop."""
        host, port = address
        infos = await self._require_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        return self._pick(infos)

    def _bind(self, address: tuple[str, int], *, backlog: int = 128) -> socket.socket:
        """Listen on a numeric address (the one already in use, to listen again)."""
        return self._bind_to(self._resolve(address), backlog=backlog)

    def _bind_to(self, resolved: _Resolved, *, backlog: int = 128) -> socket.socket:
        family, sockaddr = resolved
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    # Our own accept loop rather than loop.create_server(): an asyncio Server drops
    # (and leaks) sockets it accepted but had not wrapped yet when it is closed, and
    # closing the listener must be synchronous for Refuse and disable() to be atomic.

    def _serve(self, sock: socket.socket) -> None:
        """Accept on ``sock`` (bound and listening) from now on."""
        self._listener = sock
        self._require_loop().add_reader(sock.fileno(), self._acceptable)

    def _acceptable(self) -> None:
        sock = self._listener
        if sock is None:
            return
        loop = self._require_loop()
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # Out of descriptors or buffers (EMFILE, ENOBUFS...): the client waits in
                # the kernel backlog; try again shortly instead of spinning.
                loop.remove_reader(sock.fileno())
                self._accept_retry = loop.call_later(_ACCEPT_RETRY, self._resume_accepting)
                return
            conn.setblocking(False)
            task = loop.create_task(self._adopt(conn))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    def _resume_accepting(self) -> None:
        self._accept_retry = None
        if self._listener is not None:
            self._require_loop().add_reader(self._listener.fileno(), self._acceptable)

    async def _adopt(self, conn: socket.socket) -> None:
        try:
            await self._require_loop().connect_accepted_socket(self._accepted, sock=conn)
        except BaseException:
            conn.close()
            raise

    def _desired_listener(self) -> Literal["serve", "refuse", "tarpit"]:
        """What the listening address should do, from enable/disable and listener faults."""
        planned = [e.planned for e in self._entries.values()]
        if self._closed or not self._want_enabled or any(isinstance(f, Refuse) for f in planned):
            return "refuse"
        if any(isinstance(f, ConnectTimeout) for f in planned):
            return "tarpit"
        return "serve"

    def _should_listen(self) -> bool:
        return self._desired_listener() == "serve"

    def _sync_listener(self) -> None:
        """Serve, refuse or tarpit, as ``enabled`` and Refuse/ConnectTimeout faults say."""
        if not self._started or self._closed:
            return
        desired = self._desired_listener()
        current = "serve" if self._listener else "tarpit" if self._tarpit else "refuse"
        if desired == current:
            return
        self._stop_listening()
        if desired == "serve":
            self._serve(self._bind(self.address))
        elif desired == "tarpit":
            self._tarpit_now()

    def _tarpit_now(self) -> None:
        """Listen with a full accept queue that is never served: connects time out.

        Linux drops a SYN while the accept queue is full; with backlog 0 it holds one
        connection, which our own never-accepted socket takes (the reference measured
        listen(1) + no accept: further connects raise TimeoutError).
        """
        listener = self._bind(self.address, backlog=0)
        plug = socket.socket(listener.family, socket.SOCK_STREAM)
        plug.setblocking(False)
        plug.connect_ex(listener.getsockname())  # loopback: queued at once, or a client was
        self._tarpit = (listener, plug)

    def _stop_listening(self) -> None:
        """Close the listening socket: from now on, connects get ECONNREFUSED."""
        if self._accept_retry is not None:
            self._accept_retry.cancel()
            self._accept_retry = None
        sock = self._listener
        if sock is not None:
            self._listener = None
            self._require_loop().remove_reader(sock.fileno())
            sock.close()
        if self._tarpit is not None:
            for held in self._tarpit:
                held.close()
            self._tarpit = None

    def _accepted(self) -> asyncio.BaseProtocol:
        self._next_id += 1
        conn = _Connection(self, self._next_id)
        self._connections[conn.id] = conn
        assert self._idle is not None
        self._idle.clear()
        return conn.client

    def _plan_accept(self, label: str) -> tuple[object, ...]:
        self._accepts += 1
        plan = self._require_plan()
        return plan.accept(now=self._require_loop().time(), label=label)

    def _plan_open(self, label: str) -> PlanConnection:
        self._streams += 1
        return self._require_plan().open(now=self._require_loop().time(), label=label)

    def _connection_opened(self, conn: _Connection) -> None:
        self._emit(ConnectionEvent("opened", conn.id, conn.client_address))

    def _connection_failed(self, conn: _Connection, exc: BaseException) -> None:
        self._failed += 1
        text = f"upstream {_format(self.upstream)}: {exc!r}"
        self._emit(ConnectionEvent("failed", conn.id, conn.client_address, error=text))

    def _connection_closed(self, conn: _Connection) -> None:
        if self._connections.pop(conn.id, None) is None:
            return
        for direction, pipe in conn.pipes.items():
            self._received[direction] += pipe.received
            self._sent[direction] += pipe.sent
        if conn.plan_conn is not None:
            conn.plan_conn.close()  # the plan forgets it now (idempotent)
        if not conn.failed and conn.plan_conn is not None:
            fired = tuple(  # this connection's own events: O(its events), not the report's
                self._names.get(id(e.fault), type(e.fault).__name__)
                for e in conn.plan_conn.events
                if e.what == "fired"
            )
            self._emit(
                ConnectionEvent(
                    "closed",
                    conn.id,
                    conn.client_address,
                    bytes_upstream=conn.pipes["upstream"].sent,
                    bytes_downstream=conn.pipes["downstream"].sent,
                    faults_fired=fired,
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
        # Sockets accepted just now are being wrapped in transports: let that finish,
        # so that every accepted socket belongs to a connection we close below.
        if self._adopting:
            await asyncio.wait(set(self._adopting), timeout=_CLOSE_TIMEOUT)
        for conn in list(self._connections.values()):
            conn.abort()
        if self._idle is not None and self._connections:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), _CLOSE_TIMEOUT)
        # Let the transports run their connection_lost callbacks before the loop stops.
        await asyncio.sleep(0)

    def _snapshot(self) -> ProxyCounters:
        received, sent = dict(self._received), dict(self._sent)
        for conn in self._connections.values():  # closed ones were added as they closed
            for direction, pipe in conn.pipes.items():
                received[direction] += pipe.received
                sent[direction] += pipe.sent
        return ProxyCounters(
            connections_total=self._next_id,
            connections_open=len(self._connections),
            connections_failed=self._failed,
            received_upstream=received["upstream"],
            received_downstream=received["downstream"],
            bytes_upstream=sent["upstream"],
            bytes_downstream=sent["downstream"],
            faults_fired=dict(self._fired),
        )

    def _plan_event(self, event: Event) -> None:
        """Count each firing as the plan records it (the report keeps only the latest)."""
        if event.what == "fired" or event.kind == "accept":
            name = self._names.get(id(event.fault), type(event.fault).__name__)
            self._fired[name] = self._fired.get(name, 0) + 1

    def _planned(self, fault: Fault, direction: str, scope: Scope) -> Fault | None:
        """The fault as the plan gets it: direction set, and limited to new connections."""
        planned = fault
        if isinstance(fault, StreamFault) and direction:
            planned = dataclasses.replace(fault, direction=_TO_FAULT_DIRECTION[direction])
        if scope == "new":
            if isinstance(fault, AcceptFault):
                first = self._accepts + 1
            elif isinstance(fault, StreamFault):
                first = self._streams + 1
            else:
                return planned
            chosen = _from_index(planned.connections, first)
            if chosen is None:
                return None  # no connection it could select is still to come
            planned = dataclasses.replace(planned, connections=chosen)
        return planned

    def _apply(self) -> None:
        """Give the plan the faults in force, then let every open pipe decide again."""
        if self._plan is None:
            return  # not started: the plan starts with the faults installed by then
        plan = self._plan
        planned = [e.planned for e in self._entries.values() if e.planned is not None]
        plan.update(planned, now=self._require_loop().time())
        for conn in list(self._connections.values()):
            try:
                for pipe in list(conn.pipes.values()):
                    pipe.faults_changed()
            except Exception as exc:
                # A fault change must never fail because of one connection's state:
                # report it as the loop reports a failed callback, and drop that one.
                self._require_loop().call_exception_handler({
                    "message": f"sockwork proxy: connection #{conn.id} failed when its "
                               "faults changed; it is closed",
                    "exception": exc,
                })
                conn.close(reset=True)
        self._sync_listener()

    def _install(self, entry: _Entry) -> None:
        self._entries[entry.name] = entry
        if entry.planned is not None:
            self._names[id(entry.planned)] = entry.name

    def _retire(self, entry: _Entry) -> None:
        if entry.planned is not None:
            self._retired.append(entry.planned)

    def _add(self, name: str, fault: Fault, direction: str, scope: Scope) -> str:
        if name in self._entries:
            raise ValueError(f"a fault named {name!r} exists; remove it or pick another name")
        self._install(_Entry(name, fault, direction, self._planned(fault, direction, scope)))
        self._apply()
        return name

    def _update(self, name: str, fault: Fault, scope: Scope) -> None:
        old = self._entries.get(name)
        if old is None:
            raise KeyError(f"no fault named {name!r}")
        direction = _entry_direction(fault, old.direction or None)
        self._retire(old)
        self._install(_Entry(name, fault, direction, self._planned(fault, direction, scope)))
        self._apply()

    def _remove(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is None:
            raise KeyError(f"no fault named {name!r}")
        self._retire(entry)
        self._apply()

    def _clear(self) -> None:
        for entry in self._entries.values():
            self._retire(entry)
        self._entries.clear()
        self._apply()

    def _disable(self) -> None:
        self._want_enabled = False
        self._sync_listener()
        for conn in list(self._connections.values()):
            conn.abort()

    def _enable(self) -> None:
        self._want_enabled = True
        try:
            self._sync_listener()
        except OSError:
            self._want_enabled = False  # still refusing: say so, and stay disabled
            raise


def _from_index(connections: object, first: int) -> int | range | frozenset[int] | None:
    """Intersect a ``connections`` trigger with "index ``first`` and later"."""
    if connections is None:
        return range(first, sys.maxsize)  # the vocabulary's open-ended form
    if isinstance(connections, int):
        return range(first, connections + 1) if connections >= first else None
    assert isinstance(connections, (range, frozenset))
    if isinstance(connections, range):
        # In O(1): the range may be open-ended. Keep its step, from its first index >= first.
        r = connections if connections.step > 0 else connections[::-1]
        skip = max(0, -((r.start - first) // r.step))  # ceil((first - start) / step)
        return r[skip:] or None
    chosen = frozenset(i for i in connections if i >= first)
    return chosen or None


def _entry_direction(fault: object, direction: str | None) -> str:
    """The proxy direction a fault is installed in ('' for accept faults and Refuse)."""
    if not isinstance(fault, Fault):
        raise TypeError(f"not a fault: {fault!r} (use the classes of sockwork.faults)")
    if isinstance(fault, DnsFault) or (
        isinstance(fault, ConnectFault) and not isinstance(fault, (Refuse, ConnectTimeout))
    ):
        raise ValueError(
            f"a proxy cannot produce {type(fault).__name__}: the kernel completes the "
            "client's connect before the proxy sees it; use sockwork.faults.inject "
            "in-process, or AcceptDelay/CloseOnAccept/Refuse/ConnectTimeout on the proxy"
        )
    if isinstance(fault, (Refuse, ConnectTimeout)) and (
        fault.probability != 1.0 or fault.connections is not None or fault.after_seconds
    ):
        raise ValueError(
            f"a proxy applies {type(fault).__name__} to its listening socket, hence to every "
            "new client: it takes no probability, connections or after_seconds "
            "(use CloseOnAccept to pick connections)"
        )
    if not isinstance(fault, StreamFault):
        return ""
    if direction is None:
        return _FROM_FAULT_DIRECTION[fault.direction]
    if direction not in _TO_FAULT_DIRECTION:
        raise ValueError(
            "direction must be 'upstream' (client -> server), 'downstream' "
            f"(server -> client) or 'both', got {direction!r}"
        )
    return direction


def _check_scope(scope: str) -> None:
    if scope not in ("all", "new"):
        raise ValueError(f"scope must be 'all' or 'new', got {scope!r}")


def _format(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
