"""Background front end: whole messages over a socket, moved by one shared I/O thread.

An :class:`Endpoint` has the verbs of ``MessageSocket`` (``send``, ``send_many``,
``recv``, iteration, ``close``, ``abort``, ``fileno``) but never makes a sender wait
for the network: ``send`` queues, and ``fileno()`` is readable while a message is
waiting, so an endpoint can sit in a ``select`` loop. All endpoints of a process share
one selector thread (``sockwork-endpoints``). The Stockings API (``read``/``write``,
hooks, handshake) is :mod:`sockwork.compat.stockings`, built on this.
"""

# Rules:
# - The callers' half only: send/recv/close touch the queues under the Channel's lock and
#   poke the reactor; the socket is the I/O thread's (see _channel.py for the shared state
#   and its rules).
# - The readiness fd behind fileno() is created on first use and is readable exactly while
#   recv() would return a message or raise at once.
# - recv() takes the whole inbox into ``_ready`` under the lock, then hands it out without
#   the lock; the batch's bytes count in the inbox until it is handed out (``_held``), and
#   whoever finds ``_ready`` empty under the lock uncounts them and clears the fd
#   (``_batch_done``). recv() after close() raises at once, as before.

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, overload

from sockwork.errors import ConnectionClosed, TimedOut
from sockwork.frames._channel import Channel
from sockwork.frames._ending import until_clean_close
from sockwork.frames._queue import COPY_LIMIT, frame_buffers
from sockwork.frames._sock import Flag, prepare
from sockwork.frames.codec import DEFAULT_MAX_SIZE, Format, FrameDecoder, FrameEncoder, Message
from sockwork.frames.payload import BYTES, Codec, _check_codec, _encode_all, _maybe_decode

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = ["DEFAULT_MAX_QUEUE", "Endpoint"]

T = TypeVar("T")

DEFAULT_MAX_QUEUE: Final = 4 * 1024 * 1024
"""Default bytes buffered in each direction before send() waits and reading pauses."""

_EXIT_FLUSH_TIMEOUT: Final = 5.0  # seconds granted at interpreter exit to flush open endpoints


class Endpoint(Channel, Generic[T]):
    """Whole messages over a connected socket, sent and received in the background.

    Args:
        sock: a connected ``SOCK_STREAM`` socket (TCP, Unix, or an ``ssl.SSLSocket`` whose
            TLS handshake is complete). The endpoint owns it and makes it non-blocking.
        format: wire format, default ``Format.U32``.
        max_size: largest payload sent or accepted, in bytes (default 16 MiB).
        codec: payload codec (default ``BYTES``: send bytes-like, receive ``bytes``).
        max_queue: bytes buffered in each direction (default 4 MiB). When the send queue
            is full, :meth:`send` waits up to ``send_timeout``; when the receive queue is
            full, the endpoint stops reading the socket until :meth:`recv` drains half of
            it (TCP then slows the peer down). One message larger than this still goes
            through.
        send_timeout: seconds :meth:`send` may wait for room in the send queue before
            raising :class:`~sockwork.errors.TimedOut` (default 30; None waits forever).
        nodelay: set TCP_NODELAY on TCP sockets (default True).
    """

    @overload
    def __init__(
        self: Endpoint[bytes],
        sock: socket.socket,
        *,
        format: Format | str = ...,
        max_size: int = ...,
        max_queue: int = ...,
        send_timeout: float | None = ...,
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
        max_queue: int = ...,
        send_timeout: float | None = ...,
        nodelay: bool = ...,
    ) -> None: ...

    def __init__(
        self,
        sock: socket.socket,
        *,
        format: Format | str = Format.U32,
        max_size: int = DEFAULT_MAX_SIZE,
        codec: Codec[T] | Codec[bytes] = BYTES,
        max_queue: int = DEFAULT_MAX_QUEUE,
        send_timeout: float | None = 30.0,
        nodelay: bool = True,
    ) -> None:
        address, self.local_address = prepare(sock, nodelay=nodelay)
        _check_codec(codec)
        if not isinstance(max_queue, int) or isinstance(max_queue, bool) or max_queue < 1:
            raise ValueError(f"max_queue must be an int >= 1 (bytes), not {max_queue!r}")
        if send_timeout is not None and not send_timeout >= 0:
            raise ValueError(f"send_timeout must be None or >= 0 seconds, not {send_timeout!r}")
        self._encoder = FrameEncoder(format, max_size=max_size)
        self.format: Final = self._encoder.format
        self.max_size: Final = max_size
        self.codec: Final[Codec[T]] = codec  # type: ignore[assignment]
        self.max_queue: Final = max_queue
        self.send_timeout = send_timeout
        self._decode = _maybe_decode(self.codec, self.format)
        self._raw = codec is BYTES  # bytes go to the encoder as they are
        self._error_raised = False  # the end's own error was raised once
        # Messages taken from the inbox in one batch by recv(), handed out without the
        # lock; their bytes stay counted in the inbox (its bound holds) until the batch is
        # handed out: _held of them.
        self._ready: deque[Message] = deque()
        self._held = 0
        Channel.__init__(self, sock, address, FrameDecoder(format, max_size=max_size), max_queue)
        with _open_lock:
            _open.add(self)

    def __del__(self) -> None:
        # An endpoint dropped without close() after its connection ended: the socket is
        # already released; release the readiness descriptor too.
        flag = self.__dict__.get("_flag")
        if flag is not None:
            flag.close()

    def __repr__(self) -> str:
        state = "closed" if self._closing else "ended" if self._error is not None else "active"
        return (
            f"<{type(self).__name__} {self.format.name} {state} peer={self.address!r} "
            f"pending_sends={self._outbox.messages}>"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:  # an exception is already on its way: do not replace it with a flush timeout
            self.close()
        except TimedOut:
            pass

    @property
    def active(self) -> bool:
        """True until the connection ends (peer EOF, error or :meth:`close`).

        Messages received before the end may still be waiting: :meth:`recv` returns
        them, then raises.
        """
        return not self._closing and self._error is None

    # -- closing ---------------------------------------------------------------------------

    def abort(self) -> None:
        """Close at once, dropping queued messages without complaint; idempotent.

        :meth:`pending_sends` then tells how many messages were dropped.
        """
        self._close(0.0, report=False)

    def close(self, flush_timeout: float | None = 5.0) -> None:
        """Send what was queued (waiting up to ``flush_timeout`` s), then close; idempotent.

        Messages still waiting to be received are discarded. The socket and every
        descriptor are released even when the flush times out; the shared I/O thread
        stops with the last open endpoint. Use :meth:`abort` to drop the queue on purpose.

        Raises:
            TimedOut: the queue could not be flushed in time (the peer stopped reading);
                :meth:`pending_sends` then tells how many messages were not sent.
        """
        self._close(flush_timeout, report=True)

    def _close(self, flush_timeout: float | None, *, report: bool) -> None:
        with self._lock:
            if self._closing:
                first = False
            else:
                first = True
                self._closing = True
                self._room.notify_all()
                self._arrived.notify_all()
                self._room.wait_for(lambda: not self._outbox or self._hard, flush_timeout)
                # Only a flush cut short by the timeout is reported here; messages lost to a
                # reset were reported by the recv()/send() that met it.
                unsent = self._outbox.messages if self._outbox and not self._hard else 0
                unsent_bytes = self._outbox.size
                self._outbox.clear()
                self._release_wanted = True
        self._shut()
        if not first:
            return
        reactor = self._reactor
        if reactor.stopping and not reactor.in_thread():
            reactor.thread.join(5.0)
        with self._lock:
            self._inbox.clear()
            self._ready.clear()
            if self._flag is not None:
                self._flag.close()
                self._flag = None
        with _open_lock:
            _open.discard(self)
        if unsent and report:
            raise TimedOut(
                f"close() gave up after {flush_timeout} s: {unsent} queued message(s) "
                f"({unsent_bytes} bytes) were not sent to {self.address!r}, which stopped "
                "reading; raise flush_timeout to wait longer",
                timeout=flush_timeout,
            )

    # -- receiving -------------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> T:
        """Return the next whole message, waiting up to ``timeout`` s (None: no limit).

        Raises:
            TimedOut: no message arrived within ``timeout``; the endpoint stays usable.
            ConnectionClosed: every message received before the connection ended has been
                returned (``by_peer`` tells who ended it); IncompleteMessage if it ended
                inside a frame.
            MessageTooLarge, ProtocolError: the peer broke the format; the connection is
                closed.
        """
        ready = self._ready
        if ready and not self._closing:
            # Hot path: a message of the batch taken from the inbox, without the lock
            # (popleft() is atomic: concurrent callers each get a different message).
            try:
                message = ready.popleft()
            except IndexError:  # another thread took the last one
                pass
            else:
                if not ready:
                    with self._lock:
                        self._batch_done()
                decode = self._decode
                # An error in decode() consumed one frame; the stream is fine.
                return message if decode is None else decode(message)  # type: ignore[return-value]
        with self._lock:
            if not ready or self._closing:
                if not self._inbox or self._closing:
                    if not self._wait_for_message(timeout):
                        raise TimedOut(f"no message arrived within {timeout} s", timeout=timeout)
                if not ready:
                    self._batch_done()
                    # The whole inbox at once: one lock per batch, not per message.
                    self._held = self._inbox.size
                    ready.extend(self._inbox.take_all())
            message = ready.popleft()
            if not ready:
                self._batch_done()
        decode = self._decode
        return message if decode is None else decode(message)  # type: ignore[return-value]

    def _batch_done(self) -> None:
        """Once the batch is handed out (lock held): uncount it, clear fileno() if idle."""
        if self._ready:
            return  # refilled by another thread meanwhile
        if self._held:
            self._inbox.release(self._held)  # may resume reading (the low water mark)
            self._held = 0
        if not self._inbox and self._flag is not None and self._error is None:
            self._flag.clear()

    def __iter__(self) -> Iterator[T]:
        """Yield messages until the connection closes cleanly (peer's EOF, or our close()).

        Raises the errors of :meth:`recv` other than a clean close.
        """
        return until_clean_close(self.recv)

    def fileno(self) -> int:
        """Return a descriptor that is readable while :meth:`recv` would not wait.

        That is while a message is waiting and, once the connection has ended and its
        messages are taken, for good (``recv`` then raises), so a ``select``/``poll``/
        ``selectors`` loop sees the end. The descriptor is created on the first call and
        closed by :meth:`close`; this returns -1 after :meth:`close`.
        """
        with self._lock:
            if self._closing:
                return -1
            if self._flag is None:
                self._flag = Flag()
                if self._inbox or self._ready or self._error is not None:
                    self._flag.set()
            return self._flag.fileno()

    def _wait_for_message(self, timeout: float | None) -> bool:
        """Wait (lock held) up to ``timeout`` s until a message is waiting; False if none came.

        Raises the error that ended the connection once no message is left.
        """
        if not self._closing and not self._inbox and self._error is None:
            self._arrived.wait_for(
                lambda: self._inbox or self._error is not None or self._closing, timeout
            )
        if self._closing:
            raise self._closed_error()
        if self._inbox:
            return True
        if self._error is not None:
            raise self._end_error()
        return False

    def _end_error(self) -> BaseException:
        """The error that ended the connection: itself the first time, then ConnectionClosed."""
        error = self._error
        assert error is not None
        if not self._error_raised:
            self._error_raised = True
            return error
        again = ConnectionClosed(
            f"the connection has ended: {error}",
            address=self.address,
            by_peer=getattr(error, "by_peer", True),
        )
        again.__cause__ = error
        return again

    # -- sending ---------------------------------------------------------------------------

    def send(self, message: T) -> None:
        """Queue one message to be sent; thread-safe, frames never interleave.

        Returns at once while the send queue has room; otherwise waits for room up to
        ``send_timeout`` seconds.

        Raises:
            MessageTooLarge: the payload exceeds ``max_size``; nothing was queued.
            TypeError: the codec cannot encode ``message``.
            TimedOut: the queue stayed full for ``send_timeout`` s (the peer is not
                reading); nothing was queued and the connection stays usable.
            ConnectionClosed: the connection has ended or :meth:`close` was called.
        """
        if not (self._raw and type(message) is bytes):
            message = self.codec.encode(message)  # type: ignore[assignment]
        header, payload = self._encoder.send_parts(message)  # type: ignore[arg-type]
        size = len(header) + len(payload)
        if type(payload) is bytes and size < COPY_LIMIT:
            buffers: tuple[bytes | memoryview, ...] = (header + payload,)
        else:
            buffers = frame_buffers(header, payload)
        outbox = self._outbox
        with self._lock:
            waiting = outbox.size  # not room(): this is the hot path of every send
            full = waiting and waiting + size > outbox.limit
            if full or self._error is not None or self._closing:
                self._wait_for_room(size)
            if outbox.push(buffers, size):
                # The reactor sends: messages sent meanwhile go out in the same syscall.
                self._poke()

    def send_many(self, messages: Iterable[T]) -> None:
        """Queue several messages together, in order, with no other sender's in between.

        Small frames are joined into one buffer: the cheap way to send many small
        messages. The batch waits for room as a whole (up to ``send_timeout``) and is
        accepted whole once it fits, or once the queue is empty.

        Raises:
            what :meth:`send` raises; when a message cannot be encoded or is too large,
            nothing of the batch is queued.
        """
        buffers, ends = self._encoder.send_batch(_encode_all(self.codec, messages))
        if not ends:
            return
        total = ends[-1]
        with self._lock:
            if self._error is not None or self._closing or not self._outbox.room(total):
                self._wait_for_room(total)
            if self._outbox.append(buffers, ends):
                self._poke()

    def pending_sends(self) -> int:
        """Return how many sent messages are not yet wholly handed to the kernel.

        After the connection has ended, this is the number of messages never sent.
        """
        return self._outbox.messages

    def _wait_for_room(self, size: int) -> None:
        timeout = self.send_timeout
        outbox = self._outbox
        self._room.wait_for(
            lambda: self._closing or self._error is not None or outbox.room(size), timeout
        )
        if self._closing:
            raise self._closed_error()
        if self._error is not None:
            raise self._end_error()
        if not outbox.room(size):
            raise TimedOut(
                f"send() waited {timeout} s for room in the send queue "
                f"({outbox.size} bytes queued, max_queue={self.max_queue}): "
                f"{self.address!r} is not reading; nothing was queued",
                timeout=timeout,
            )


# Endpoints still open, so that interpreter exit can flush them: the reactor thread is a
# daemon (a forgotten endpoint must not hang exit), and Stockings lost queued data here.
_open: weakref.WeakSet[Endpoint[Any]] = weakref.WeakSet()
_open_lock = threading.Lock()


def _forget_after_fork() -> None:
    # Endpoints inherited by a forked child belong to the parent's I/O thread, which the
    # child does not have: exit must not try to flush them.
    global _open, _open_lock
    _open = weakref.WeakSet()
    _open_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def _flush_at_exit() -> None:
    deadline = time.monotonic() + _EXIT_FLUSH_TIMEOUT
    with _open_lock:
        endpoints = list(_open)
    for endpoint in endpoints:
        try:
            endpoint.close(flush_timeout=max(0.0, deadline - time.monotonic()))
        except TimedOut as exc:
            print(f"sockwork: at exit, {exc}", file=sys.stderr)
