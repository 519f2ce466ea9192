"""The outbox: bytes a non-blocking sender handed over before they were due.

# Rules:
- A non-blocking sender whose bytes are not due hands them to the outbox (bounded,
  ``LIMIT``) and returns at once, as a kernel buffer would; a thread sends them when
  due, in order, and a failure is raised by the application's next send.
- While the outbox is busy, later sends queue behind it (order is kept); a full
  outbox makes a send raise ``BlockingIOError`` after a nap (writability cannot
  be hidden from a selector).
- ``shutdown``/``close`` wait for the outbox to drain: the FIN follows the bytes,
  and a closed socket's bytes go out on a duplicate of its fd.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections import deque

from sockwork.faults import kernel
from sockwork.faults.action import Close, Deliver, Discard, Stalled, Wait
from sockwork.faults.budget import CHANGED, INF, POLL_NAP, now, sleep_until
from sockwork.faults.cut import cut, half_close
from sockwork.faults.state import SocketState

__all__ = ["LIMIT", "Outbox"]

LIMIT = 256 * 1024  # bytes a non-blocking sender may hand over ahead


class Outbox:
    """Bytes a non-blocking sender handed over before they were due, and the thread
    that sends them when the plan says so (on the application's socket, or on a
    duplicate of its fd once the application closed it)."""

    def __init__(self, sock: socket.socket, state: SocketState) -> None:
        self.sock = sock
        self.state = state
        self.lock = threading.Lock()
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.busy = False
        self.error: OSError | None = None
        self.after: int | None = None  # shutdown(how) to do once drained; -1: close

    def raise_error(self) -> None:
        """Raise the failure of an earlier send (once)."""
        with self.lock:
            error, self.error = self.error, None
        if error is not None:
            raise error

    def adopt(self, view: memoryview, *, whole: bool) -> int:
        """Take the bytes already fed to the plan; return how many (0: full)."""
        total = len(view)
        take = self._room_for(total, whole=whole)
        if take < total:
            self.state.unfeed("send")
            if take:
                self.state.feed("send", take, now())
        if take:
            self._append(bytes(view[:take]))
        return take

    def put(self, data: object, *, whole: bool) -> int:
        """Queue more bytes behind the ones in flight; return how many were taken."""
        with memoryview(data) as raw:  # type: ignore[arg-type]
            view = raw.cast("B")
            take = self._room_for(len(view), whole=whole)
            if not take:
                view.release()
                if len(view) == 0:
                    return 0
                time.sleep(POLL_NAP)
                raise kernel.would_block()
            chunk = bytes(view[:take])
            view.release()
        self.state.feed("send", take, now())
        self._append(chunk)
        return take

    def _room_for(self, size: int, *, whole: bool) -> int:
        """How many of ``size`` bytes fit (all or nothing for a ``sendall``)."""
        room = LIMIT - self.size
        return size if size <= room else (0 if whole else room)

    def _append(self, chunk: bytes) -> None:
        with self.lock:
            self.chunks.append(chunk)
            self.size += len(chunk)
            start = not self.busy
            self.busy = True
        if start:
            thread = threading.Thread(target=self._run, name="sockwork-outbox", daemon=True)
            thread.start()

    def finish_with(self, how: int | None) -> bool:
        """The application shuts down or closes: do it once drained. False when idle."""
        with self.lock:
            if not self.busy:
                return False
            if how is None:
                self.sock = kernel.Socket(fileno=os.dup(self.sock.fileno()))
                self.after = -1
            elif self.after is None:
                self.after = how
            return True

    def _run(self) -> None:
        state = self.state
        try:
            while True:
                with self.lock:
                    if not self.chunks:
                        self.busy = False
                        after, self.after = self.after, None
                        break
                    head = self.chunks[0]
                action = state.next("send", now()) if not state.idle("send") else None
                if action is None:
                    n = self._send(head)
                    state.passed("send", min(n, state.pending("send")), now())
                    self._pop(n)
                elif isinstance(action, (Wait, Stalled)):
                    until = action.until if isinstance(action, Wait) else INF
                    with CHANGED:
                        CHANGED.wait(None if until == INF else max(0.0, until - now()))
                elif isinstance(action, Deliver):
                    n = self._send(head[: action.n])
                    state.passed("send", n, now())
                    self._pop(n)
                elif isinstance(action, Discard):
                    n = min(action.n, len(head))
                    state.passed("send", n, now())
                    self._pop(n)
                elif isinstance(action, Close):
                    if action.half:
                        half_close(self.sock, state, "send")
                    else:
                        cut(self.sock, state, action.reset)
                    raise kernel.oserror(BrokenPipeError, errno.EPIPE)
                else:  # Read: the plan lost track of these bytes; send them as they are
                    self._pop(self._send(head))
        except OSError as exc:
            with self.lock:
                self.error = exc
                self.chunks.clear()
                self.size = 0
                self.busy = False
                after, self.after = self.after, None
            state.unfeed("send")
        if after is not None:
            due = state.fin_due(now())  # SlowClose holds the FIN back
            if due is not None:
                sleep_until(due)
        if after == -1:
            kernel.close(self.sock)
        elif after is not None:
            kernel.shutdown_quietly(self.sock, after)

    def _send(self, data: bytes) -> int:
        while True:
            try:
                return kernel.send(self.sock, data)
            except (BlockingIOError, InterruptedError):
                poller = select.poll()
                poller.register(self.sock.fileno(), select.POLLOUT)
                poller.poll(100)

    def _pop(self, n: int) -> None:
        with self.lock:
            while n > 0 and self.chunks:
                head = self.chunks[0]
                if len(head) <= n:
                    self.chunks.popleft()
                    n -= len(head)
                    self.size -= len(head)
                else:
                    self.chunks[0] = head[n:]
                    self.size -= n
                    n = 0
