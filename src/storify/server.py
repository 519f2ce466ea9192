"""The store's framed JSON API server: ``sockwork.frames`` (U32, JSON) on an asyncio loop.

# Rules:
# - One asyncio loop in one background thread serves every API connection. Each
#   connection is an ApiSession (its own cart); each request is answered in order.
# - Nothing on the loop waits for a write lock. Checkouts go through a
#   storify.batch.CheckoutQueue: those of every connection that arrive together
#   commit in one transaction (group commit), on the loop when that needs no waiting
#   (Store.try_checkout_batch), else in a store thread while the loop goes on reading
#   requests and sending replies; each reply is sent once its batch has committed. A
#   batch waiting for a write lock another process holds (up to the store's
#   busy_timeout) holds up only the checkouts queued behind it.
# - On SQLite, the other store calls (reads: list, show, add, order_status) run
#   inline on the loop: WAL lets them read the last commit without waiting for any
#   writer, and each is well under a millisecond, cheaper than a hop to a thread. On
#   PostgreSQL (``store.remote``) each call waits on the network, and on a stopped
#   database for up to the connect timeout: they run in a bounded thread pool, so one
#   slow call never holds up the other connections.
# - Frames carry bytes (codec BYTES): requests are decoded here with ``json.loads``
#   and replies encoded here, a checkout's from pre-encoded pieces
#   (storify.api.CheckoutStep.encode), byte for byte what ``json.dumps`` gives.
# - A connection that breaks the framing (bad header, a frame above MAX_MESSAGE,
#   EOF inside a frame) or sends a payload that is not JSON is closed, after a
#   ``bad_frame`` error reply when one can still be sent. Other connections go on.
# - Bounded: at most ``max_connections`` at once (the next one gets a ``busy``
#   reply and is closed), messages of at most MAX_MESSAGE bytes, and connections
#   that send nothing for ``idle_timeout`` seconds are closed. The MessageServer
#   enforces both (start_server's max_connections, refuse and idle_timeout).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from sockwork._loop import LoopThread
from sockwork.address import format_address
from sockwork.deprecation import warn_stop_alias
from sockwork.errors import ConnectionClosed, SockworkError
from sockwork.frames import BYTES, Format
from sockwork.frames.aio import MessageServer, MessageStream, start_server
from storify.api import ApiSession, CheckoutStep, encode_reply, error_reply
from storify.batch import CheckoutQueue
from storify.client import MAX_MESSAGE
from storify.repl import Visitor
from storify.store import Store

if TYPE_CHECKING:
    from typing import Self

__all__ = ["ApiServer", "format_address"]

log = logging.getLogger("storify.api")

# Threads running store calls for a remote (PostgreSQL) store; those beyond the
# store's pool size wait for a connection, up to its busy timeout.
_STORE_THREADS = 32


@dataclass
class _Connection:
    visitor: Visitor
    stream: MessageStream[bytes]


class ApiServer:
    """Serves the store's API to programs, in a background thread.

    Use as a context manager, or call :meth:`start` and :meth:`close`.

    Args:
        store: the store.
        host: the address to listen on (loopback by default; ``""`` means every interface).
        port: the port; 0 picks a free one (see :attr:`address`).
        max_connections: connections served at once.
        idle_timeout: seconds a connection may stay silent before it is closed.
    """

    def __init__(
        self,
        store: Store,
        *,
        host: str = "127.0.0.1",
        port: int = 65433,
        max_connections: int = 1000,
        idle_timeout: float = 600.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, not {port}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be more than 0 seconds, not {idle_timeout}")
        self.store = store
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._connections: dict[str, _Connection] = {}
        self._ids = itertools.count(1)
        self._runner: LoopThread | None = None
        self._server: MessageServer | None = None
        self._address: tuple[str, int] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._committer: concurrent.futures.ThreadPoolExecutor | None = None
        self._checkouts: CheckoutQueue | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the API listens on (the real port when 0 was asked)."""
        if self._address is None:
            raise RuntimeError("the API server is not started")
        return self._address

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and start serving in a background thread; returns once listening.

        Raises:
            OSError: the address cannot be bound (``EADDRINUSE``...).
            RuntimeError: already started.
        """
        if self._runner is not None:
            raise RuntimeError("the API server is already started")
        # Threads are started on first use only.
        if self.store.remote:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                _STORE_THREADS, thread_name_prefix="storify-api-store"
            )
            committer = self._executor
        else:
            # One thread: the store commits one batch at a time anyway.
            self._committer = committer = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="storify-api-commit"
            )
        self._checkouts = CheckoutQueue(
            self.store, executor=committer, max_batch=self.store.max_batch
        )
        runner = LoopThread("storify-api")
        self._server = runner.start(self._listen())
        self._runner = runner
        return self

    async def _listen(self) -> MessageServer:
        server = await start_server(
            self._serve,
            self.host,
            self.port,
            format=Format.U32,
            codec=BYTES,
            max_size=MAX_MESSAGE,
            max_connections=self.max_connections,
            idle_timeout=self.idle_timeout,
            refuse=self._refuse,
        )
        host, port = server.sockets[0].getsockname()[:2]
        self._address = (str(host), int(port))
        return server

    def close(self, timeout: float = 5.0) -> None:
        """Close every connection and the listening socket, and end the thread. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            runner.stop(self._close(timeout), timeout=timeout + 1.0)
        finally:
            for executor in (self._executor, self._committer):
                if executor is not None:
                    executor.shutdown(wait=True)  # no store call outlives close()
            self._executor = self._committer = None

    def stop(self, timeout: float = 5.0) -> None:
        """Deprecated alias of :meth:`close` (sockwork's servers ``start()`` and ``close()``)."""
        warn_stop_alias(self)
        self.close(timeout)

    async def _close(self, timeout: float) -> None:
        server = self._server
        if server is not None:
            server.close()  # also closes every API connection and cancels its handler
            try:
                await asyncio.wait_for(server.wait_closed(), timeout)
            except asyncio.TimeoutError:
                server.abort()  # a client that does not read cannot hold us up
                await server.wait_closed()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- who is connected -------------------------------------------------------------------

    def visitors(self) -> list[Visitor]:
        """Return the API connections open now, oldest first."""
        with self._lock:
            return [connection.visitor for connection in self._connections.values()]

    def kick(self, visitor_id: str) -> bool:
        """Close one API connection; returns False if there is none with that id."""
        with self._lock:
            connection = self._connections.get(visitor_id)
        runner = self._runner
        if connection is None or runner is None:
            return False
        with contextlib.suppress(RuntimeError):  # stopping: every connection closes anyway
            runner.loop.call_soon_threadsafe(connection.stream.close)
        return True

    # -- serving ----------------------------------------------------------------------------

    async def _serve(self, stream: MessageStream[bytes]) -> None:
        peer = format_address(stream.address)
        visitor = Visitor(f"api{next(self._ids)}", "api", peer, time.time())
        with self._lock:
            self._connections[visitor.id] = _Connection(visitor, stream)
        try:
            await self._converse(stream, ApiSession(self.store, f"api {peer}"), visitor)
        finally:
            with self._lock:
                del self._connections[visitor.id]

    async def _refuse(self, stream: MessageStream[bytes]) -> None:
        """Tell a program beyond ``max_connections`` to come back later (then it is closed)."""
        peer = format_address(stream.address)
        log.warning("API connection from %s refused: at %d connections", peer, len(self))
        await stream.send(
            encode_reply(
                error_reply(None, "busy", "the store serves too many programs; retry later")
            )
        )

    def __len__(self) -> int:
        """Return the number of API connections open now."""
        with self._lock:
            return len(self._connections)

    async def _converse(
        self, stream: MessageStream[bytes], session: ApiSession, visitor: Visitor
    ) -> None:
        while True:
            try:
                frame = await stream.recv()
            except ConnectionClosed:
                return  # the client left (or we closed): nothing to answer
            except SockworkError as error:
                # Broken framing: the stream is closed already; nothing can be answered.
                log.info("API connection %s closed: %s", visitor.address, error)
                return
            try:
                request = json.loads(frame)
            except (ValueError, RecursionError) as error:
                # A whole frame that is not JSON: say so, then close this connection only.
                log.info("API connection %s: bad frame: %s", visitor.address, error)
                message = f"a request is one JSON object per frame ({error})"
                await stream.send(encode_reply(error_reply(None, "bad_frame", message)))
                return
            await stream.send(await self._answer(session, request, frame))

    async def _answer(self, session: ApiSession, request: object, frame: bytes) -> bytes:
        """Answer one request, encoded: checkouts through the group commit queue."""
        assert self._checkouts is not None
        if self._executor is None:
            step = session.begin(request, raw=frame)
        else:
            loop = asyncio.get_running_loop()
            begin = functools.partial(session.begin, raw=frame)
            step = await loop.run_in_executor(self._executor, begin, request)
        if isinstance(step, CheckoutStep):
            return step.encode(await self._checkouts.submit(step.pending.request))
        return encode_reply(step)
