"""MessageStream: whole messages over an asyncio transport, and open_connection.

A :class:`MessageStream` has the method names and errors of the blocking
``MessageSocket`` (``send``, ``send_many``, ``recv``, iteration, ``close``), awaited,
plus ``abort`` and ``wait_closed``. It sends through the transport (or, for large
frames on Python 3.11, straight to the socket: ``_direct.py``) and receives from the
decoder its :class:`~sockwork.frames.aio._protocol.FrameProtocol` feeds.
"""

# Rules:
# - One frame is written with no ``await`` in between its parts, so concurrent senders
#   never interleave frames (asyncio runs one task at a time).
# - Small frames are coalesced: ``send()`` appends them to ``_pending`` and one flush
#   per event-loop iteration (``call_soon``) writes them together; 64 KiB pending or a
#   large frame flush at once. ``send()`` then waits only while the transport is paused
#   (pause_writing/resume_writing: asyncio's write water marks).
# - While a direct write's tail is pending (``protocol.tail``) nothing else is written:
#   small frames wait in _pending, a large send waits for the tail, close() closes after
#   it (``_tail_done``).
# - Complete messages are taken from the decoder a batch at a time (``next_messages``:
#   small frames of at most 16 KiB of data) into ``_ready``, which recv() pops first.
# - A reset is EOF plus a cause: messages already buffered are still returned, then
#   IncompleteMessage/ConnectionClosed is raised ``from`` the OSError.

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Final, Generic, TypeVar, cast, overload

from sockwork.errors import ConnectionClosed, MessageTooLarge, ProtocolError
from sockwork.frames._ending import closed_error, end_error, until_clean_close_async
from sockwork.frames._queue import COPY_LIMIT
from sockwork.frames.aio._direct import Tail, direct_fd
from sockwork.frames.aio._protocol import FrameProtocol
from sockwork.frames.codec import (
    DEFAULT_MAX_SIZE,
    Format,
    FrameDecoder,
    FrameEncoder,
    Message,
    Payload,
)
from sockwork.frames.payload import BYTES, Codec, _check_codec, _encode_all, _maybe_decode

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = ["MessageStream", "open_connection"]

T = TypeVar("T")

_COALESCE_LIMIT: Final = 64 * 1024  # flush pending small frames once this many bytes wait


class MessageStream(Generic[T]):
    """Whole messages over an asyncio transport; made by open_connection/start_server.

    Same methods and errors as :class:`~sockwork.frames.MessageSocket`, awaited.
    There is no timeout argument: wrap calls in ``asyncio.wait_for``. Cancelling
    ``recv()`` is safe: a partly received message stays buffered for the next call.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: FrameProtocol,
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
        self._fd = direct_fd(transport, self._loop)

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
        self._shut()

    def _shut(self) -> None:
        """Close after the frames already sent by the caller (close() and faults)."""
        self._flush()
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
        if size < COPY_LIMIT:
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
                # The header travels with the first COPY_LIMIT bytes (one small copy), not
                # as a 4-byte segment of its own that would wake the peer for nothing.
                # No `with`: on 3.12+ the transport may keep the slice without copying it.
                view = memoryview(payload)
                transport.write(header + view[:COPY_LIMIT].tobytes())
                transport.write(view[COPY_LIMIT:])
        if self._protocol.write_paused or (
            self._protocol.tail is not None and self._pending_size >= _COALESCE_LIMIT
        ):
            await self._drain()

    def _write_direct(self, header: bytes, payload: bytes) -> None:
        """Write a large frame to the socket; keep what the kernel did not take as a Tail."""
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
        self._protocol.tail = Tail(self._loop, self._fd, rest, self._tail_done)

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
        data = self._encoder.send_many(_encode_all(self.codec, messages))
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
        return until_clean_close_async(self.recv)

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
        self._shut()
        self._protocol.wake_reader()

    def abort(self) -> None:
        """Close at once, dropping queued frames (the peer may see a reset)."""
        self._pending = []
        self._closing = True
        tail = self._protocol.tail
        if tail is not None:
            self._protocol.tail = None
            tail.drop()
        self._transport.abort()
        self._protocol.wake_reader()

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
    _check_codec(codec)
    encoder = FrameEncoder(format, max_size=max_size)
    decoder = FrameDecoder(format, max_size=max_size)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: FrameProtocol(decoder, loop), host, port
    )
    return MessageStream(transport, protocol, encoder, cast("Codec[T]", codec))
