"""One proxied connection: the client's socket, the upstream's, and the two pipes between.

# Rules:
# - Each socket is an asyncio BufferedProtocol (a Side) reading into the proxy's one
#   receive buffer: each chunk is handed on (written, or copied by a fault's buffer)
#   before the next read, so one buffer serves every connection and reads allocate nothing.
# - Accept, then dial the upstream; nothing is read from the client before the upstream
#   answers. Accept faults (AcceptDelay, CloseOnAccept) run before the dial.
# - Half-close: an EOF from one side becomes write_eof() (shutdown(SHUT_WR)) on the
#   other, and the opposite direction keeps flowing (RFC 9293 section 3.6). The
#   connection closes when both directions have ended or either socket is lost.
# - A reset from one peer is passed on as a reset (SO_LINGER 0, then close), so the
#   other peer sees ECONNRESET as it would without the proxy.
# - The connection talks to its proxy only through ConnectionOwner: plan decisions,
#   the shared buffer, and the opened/failed/closed notices (counters, events).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Protocol

from sockwork.address import format_address
from sockwork.faults.action import Action, Close, Wait
from sockwork.faults.plan import Connection as PlanConnection
from sockwork.proxy.fault import Direction, other_direction
from sockwork.proxy.pipe import Pipe
from sockwork.proxy.splice import SpliceWorker

__all__ = ["Connection", "ConnectionOwner", "Side", "format_peer", "reset_transport"]

# Bytes a transport may buffer before its source stops reading: large enough to keep
# loopback busy, small enough to bound memory per connection.
_WRITE_HIGH_WATER = 512 * 1024
_CONNECT_TIMEOUT = 10.0
_LINGER_ZERO = struct.pack("ii", 1, 0)


class ConnectionOwner(Protocol):
    """What a connection needs from its proxy."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop every connection of the proxy runs on."""

    @property
    def buffer(self) -> memoryview:
        """The receive buffer shared by the proxy's connections."""

    @property
    def upstream(self) -> tuple[str, int]:
        """Where to dial."""

    @property
    def closing(self) -> bool:
        """True once the proxy is closing: a socket made now is dropped."""

    def plan_accept(self, label: str) -> tuple[Action, ...]:
        """The plan's decision for a client just accepted."""

    def plan_open(self, label: str) -> PlanConnection:
        """The plan's streams for a connection that reached the upstream."""

    def connection_opened(self, conn: Connection) -> None:
        """Both sockets are connected."""

    def connection_failed(self, conn: Connection, exc: BaseException) -> None:
        """The upstream could not be reached."""

    def connection_closed(self, conn: Connection) -> None:
        """Both sockets are closed: forget the connection."""

    def splice_worker(self) -> SpliceWorker:
        """The proxy's splice thread (made on first use; OSError if it cannot be)."""


def reset_transport(transport: asyncio.Transport) -> None:
    """Close a transport with an RST: SO_LINGER 0, then close without flushing."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


#: ``host:port`` (``[v6]:port``), as connection labels and messages show addresses.
format_peer = format_address


class Side(asyncio.BufferedProtocol):
    """One socket of a proxied connection (the client's or the upstream's).

    ``role`` is the direction this side's bytes travel: the client side feeds
    ``"upstream"``, the upstream side ``"downstream"``.
    """

    def __init__(self, conn: Connection, role: Direction, buffer: memoryview) -> None:
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
            pipes[other_direction(self.role)].hold("backpressure")

    def resume_writing(self) -> None:
        pipes = self.conn.pipes
        if pipes:
            pipes[other_direction(self.role)].release("backpressure")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn.side_lost(self, exc)


class Connection:
    """One client connection and its upstream connection, joined by two pipes."""

    def __init__(self, owner: ConnectionOwner, connection_id: int) -> None:
        self.owner = owner
        self.loop = owner.loop
        self.id = connection_id
        self.client = Side(self, "upstream", owner.buffer)
        self.server = Side(self, "downstream", owner.buffer)
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

    def splice_worker(self) -> SpliceWorker:
        """The proxy's splice thread (``pipe.PipeOwner``)."""
        return self.owner.splice_worker()

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
                    reset_transport(side.transport)
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

    def faults_changed(self) -> None:
        """The plan's faults changed: both directions decide again."""
        for pipe in list(self.pipes.values()):
            pipe.faults_changed()

    def _stop(self) -> None:
        self.closed = True
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        for pipe in self.pipes.values():
            pipe.stop()
        if self.plan_conn is not None:
            self.plan_conn.close()

    # --- life cycle -------------------------------------------------------------------

    def side_made(self, side: Side) -> None:
        """A socket is connected (called by the Side)."""
        if self.owner.closing:
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
        owner = self.owner
        try:
            for action in owner.plan_accept(format_peer(self.client_address)):
                if isinstance(action, Wait):
                    await asyncio.sleep(max(0.0, action.until - self.loop.time()))
                elif isinstance(action, Close):
                    transport = self.client.transport
                    if transport is not None:
                        self._stop()
                        if action.reset:
                            reset_transport(transport)
                        else:
                            transport.close()
                    return
            host, port = owner.upstream
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(lambda: self.server, host, port),
                    _CONNECT_TIMEOUT,
                )
            except (OSError, asyncio.TimeoutError) as exc:
                # As Toxiproxy: the client was accepted, so a dead upstream is
                # "connected, then EOF" (ECONNREFUSED needs Refuse or disable()).
                self.failed = True
                owner.connection_failed(self, exc)
                self.close()
        finally:
            self.task = None
            if self.closed:
                self._maybe_forget()

    def _open_streams(self) -> None:
        plan_conn = self.owner.plan_open(format_peer(self.client_address))
        self.plan_conn = plan_conn
        self.pipes = {
            "upstream": Pipe(self, "upstream", plan_conn.send),
            "downstream": Pipe(self, "downstream", plan_conn.recv),
        }
        self.owner.connection_opened(self)
        for pipe in self.pipes.values():
            pipe.start()

    def side_lost(self, side: Side, exc: Exception | None) -> None:
        """A socket is closed (called by the Side)."""
        other = self.server if side is self.client else self.client
        if not self.closed:
            self._stop()
            if other.transport is not None and not other.lost:
                if isinstance(exc, ConnectionResetError):
                    reset_transport(other.transport)  # a reset is passed on as a reset
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
            self.owner.connection_closed(self)
