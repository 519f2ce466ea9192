"""Streams through the faults: send and receive on blocking and non-blocking sockets.

# Rules:
- Blocking sockets wait in the calling thread, never past the socket's timeout
  (see :mod:`sockwork.faults.budget`).
- Non-blocking sockets never wait: a send that is not due goes to the outbox
  (:mod:`sockwork.faults.outbox`); a receive that is not due raises
  ``BlockingIOError`` and hides the socket from poll/epoll until it is
  (:mod:`sockwork.faults.readiness`).
- Receives look at the bytes without taking them (a :class:`Source`: the kernel
  peeks with ``MSG_PEEK``) and consume only what is delivered, so the kernel's
  readiness always matches what the application may read.
- Faults raise what the network raises (ECONNRESET, EPIPE, TimeoutError), never a
  sockwork error.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Protocol, TypeVar

from sockwork.faults import kernel
from sockwork.faults.action import Close, Deliver, Discard, Read, Stalled, Wait
from sockwork.faults.budget import INF, Budget, now
from sockwork.faults.cut import cut, half_close, raise_if_cut
from sockwork.faults.deadline import act_on_due, watch_deadline
from sockwork.faults.outbox import Outbox
from sockwork.faults.readiness import loud, quiet
from sockwork.faults.state import SocketState

__all__ = ["KernelSource", "Source", "receive", "send"]

T = TypeVar("T")


def send(
    sock: socket.socket,
    state: SocketState,
    data: object,
    lower: Callable[[memoryview], int],
    *,
    whole: bool,
    deferrable: bool = True,
) -> int:
    """Send ``data`` through the faults with ``lower`` (a real send); return bytes passed.

    ``deferrable``: a non-blocking send that is not due may go to the outbox (not
    for TLS: OpenSSL may not write from another thread while the application reads).
    """
    raise_if_cut(state, True)
    if state.cut == "fin":
        raise kernel.oserror(BrokenPipeError, errno.EPIPE)
    outbox = state.outbox
    if outbox is not None:
        outbox.raise_error()
        if outbox.busy:  # earlier bytes are still on their way: keep the order
            return outbox.put(data, whole=whole)
    with memoryview(data) as raw:  # type: ignore[arg-type]
        view = raw.cast("B")
        total = len(view)
        budget = Budget(sock)
        state.feed("send", total, now())
        sent = 0
        handed_over = False
        try:
            while sent < total:
                if state.idle("send"):  # the faults were removed meanwhile
                    k = lower(view[sent:])
                    sent += k
                    if whole:
                        continue
                    break
                action = state.next("send", now())
                if (
                    budget.nonblocking
                    and deferrable
                    and isinstance(action, (Wait, Stalled))
                    and not sent
                ):
                    # Not due: take the bytes now, as a kernel buffer would, and
                    # let a thread send them when due (writability stays true).
                    if state.outbox is None:
                        state.outbox = Outbox(sock, state)
                    accepted = state.outbox.adopt(view, whole=whole)
                    handed_over = accepted > 0
                    if not handed_over:
                        raise kernel.would_block()
                    return accepted
                if isinstance(action, Wait):
                    if sent and not whole:
                        break
                    budget.wait(action.until)
                elif isinstance(action, Deliver):
                    k = lower(view[sent : sent + action.n])
                    state.passed("send", k, now())
                    sent += k
                    if not whole:
                        break
                elif isinstance(action, Discard):
                    state.passed("send", action.n, now())
                    sent += action.n
                elif isinstance(action, Stalled):
                    if sent and not whole:
                        break
                    budget.wait(INF, endless=True)
                elif isinstance(action, Close):
                    if action.half:
                        half_close(sock, state, "send")
                    else:
                        cut(sock, state, action.reset)
                    if sent:
                        break
                    raise_if_cut(state, True)
                    raise kernel.oserror(BrokenPipeError, errno.EPIPE)
                else:  # Read: nothing pending, everything passed
                    break
        finally:
            if not handed_over:
                state.unfeed("send")
            view.release()
    act_on_due(sock, state, "send")
    return sent


class Source(Protocol):
    """Where a receive looks at the bytes it has not delivered yet."""

    quiet: bool  # True: readiness can be hidden from poll/epoll (see readiness.quiet)

    def peek(self, size: int, budget: Budget, until: float | None) -> bytes | None:
        """Look at most ``size`` bytes (b"": EOF); None when nothing came before ``until``."""

    def peek_now(self, size: int) -> bytes:
        """Look at what is there now, without waiting."""

    def discard(self, n: int) -> int:
        """Consume ``n`` bytes the application will not see; return how many."""

    def discard_all(self) -> None:
        """Drop every byte held here (the direction ended: a HalfClose)."""


class KernelSource:
    """Received bytes as the kernel holds them: peeked, never copied to user space."""

    __slots__ = ("sock",)
    quiet = True  # readiness can be hidden with SO_RCVLOWAT (see quiet)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def peek(self, size: int, budget: Budget, until: float | None) -> bytes | None:
        """Peek at most ``size`` bytes; None when nothing came before ``until``."""
        sock = self.sock
        if budget.nonblocking:
            return kernel.recv(sock, size, socket.MSG_PEEK)  # BlockingIOError when empty
        limit = budget.remaining(until)
        if not kernel.wait_readable(sock, limit):
            if budget.deadline is not None and now() >= budget.deadline:
                raise kernel.timeout_error()
            return None
        try:
            return kernel.recv(sock, size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None

    def peek_now(self, size: int) -> bytes:
        """Peek at what is there now, without waiting."""
        try:
            return kernel.recv(self.sock, size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return b""

    def discard(self, n: int) -> int:
        """Consume ``n`` bytes the application will not see; return how many."""
        return len(kernel.recv(self.sock, n))

    def discard_all(self) -> None:
        """Nothing is held in user space: the kernel's bytes are drained by the half-close."""


def receive(
    sock: socket.socket,
    state: SocketState,
    size: int,
    consume: Callable[[int], T],
    empty: Callable[[], T],
    source: Source | None = None,
) -> T:
    """Receive through the faults: peek, decide, then ``consume(n)`` the delivered bytes.

    ``source`` is where undelivered bytes are looked at (default: the kernel).
    """
    raise_if_cut(state, False)
    if state.cut is not None:
        return empty()
    if size <= 0:
        return consume(size)
    budget = Budget(sock)
    if source is None:
        source = KernelSource(sock)
    while True:
        if state.idle("recv"):  # the faults were removed meanwhile
            return consume(size)
        pending = state.pending("recv")
        if pending and not state.eof_reached():
            # Bytes that arrived since the last look join the pending ones (Coalesce).
            more = source.peek_now(size)
            if len(more) > pending:
                state.feed("recv", len(more) - pending, now())
        action = state.next("recv", now())
        watch_deadline(sock, state, "recv", action)
        if isinstance(action, Read):
            loud(sock, state)
            cap = size if action.max_bytes is None else min(size, action.max_bytes)
            data = source.peek(cap, budget, action.until)
            if data is None:
                continue
            if data:
                state.feed("recv", len(data), now())
            else:
                state.feed_eof("recv", now())
        elif isinstance(action, (Wait, Stalled)):
            until = action.until if isinstance(action, Wait) else INF
            if budget.nonblocking and until > now() and source.quiet and quiet(sock, state, until):
                raise kernel.would_block()
            budget.wait(until, endless=isinstance(action, Stalled))
        elif isinstance(action, Deliver):
            loud(sock, state)
            result = consume(min(action.n, size))
            n = _length(result)
            state.passed("recv", n, now())
            act_on_due(sock, state, "recv")
            return result
        elif isinstance(action, Discard):
            loud(sock, state)
            state.passed("recv", source.discard(action.n), now())
        elif isinstance(action, Close):
            loud(sock, state)
            if action.half:
                # The peer's FIN as the owner sees it: EOF now and from now on.
                source.discard_all()
                half_close(sock, state, "recv")
                return empty()
            if action.reset:
                cut(sock, state, True)
                raise_if_cut(state, False)
            if state.pending("recv") == 0 and state.eof_reached():
                return empty()  # the peer's own EOF, forwarded
            cut(sock, state, False)
            return empty()
        else:
            raise AssertionError(f"unexpected action {action!r}")


def _length(result: object) -> int:
    if isinstance(result, (bytes, bytearray)):
        return len(result)
    if isinstance(result, int):
        return result
    if isinstance(result, tuple):
        first = result[0]
        return len(first) if isinstance(first, (bytes, bytearray)) else int(first)
    raise TypeError(f"unexpected receive result {result!r}")
