"""FaultProxy: a loopback TCP proxy that applies sockwork faults per direction.

# Strategy:
# - One asyncio loop runs everything: the listener, every connection and every
#   fault. The loop is either our own, in a daemon thread (``with FaultProxy(...)``),
#   or the caller's (``async with FaultProxy(...)``). Control methods (add, remove,
#   disable...) are plain functions that run on the loop thread; from another thread
#   they are handed over with call_soon_threadsafe and waited for. Each runs as one
#   loop callback with no await, so every change is atomic: no chunk is forwarded
#   while the fault table is half-updated.
# - The pieces: ``table.FaultTable`` turns named faults into the plan's faults (sans-IO);
#   the sans-IO plan (``sockwork.faults.plan.Plan``, one per proxy, so Bandwidth groups
#   and ``connections=`` triggers span the proxy) decides; ``pipe.Pipe`` executes one
#   direction; ``connection.Connection`` joins two sockets by two pipes and talks to the
#   proxy through ``hub.Hub`` (decisions, shared buffer, bookkeeping, events);
#   ``listener.Listener`` serves, refuses or tarpits the address. This module is the
#   facade: life cycle, thread hand-over, fault changes.
# - Directions: ``fault.FAULT_DIRECTION`` (Toxiproxy's ``upstream`` is the vocabulary's
#   ``"send"``): the proxy is the client's network.
# - Refuse closes the listening socket while it is installed: clients get a real
#   ECONNREFUSED from the kernel. disable() does the same and closes open connections.
# - A fault change never fails because of one connection: a connection that raises
#   while deciding again is reported to the loop's exception handler and reset.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from sockwork._loop import LoopThread
from sockwork.faults.plan import Plan
from sockwork.faults.report import Event, Report
from sockwork.faults.vocabulary import Fault
from sockwork.proxy import splice
from sockwork.proxy.fault import DIRECTIONS, Direction
from sockwork.proxy.hub import ConnectionEvent, Hub, ProxyCounters
from sockwork.proxy.listener import Listener, Mode
from sockwork.proxy.table import FaultTable, InstalledFault, Scope

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

_T = TypeVar("_T")

_CLOSE_TIMEOUT = 5.0


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
        self._table = FaultTable()
        self._fired: dict[str, int] = {}  # fault name -> firings (ProxyCounters.faults_fired)
        self._plan: Plan | None = None
        self._hub: Hub | None = None
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._runner: LoopThread | None = None
        self._started = False
        self._closed = False

    # --- public surface ---------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` clients connect to (known once started)."""
        address = self._listener.address if self._listener is not None else None
        if address is None:
            raise RuntimeError("the proxy is not started; use it as a context manager first")
        return address

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
        return self._call(lambda: self._table.installed)

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
                SlowClose, HalfClose), an accept fault (AcceptDelay, CloseOnAccept) or Refuse.
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
        table = self._table
        return self._call(
            lambda: self._change(
                lambda: table.add(fault, direction=direction, name=name, scope=scope)
            )
        )

    def update(self, name: str, fault: Fault, *, scope: Scope = "all") -> None:
        """Replace the fault called ``name`` by ``fault``, in the same direction, atomically.

        With ``scope="all"`` open connections restart it with the new values; with
        ``"new"`` open connections keep the old values (restarted: a new probability
        draw) and only later connections get the new ones.

        Raises:
            KeyError: no fault has that name.
            ValueError: a bad scope, or a fault a proxy cannot produce.
        """
        self._call(lambda: self._change(lambda: self._table.update(name, fault, scope=scope)))

    def remove(self, name: str) -> None:
        """Remove the fault called ``name`` from the proxy and from open connections.

        Raises:
            KeyError: no fault has that name.
        """
        self._call(lambda: self._change(lambda: self._table.remove(name)))

    def clear(self) -> None:
        """Remove every fault."""
        self._call(lambda: self._change(self._table.clear))

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
        runner = LoopThread(f"sockwork-proxy-{id(self):x}")
        runner.start(self._begin())
        self._runner = runner

    def close(self) -> None:
        """Stop accepting, close every connection and stop the thread (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.stop(None if self._closed else self._end())

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
        await self._begin()

    async def aclose(self) -> None:
        """Close a proxy started with ``async with`` or ``astart()`` (idempotent)."""
        if self._runner is not None:
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
        listener, hub = self._require_listener(), self._require_hub()
        sock = await listener.prepare(listen)  # may raise: nothing has changed yet
        hub.abort_all()
        self.upstream = upstream
        if sock is not None:
            self._listen = listen
            listener.swap(sock, self._desired_listener())
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

    def _require_hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("the proxy is not started; use it as a context manager first")
        return self._hub

    def _require_listener(self) -> Listener:
        if self._listener is None:
            raise RuntimeError("the proxy is not started; use it as a context manager first")
        return self._listener

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

    async def _begin(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.current_thread()
        self._fired = {}
        self._plan = Plan(
            self._table.planned,
            rng=random.Random(self.seed),
            now=loop.time(),
            seed=self.seed,
            on_event=self._plan_event,
        )
        self._hub = Hub(
            loop,
            self._plan,
            self._table,
            upstream=lambda: self.upstream,
            closing=lambda: self._closed,
            emit=self._emit,
        )
        if splice.AVAILABLE:
            # Started with the proxy, so its thread and descriptors are the proxy's fixed
            # cost rather than appearing with the first connection; if it cannot be
            # made now, the first connection that splices tries again.
            with contextlib.suppress(OSError, RuntimeError):
                self._hub.splice_worker()
        self._listener = Listener(loop, self._hub.accepted)
        try:
            sock = await self._listener.prepare(self._listen)
        except BaseException:
            # The address cannot be bound (in use, no permission...): the proxy never
            # starts, so nothing would ever close the splice thread made above. It
            # leaked a thread, an epoll and a pipe per failed start (a Toxiproxy client
            # creating a proxy on a port in use got its 500, and the thread lived on).
            self._hub.close_worker()
            raise
        assert sock is not None  # nothing was bound before
        self._started = True
        self._listener.swap(sock, self._desired_listener())

    def _desired_listener(self) -> Mode:
        """What the listening address should do, from enable/disable and listener faults."""
        if self._closed or not self._want_enabled or self._table.refuses:
            return "refuse"
        return "tarpit" if self._table.tarpits else "serve"

    def _sync_listener(self) -> None:
        """Serve, refuse or tarpit, as ``enabled`` and Refuse/ConnectTimeout faults say."""
        if self._started and not self._closed and self._listener is not None:
            self._listener.set_mode(self._desired_listener())

    def _emit(self, event: ConnectionEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    async def _end(self) -> None:
        self._closed = True
        listener, hub = self._require_listener(), self._require_hub()
        try:
            listener.stop()
            # Sockets accepted just now are being wrapped in transports: let that finish,
            # so that every accepted socket belongs to a connection we close below.
            await listener.settle(_CLOSE_TIMEOUT)
            hub.abort_all()
            if hub.connections:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(hub.idle.wait(), _CLOSE_TIMEOUT)
            # Let the transports run their connection_lost callbacks before the loop stops.
            await asyncio.sleep(0)
        finally:  # whatever failed above, the splice thread must not outlive the proxy
            hub.close_worker()

    def _snapshot(self) -> ProxyCounters:
        if self._hub is None:
            return ProxyCounters(0, 0, 0, 0, 0, 0, 0, {})
        return self._hub.counters(self._fired)

    def _plan_event(self, event: Event) -> None:
        """Count each firing as the plan records it (the report keeps only the latest)."""
        if event.what == "fired" or event.kind == "accept":
            name = self._table.name_of(event.fault)
            self._fired[name] = self._fired.get(name, 0) + 1

    def _change(self, change: Callable[[], _T]) -> _T:
        """Change the fault table, then apply it: one loop step, so atomic."""
        result = change()
        self._apply()
        return result

    def _apply(self) -> None:
        """Give the plan the faults in force, then let every open connection decide again."""
        if self._plan is None or self._hub is None:
            return  # not started: the plan starts with the faults installed by then
        self._plan.update(self._table.planned, now=self._require_loop().time())
        for conn in list(self._hub.connections.values()):
            try:
                conn.faults_changed()
            except Exception as exc:
                # A fault change must never fail because of one connection's state:
                # report it as the loop reports a failed callback, and drop that one.
                self._require_loop().call_exception_handler(
                    {
                        "message": f"sockwork proxy: connection #{conn.id} failed when its "
                        "faults changed; it is closed",
                        "exception": exc,
                    }
                )
                conn.close(reset=True)
        self._sync_listener()

    def _disable(self) -> None:
        self._want_enabled = False
        self._sync_listener()
        self._require_hub().abort_all()

    def _enable(self) -> None:
        self._want_enabled = True
        try:
            self._sync_listener()
        except OSError:
            self._want_enabled = False  # still refusing: say so, and stay disabled
            raise
