"""One direction of a proxied connection: the fast path, and the executor of the fault plan.

# Rules:
# - The decisions are the plan's (``sockwork.faults.plan.Stream``); this module only
#   carries them out, so a fault behaves the same here as in socket patching.
# - Every chunk read from the source is fed to the plan stream at once, with the loop's
#   clock as ``now`` (Latency counts from arrival, as Toxiproxy's does). Then ``step()``
#   asks ``next(now)`` until the answer is to wait: Deliver/Discard pass bytes and loop;
#   Wait/Read arm one timer; Stalled stops reading the source (back-pressure); Close
#   ends the direction (EOF passed on) or the connection (FIN, or RST).
# - A half-close (``Close(half=True)``, HalfClose) ends this direction only: the
#   destination gets a FIN (write_eof) as if the source had shut down its writing side,
#   and whatever the source sends later is read and dropped (the proxy cannot make the
#   source's own sends fail without cutting the other direction too).
# - Fast path: while the plan stream is idle (no fault acts on it) and nothing is
#   buffered, a chunk is written straight to the destination. The plan still counts the
#   bytes (``feed`` + ``passed``) so ``after_bytes`` triggers see every byte.
# - Faster path (Linux): on top of that, while the destination transport has nothing
#   buffered and nothing holds the source, the bytes move in the kernel with os.splice
#   (``splice.Splicer``), never copied into Python and never through the event loop:
#   the proxy's splice worker thread moves them. ``step()`` stops splicing as soon as a
#   fault acts on the direction: the bytes still in the kernel pipe are written to the
#   destination first (they were read before the fault), then the plan decides. The
#   spliced bytes reach the counters and the plan from the Splicer's totals (``_sync``).
# - The source is paused while any hold is active: destination backpressure, too many
#   bytes buffered here, or a stall ordered by the plan.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Literal, Protocol

from sockwork.faults.action import Close, Deliver, Discard, Read, Stalled, Wait
from sockwork.faults.plan import Stream
from sockwork.proxy import splice
from sockwork.proxy.fault import Direction

__all__ = ["Pipe", "PipeOwner"]

# Bytes held here (waiting for a fault's decision) before the source is paused. Latency
# holds a bandwidth-delay product: 2 MiB keeps 20 MB/s flowing under 100 ms of latency
# (Toxiproxy holds up to 1024 chunks) while bounding memory per connection.
_BUFFER_LIMIT = 2 * 1024 * 1024

HoldReason = Literal["backpressure", "buffer", "stall"]


class PipeOwner(Protocol):
    """What a pipe needs from the connection it belongs to."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the connection runs on."""

    def source(self, direction: Direction) -> asyncio.Transport | None:
        """The transport the direction reads from."""

    def destination(self, direction: Direction) -> asyncio.Transport | None:
        """The transport the direction writes to."""

    def pipe_finished(self, direction: Direction) -> None:
        """Called once the direction has passed its EOF on."""

    def splice_worker(self) -> splice.SpliceWorker:
        """The thread that moves spliced bytes (made on first use).

        Raises:
            OSError, RuntimeError: no descriptors or thread for it: the ordinary path
                does the job.
        """

    def close(self, *, reset: bool = False) -> None:
        """Close the whole connection (FIN, or RST with reset=True)."""


class Pipe:
    """One direction of a connection: forwards chunks, through the fault plan's decisions."""

    def __init__(self, owner: PipeOwner, direction: Direction, stream: Stream) -> None:
        self.owner = owner
        self.direction = direction
        self.stream = stream
        self._sent = 0  # by the transports; the Splicer counts its own
        self._received = 0
        self.finished = False
        self._loop = owner.loop
        self._buffer: collections.deque[memoryview] = collections.deque()
        self._buffered = 0
        self._holds: set[HoldReason] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._started = False
        self._stopped = False
        self._fast = False
        self._dst: asyncio.Transport | None = None
        self._unsynced = 0  # bytes passed on the fast path that the plan has not seen
        self._splicer: splice.Splicer | None = None
        self._spliced_synced = 0  # the Splicer's sent total the plan has seen
        self._splice_later = False  # fast, but the destination had bytes buffered
        self._source_ended = False  # the Splicer read the source's EOF

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Both sockets are connected: start reading the source."""
        self._started = True
        self._dst = self.owner.destination(self.direction)
        src = self.owner.source(self.direction)
        if src is not None and not self._holds:
            src.resume_reading()
        self.step()

    def stop(self) -> None:
        """The connection is closing: drop buffered data and cancel the timer."""
        self._stopped = True
        self._fast = False
        self._splice_later = False
        self._buffer.clear()
        self._buffered = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        splicer, self._splicer = self._splicer, None
        if splicer is not None:
            splicer.close()
            self._received += splicer.received  # its totals stay counted
            self._sent += splicer.sent

    @property
    def received(self) -> int:
        """Bytes read from the source (before faults)."""
        splicer = self._splicer
        return self._received + (splicer.received if splicer is not None else 0)

    @property
    def sent(self) -> int:
        """Bytes written to the destination."""
        splicer = self._splicer
        return self._sent + (splicer.sent if splicer is not None else 0)

    @property
    def splicing(self) -> bool:
        """True while the bytes move in the kernel (os.splice), not through Python."""
        return self._splicer is not None and self._splicer.active

    def faults_changed(self) -> None:
        """The plan's faults changed: decide again at once."""
        if not self._stopped:
            self.step()

    # --- input from the source --------------------------------------------------------

    def feed(self, data: memoryview) -> None:
        """A chunk arrived from the source (a view valid only during this call)."""
        n = len(data)
        self._received += n
        if self._fast:
            # The hot path: no fault acts on this direction. The plan is told about
            # these bytes later, in one go (_sync), before it is asked anything.
            dst: asyncio.Transport = self._dst  # type: ignore[assignment]
            dst.write(data)
            self._sent += n
            self._unsynced += n
            if self._splice_later and not dst.get_write_buffer_size():
                self._splice()  # the destination caught up: move to the kernel path
            return
        if self._stopped:
            return
        self._sync()
        self._buffer.append(memoryview(bytes(data)))  # the view is reused after we return
        self._buffered += n
        if self._buffered >= _BUFFER_LIMIT:
            self.hold("buffer")
        self.stream.feed(n, self._loop.time())
        self.step()

    def feed_eof(self) -> None:
        """The source shut down its sending side (FIN)."""
        if self._stopped:
            return
        self._sync()
        self.stream.feed_eof(self._loop.time())
        self.step()

    # --- holds (pausing the source) ---------------------------------------------------

    def hold(self, reason: HoldReason) -> None:
        """Stop reading the source for ``reason`` (until released)."""
        if reason in self._holds:
            return
        self._unsplice()  # holds apply to the transport's reading
        if not self._holds:
            src = self.owner.source(self.direction)
            if src is not None and self._started and not src.is_closing():
                src.pause_reading()
        self._holds.add(reason)

    def release(self, reason: HoldReason) -> None:
        """Drop one reason to stop reading; reading resumes when none is left."""
        if reason not in self._holds:
            return
        self._holds.discard(reason)
        if not self._holds:
            src = self.owner.source(self.direction)
            if src is not None and self._started and not src.is_closing():
                src.resume_reading()

    # --- the executor -----------------------------------------------------------------

    def _take(self, n: int) -> list[memoryview]:
        """Remove the next n buffered bytes, as views (no copy)."""
        pieces: list[memoryview] = []
        while n > 0:
            head = self._buffer[0]
            if len(head) <= n:
                pieces.append(self._buffer.popleft())
                n -= len(head)
            else:
                pieces.append(head[:n])
                self._buffer[0] = head[n:]
                n = 0
        return pieces

    def _pass(self, n: int, deliver: bool) -> None:
        pieces = self._take(n)
        self._buffered -= n
        if deliver:
            dst = self.owner.destination(self.direction)
            if dst is not None and not dst.is_closing():
                # One write per decision: Coalesce and Latency may release several
                # chunks at once, and the receiver should get them in one segment.
                dst.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))
                self._sent += n
        if self._buffered < _BUFFER_LIMIT // 2:
            self.release("buffer")

    def _sync(self) -> None:
        """Tell the plan about the bytes the fast paths passed (offsets count every byte)."""
        if self._splicer is not None:
            spliced = self._splicer.sent
            self._unsynced += spliced - self._spliced_synced
            self._spliced_synced = spliced
        n = self._unsynced
        if n:
            self._unsynced = 0
            now = self._loop.time()
            self.stream.feed(n, now)
            self.stream.passed(n, now)

    def step(self) -> None:
        """Ask the plan what to do and do it, until the answer is to wait."""
        if self._stopped or not self._started:
            return
        if self.splicing:
            self._sync()
            if self.stream.idle:
                return  # still no fault on this direction: keep splicing
            self._unsplice()
        self._sync()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fast = False  # only an idle stream with nothing buffered takes the fast path
        stream = self.stream
        while True:
            now = self._loop.time()
            action = stream.next(now)
            if isinstance(action, Deliver):
                self._pass(action.n, deliver=True)
                stream.passed(action.n, now)
                continue
            if isinstance(action, Discard):
                self._pass(action.n, deliver=False)
                stream.passed(action.n, now)
                continue
            if isinstance(action, Stalled):
                self.hold("stall")
                return
            self.release("stall")
            if isinstance(action, Read):
                self._fast = stream.idle and not self._buffer and self._dst is not None
                if self._fast:
                    self._splice()
                if action.until is not None:
                    self._timer = self._loop.call_at(action.until, self.step)
                return
            if isinstance(action, Wait):
                self._timer = self._loop.call_at(action.until, self.step)
                return
            if isinstance(action, Close):
                self._close(action)
                return
            raise AssertionError(f"unexpected action for a stream: {action!r}")

    # --- the kernel path (os.splice) ----------------------------------------------------

    def _splice(self) -> None:
        """Move this direction's bytes in the kernel from now on, if it can be done."""
        self._splice_later = False
        if not splice.AVAILABLE or self._holds or self._source_ended or self.splicing:
            return
        src, dst = self.owner.source(self.direction), self._dst
        if src is None or dst is None or src.is_closing() or dst.is_closing():
            return
        if dst.get_write_buffer_size():
            self._splice_later = True  # bytes written earlier must go first
            return
        splicer = self._splicer
        if splicer is None:
            src_sock, dst_sock = src.get_extra_info("socket"), dst.get_extra_info("socket")
            if src_sock is None or dst_sock is None:
                return
            try:
                worker = self.owner.splice_worker()
                splicer = splice.Splicer.open(worker, self, src_sock.fileno(), dst_sock.fileno())
            except (OSError, RuntimeError):
                return  # out of descriptors: the ordinary path does the job
            self._splicer = splicer
        if splicer.failed:
            return
        src.pause_reading()
        splicer.start()

    def _unsplice(self) -> None:
        """Back to the transports: what the kernel pipe holds is written first."""
        splicer = self._splicer
        if splicer is None or not splicer.active:
            return
        data = splicer.stop()
        if data:
            dst = self._dst
            if dst is not None and not dst.is_closing():
                dst.write(data)
                self._sent += len(data)
                self._unsynced += len(data)
        src = self.owner.source(self.direction)
        if src is not None and not self._holds and not src.is_closing():
            src.resume_reading()

    def spliced_eof(self) -> None:
        """The Splicer read the source's EOF (``splice.SplicerOwner``)."""
        self._source_ended = True
        self.feed_eof()

    def splice_failed(self, exc: OSError) -> None:
        """A splice call failed (``splice.SplicerOwner``).

        The socket reported its error to the splice call, not to its transport, so the
        connection ends here as ``Connection.side_lost`` would end it: a reset passed on
        as a reset, any other error as a close. Splice refusing the descriptors is no
        error: the transports take over.
        """
        if self._stopped:
            return  # the connection closed while the notice was on its way
        if exc.errno in splice.UNSUPPORTED:
            self._unsplice()
        else:
            self.owner.close(reset=isinstance(exc, ConnectionResetError))

    def _close(self, action: Close) -> None:
        self._stopped = True
        self._fast = False
        if action.reset:
            self.owner.close(reset=True)
            return
        if action.half:
            # Drop what is held, and keep reading the source (its bytes are dropped
            # in feed): a held source would feel back-pressure the FIN does not give.
            self._buffer.clear()
            self._buffered = 0
            self._holds.clear()
            src = self.owner.source(self.direction)
            if src is not None and not src.is_closing():
                src.resume_reading()
        if action.half or (self.stream.eof and self.stream.pending == 0):
            # The source ended and everything passed, or a HalfClose ends the
            # direction here: pass an EOF on (a half-close).
            dst = self.owner.destination(self.direction)
            if dst is not None and dst.can_write_eof() and not dst.is_closing():
                try:
                    dst.write_eof()
                except OSError:
                    # asyncio calls shutdown(SHUT_WR) at once when nothing is buffered,
                    # and does not catch its error: ENOTCONN when the destination peer
                    # reset the connection (a closed client answers our data with RST)
                    # before the transport saw it. The peer is gone: pass the reset on.
                    self.owner.close(reset=True)
                    return
            self.finished = True
            self.owner.pipe_finished(self.direction)
            return
        self.owner.close(reset=False)  # a fault cut the connection (FIN both ways)
