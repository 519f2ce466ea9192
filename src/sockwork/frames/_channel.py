"""The I/O-thread half of a background :class:`~sockwork.frames.Endpoint`.

A :class:`Channel` is a socket registered with the shared reactor (``_reactor.py``):
it holds the state that callers' threads and the I/O thread share, guarded by one
lock, and the reactor callbacks that move bytes between the socket and the queues
(``_queue.py``). ``Endpoint`` (``endpoint.py``) is the callers' half: its public verbs
only touch the queues under the lock and poke the reactor.
"""

# Rules:
# - State is guarded by ``_lock``. ``_arrived`` (a Condition on it) is notified when the
#   inbox gains a message or the connection ends; ``_room`` when the outbox loses bytes,
#   the connection ends or close() starts.
# - Only the reactor thread touches the socket and the selector, so a TLS socket never sees
#   two threads at once. Senders append whole frames to the outbox under the lock (frames
#   never interleave) and, when it was empty, _poke() the reactor, which sends everything
#   queued by then in one call: a burst of small messages costs a few syscalls, not one each.
#   _flush holds the lock across send calls (senders would wait for the GIL anyway, and
#   their frames pile up into the next batch); recv and decoding run outside it.
# - The reactor releases a channel (unregister, close, detach) under its lock, and _poke()
#   is called with the lock held: a channel seen unreleased there keeps the reactor, and
#   its wake-up socket, alive.
# - Interest is READ while reading is wanted (no EOF, no error, inbox under its high water
#   mark) and WRITE while the outbox holds bytes; nothing else. A peer that stops reading,
#   or a caller that stops calling recv(), therefore costs no CPU (Stockings spins a core:
#   defect 5), and an undrained inbox never stops sending (Stockings couples the two).
# - A clean EOF, or EOF inside a frame, stops reading; what was already queued is still
#   sent, then the socket is released. A reset, a bad header or an oversized frame release
#   the socket at once and drop the outbox. Either way, messages decoded before the end are
#   still returned, then the error is raised (Stockings defects 8 and 9).

from __future__ import annotations

import socket
import ssl
import threading
from typing import Final

from sockwork.errors import ConnectionClosed, MessageTooLarge, ProtocolError
from sockwork.frames._ending import closed_error, end_error
from sockwork.frames._queue import ReceiveQueue, SendQueue
from sockwork.frames._reactor import Reactor, attach
from sockwork.frames._sock import HAS_SENDMSG, RECV_SIZE, WOULD_BLOCK, Flag, TranslateErrors
from sockwork.frames.codec import FrameDecoder, Message

__all__ = ["Channel"]

_MAX_READS: Final = 16  # recv calls per readiness event, so one busy peer cannot starve others
_READ: Final = 1  # selectors.EVENT_READ
_WRITE: Final = 2  # selectors.EVENT_WRITE


class Channel:
    """A connected socket driven by the reactor thread, and the queues it fills and drains.

    Args:
        sock: the connected socket; made non-blocking, owned from now on.
        address: the peer's address, for errors.
        decoder: the decoder that receives from it.
        max_queue: bytes held in each direction (the queues' limit and high water mark).
    """

    def __init__(
        self, sock: socket.socket, address: object, decoder: FrameDecoder, max_queue: int
    ) -> None:
        self.address = address
        self._sock = sock
        self._tls = isinstance(sock, ssl.SSLSocket)
        sock.setblocking(False)
        self._decoder = decoder
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._inbox: ReceiveQueue[Message] = ReceiveQueue(
            max_queue, max_queue // 2, pause=self._pause_reading, resume=self._resume_reading
        )
        self._outbox = SendQueue(max_queue)
        self._paused = False  # reading paused: the inbox is full
        self._eof = False  # reading is over (EOF or error)
        self._error: BaseException | None = None  # why the connection ended
        self._hard = False  # the end drops the outbox and releases the socket at once
        self._closing = False  # close() was called: send/recv refused
        self._release_wanted = False  # close() finished flushing: release the socket now
        self._released = threading.Event()
        self._events = 0  # selector interest; reactor thread only
        self._flag: Flag | None = None  # the readiness descriptor, made on demand
        self._send_errors = TranslateErrors(self, "send")
        self._recv_errors = TranslateErrors(self, "recv")
        self._reactor: Reactor = attach()
        with self._lock:
            self._poke()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called."""
        return self._closing

    def _closed_error(self) -> ConnectionClosed:
        return closed_error("endpoint", self.address)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._end(exc, hard=True)

    def _shut(self) -> None:
        """Release the socket through the reactor and wait until it is done (close())."""
        reactor = self._reactor
        if reactor.in_thread():  # not expected (no callback runs user code), but never deadlock
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

    def _poke(self) -> None:
        """Have the reactor thread bring the selector up to date with this endpoint.

        Call with ``_lock`` held: the reactor releases endpoints under that lock, so an
        endpoint seen unreleased here keeps the reactor (and its wake-up socket) alive
        until call_soon() returns.
        """
        if not self._released.is_set():
            self._reactor.call_soon(self._on_poke)

    def _pause_reading(self) -> None:
        self._paused = True  # the reactor drops READ interest at its next update

    def _resume_reading(self) -> None:
        self._paused = False
        self._poke()

    def _on_poke(self) -> None:
        try:
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
        except Exception as exc:  # a sockwork bug: end this connection, keep the thread
            self._on_crash(exc)

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
        """Register what the endpoint waits for, or release the socket (lock held)."""
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
        if self._events:
            self._reactor.selector.unregister(self._sock)
            self._events = 0
        self._sock.close()
        self._outbox.clear()
        self._reactor.detach()  # before _released: close() then knows whether to join
        self._released.set()
        self._room.notify_all()
        self._arrived.notify_all()

    def _end(self, error: BaseException, *, hard: bool) -> None:
        """Record why the connection ended (the first reason wins); lock held."""
        if self._error is None:
            self._error = error
        self._eof = True
        if hard:
            self._hard = True
            self._outbox.clear()
        if self._reactor.in_thread() and not self._released.is_set():
            self._update_interest()  # release now, before anyone can see the end
        self._room.notify_all()
        self._arrived.notify_all()
        if self._flag is not None:
            self._flag.set()

    def _receive(self) -> None:
        """Receive and decode what the socket holds (lock not held)."""
        decoder = self._decoder
        sock = self._sock
        with self._lock:
            if self._eof or self._paused:
                return
        for _ in range(_MAX_READS):
            buffer = decoder.get_buffer(RECV_SIZE)
            cause: BaseException | None = None
            try:
                with self._recv_errors:
                    count = sock.recv_into(buffer)
            except WOULD_BLOCK:  # spurious readiness or a partial TLS record: try later
                return
            except ConnectionClosed as lost:  # a reset: what arrived still counts, as at EOF
                count = 0
                cause = lost.__cause__
            drained = count < len(buffer) and not (self._tls and sock.pending())  # type: ignore[attr-defined]
            del buffer  # a live view would make the decoder copy a large message
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
                    self._inbox.put(messages, size)  # may pause reading (high water mark)
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
        self, cause: BaseException | None
    ) -> tuple[list[Message], int, BaseException | None]:
        """Take the decoder's complete messages, their size, and the error that ended it."""
        next_messages = self._decoder.next_messages
        messages: list[Message] = []
        size = 0
        try:
            while True:
                batch = next_messages()
                if not batch:
                    break
                messages += batch
                size += sum(map(len, batch))
        except (ConnectionClosed, MessageTooLarge, ProtocolError) as exc:
            # Whether the end is hard (drops the outbox) is the caller's decision, not
            # ``fatal``: after EOF inside a frame, queued sends still go out.
            error, _ = end_error(
                exc, what="endpoint", address=self.address, closed=False, lost=cause
            )
            return messages, size, error
        return messages, size, None

    def _flush(self) -> None:
        """Send as much of the outbox as the kernel takes now."""
        # The lock is held across the send calls: senders wait (they would wait for the
        # GIL anyway) and their messages pile up into the next, larger batch.
        sock = self._sock
        one_buffer = self._tls or not HAS_SENDMSG  # a TLS retry must resend the same bytes
        outbox = self._outbox
        with self._lock:
            while outbox:
                buffers, total = outbox.gather()
                try:
                    with self._send_errors:
                        if one_buffer:
                            total = len(buffers[0])
                            count = sock.send(buffers[0])
                        else:
                            count = sock.sendmsg(buffers)
                except WOULD_BLOCK:
                    return
                except ConnectionClosed as error:
                    self._end(error, hard=True)
                    return
                outbox.consume(count)
                self._room.notify_all()
                if count < total:
                    return  # the kernel buffer is full
