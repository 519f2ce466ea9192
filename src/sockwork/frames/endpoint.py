"""Background front end: whole messages over a socket, moved by one shared I/O thread.

An :class:`Endpoint` never makes its caller wait for the network: :meth:`~Endpoint.read`
returns a message or ``None``, :meth:`~Endpoint.write` queues, and :meth:`~Endpoint.fileno`
is readable while a message is waiting, so an endpoint can sit in a ``select`` loop. All
endpoints of a process share one selector thread (``sockwork-endpoints``).
"""

# Rules:
# - Endpoint state is guarded by ``_lock``. ``_arrived`` (a Condition on it) is notified when
#   the inbox gains a message or the connection ends; ``_room`` when the outbox loses bytes,
#   the connection ends or close() starts.
# - Only the reactor thread touches the socket and the selector, so a TLS socket never sees
#   two threads at once. Writers append whole frames to the outbox under the lock (frames
#   never interleave) and, when it was empty, _poke() the reactor, which sends everything
#   queued by then in one call: a burst of small messages costs a few syscalls, not one each.
#   _flush holds the lock across send calls (writers would wait for the GIL anyway, and
#   their frames pile up into the next batch); recv and decoding run outside it.
# - The reactor releases an endpoint (unregister, close, detach) under its lock, and
#   _poke() is called with the lock held: an endpoint seen unreleased there keeps the
#   reactor, and its wake-up socket, alive.
# - Interest is READ while reading is wanted (no EOF, no error, inbox under max_queue) and
#   WRITE while the outbox holds bytes; nothing else. A peer that stops reading, or a caller
#   that stops calling read(), therefore costs no CPU (Stockings spins a core: defect 5), and
#   an undrained inbox never stops sending (Stockings couples the two: head-of-line stall).
# - A clean EOF, or EOF inside a frame, stops reading; what was already queued is still
#   sent, then the socket is released. A reset, a bad header or an oversized frame release
#   the socket at once and drop the outbox. Either way, messages decoded before the end are
#   still returned by read(), then the error is raised (Stockings defects 8 and 9).
# - The readiness fd behind fileno() is created on first use and is readable exactly while
#   read() would return a message or raise.

from __future__ import annotations

import atexit
import os
import socket
import ssl
import struct
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, overload

from sockwork.errors import ConnectionClosed, MessageTooLarge, NotReady, ProtocolError, TimedOut
from sockwork.frames._ending import closed_error, end_error
from sockwork.frames._reactor import Reactor, attach
from sockwork.frames.codec import (
    DEFAULT_MAX_SIZE,
    NEED_DATA,
    Format,
    FrameDecoder,
    FrameEncoder,
    Message,
)
from sockwork.frames.codecs import BYTES, Codec, _maybe_decode

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = ["DEFAULT_MAX_QUEUE", "Endpoint"]

T = TypeVar("T")

DEFAULT_MAX_QUEUE: Final = 4 * 1024 * 1024
"""Default bytes buffered in each direction before write() waits and reading pauses."""

_RECV_SIZE: Final = 256 * 1024  # bytes asked of each recv_into
_MAX_READS: Final = 16  # recv calls per readiness event, so one busy peer cannot starve others
_COPY_LIMIT: Final = 16 * 1024  # smaller payloads are joined to their header (one buffer)
_MAX_BUFFERS: Final = 64  # buffers per sendmsg call
_SEND_BATCH: Final = 1024 * 1024  # bytes gathered for one send call
_HAS_SENDMSG: Final = hasattr(socket.socket, "sendmsg")
_EXIT_FLUSH_TIMEOUT: Final = 5.0  # seconds granted at interpreter exit to flush open endpoints
_WOULD_BLOCK: Final = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_HAS_EVENTFD: Final = hasattr(os, "eventfd")
_pack_u32: Final = struct.Struct(">I").pack
_READ: Final = 1  # selectors.EVENT_READ
_WRITE: Final = 2  # selectors.EVENT_WRITE


class _Nothing:
    """No message is waiting (distinct from a decoded message that is None)."""


_NOTHING: Final = _Nothing()


class _Flag:
    """A file descriptor that is readable while set: what Endpoint.fileno() returns."""

    def __init__(self) -> None:
        self.is_set = False
        self._eventfd = -1
        self._pair: tuple[socket.socket, socket.socket] | None = None
        if _HAS_EVENTFD:
            self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # not Linux: a socketpair does the same with two descriptors
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self._pair = (reader, writer)

    def fileno(self) -> int:
        if self._pair is not None:
            return self._pair[0].fileno()
        return self._eventfd

    def set(self) -> None:
        if self.is_set:
            return
        self.is_set = True
        if self._pair is not None:
            self._pair[1].send(b"\0")
        else:
            os.eventfd_write(self._eventfd, 1)

    def clear(self) -> None:
        if not self.is_set:
            return
        self.is_set = False
        if self._pair is not None:
            self._pair[0].recv(16)
        else:
            os.eventfd_read(self._eventfd)  # resets the counter to 0: not readable

    def close(self) -> None:
        if self._pair is not None:
            self._pair[0].close()
            self._pair[1].close()
        elif self._eventfd >= 0:
            os.close(self._eventfd)
            self._eventfd = -1


class _StartAfterInit(type):
    """Metaclass: start an endpoint only once the most derived ``__init__`` has returned.

    A subclass's ``handshake()`` may use attributes its ``__init__`` sets after calling
    ``super().__init__()``; Stockings starts its thread inside the base ``__init__`` and
    races them (defect 12).
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        endpoint = super().__call__(*args, **kwargs)
        endpoint._start()
        return endpoint


class Endpoint(Generic[T], metaclass=_StartAfterInit):
    """Whole messages over a connected socket, sent and received in the background.

    Args:
        sock: a connected ``SOCK_STREAM`` socket (TCP, Unix, or an ``ssl.SSLSocket`` whose
            TLS handshake is complete). The endpoint owns it and makes it non-blocking.
        format: wire format, default ``Format.U32``.
        max_size: largest payload sent or accepted, in bytes (default 16 MiB).
        codec: payload codec (default ``BYTES``: write bytes-like, read ``bytes``).
        max_queue: bytes buffered in each direction (default 4 MiB). When the send queue
            is full, :meth:`write` waits up to ``write_timeout``; when the receive queue is
            full, the endpoint stops reading the socket until :meth:`read` drains it (TCP
            then slows the peer down). One message larger than this still goes through.
        write_timeout: seconds :meth:`write` may wait for room in the send queue before
            raising :class:`~sockwork.errors.TimedOut` (default 30; None waits forever).
        nodelay: set TCP_NODELAY on TCP sockets (default True).

    Subclasses may override :meth:`pre_write`, :meth:`post_read` and :meth:`handshake`.
    """

    @overload
    def __init__(
        self: Endpoint[bytes],
        sock: socket.socket,
        *,
        format: Format | str = ...,
        max_size: int = ...,
        max_queue: int = ...,
        write_timeout: float | None = ...,
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
        write_timeout: float | None = ...,
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
        write_timeout: float | None = 30.0,
        nodelay: bool = True,
    ) -> None:
        if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
            raise TypeError(f"sock must be a connected SOCK_STREAM socket, not {sock!r}")
        if not isinstance(codec, Codec):
            raise TypeError(f"codec must be a sockwork.frames.Codec, not {codec!r}")
        if not isinstance(max_queue, int) or isinstance(max_queue, bool) or max_queue < 1:
            raise ValueError(f"max_queue must be an int >= 1 (bytes), not {max_queue!r}")
        if write_timeout is not None and not write_timeout >= 0:
            raise ValueError(f"write_timeout must be None or >= 0 seconds, not {write_timeout!r}")
        self._encoder = FrameEncoder(format, max_size=max_size)
        self._decoder = FrameDecoder(format, max_size=max_size)
        self.format: Final = self._encoder.format
        self.max_size: Final = max_size
        self.codec: Final[Codec[T]] = codec  # type: ignore[assignment]
        self.max_queue: Final = max_queue
        self.write_timeout = write_timeout
        try:
            self.address: object = sock.getpeername()
        except OSError as exc:
            raise ValueError(f"sock must be connected: {exc}") from exc
        self._decode = _maybe_decode(self.codec, self.format)
        self._sock = sock
        self._tls = isinstance(sock, ssl.SSLSocket)
        sock.setblocking(False)
        if nodelay and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._inbox: deque[Message] = deque()
        self._inbox_bytes = 0
        self._outbox: deque[bytes | memoryview] = deque()
        self._head_offset = 0  # bytes of _outbox[0] already sent
        self._queued_total = 0  # bytes ever queued
        self._sent_total = 0  # bytes ever handed to the kernel
        self._msg_ends: deque[int] = deque()  # _queued_total at the end of each unsent message
        self._paused = False  # reading paused: the inbox is full
        self._eof = False  # reading is over (EOF or error)
        self._error: BaseException | None = None  # why the connection ended
        self._error_raised = False
        self._hard = False  # the end drops the outbox and releases the socket at once
        self._closing = False  # close() was called: read/write refused
        self._release_wanted = False  # close() finished flushing: release the socket now
        self._released = threading.Event()
        self._events = 0  # selector interest; reactor thread only
        self._flag: _Flag | None = None
        self._reactor: Reactor | None = None
        self._handshake_thread: threading.Thread | None = None
        self._settled = threading.Event()  # the handshake returned (or failed)
        self._ready = False
        # The hooks, or None when not overridden (a call per message saved).
        self._post_read = None if type(self).post_read is Endpoint.post_read else self.post_read
        self._pre_write = None if type(self).pre_write is Endpoint.pre_write else self.pre_write
        self._u32_bytes = codec is BYTES and self.format is Format.U32

    # -- life cycle ----------------------------------------------------------------------

    def _start(self) -> None:
        """Attach to the shared reactor and start the handshake (after ``__init__``)."""
        self._reactor = attach()
        with _open_lock:
            _open.add(self)
        if not self._has_handshake():
            self._ready = True  # nothing to wait for: ready before the caller gets the object
            self._settled.set()
        else:
            self._handshake_thread = threading.Thread(
                target=self._run_handshake,
                name=f"sockwork-handshake-{self._sock.fileno()}",
                daemon=True,
            )
        self._poke()
        if self._handshake_thread is not None:
            self._handshake_thread.start()

    def __del__(self) -> None:
        # An endpoint dropped without close() after its connection ended: the socket is
        # already released; release the readiness descriptor too.
        flag = self.__dict__.get("_flag")
        if flag is not None:
            flag.close()

    def __repr__(self) -> str:
        if self._closing:
            state = "closed"
        elif self._error is not None:
            state = "ended"
        else:
            state = "active" if self._ready else "handshaking"
        return (
            f"<{type(self).__name__} {self.format.name} {state} peer={self.address!r} "
            f"pending_writes={len(self._msg_ends)}>"
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

        Messages received before the end may still be waiting: :meth:`read` returns
        them, then raises.
        """
        return not self._closing and self._error is None

    @property
    def ready(self) -> bool:
        """True once :meth:`handshake` has returned a true value."""
        return self._ready

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the handshake has completed.

        Raises:
            TimedOut: the handshake did not finish within ``timeout`` seconds.
            ConnectionClosed: the handshake failed or the connection ended.
        """
        if not self._settled.wait(timeout):
            raise TimedOut(f"the handshake did not complete within {timeout} s", timeout=timeout)
        if not self._ready:
            with self._lock:
                raise self._end_error()

    def handshake(self) -> object:
        """Hook: run once in its own thread before messages may flow; return True if it succeeded.

        Use :meth:`read_raw` and :meth:`write_raw` to talk to the peer; until this returns
        a true value, :meth:`read` and :meth:`write` raise :class:`~sockwork.errors.NotReady`.
        A false value or an exception closes the connection, and read/write then raise
        :class:`~sockwork.errors.ConnectionClosed` whose ``__cause__`` is the exception.
        The default does nothing and returns True, without a thread.
        """
        return True

    def _has_handshake(self) -> bool:
        """Whether :meth:`handshake` is overridden, so it needs its own thread."""
        return type(self).handshake is not Endpoint.handshake

    def _run_handshake(self) -> None:
        try:
            result = self.handshake()
        except Exception as exc:
            self._handshake_failed(f"handshake() raised {exc!r}", exc)
            return
        if not result:
            self._handshake_failed(f"handshake() returned {result!r}", None)
            return
        with self._lock:
            self._ready = True
            self._settled.set()

    def _handshake_failed(self, why: str, cause: BaseException | None) -> None:
        error = ConnectionClosed(
            f"the handshake failed ({why}); the connection was closed",
            address=self.address,
            by_peer=False,
        )
        error.__cause__ = cause
        with self._lock:
            self._end(error, hard=True)
            self._settled.set()
            self._poke()

    def abort(self) -> None:
        """Close at once, dropping queued messages without complaint; idempotent.

        :meth:`pending_writes` then tells how many messages were dropped.
        """
        self._close(0.0, report=False)

    def close(self, flush_timeout: float | None = 5.0) -> None:
        """Send what was queued (waiting up to ``flush_timeout`` s), then close; idempotent.

        Messages still waiting to be read are discarded. The socket and every descriptor
        are released even when the flush times out; the shared I/O thread stops with the
        last open endpoint. Use :meth:`abort` to drop the queue on purpose.

        Raises:
            TimedOut: the queue could not be flushed in time (the peer stopped reading);
                :meth:`pending_writes` then tells how many messages were not sent.
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
                deadline = None if flush_timeout is None else time.monotonic() + flush_timeout
                while self._outbox and not self._hard:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._room.wait(remaining)
                # Only a flush cut short by the timeout is reported here; messages lost to a
                # reset were reported by the read()/write() that met it.
                unsent = len(self._msg_ends) if self._outbox and not self._hard else 0
                unsent_bytes = self._queued_total - self._sent_total
                self._drop_outbox()
                self._release_wanted = True
        reactor = self._reactor
        if reactor is None:  # never started (a subclass __init__ raised)
            self._sock.close()
            self._released.set()
        elif reactor.in_thread():  # not expected (hooks never run there), but never deadlock
            with self._lock:
                if not self._released.is_set():
                    self._update_interest()
        else:
            with self._lock:
                self._poke()
            while not self._released.wait(0.5):
                if not reactor.thread.is_alive():  # the I/O thread died (a sockwork bug)
                    with self._lock:
                        self._sock.close()
                        self._released.set()
        if not first:
            return
        thread = self._handshake_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        if reactor is not None and reactor.stopping and not reactor.in_thread():
            reactor.thread.join(5.0)
        with self._lock:
            self._inbox.clear()
            self._inbox_bytes = 0
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

    # -- reading -------------------------------------------------------------------------

    def read(self, timeout: float = 0.0) -> T | None:
        """Return the next whole message passed through :meth:`post_read`, or None if none is here.

        Never blocks by default; with ``timeout`` > 0, waits up to that many seconds for
        a message, then returns None.

        Raises:
            NotReady: the handshake has not completed.
            ConnectionClosed: every message received before the connection ended has been
                returned (``by_peer`` tells who ended it); IncompleteMessage if it ended
                inside a frame.
            MessageTooLarge, ProtocolError: the peer broke the format; the connection is
                closed.
        """
        if not self._ready:
            self._raise_not_ready()
        message = self._take(timeout)
        if message is _NOTHING:
            return None
        if self._post_read is None:
            return message  # type: ignore[return-value]
        return self._post_read(message)  # type: ignore[arg-type]

    def read_raw(self, timeout: float = 0.0) -> T | None:
        """Like :meth:`read`, without :meth:`post_read` or the handshake check (for handshake)."""
        message = self._take(timeout)
        return None if message is _NOTHING else message  # type: ignore[return-value]

    def post_read(self, message: T) -> T:
        """Hook: transform each message before :meth:`read` returns it (default: unchanged)."""
        return message

    def fileno(self) -> int:
        """Return a descriptor that is readable while :meth:`read` has something to return.

        Once the connection has ended and its messages are read, it stays readable (and
        :meth:`read` raises), so a ``select``/``poll``/``selectors`` loop sees the end.
        The descriptor is created on the first call and closed by :meth:`close`; this
        returns -1 after :meth:`close`.
        """
        with self._lock:
            if self._closing:
                return -1
            if self._flag is None:
                self._flag = _Flag()
                if self._inbox or self._error is not None:
                    self._flag.set()
            return self._flag.fileno()

    def _take(self, timeout: float) -> object:
        with self._lock:
            inbox = self._inbox
            if not inbox or self._closing:
                if not self._wait_for_message(timeout):
                    return _NOTHING
            message = inbox.popleft()
            self._inbox_bytes -= len(message)
            if not inbox and self._flag is not None and self._error is None:
                self._flag.clear()
            if self._paused and self._inbox_bytes <= self.max_queue // 2:
                self._paused = False
                self._poke()
        if self._decode is None:
            return message
        return self._decode(message)  # an error here consumed one frame; the stream is fine

    def _wait_for_message(self, timeout: float) -> bool:
        """Wait (lock held) up to ``timeout`` s until a message is waiting; False if none came.

        Raises the error that ended the connection once no message is left.
        """
        if not self._closing and not self._inbox and timeout > 0 and self._error is None:
            deadline = time.monotonic() + timeout
            while not self._inbox and self._error is None and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
        if self._closing:
            raise closed_error("endpoint", self.address)
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

    def _raise_not_ready(self) -> None:
        with self._lock:
            if self._closing:
                raise closed_error("endpoint", self.address)
            if self._error is not None and self._settled.is_set():
                raise self._end_error()
        raise NotReady(
            "the handshake has not completed yet: wait with wait_ready(), or check ready"
        )

    # -- writing -------------------------------------------------------------------------

    def write(self, message: T) -> None:
        """Queue one message (passed through :meth:`pre_write`) to be sent; thread-safe.

        Returns at once while the send queue has room; otherwise waits for room up to
        ``write_timeout`` seconds.

        Raises:
            NotReady: the handshake has not completed.
            MessageTooLarge: the payload exceeds ``max_size``; nothing was queued.
            TypeError: the codec cannot encode ``message``.
            TimedOut: the queue stayed full for ``write_timeout`` s (the peer is not
                reading); nothing was queued and the connection stays usable.
            ConnectionClosed: the connection has ended or :meth:`close` was called.
        """
        if not self._ready:
            self._raise_not_ready()
        self.write_raw(message if self._pre_write is None else self._pre_write(message))

    def write_raw(self, message: T) -> None:
        """Like :meth:`write`, without :meth:`pre_write` or the handshake check (for handshake)."""
        parts: tuple[bytes, ...]
        if self._u32_bytes and type(message) is bytes:  # the common case, without calls
            data: bytes = message  # type: ignore[assignment]
            psize = len(data)
            if psize > self.max_size:
                raise MessageTooLarge(psize, self.max_size)
            size = psize + 4
            parts = (_pack_u32(psize) + data,) if psize < _COPY_LIMIT else (_pack_u32(psize), data)
        else:
            parts, size = self._frame(message)
        with self._lock:
            if (
                self._error is not None
                or self._closing
                or (self._queued_total - self._sent_total + size > self.max_queue)
            ):
                self._wait_for_room(size)
            was_empty = not self._outbox
            self._outbox.extend(parts)
            self._queued_total += size
            self._msg_ends.append(self._queued_total)
            if was_empty:
                # The reactor sends: messages written meanwhile go out in the same syscall.
                self._poke()

    def write_many(self, messages: Iterable[T]) -> None:
        """Queue several messages (each passed through :meth:`pre_write`) in one go; thread-safe.

        The messages are queued together, in order, with no other writer's message in
        between, and small ones are joined into one buffer: the cheap way to send many
        small messages. The batch waits for room as a whole (up to ``write_timeout``)
        and is accepted whole once it fits, or once the queue is empty.

        Raises:
            what :meth:`write` raises; when a message cannot be encoded or is too large,
            nothing of the batch is queued.
        """
        if not self._ready:
            self._raise_not_ready()
        pre_write = self._pre_write
        fast = self._u32_bytes
        limit = self.max_size
        items: list[bytes] = []
        small: list[bytes] = []
        ends: list[int] = []
        total = 0
        for message in messages:
            if pre_write is not None:
                message = pre_write(message)
            if fast and type(message) is bytes:
                data: bytes = message  # type: ignore[assignment]
                psize = len(data)
                if psize > limit:
                    raise MessageTooLarge(psize, limit)
                size = psize + 4
                parts: tuple[bytes, ...] = (
                    (_pack_u32(psize) + data,) if psize < _COPY_LIMIT else (_pack_u32(psize), data)
                )
            else:
                parts, size = self._frame(message)
            total += size
            ends.append(total)
            if len(parts) == 1:
                small.append(parts[0])
            else:
                if small:
                    items.append(b"".join(small))
                    small = []
                items.extend(parts)
        if small:
            items.append(b"".join(small))
        if not ends:
            return
        with self._lock:
            if (
                self._error is not None
                or self._closing
                or (self._queued_total - self._sent_total + total > self.max_queue)
            ):
                self._wait_for_room(total)
            was_empty = not self._outbox
            base = self._queued_total
            self._outbox.extend(items)
            self._queued_total = base + total
            self._msg_ends.extend([base + end for end in ends])
            if was_empty:
                self._poke()

    def _frame(self, message: T) -> tuple[tuple[bytes, ...], int]:
        """Encode one message: its buffers (header and payload, or both joined) and size."""
        header, payload = self._encoder.send_parts(self.codec.encode(message))
        psize = len(payload) if isinstance(payload, (bytes, bytearray)) else payload.nbytes
        size = len(header) + psize
        if psize < _COPY_LIMIT:
            return (
                header + payload if isinstance(payload, bytes) else header + bytes(payload),
            ), size
        # Not copied when immutable; a bytearray could change after write() returns.
        return (header, payload if isinstance(payload, bytes) else bytes(payload)), size

    def pre_write(self, message: T) -> T:
        """Hook: transform each message given to :meth:`write` (default: unchanged)."""
        return message

    def pending_writes(self) -> int:
        """Return how many written messages are not yet wholly handed to the kernel.

        After the connection has ended, this is the number of messages never sent.
        """
        return len(self._msg_ends)

    def _wait_for_room(self, size: int) -> None:
        timeout = self.write_timeout
        deadline: float | None = None
        while True:
            if self._closing:
                raise closed_error("endpoint", self.address)
            if self._error is not None:
                raise self._end_error()
            queued = self._queued_total - self._sent_total
            if queued == 0 or queued + size <= self.max_queue:
                return
            if timeout is not None:
                if deadline is None:
                    deadline = time.monotonic() + timeout
                remaining: float | None = deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimedOut(
                        f"write() waited {timeout} s for room in the send queue "
                        f"({queued} bytes queued, max_queue={self.max_queue}): "
                        f"{self.address!r} is not reading; nothing was queued",
                        timeout=timeout,
                    )
            else:
                remaining = None
            self._room.wait(remaining)

    # -- I/O, under _lock ------------------------------------------------------------------

    def _poke(self) -> None:
        """Have the reactor thread bring the selector up to date with this endpoint.

        Call with ``_lock`` held (or before the endpoint is visible): the reactor releases
        endpoints under that lock, so an endpoint seen unreleased here keeps the reactor
        (and its wake-up socket) alive until call_soon() returns.
        """
        reactor = self._reactor
        if reactor is not None and not self._released.is_set():
            reactor.call_soon(self._on_poke)

    def _on_poke(self) -> None:
        try:
            self._on_poke_unguarded()
        except Exception as exc:  # a sockwork bug: end this connection, keep the thread
            self._on_crash(exc)

    def _on_poke_unguarded(self) -> None:
        if self._released.is_set():  # only this thread releases: no race with the check
            return
        with self._lock:
            flush = bool(self._outbox) and not self._events & _WRITE
            # TLS may hold decrypted bytes the selector cannot see (after a pause, say).
            receive = self._tls and not (self._eof or self._paused or self._events & _READ)
        if flush:
            self._flush()
        if receive:
            self._receive()
        with self._lock:
            if not self._released.is_set():
                self._update_interest()

    def _on_events(self, events: int) -> None:
        """Reactor callback: the socket is ready for ``events``."""
        if self._released.is_set():
            return
        if events & _WRITE:
            self._flush()
        if events & _READ:
            self._receive()
        with self._lock:
            if not self._released.is_set():
                self._update_interest()

    def _on_crash(self, error: BaseException) -> None:
        """Reactor callback: :meth:`_on_events` raised (a sockwork bug); end the connection."""
        crash = ConnectionClosed(f"sockwork's I/O thread failed: {error!r}", address=self.address)
        crash.__cause__ = error
        with self._lock:
            self._end(crash, hard=True)
            if not self._released.is_set():
                self._update_interest()

    def _update_interest(self) -> None:
        """Register what the endpoint waits for, or release the socket (reactor thread)."""
        assert self._reactor is not None
        if self._release_wanted or self._hard or (self._error is not None and not self._outbox):
            self._release()
            return
        want = 0
        if not (self._eof or self._paused):
            want |= _READ
        if self._outbox:
            want |= _WRITE
        if want == self._events:
            return
        selector = self._reactor.selector
        if self._events == 0:
            selector.register(self._sock, want, self)
        elif want == 0:
            selector.unregister(self._sock)
        else:
            selector.modify(self._sock, want, self)
        self._events = want

    def _release(self) -> None:
        assert self._reactor is not None
        if self._events:
            self._reactor.selector.unregister(self._sock)
            self._events = 0
        self._sock.close()
        self._drop_outbox()
        self._reactor.detach()  # before _released: close() then knows whether to join
        self._released.set()
        self._room.notify_all()
        self._arrived.notify_all()

    def _drop_outbox(self) -> None:
        self._outbox.clear()
        self._head_offset = 0

    def _end(self, error: BaseException, *, hard: bool) -> None:
        """Record why the connection ended (the first reason wins)."""
        if self._error is None:
            self._error = error
        self._eof = True
        if hard:
            self._hard = True
            self._drop_outbox()
        reactor = self._reactor
        if reactor is not None and reactor.in_thread() and not self._released.is_set():
            self._update_interest()  # release now, before anyone can see the end
        self._room.notify_all()
        self._arrived.notify_all()
        if self._flag is not None:
            self._flag.set()

    def _receive(self) -> None:
        """Receive and decode what the socket holds (reactor thread, lock not held)."""
        decoder = self._decoder
        sock = self._sock
        with self._lock:
            if self._eof or self._paused:
                return
        for _ in range(_MAX_READS):
            buffer = decoder.get_buffer(_RECV_SIZE)
            cause: OSError | None = None
            try:
                count = sock.recv_into(buffer)
            except _WOULD_BLOCK:  # spurious readiness or a partial TLS record: try later
                return
            except OSError as exc:  # a reset: what arrived before still counts, as at EOF
                count = 0
                cause = exc
            drained = count < len(buffer) and not (self._tls and sock.pending())  # type: ignore[attr-defined]
            if count:
                decoder.buffer_updated(count)
                if decoder.missing:  # inside a frame: nothing can be complete yet
                    if drained:
                        return
                    continue
            else:
                decoder.receive_eof()
            messages, size, error = self._take_messages(cause)
            with self._lock:
                had_messages = bool(self._inbox)
                if messages:
                    self._inbox.extend(messages)
                    self._inbox_bytes += size
                    if self._inbox_bytes >= self.max_queue:
                        self._paused = True
                if error is not None:
                    # After a clean EOF what is queued is still sent; after a reset or a
                    # broken stream nothing more can be.
                    hard = cause is not None or not isinstance(error, ConnectionClosed)
                    self._end(error, hard=hard)
                elif messages and not had_messages:
                    self._arrived.notify_all()
                    if self._flag is not None:
                        self._flag.set()
                if error is not None or self._paused:
                    return
            if drained:
                return  # the kernel buffer is drained

    def _take_messages(
        self, cause: OSError | None
    ) -> tuple[list[Message], int, BaseException | None]:
        """Take the decoder's complete messages, their size, and the error that ended it."""
        next_message = self._decoder.next_message
        messages: list[Message] = []
        size = 0
        try:
            while True:
                message = next_message()
                if message is NEED_DATA:
                    break
                messages.append(message)
                size += len(message)
        except (ConnectionClosed, MessageTooLarge, ProtocolError) as exc:
            # Whether the end is hard (drops the outbox) is the caller's decision, not
            # ``fatal``: after EOF inside a frame, queued writes are still sent.
            error, _ = end_error(
                exc, what="endpoint", address=self.address, closed=False, lost=cause
            )
            return messages, size, error
        return messages, size, None

    def _flush(self) -> None:
        """Send as much of the outbox as the kernel takes now (reactor thread)."""
        # The lock is held across the send calls: writers wait (they would wait for the
        # GIL anyway) and their messages pile up into the next, larger batch.
        sock = self._sock
        one_buffer = self._tls or not _HAS_SENDMSG  # a TLS retry must resend the same bytes
        with self._lock:
            while self._outbox:
                buffers, total = self._gather()
                try:
                    if one_buffer:
                        total = len(buffers[0])
                        count = sock.send(buffers[0])
                    else:
                        count = sock.sendmsg(buffers)
                except _WOULD_BLOCK:
                    return
                except OSError as exc:
                    error = ConnectionClosed(
                        f"connection lost while sending: {exc}",
                        address=self.address,
                        by_peer=True,
                    )
                    error.__cause__ = exc
                    self._end(error, hard=True)
                    return
                self._consume(count)
                self._room.notify_all()
                if count < total:
                    return  # the kernel buffer is full

    def _gather(self) -> tuple[list[bytes | memoryview], int]:
        """Return the next buffers to send (small messages joined) and their total size."""
        buffers: list[bytes | memoryview] = []
        small: list[bytes | memoryview] = []
        total = 0
        offset = self._head_offset
        for item in self._outbox:
            if offset:
                item = memoryview(item)[offset:]
                offset = 0
            size = len(item)
            total += size
            if size < _COPY_LIMIT:
                small.append(item)
            else:
                if small:
                    buffers.append(b"".join(small) if len(small) > 1 else small[0])
                    small = []
                buffers.append(item)
            if total >= _SEND_BATCH or len(buffers) >= _MAX_BUFFERS:
                break
        if small:
            buffers.append(b"".join(small) if len(small) > 1 else small[0])
        return buffers, total

    def _consume(self, count: int) -> None:
        self._sent_total += count
        outbox = self._outbox
        offset = self._head_offset + count
        while outbox:
            length = len(outbox[0])
            if offset < length:
                break
            offset -= length
            outbox.popleft()
        self._head_offset = offset
        ends = self._msg_ends
        sent = self._sent_total
        while ends and ends[0] <= sent:
            ends.popleft()


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
