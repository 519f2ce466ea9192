"""start_server and MessageServer: a listening server that owns what it accepted.

Each accepted connection gets a :class:`~sockwork.frames.aio.MessageStream` and a
handler task. The server bounds what it serves (``max_connections``, ``idle_timeout``,
and ``max_buffered``: one MemoryBudget shared by its connections' protocols) and its
``close()`` closes every connection and cancels every handler.
"""

# Rules:
# - A MessageServer bounds what it serves: ``max_connections`` counts running handlers
#   (a refused connection runs ``refuse`` or is aborted, uncounted); ``idle_timeout``
#   is one timer per connection, re-armed only when it fires (a read just stores the
#   time, and only in servers that have an idle_timeout: _IdleServerProtocol).
# - A MessageServer owns what it accepted: every live stream and handler task is in
#   its sets from connection_made until connection_lost / task end, so close() can
#   close them all (asyncio.Server.close() on 3.11 leaves accepted connections open).
#   close() stops accepting at once but closes the asyncio server one loop step later:
#   closing it between an accept and its transport leaks that socket (_stop_listening).

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar, cast, overload

from sockwork.errors import SockworkError
from sockwork.frames._queue import DEFAULT_MAX_BUFFERED, MemoryBudget
from sockwork.frames.aio._protocol import FrameProtocol
from sockwork.frames.aio._stream import MessageStream
from sockwork.frames.codec import _CHUNK, DEFAULT_MAX_SIZE, Format, FrameDecoder, FrameEncoder
from sockwork.frames.payload import BYTES, Codec, _check_codec

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = ["DEFAULT_MAX_BUFFERED", "MessageServer", "start_server"]

T = TypeVar("T")

Handler = Callable[[MessageStream[T]], Awaitable[None]]


@overload
async def start_server(
    handler: Handler[bytes],
    host: str = ...,
    port: int = ...,
    *,
    format: Format | str = ...,
    max_size: int = ...,
    max_buffered: int = ...,
    max_connections: int | None = ...,
    idle_timeout: float | None = ...,
    refuse: Handler[bytes] | None = ...,
) -> MessageServer: ...


@overload
async def start_server(
    handler: Handler[T],
    host: str = ...,
    port: int = ...,
    *,
    format: Format | str = ...,
    max_size: int = ...,
    codec: Codec[T],
    max_buffered: int = ...,
    max_connections: int | None = ...,
    idle_timeout: float | None = ...,
    refuse: Handler[T] | None = ...,
) -> MessageServer: ...


async def start_server(
    handler: Handler[T] | Handler[bytes],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    format: Format | str = Format.U32,
    max_size: int = DEFAULT_MAX_SIZE,
    codec: Codec[T] | Codec[bytes] = BYTES,
    max_buffered: int = DEFAULT_MAX_BUFFERED,
    max_connections: int | None = None,
    idle_timeout: float | None = None,
    refuse: Handler[T] | Handler[bytes] | None = None,
) -> MessageServer:
    """Serve TCP connections, calling ``await handler(stream)`` for each in its own task.

    Binds 127.0.0.1 and a free port by default (``server.sockets[0].getsockname()``).
    The stream is closed when the handler returns. A sockwork error escaping the
    handler (a peer that closed or broke the format) ends that connection only;
    any other exception is reported to the loop's exception handler. Either way the
    server keeps serving its other connections. Closing the returned
    :class:`MessageServer` also closes every connection and cancels every handler.

    ``max_buffered`` (default 64 MiB, at least ``max_size``) bounds the receive memory
    of all connections together, beyond a 64 KiB buffer each: a frame larger than
    64 KiB reserves its announced size when its header arrives, and a connection whose
    reservation does not fit stops reading (back-pressure) until other connections'
    messages are taken; none is refused.

    ``max_connections`` (default None: no limit) bounds the handlers running at once.
    A connection beyond it is not served: ``await refuse(stream)`` runs instead (to
    tell the client, e.g. a "busy" message; it should be brief), or the connection
    is closed at once when ``refuse`` is None. ``idle_timeout`` (seconds, default
    None: never) closes a connection that has received no byte for that long, as
    :meth:`MessageStream.close` does; its handler's ``recv()`` then raises
    ConnectionClosed.
    """
    _check_codec(codec)
    if max_connections is not None and (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 1
    ):
        raise ValueError(f"max_connections must be None or an int >= 1, not {max_connections!r}")
    if idle_timeout is not None and not 0 < idle_timeout < float("inf"):
        raise ValueError(
            f"idle_timeout must be None or a finite number of seconds > 0, not {idle_timeout!r}"
        )
    FrameEncoder(format, max_size=max_size)  # validate the arguments now, not per connection
    budget = MemoryBudget(max_buffered, base=_CHUNK)
    if max_buffered < max_size:
        raise ValueError(
            f"max_buffered must be >= max_size ({max_size} bytes) so that one message of "
            f"max_size fits, not {max_buffered}"
        )
    loop = asyncio.get_running_loop()
    server = MessageServer()
    server._budget = budget
    server._max_connections = max_connections
    server._idle_timeout = idle_timeout
    server._refuse = cast("Handler[object] | None", refuse)

    # Only servers with an idle_timeout pay for noting the time of each read.
    protocol = _ServerProtocol if idle_timeout is None else _IdleServerProtocol

    def factory() -> FrameProtocol:
        return protocol(
            FrameDecoder(format, max_size=max_size),
            loop,
            budget,
            FrameEncoder(format, max_size=max_size),
            cast("Codec[object]", codec),
            cast("Handler[object]", handler),
            server,
        )

    server._server = await loop.create_server(factory, host, port)
    return server


class MessageServer:
    """A listening server made by :func:`start_server`; owns the connections it accepted.

    Has the useful surface of ``asyncio.Server`` (``sockets``, ``is_serving()``,
    ``serve_forever()``, ``close()``, ``wait_closed()``, ``async with``), but
    ``close()`` also closes every accepted connection and cancels every handler task,
    on every Python version (``asyncio.Server.close()`` leaves them running on 3.11).
    """

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._budget: MemoryBudget | None = None
        self._streams: set[MessageStream[object]] = set()
        self._lost: set[asyncio.Future[None]] = set()  # closed_future of each live connection
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._max_connections: int | None = None
        self._idle_timeout: float | None = None
        self._refuse: Handler[object] | None = None
        self._served = 0  # handlers running (what max_connections bounds)

    def __repr__(self) -> str:
        state = "closed" if self._closing else "serving"
        return f"<MessageServer {state} connections={len(self._streams)} at {self.sockets!r}>"

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (``sockets[0].getsockname()`` gives the port); () once closed."""
        return () if self._server is None or self._closing else tuple(self._server.sockets)

    @property
    def connections(self) -> int:
        """The number of accepted connections not yet closed."""
        return len(self._streams)

    @property
    def max_connections(self) -> int | None:
        """The most handlers served at once (None: no limit); see :func:`start_server`."""
        return self._max_connections

    @property
    def idle_timeout(self) -> float | None:
        """Seconds without a received byte before a connection is closed (None: never)."""
        return self._idle_timeout

    @property
    def buffered(self) -> int:
        """Receive memory reserved by the connections now, in bytes (bounded by max_buffered)."""
        return 0 if self._budget is None else self._budget.used

    @property
    def waiting(self) -> int:
        """Connections that stopped reading until their reservation fits in max_buffered."""
        return 0 if self._budget is None else self._budget.waiting

    def is_serving(self) -> bool:
        """Return True while the server accepts new connections."""
        return self._server is not None and not self._closing and self._server.is_serving()

    async def serve_forever(self) -> None:
        """Serve until cancelled; then close the server and its connections, and wait."""
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            self.close()
            await self.wait_closed()

    def close(self) -> None:
        """Stop listening, close every connection and cancel every handler task; idempotent.

        Each stream is closed as by :meth:`MessageStream.close`: frames already queued
        are flushed, then the peer sees EOF. Handlers get ``CancelledError``.
        """
        self._shut(abort=False)

    def abort(self) -> None:
        """Like :meth:`close`, but connections are aborted: queued frames are dropped.

        Use it when :meth:`wait_closed` takes too long because a peer does not read.
        """
        self._shut(abort=True)

    def _shut(self, *, abort: bool) -> None:
        first = not self._closing
        self._closing = True
        if self._server is not None and first:
            _stop_listening(self._server)
        for stream in list(self._streams):
            if abort:
                stream.abort()
            else:
                stream.close()
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the server, every connection and every handler task have ended.

        Call it after :meth:`close` or :meth:`abort`. A peer that does not read can keep
        a closing connection open (its queued frames are still being flushed): bound the
        wait with ``asyncio.wait_for`` and call :meth:`abort` if it times out.
        """
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # connections accepted just before close() reach connection_made
        while True:
            pending = {t for t in self._tasks if not t.done()}
            pending.update(f for f in self._lost if not f.done())  # type: ignore[misc]
            if not pending:
                return
            await asyncio.wait(pending)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


def _stop_listening(server: asyncio.Server) -> None:
    """Stop accepting now; close the asyncio server one loop step later.

    asyncio.Server.close() run just after the loop accepted a socket, before the task
    that wraps it in a transport ran, makes that task fail in Server._attach() (3.11:
    "assert self._sockets is not None") and the accepted socket leaks, unclosed. So no
    new socket is accepted from now on, and the server closes after those tasks made
    their transports; _ServerProtocol.connection_made then aborts them (``_closing``).
    """
    loop = server.get_loop()
    try:
        for sock in server.sockets:
            loop.remove_reader(sock)
        loop.call_soon(server.close)
    except (NotImplementedError, RuntimeError):  # a loop without readers, or closed
        server.close()


class _ServerProtocol(FrameProtocol):
    """A FrameProtocol that starts the handler task once connected."""

    def __init__(
        self,
        decoder: FrameDecoder,
        loop: asyncio.AbstractEventLoop,
        budget: MemoryBudget,
        encoder: FrameEncoder,
        codec: Codec[object],
        handler: Handler[object],
        server: MessageServer,
    ) -> None:
        super().__init__(decoder, loop, budget)
        self._encoder = encoder
        self._codec = codec
        self._handler = handler
        self._server = server
        self._stream: MessageStream[object] | None = None
        self._counted = False  # counted in server._served until the handler ends
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_heard = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._server
        tcp = cast(asyncio.Transport, transport)
        if server._closing:
            tcp.abort()  # accepted in the instant the server closed: never served
            return
        limit = server._max_connections
        handler = self._handler
        if limit is not None and server._served >= limit:
            if server._refuse is None:
                tcp.abort()  # over the limit, nothing to tell: closed before any byte
                return
            handler = server._refuse
        else:
            server._served += 1
            self._counted = True
        stream = MessageStream(tcp, self, self._encoder, self._codec)
        self._stream = stream
        server._streams.add(stream)
        server._lost.add(self.closed_future)
        if server._idle_timeout is not None:
            self._last_heard = self.loop.time()
            self._idle_timer = self.loop.call_later(server._idle_timeout, self._check_idle)
        task = self.loop.create_task(self._run(stream, handler))
        server._tasks.add(task)
        task.add_done_callback(self._done)

    def _check_idle(self) -> None:
        """Close the stream when nothing arrived for idle_timeout; else look again then."""
        timeout = self._server._idle_timeout
        assert timeout is not None and self._stream is not None
        due = self._last_heard + timeout
        if self.loop.time() >= due:
            self._idle_timer = None
            self._stream.close()
        else:
            self._idle_timer = self.loop.call_at(due, self._check_idle)

    def _done(self, task: asyncio.Task[None]) -> None:
        server = self._server
        server._tasks.discard(task)
        if self._counted:
            self._counted = False
            server._served -= 1

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._stream is not None:
            self._server._streams.discard(self._stream)
        self._server._lost.discard(self.closed_future)

    async def _run(self, stream: MessageStream[object], handler: Handler[object]) -> None:
        try:
            await handler(stream)
        except SockworkError:
            pass  # this connection's peer misbehaved or left; the stream says which
        except Exception as exc:  # noqa: BLE001 - reported, and the server goes on
            self.loop.call_exception_handler(
                {"message": "sockwork.frames handler failed", "exception": exc, "protocol": self}
            )
        finally:
            stream.close()


class _IdleServerProtocol(_ServerProtocol):
    """A _ServerProtocol that notes when bytes last arrived, for the idle timeout."""

    def buffer_updated(self, nbytes: int) -> None:
        self._last_heard = self.loop.time()
        super().buffer_updated(nbytes)
