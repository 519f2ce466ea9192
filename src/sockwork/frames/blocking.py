"""Blocking front end: whole messages over a connected socket, with timeouts.

``MessageSocket`` is a read loop around :class:`~sockwork.frames.codec.FrameDecoder`,
a lock around :class:`~sockwork.frames.codec.FrameEncoder`, and one place
(``_sock.TranslateErrors``, shared with the Endpoint) that turns ``OSError`` into
sockwork errors.
"""

# Rules:
# - Sends hold ``_send_lock`` for the whole frame, so frames from several threads never
#   interleave. Receives hold ``_recv_lock``; one reader at a time is the normal use.
# - Received bytes go straight into the decoder's buffer (``recv_into(get_buffer())``): the
#   only copies are kernel -> buffer and buffer -> the returned message (small messages:
#   via one bytes copy of at most 16 KiB per batch, see FrameDecoder._take_batch).
# - Complete messages are taken from the decoder a batch at a time (``next_messages``)
#   into ``_ready``; recv() pops from it without the lock while it is not empty. The
#   decoder raises an error only once the messages before it were taken, so messages
#   always come out before the error that follows them.
# - Large payloads go out with ``sendmsg([header, payload])``: the payload is never copied.
# - A reset while receiving is treated like EOF plus a cause: messages already buffered are
#   still returned, then IncompleteMessage/ConnectionClosed is raised ``from`` the OSError.
# - A fault that desynchronises the stream (bad header, EOF inside a frame, a send timeout
#   with part of a frame written) closes the socket and is re-raised by every later call.

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar, overload

from sockwork.errors import ConnectionClosed, MessageTooLarge, ProtocolError, TimedOut
from sockwork.frames._ending import closed_error, end_error, until_clean_close
from sockwork.frames._queue import COPY_LIMIT
from sockwork.frames._sock import HAS_SENDMSG, RECV_SIZE, TranslateErrors, prepare
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

__all__ = ["MessageSocket", "connect"]

T = TypeVar("T")


class MessageSocket(Generic[T]):
    """Whole messages over a connected stream socket, blocking with optional timeouts.

    Args:
        sock: a connected ``SOCK_STREAM`` socket (TCP or Unix). The MessageSocket owns
            it from now on and closes it in :meth:`close`.
        format: wire format, default ``Format.U32``.
        max_size: largest payload sent or accepted, in bytes (default 16 MiB).
        codec: payload codec (default ``BYTES``: send bytes-like, receive ``bytes``).
        nodelay: set TCP_NODELAY on TCP sockets (default True).

    Timeouts: the socket's own timeout applies (set it with :meth:`settimeout`); a
    timeout raises :class:`~sockwork.errors.TimedOut`, a subclass of the built-in
    ``TimeoutError``. A receive timeout leaves the connection usable; a send timeout
    closes it, because part of a frame may have been written.
    """

    @overload
    def __init__(
        self: MessageSocket[bytes],
        sock: socket.socket,
        *,
        format: Format | str = ...,
        max_size: int = ...,
        nodelay: bool = ...,
    ) -> None: ...

    @overload
    def __init__(
        self,
        sock: socket.socket,
        *,
        format: Format | str = ...,
        max_size: int = ...,
        codec: Codec[T],
        nodelay: bool = ...,
    ) -> None: ...

    def __init__(
        self,
        sock: socket.socket,
        *,
        format: Format | str = Format.U32,
        max_size: int = DEFAULT_MAX_SIZE,
        codec: Codec[T] | Codec[bytes] = BYTES,
        nodelay: bool = True,
    ) -> None:
        self.address, self.local_address = prepare(sock, nodelay=nodelay)
        _check_codec(codec)
        self._encoder = FrameEncoder(format, max_size=max_size)
        self._decoder = FrameDecoder(format, max_size=max_size)
        self.format = self._encoder.format
        self.max_size = max_size
        self.codec: Codec[T] = codec  # type: ignore[assignment]
        self._sock = sock
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._closed = False
        self._fault: BaseException | None = None  # sticky error that closed the connection
        self._recv_error: OSError | None = None  # why the receive side ended, if not EOF
        # Whole messages taken from the decoder in one batch, not yet returned by recv().
        self._ready: deque[Message] = deque()
        self._decode = _maybe_decode(self.codec, self.format)
        self._raw = codec is BYTES  # bytes go to the encoder as they are
        self._send_errors = TranslateErrors(
            self, "send", timeout=self.gettimeout, fail_on_timeout=True
        )
        self._recv_errors = TranslateErrors(self, "recv", timeout=self.gettimeout)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MessageSocket {self.format.name} {state} peer={self.address!r}>"

    # -- plumbing ------------------------------------------------------------------------

    def _closed_error(self) -> ConnectionClosed:
        return closed_error("MessageSocket", self.address)

    def _check_open(self) -> None:
        if self._fault is not None:
            raise self._fault
        if self._closed:
            raise self._closed_error()

    def _fail(self, exc: BaseException) -> None:
        """Record a fault that desynchronised the stream and close the socket."""
        self._fault = exc
        self._close_socket()

    # -- sending -------------------------------------------------------------------------

    def send(self, message: T) -> None:
        """Send one message, whole; safe to call from several threads at once.

        Raises:
            MessageTooLarge: the encoded payload exceeds ``max_size``; nothing was sent.
            TypeError: the codec cannot encode ``message``.
            ConnectionClosed: the connection is closed (``by_peer`` tells who closed it).
            TimedOut: the send timed out; the connection is then closed.
        """
        if not (self._raw and type(message) is bytes):
            message = self.codec.encode(message)  # type: ignore[assignment]
        header, payload = self._encoder.send_parts(message)  # type: ignore[arg-type]
        with self._send_lock:
            if self._closed:
                self._check_open()
            with self._send_errors:
                if type(payload) is bytes and len(payload) < COPY_LIMIT:
                    self._sock.sendall(header + payload)
                else:
                    self._send_parts(header, payload)

    def _send_parts(self, header: bytes, payload: Payload) -> None:
        size = len(payload) if isinstance(payload, (bytes, bytearray)) else payload.nbytes
        if size < COPY_LIMIT or not HAS_SENDMSG:
            if isinstance(payload, bytes):
                self._sock.sendall(header + payload)
            elif HAS_SENDMSG:
                self._sock.sendall(b"".join((header, payload)))
            else:
                self._sock.sendall(header)
                self._sock.sendall(payload)
            return
        sent = self._sock.sendmsg([header, payload])
        if sent < len(header):
            self._sock.sendall(header[sent:])
            sent = len(header)
        if sent < len(header) + size:
            with memoryview(payload) as view:
                self._sock.sendall(view[sent - len(header) :])

    def send_many(self, messages: Iterable[T]) -> None:
        """Send several messages with as few system calls as possible (one for small ones).

        The messages are framed into one buffer first, so for very many large
        messages call it in batches. Frames from other threads never interleave.

        Raises:
            the same as :meth:`send`; on MessageTooLarge or TypeError nothing was sent.
        """
        data = self._encoder.send_many(_encode_all(self.codec, messages))
        with self._send_lock:
            if self._closed:
                self._check_open()
            with self._send_errors:
                self._sock.sendall(data)

    # -- receiving -----------------------------------------------------------------------

    def recv(self) -> T:
        """Return the next message, blocking until it has arrived whole.

        Raises:
            ConnectionClosed: the peer closed cleanly between messages (``by_peer=True``),
                or this side closed (``by_peer=False``). After a reset its ``__cause__``
                is the ``ConnectionResetError``.
            IncompleteMessage: the connection ended inside a message.
            MessageTooLarge: the peer announced a message larger than ``max_size``.
            ProtocolError: the peer broke the wire format.
            TimedOut: no whole message within the socket timeout; the connection stays
                usable and a partly received message is kept.

        Messages that arrived whole before a fault are returned before it is raised.
        The connection is closed when one of the last three is raised.
        """
        ready = self._ready
        if ready:
            # Hot path: a message of the last batch. popleft() is atomic, so this needs
            # no lock; two threads receiving at once each get different messages.
            try:
                message = ready.popleft()
            except IndexError:  # another thread took the last one
                pass
            else:
                decode = self._decode
                return message if decode is None else decode(message)  # type: ignore[return-value]
        with self._recv_lock:
            decoder = self._decoder
            while True:
                if ready:  # filled by another thread meanwhile
                    message = ready.popleft()
                    decode = self._decode
                    return message if decode is None else decode(message)  # type: ignore[return-value]
                try:
                    messages = decoder.next_messages()
                except (ConnectionClosed, ProtocolError, MessageTooLarge) as exc:
                    error, fatal = end_error(
                        exc,
                        what="MessageSocket",
                        address=self.address,
                        closed=self._closed,
                        lost=self._recv_error,
                    )
                    if fatal:
                        self._fail(error)
                    raise error  # noqa: B904 (end_error set __cause__ as the policy wants)
                if messages:
                    ready.extend(messages)
                    continue
                self._check_open()
                self._fill()

    def _fill(self) -> None:
        """Receive once into the decoder's buffer; EOF and resets end the stream."""
        decoder = self._decoder
        with self._recv_errors:
            try:
                nbytes = self._sock.recv_into(decoder.get_buffer(RECV_SIZE))
            except (ConnectionResetError, ConnectionAbortedError) as exc:
                if self._closed:
                    raise
                self._recv_error = exc
                nbytes = 0
        decoder.buffer_updated(nbytes)
        if not nbytes:
            if self._closed:  # close() from another thread woke us up
                raise self._closed_error()
            decoder.receive_eof()

    def __iter__(self) -> Iterator[T]:
        """Yield messages until the connection closes cleanly (peer's EOF, or our close()).

        Raises the errors of :meth:`recv` other than a clean close: IncompleteMessage,
        a reset (ConnectionClosed with a ``__cause__``), protocol faults, timeouts.
        """
        return until_clean_close(self.recv)

    # -- the rest ------------------------------------------------------------------------

    def settimeout(self, timeout: float | None) -> None:
        """Set the timeout of later ``send``/``recv`` calls in seconds; None blocks forever."""
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be None or >= 0 seconds, not {timeout}")
        self._sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        """Return the current timeout in seconds, or None."""
        return self._sock.gettimeout()

    def fileno(self) -> int:
        """Return the socket's file descriptor (-1 once closed)."""
        return self._sock.fileno()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or a fault closed the connection."""
        return self._closed

    def close(self) -> None:
        """Close the connection; idempotent. Blocked ``recv`` calls in other threads end."""
        self._close_socket()

    def _close_socket(self) -> None:
        if self._closed:
            return
        self._closed = True
        # shutdown() wakes a thread blocked in recv() on this socket (close() alone would
        # not, on Linux). It fails with ENOTCONN when the peer already reset: nothing to do.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@overload
def connect(
    address: tuple[str, int],
    *,
    timeout: float | None = ...,
    format: Format | str = ...,
    max_size: int = ...,
    nodelay: bool = ...,
) -> MessageSocket[bytes]: ...


@overload
def connect(
    address: tuple[str, int],
    *,
    timeout: float | None = ...,
    format: Format | str = ...,
    max_size: int = ...,
    codec: Codec[T],
    nodelay: bool = ...,
) -> MessageSocket[T]: ...


def connect(
    address: tuple[str, int],
    *,
    timeout: float | None = None,
    format: Format | str = Format.U32,
    max_size: int = DEFAULT_MAX_SIZE,
    codec: Codec[T] | Codec[bytes] = BYTES,
    nodelay: bool = True,
) -> MessageSocket[T] | MessageSocket[bytes]:
    """Connect to ``(host, port)`` over TCP and return a :class:`MessageSocket`.

    ``timeout`` applies to the connection attempt and then to every send and recv.

    Raises:
        TimedOut: the connection attempt timed out.
        OSError: what ``socket.create_connection`` raises otherwise
            (``ConnectionRefusedError``, ``socket.gaierror``...).
    """
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except TimeoutError as exc:
        raise TimedOut(
            f"connecting to {address} timed out after {timeout} s", timeout=timeout
        ) from exc
    try:
        return MessageSocket(
            sock,
            format=format,
            max_size=max_size,
            codec=codec,
            nodelay=nodelay,
        )
    except BaseException:
        sock.close()
        raise
