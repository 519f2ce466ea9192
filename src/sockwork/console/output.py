"""Bounded output per session and one thread that drains it: no client can block a writer.

Every session writes through an :class:`Outbox`; the server's :class:`OutputPump`
sends what a client could not take at once, for all sessions, from one thread. A
client that stops reading therefore never blocks the operator, ``broadcast``,
``kick`` or another session: its program waits for room (a bounded time), everyone
else goes on.
"""

# Strategy:
# - An Outbox is a bytearray of output the client has not taken yet, guarded by the
#   session's lock (the lock that also serialises the socket for TLS). The lock is
#   only held around non-blocking calls: nobody ever sleeps holding it.
# - put() appends; when the box was empty it sends at once without blocking (the
#   usual case: everything leaves in the caller's thread) and hands whatever is left
#   to the pump, which waits for writability of every busy box with one selector.
#   Invariant: a box holding bytes is watched by the pump.
# - The program's own output (wait=True) waits for room below `limit` on a Condition
#   of that lock, which releases it while waiting. Output from other threads
#   (wait=False: Session.send, broadcast, a goodbye) never waits: it may use up to
#   `limit` bytes more; a box that would hold more fails ("fell behind").
# - A box whose client took no byte for `write_timeout` seconds while output waited
#   fails: the pump (or a waiting writer, whichever notices first) drops its bytes,
#   wakes every writer with ConnectionClosed and calls the channel's output_failed()
#   (the session logs it and shuts the socket down).
# - finish() takes no more output; once drained the channel's output_drained() runs
#   (the session sends FIN). retire() closes the socket, through the pump while the
#   box is watched: a file descriptor is never closed while registered with the
#   pump's selector, where a reused number would collide.

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from typing import Protocol

from sockwork.errors import ConnectionClosed

__all__ = ["Channel", "OutputPump", "Outbox"]

_log = logging.getLogger("sockwork.console")


class Channel(Protocol):
    """What an :class:`Outbox` needs from its connection (a telnet session, an SSH channel)."""

    def send_now(self, data: memoryview) -> int:
        """Send what fits without blocking; 0 when nothing does; OSError when broken."""
        ...

    def output_failed(self, reason: str, *, log: bool) -> None:
        """The output cannot be delivered: disconnect (called with the lock held)."""
        ...

    def output_drained(self) -> None:
        """Everything was sent after :meth:`Outbox.finish`: end the stream (lock held)."""
        ...

    def close_transport(self) -> None:
        """Release the socket for good (lock held, the box unwatched)."""
        ...


class Outbox:
    """The output of one session that its client has not taken yet, bounded.

    Args:
        channel: the connection the bytes go to.
        fileno: the connection's file descriptor (watched for writability).
        lock: the session's lock; every call takes it.
        pump: the thread that drains boxes whose client is slow.
        limit: bytes the program's own output may have waiting (see the module notes).
        write_timeout: seconds the client may take no byte while output waits.
        name: how log lines and errors name the session.
        address: the peer, carried by ConnectionClosed.
    """

    def __init__(
        self,
        channel: Channel,
        fileno: int,
        *,
        lock: threading.RLock,
        pump: OutputPump,
        limit: int,
        write_timeout: float,
        name: str,
        address: tuple[str, int],
    ) -> None:
        self._channel = channel
        self.fileno = fileno
        self._lock = lock
        self._cond = threading.Condition(lock)
        self._pump = pump
        self.limit = limit
        self.write_timeout = write_timeout
        self._name = name
        self._address = address
        self._buf = bytearray()
        self._watched = False
        self._finished = False
        self._failure: str | None = None
        self._retired = False
        self._close_by: float | None = None
        self._last_progress = time.monotonic()
        self.bytes_sent = 0

    # -- writers (any thread) ------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes waiting for the client."""
        return len(self._buf)

    @property
    def open(self) -> bool:
        """True while output is accepted."""
        return not self._finished and self._failure is None

    def put(self, data: bytes, *, wait: bool) -> None:
        """Queue ``data`` for the client.

        With ``wait`` (the program's own output), wait while ``limit`` bytes are
        waiting; otherwise never wait, and fail the box if it would hold more than
        twice ``limit``.

        Raises:
            ConnectionClosed: the box is finished or failed (now or while waiting).
        """
        if not data:
            return
        with self._cond:
            self._check_open()
            if not wait:
                if len(self._buf) + len(data) > 2 * self.limit:
                    self._fail(
                        f"fell behind by more than {2 * self.limit} bytes of output", log=True
                    )
                    self._check_open()
                self._append(data)
                return
            view = memoryview(data)
            while view:
                room = self.limit - len(self._buf)
                if room <= 0:
                    self._wait_for_room()
                    continue
                self._append(view[:room])
                view = view[room:]

    def finish(self, grace: float | None = None) -> None:
        """Accept no more output; the channel's ``output_drained`` runs once all is sent.

        With ``grace``, what is still queued that many seconds from now is dropped
        (a goodbye to a client that does not read must not keep its socket open).
        """
        with self._lock:
            if self._finished or self._failure is not None:
                return
            self._finished = True
            if grace is not None:
                self._close_by = time.monotonic() + grace
                if self._watched:
                    self._pump.watch(self)  # wakes it: its next deadline is sooner now
            self._cond.notify_all()
            if not self._buf:
                self._channel.output_drained()

    def fail(self, reason: str, *, log: bool = False) -> None:
        """Drop the waiting output and disconnect (stop, a broken connection)."""
        with self._lock:
            self._fail(reason, log=log)

    def retire(self) -> None:
        """Close the connection once the waiting output is sent (or has failed)."""
        with self._lock:
            if self._retired:
                return
            self._retired = True
            if not self._finished and self._failure is None:
                self._finished = True
                self._cond.notify_all()
                if not self._buf:
                    self._channel.output_drained()
            if not self._watched:
                self._channel.close_transport()

    def _check_open(self) -> None:
        if self._failure is not None or self._finished:
            reason = self._failure or "the session is closed"
            raise ConnectionClosed(f"{self._name}: {reason}", address=self._address, by_peer=False)

    def _append(self, data: bytes | memoryview) -> None:
        idle = not self._buf
        self._buf += data
        if not idle:
            return  # already watched by the pump: it sends in order
        self._send_some()
        if self._buf:
            self._last_progress = time.monotonic()
            self._watch()
        self._check_open()  # the send failed, or nobody is left to drain the rest

    def _wait_for_room(self) -> None:
        deadline = self._last_progress + self.write_timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self._fail(f"took no output for {self.write_timeout:g} s", log=True)
        else:
            self._cond.wait(remaining)
        self._check_open()

    def _send_some(self) -> None:
        """Send what the socket takes now (lock held); fail the box if it is broken."""
        sent_any = False
        while self._buf:
            try:
                with memoryview(self._buf) as view:
                    sent = self._channel.send_now(view)
            except OSError as error:
                self._fail(f"send failed ({error})")
                return
            if sent <= 0:
                break
            del self._buf[:sent]
            self.bytes_sent += sent
            sent_any = True
        if sent_any:
            self._last_progress = time.monotonic()
            self._cond.notify_all()
            if not self._buf and self._finished and self._failure is None:
                self._channel.output_drained()

    def _watch(self) -> None:
        if self._watched:
            return
        if self._pump.watch(self):
            self._watched = True
        else:
            self._fail("the server is stopped")

    def _fail(self, reason: str, *, log: bool = False) -> None:
        if self._failure is not None:
            return
        self._failure = reason
        # A new buffer rather than clear(): a view of the old one may still be alive
        # in the traceback of the send that failed.
        self._buf = bytearray()
        self._cond.notify_all()
        self._channel.output_failed(reason, log=log)

    # -- the pump's side (pump thread only) ----------------------------------------------

    def _deadline(self) -> float:
        deadline = self._last_progress + self.write_timeout
        return deadline if self._close_by is None else min(deadline, self._close_by)

    def _pump_deadline(self) -> float | None:
        with self._lock:
            return self._deadline() if self._buf else None

    def _pump_drain(self, now: float, *, send: bool) -> None:
        with self._lock:
            if self._buf and send:
                self._send_some()
            if self._buf and now >= self._deadline():
                if self._close_by is not None and now >= self._close_by:
                    self._fail("closed with output the client did not take")
                else:
                    self._fail(f"took no output for {self.write_timeout:g} s", log=True)

    def _pump_release(self, selector: selectors.BaseSelector, *, stopping: bool) -> bool:
        """Stop watching a box with nothing left to send; True when released."""
        with self._lock:
            if stopping and self._buf:
                self._fail("the server is stopped")
            if self._buf:
                return False
            self._watched = False
            try:
                selector.unregister(self.fileno)
            except (KeyError, ValueError):
                pass  # never registered: released before the pump saw it
            if self._retired:
                self._channel.close_transport()
            return True


class OutputPump:
    """One thread that sends the waiting output of every slow session of a server."""

    def __init__(self, name: str = "sockwork-console-output") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._incoming: list[Outbox] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        with self._lock:
            if self._thread is not None or self._stopping:
                raise RuntimeError("the output pump is already started or stopped")
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def watch(self, box: Outbox) -> bool:
        """Take ``box`` in charge until it is empty; False once the pump is stopped."""
        with self._lock:
            if self._stopping or self._thread is None:
                return False
            self._incoming.append(box)
        self._wake()
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Fail what is still waiting, close retired connections, end the thread."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake()
        if thread is None:
            return
        thread.join(timeout)
        if not thread.is_alive():  # else it is held up; it closes them when it ends
            self._close_wake()

    def _close_wake(self) -> None:
        with self._lock:
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()

    def _wake(self) -> None:
        wake = self._wake_w
        if wake is None:
            return
        try:
            wake.send(b"x")
        except OSError:
            pass  # a wake-up is pending already (full), or the pump is closed

    def _run(self) -> None:
        try:
            self._pump()
        finally:
            with self._lock:
                stopped = self._stopping
            if stopped:
                self._close_wake()

    def _pump(self) -> None:
        wake_r = self._wake_r
        assert wake_r is not None
        boxes: set[Outbox] = set()
        with selectors.DefaultSelector() as selector:
            selector.register(wake_r, selectors.EVENT_READ)
            while True:
                with self._lock:
                    incoming, self._incoming = self._incoming, []
                    stopping = self._stopping
                for box in incoming:
                    if box not in boxes:
                        boxes.add(box)
                        try:
                            selector.register(box.fileno, selectors.EVENT_WRITE, box)
                        except (KeyError, ValueError, OSError):
                            # Closed meanwhile, or a stale entry: no writability to
                            # wait for; the deadline still applies.
                            pass
                if stopping:
                    for box in boxes:
                        box._pump_release(selector, stopping=True)
                    return
                now = time.monotonic()
                deadlines = [d for d in (box._pump_deadline() for box in boxes) if d is not None]
                timeout = max(0.0, min(deadlines) - now) if deadlines else None
                ready: set[Outbox] = set(incoming)
                for key, _ in selector.select(timeout):
                    if key.fileobj is wake_r:
                        try:
                            while wake_r.recv(4096):
                                pass
                        except (BlockingIOError, InterruptedError):
                            pass
                    else:
                        ready.add(key.data)
                now = time.monotonic()
                # Every watched box is checked, not only the writable ones: a box whose
                # deadline passed must fail even if its socket never becomes writable.
                for box in list(boxes):
                    box._pump_drain(now, send=box in ready)
                    if box._pump_release(selector, stopping=False):
                        boxes.discard(box)
