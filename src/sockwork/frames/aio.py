"""asyncio front end: whole messages over a stream transport.

``open_connection`` and ``start_server`` give a :class:`MessageStream` with the same
method names and errors as the blocking ``MessageSocket`` (``send``, ``send_many``,
``recv``, iteration, ``close``), plus ``wait_closed``. ``start_server`` returns a
:class:`MessageServer`, whose ``close()`` also closes the connections it accepted.
Streams sit on an ``asyncio.BufferedProtocol`` whose ``get_buffer`` is the decoder's
own buffer, so bytes are received straight into it; no ``readexactly``.
"""

# Rules:
# - One frame is written with no ``await`` in between its parts, so concurrent senders
#   never interleave frames (asyncio runs one task at a time).
# - Small frames are coalesced: ``send()`` appends them to ``_pending`` and one flush
#   per event-loop iteration (``call_soon``) writes them together; 64 KiB pending or a
#   large frame flush at once. ``send()`` then waits only while the transport is paused
#   (pause_writing/resume_writing: asyncio's write water marks).
# - Reading is paused when more than _READ_HIGH bytes sit unread in the decoder and is
#   resumed when ``recv()`` runs out of complete messages, so a fast peer cannot grow
#   our buffer without bound. The decoder's memory follows the bytes that arrive (a
#   header alone commits nothing), and a server's connections share a MemoryBudget
#   (``max_buffered``): a connection whose reservation does not fit stops reading until
#   memory frees. Reading is paused while either reason holds (``_update_reading``).
# - Large frames on Python 3.11 (whose selector transport copies the unsent part of a
#   write into its own buffer; 3.12 keeps the caller's buffer), on a plain socket
#   transport of a selector loop (_direct_fd: never under TLS): when the transport's
#   buffer is empty, header and payload go straight to the socket with os.writev, and
#   what the kernel did not take stays a memoryview of the caller's bytes (_Tail), written
#   as the socket drains through a dup of its descriptor (the loop refuses add_writer on a
#   transport's own). While a tail is pending nothing else is written (frames stay in
#   order): small frames wait in _pending, a large send waits for the tail, close() closes
#   after it; connection_lost and abort() drop it.
# - Complete messages are taken from the decoder a batch at a time (``next_messages``:
#   small frames of at most 16 KiB of data) into ``_ready``, which recv() pops first.
# - A reset is EOF plus a cause: messages already buffered are still returned, then
#   IncompleteMessage/ConnectionClosed is raised ``from`` the OSError.
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
import os
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Generic, TypeVar, cast, overload

from sockwork.errors import ConnectionClosed, MessageTooLarge, ProtocolError, SockworkError
from sockwork.frames._ending import closed_error, end_error, is_clean_close
from sockwork.frames._queue import DEFAULT_MAX_BUFFERED, MemoryBudget
from sockwork.frames.codec import (
    _CHUNK,
    DEFAULT_MAX_SIZE,
    Format,
    FrameDecoder,
    FrameEncoder,
    Message,
    Payload,
)
from sockwork.frames.payload import BYTES, Codec, _maybe_decode

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = [
    "DEFAULT_MAX_BUFFERED",
    "MessageServer",
    "MessageStream",
    "open_connection",
    "start_server",
]

T = TypeVar("T")

_COALESCE_LIMIT = 64 * 1024  # flush pending small frames once this many bytes wait
_COPY_LIMIT = 16 * 1024  # payloads at least this large are written without joining
_READ_HIGH = 4 * 1024 * 1024  # pause reading when this many unread bytes are buffered
_WRITE_HIGH = 1024 * 1024  # send() waits while more than this is queued in the transport
# Write large frames to the socket directly (see Rules): only where it saves a copy.
_DIRECT = sys.version_info < (3, 12) and hasattr(os, "writev")


def _direct_fd(transport: asyncio.BaseTransport, loop: asyncio.AbstractEventLoop) -> int:
    """The socket descriptor large frames may be written to directly, or -1.

    Judged by capabilities, not by the transport's class: a socket under the transport
    (``get_extra_info("socket")``), no TLS layer (``sslcontext``/``ssl_object``: a TLS
    transport exposes the raw socket too, and bytes written there would skip the
    encryption), a write buffer to check for emptiness before each direct write, and a
    selector loop (``add_writer`` on the descriptor for the unsent rest).
    """
    if not _DIRECT or not isinstance(loop, asyncio.SelectorEventLoop):
        return -1
    sock = transport.get_extra_info("socket")
    if (
        sock is None
        or getattr(sock, "type", None) != socket.SOCK_STREAM
        or transport.get_extra_info("sslcontext") is not None
        or transport.get_extra_info("ssl_object") is not None
        or not callable(getattr(transport, "get_write_buffer_size", None))
    ):
        return -1
    fd = sock.fileno()
    return fd if isinstance(fd, int) else -1


class _Tail:
    """The unsent rest of a large frame, written straight to the socket as it drains."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        buffers: list[memoryview],
        on_done: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._fd = os.dup(fd)  # add_writer() refuses the transport's own descriptor
        self._buffers = buffers
        self._on_done = on_done
        self.done: asyncio.Future[None] = loop.create_future()
        loop.add_writer(self._fd, self._write)

    def _write(self) -> None:
        try:
            sent = os.writev(self._fd, self._buffers)
        except BlockingIOError:
            return
        except OSError:
            # The transport meets the same error on its side and reports it.
            self.drop()
            self._on_done()
            return
        buffers = self._buffers
        while sent and buffers:
            size = len(buffers[0])
            if sent < size:
                buffers[0] = buffers[0][sent:]
                break
            sent -= size
            buffers.pop(0)
        if not buffers:
            self.drop()
            self._on_done()

    def drop(self) -> None:
        """Stop writing (done, or the connection is gone) and release the descriptor."""
        if self._fd < 0:
            return
        self._loop.remove_writer(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._buffers = []
        if not self.done.done():
            self.done.set_result(None)


class _FrameProtocol(asyncio.BufferedProtocol):
    """Feeds the decoder and signals the stream; no policy lives here."""

    def __init__(
        self,
        decoder: FrameDecoder,
        loop: asyncio.AbstractEventLoop,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.decoder = decoder
        self.loop = loop
        self.budget = budget
        self.charged = 0  # this connection's share of the budget
        self.budget_paused = False  # waiting for the budget to have room
        self.reading_paused = False  # the transport's actual state
        self.transport: asyncio.Transport | None = None
        self.read_waiter: asyncio.Future[None] | None = None
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.write_paused = False
        self.read_paused = False
        self.lost = False
        self.lost_error: Exception | None = None
        self.closed_future: asyncio.Future[None] = loop.create_future()
        self.tail: _Tail | None = None  # the stream's direct write in progress

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_WRITE_HIGH)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        decoder = self.decoder
        decoder.buffer_updated(nbytes)
        if self.budget is not None:
            self.account()
        if decoder.missing:
            return  # the pending frame is still incomplete: waking the reader is wasted work
        if decoder.buffered > _READ_HIGH and not self.read_paused:
            self.read_paused = True
            self.update_reading()
        self._wake_reader()

    def update_reading(self) -> None:
        """Pause or resume the transport: paused while either limit holds."""
        paused = self.read_paused or self.budget_paused
        transport = self.transport
        if paused is self.reading_paused or transport is None or self.lost:
            return
        self.reading_paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def account(self) -> None:
        """Bring this connection's budget charge up to date; stop reading if it does not fit."""
        budget = self.budget
        assert budget is not None
        decoder = self.decoder
        self.charged, fits = budget.charge(
            self.charged,
            waiting=self.budget_paused,
            commitment=decoder.commitment,
            allocated=decoder.capacity,
        )
        if not fits and not self.budget_paused:
            self.budget_paused = True
            budget.wait(self._retry_budget)
            self.update_reading()

    def _retry_budget(self) -> bool:
        budget = self.budget
        assert budget is not None
        if self.lost:
            return True  # gone: leave the queue
        decoder = self.decoder
        self.charged, fits = budget.charge(
            self.charged, waiting=False, commitment=decoder.commitment, allocated=decoder.capacity
        )
        if fits:
            self.budget_paused = False
            self.update_reading()
        return fits

    def eof_received(self) -> bool:
        self.decoder.receive_eof()
        self._wake_reader()
        return True  # keep the transport open: we may still send (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_error = exc
        if self.tail is not None:  # before the transport closes the socket
            self.tail.drop()
            self.tail = None
        budget = self.budget
        if budget is not None:
            if self.budget_paused:
                self.budget_paused = False
                budget.forget(self._retry_budget)
            budget.release(self.charged)
            self.charged = 0
        if not self.decoder.eof:
            self.decoder.receive_eof()
        self._wake_reader()
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.drain_waiters.clear()
        if not self.closed_future.done():
            self.closed_future.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.drain_waiters.clear()

    def _wake_reader(self) -> None:
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class MessageStream(Generic[T]):
    """Whole messages over an asyncio transport; made by open_connection/start_server.

    Same methods and errors as :class:`~sockwork.frames.MessageSocket`, awaited.
    There is no timeout argument: wrap calls in ``asyncio.wait_for``. Cancelling
    ``recv()`` is safe: a partly received message stays buffered for the next call.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: _FrameProtocol,
        encoder: FrameEncoder,
        codec: Codec[T],
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._decoder = protocol.decoder
        self._encoder = encoder
        self.format = encoder.format
        self.max_size = encoder.max_size
        self.codec = codec
        self._decode = _maybe_decode(codec, self.format)
        self._raw = codec is BYTES  # bytes go to the encoder as they are
        self._loop = protocol.loop
        # Whole messages taken from the decoder in one batch, not yet returned by recv().
        self._ready: deque[Message] = deque()
        self._pending: list[Payload] = []
        self._pending_size = 0
        self._closing = False
        self._fault: BaseException | None = None
        self.address: object = transport.get_extra_info("peername")
        self.local_address: object = transport.get_extra_info("sockname")
        self._fd = _direct_fd(transport, self._loop)

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return f"<MessageStream {self.format.name} {state} peer={self.address!r}>"

    # -- errors --------------------------------------------------------------------------

    def _closed_error(self) -> ConnectionClosed:
        return closed_error("MessageStream", self.address)

    def _check_can_send(self) -> None:
        if self._fault is not None:
            raise self._fault
        if self._closing:
            raise self._closed_error()
        if self._protocol.lost or self._transport.is_closing():
            cause = self._protocol.lost_error
            raise ConnectionClosed(
                f"send failed, connection lost: {cause or 'closed by the peer'}",
                address=self.address,
                by_peer=True,
            ) from cause

    def _fail(self, exc: BaseException) -> None:
        self._fault = exc
        self._flush()  # frames already sent by the caller still go out
        self._closing = True
        if self._protocol.tail is None:  # else the tail's end closes it
            self._transport.close()

    # -- sending -------------------------------------------------------------------------

    async def send(self, message: T) -> None:
        """Send one message, whole; waits only while the transport's buffer is full.

        Raises:
            MessageTooLarge: the encoded payload exceeds ``max_size``; nothing was sent.
            TypeError: the codec cannot encode ``message``.
            ConnectionClosed: the connection is closed (``by_peer`` tells who closed it).
        """
        if not (self._raw and type(message) is bytes):
            message = self.codec.encode(message)  # type: ignore[assignment]
        header, payload = self._encoder.send_parts(message)  # type: ignore[arg-type]
        if self._closing or self._protocol.lost or self._transport.is_closing():
            self._check_can_send()
        size = len(payload) if isinstance(payload, (bytes, bytearray)) else payload.nbytes
        if size < _COPY_LIMIT:
            self._queue(header + payload if isinstance(payload, bytes) else header + bytes(payload))
        else:
            while self._protocol.tail is not None:  # frames keep their order
                await self._protocol.tail.done
                self._check_can_send()
            self._flush()
            transport = self._transport
            if self._fd >= 0 and type(payload) is bytes and not transport.get_write_buffer_size():
                self._write_direct(header, payload)
            else:
                # The header travels with the first _COPY_LIMIT bytes (one small copy), not
                # as a 4-byte segment of its own that would wake the peer for nothing.
                # No `with`: on 3.12+ the transport may keep the slice without copying it.
                view = memoryview(payload)
                transport.write(header + view[:_COPY_LIMIT].tobytes())
                transport.write(view[_COPY_LIMIT:])
        if self._protocol.write_paused or (
            self._protocol.tail is not None and self._pending_size >= _COALESCE_LIMIT
        ):
            await self._drain()

    def _write_direct(self, header: bytes, payload: bytes) -> None:
        """Write a large frame to the socket; keep what the kernel did not take as a _Tail."""
        try:
            sent = os.writev(self._fd, [header, payload])
        except BlockingIOError:
            sent = 0
        except OSError:  # let the transport meet the error and report it as it does
            self._transport.write(header)
            self._transport.write(payload)
            return
        if sent < len(header):
            rest = [memoryview(header)[sent:], memoryview(payload)]
        elif sent < len(header) + len(payload):
            rest = [memoryview(payload)[sent - len(header) :]]
        else:
            return
        self._protocol.tail = _Tail(self._loop, self._fd, rest, self._tail_done)

    def _tail_done(self) -> None:
        self._protocol.tail = None
        self._flush()  # small frames sent meanwhile
        if self._closing:
            self._transport.close()

    async def send_many(self, messages: Iterable[T]) -> None:
        """Send several messages in one write; frames from other tasks never interleave.

        Raises:
            the same as :meth:`send`; on MessageTooLarge or TypeError nothing was sent.
        """
        encode = self.codec.encode
        if self._raw:  # bytes go to the encoder as they are (BYTES would return them)
            batch = [m if type(m) is bytes else encode(m) for m in messages]
        else:
            batch = [encode(m) for m in messages]
        data = self._encoder.send_many(batch)  # type: ignore[arg-type]
        self._check_can_send()
        self._queue(data)
        if self._protocol.write_paused:
            await self._drain()

    def _queue(self, frame: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(frame)
        self._pending_size += len(frame)
        if self._pending_size >= _COALESCE_LIMIT:
            self._flush()

    def _flush(self) -> None:
        pending = self._pending
        if not pending or self._protocol.tail is not None:
            return  # nothing to do, or the tail's end flushes
        self._pending = []
        self._pending_size = 0
        if self._transport.is_closing():
            return  # the connection is gone; send() reports it on the next call
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    async def _drain(self) -> None:
        self._flush()
        protocol = self._protocol
        while protocol.tail is not None:
            await protocol.tail.done
        while protocol.write_paused and not protocol.lost:
            waiter = self._loop.create_future()
            protocol.drain_waiters.append(waiter)
            await waiter
        if protocol.lost:
            self._check_can_send()

    # -- receiving -----------------------------------------------------------------------

    async def recv(self) -> T:
        """Return the next message, waiting until it has arrived whole.

        Raises:
            ConnectionClosed: the peer closed cleanly between messages (``by_peer=True``),
                or this side closed (``by_peer=False``). After a reset its ``__cause__``
                is the ``ConnectionResetError``.
            IncompleteMessage: the connection ended inside a message.
            MessageTooLarge: the peer announced a message larger than ``max_size``.
            ProtocolError: the peer broke the wire format.

        Messages that arrived whole before a fault are returned before it is raised.
        The connection is closed when one of the last three is raised.
        """
        ready = self._ready
        if ready:  # hot path: a message of the last batch
            message = ready.popleft()
            decode = self._decode
            return message if decode is None else decode(message)  # type: ignore[return-value]
        decoder = self._decoder
        protocol = self._protocol
        while True:
            try:
                messages = decoder.next_messages()
            except (ConnectionClosed, ProtocolError, MessageTooLarge) as exc:
                error, fatal = end_error(
                    exc,
                    what="MessageStream",
                    address=self.address,
                    closed=self._closing,
                    lost=protocol.lost_error,
                )
                if fatal:
                    self._fail(error)
                raise error  # noqa: B904 (end_error set __cause__ as the policy wants)
            if messages:
                if protocol.charged:
                    protocol.account()  # the messages' memory may be free now
                message = messages[0]
                if len(messages) > 1:
                    ready.extend(messages)
                    ready.popleft()
                decode = self._decode
                return message if decode is None else decode(message)  # type: ignore[return-value]
            if self._fault is not None:
                raise self._fault
            if self._closing:
                raise self._closed_error()
            if protocol.charged:
                protocol.account()  # a burst's buffer was given back
            if protocol.read_paused:
                protocol.read_paused = False
                protocol.update_reading()
            if protocol.read_waiter is not None:
                raise RuntimeError("recv() called while another task is already waiting in recv()")
            waiter = self._loop.create_future()
            protocol.read_waiter = waiter
            try:
                await waiter
            finally:
                protocol.read_waiter = None

    def __aiter__(self) -> AsyncIterator[T]:
        """Iterate over messages until the connection closes cleanly (peer's EOF, or close())."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                message = await self.recv()
            except ConnectionClosed as exc:
                if is_clean_close(exc):
                    return
                raise
            yield message

    # -- closing -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or a fault closed the connection."""
        return self._closing

    def close(self) -> None:
        """Start closing: queued frames are flushed, then the connection closes; idempotent.

        A task waiting in :meth:`recv` gets ``ConnectionClosed(by_peer=False)``.
        """
        if self._closing:
            return
        self._flush()
        self._closing = True
        if self._protocol.tail is None:  # else the tail's end closes it
            self._transport.close()
        self._protocol._wake_reader()

    def abort(self) -> None:
        """Close at once, dropping queued frames (the peer may see a reset)."""
        self._pending = []
        self._closing = True
        tail = self._protocol.tail
        if tail is not None:
            self._protocol.tail = None
            tail.drop()
        self._transport.abort()
        self._protocol._wake_reader()

    async def wait_closed(self) -> None:
        """Wait until the connection is fully closed (after :meth:`close`)."""
        await asyncio.shield(self._protocol.closed_future)

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


@overload
async def open_connection(
    host: str,
    port: int,
    *,
    format: Format | str = ...,
    max_size: int = ...,
) -> MessageStream[bytes]: ...


@overload
async def open_connection(
    host: str,
    port: int,
    *,
    format: Format | str = ...,
    max_size: int = ...,
    codec: Codec[T],
) -> MessageStream[T]: ...


async def open_connection(
    host: str,
    port: int,
    *,
    format: Format | str = Format.U32,
    max_size: int = DEFAULT_MAX_SIZE,
    codec: Codec[T] | Codec[bytes] = BYTES,
) -> MessageStream[T] | MessageStream[bytes]:
    """Connect to ``host:port`` over TCP and return a :class:`MessageStream`.

    Raises:
        OSError: what ``loop.create_connection`` raises (``ConnectionRefusedError``...).
    """
    if not isinstance(codec, Codec):
        raise TypeError(f"codec must be a sockwork.frames.Codec, not {codec!r}")
    encoder = FrameEncoder(format, max_size=max_size)
    decoder = FrameDecoder(format, max_size=max_size)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: _FrameProtocol(decoder, loop), host, port
    )
    return MessageStream(transport, protocol, encoder, cast("Codec[T]", codec))


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
    if not isinstance(codec, Codec):
        raise TypeError(f"codec must be a sockwork.frames.Codec, not {codec!r}")
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

    def factory() -> _FrameProtocol:
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


class _ServerProtocol(_FrameProtocol):
    """A _FrameProtocol that starts the handler task once connected."""

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
