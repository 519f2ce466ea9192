"""What a proxy's connections see of it: plan decisions, the shared buffer, bookkeeping.

# Rules:
# - Runs on the proxy's loop thread only.
# - Every connection is counted once it is accepted, and forgotten once both its sockets
#   are closed; the bytes of a forgotten connection are added to the totals then, so a
#   snapshot counts closed and open connections alike.
# - Events are emitted in order: opened (or failed), then closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from sockwork.faults.action import Action
from sockwork.faults.plan import Connection as PlanConnection
from sockwork.faults.plan import Plan
from sockwork.proxy import splice
from sockwork.proxy.connection import Connection, format_peer
from sockwork.proxy.fault import Direction
from sockwork.proxy.table import FaultTable

__all__ = ["ConnectionEvent", "Hub", "ProxyCounters"]

_READ_SIZE = 1024 * 1024  # the most one read takes from a socket


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


class Hub:
    """The proxy as its connections see it (a ``connection.ConnectionOwner``).

    It hands out the plan's decisions and the shared receive buffer, keeps the open
    connections and the totals of closed ones, and reports each opening, failure and
    closing through ``emit``.

    Args:
        loop: the loop every connection runs on.
        plan: the proxy's plan.
        table: the proxy's fault table (connection numbering, fault names).
        upstream: returns where to dial now (a restart may change it).
        closing: returns True once the proxy is closing.
        emit: called with each :class:`ConnectionEvent`.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        plan: Plan,
        table: FaultTable,
        *,
        upstream: Callable[[], tuple[str, int]],
        closing: Callable[[], bool],
        emit: Callable[[ConnectionEvent], None],
    ) -> None:
        self._plan = plan
        self._table = table
        self._upstream = upstream
        self._closing = closing
        self._emit = emit
        self.loop = loop
        self.buffer = memoryview(bytearray(_READ_SIZE))
        self.connections: dict[int, Connection] = {}
        self.next_id = 0
        self.failed = 0
        self.received: dict[Direction, int] = {"upstream": 0, "downstream": 0}
        self.sent: dict[Direction, int] = {"upstream": 0, "downstream": 0}
        self.idle = asyncio.Event()
        self.idle.set()
        self._worker: splice.SpliceWorker | None = None

    @property
    def upstream(self) -> tuple[str, int]:
        return self._upstream()

    @property
    def closing(self) -> bool:
        return self._closing()

    def accepted(self) -> asyncio.BaseProtocol:
        """The protocol of a client socket just accepted (the listener's factory)."""
        self.next_id += 1
        conn = Connection(self, self.next_id)
        self.connections[conn.id] = conn
        self.idle.clear()
        return conn.client

    def plan_accept(self, label: str) -> tuple[Action, ...]:
        self._table.accepted()
        return self._plan.accept(now=self.loop.time(), label=label)

    def plan_open(self, label: str) -> PlanConnection:
        self._table.opened()
        return self._plan.open(now=self.loop.time(), label=label)

    def connection_opened(self, conn: Connection) -> None:
        self._emit(ConnectionEvent("opened", conn.id, conn.client_address))

    def connection_failed(self, conn: Connection, exc: BaseException) -> None:
        self.failed += 1
        text = f"upstream {format_peer(self.upstream)}: {exc!r}"
        self._emit(ConnectionEvent("failed", conn.id, conn.client_address, error=text))

    def connection_closed(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        for direction, pipe in conn.pipes.items():
            self.received[direction] += pipe.received
            self.sent[direction] += pipe.sent
        if conn.plan_conn is not None:
            conn.plan_conn.close()  # the plan forgets it now (idempotent)
        if not conn.failed and conn.plan_conn is not None:
            fired = tuple(  # this connection's own events: O(its events), not the report's
                self._table.name_of(e.fault) for e in conn.plan_conn.events if e.what == "fired"
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
        if not self.connections:
            self.idle.set()

    def splice_worker(self) -> splice.SpliceWorker:
        """The thread that moves every spliced connection's bytes, started on first use.

        Raises:
            OSError: the thread's epoll or pipe could not be made (out of descriptors).
            RuntimeError: the thread could not be started, or the proxy is closing.
        """
        if self._worker is None:
            if self.closing:  # close_worker() ran or is about to: no thread after it
                raise RuntimeError("the proxy is closing")
            name = f"sockwork-proxy-splice-{id(self):x}"
            self._worker = splice.SpliceWorker(self.loop, name)
        return self._worker

    def close_worker(self) -> None:
        """Stop the splice thread (after every connection is closed)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()

    def abort_all(self) -> None:
        """Close every open connection at once."""
        for conn in list(self.connections.values()):
            conn.abort()

    def counters(self, faults_fired: Mapping[str, int]) -> ProxyCounters:
        """A snapshot: connections, and bytes of closed and open connections alike."""
        received, sent = dict(self.received), dict(self.sent)
        for conn in self.connections.values():  # closed ones were added as they closed
            for direction, pipe in conn.pipes.items():
                received[direction] += pipe.received
                sent[direction] += pipe.sent
        return ProxyCounters(
            connections_total=self.next_id,
            connections_open=len(self.connections),
            connections_failed=self.failed,
            received_upstream=received["upstream"],
            received_downstream=received["downstream"],
            bytes_upstream=sent["upstream"],
            bytes_downstream=sent["downstream"],
            faults_fired=dict(faults_fired),
        )
