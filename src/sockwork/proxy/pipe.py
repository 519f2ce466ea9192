"""One direction of a proxied connection: the fast path, and the fault executor.

# Rules:
# - With no fault installed and nothing queued, a chunk goes straight from the source's
#   data_received into the destination transport (no copy, no task).
# - As soon as a fault is installed, chunks go through a bounded queue to a pump task
#   that runs the fault plan and executes its actions; order is always kept, because the
#   fast path is only taken again once the queue is empty and the pump idle.
# - The source is paused while any "hold" is active: destination backpressure, a full
#   queue, or a stall ordered by the plan. Released holds resume reading.
"""

from __future__ import annotations

import asyncio
import collections
import random
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from sockwork.proxy.proxy import Direction

__all__ = ["Pipe", "PipeOwner"]

# Bytes queued for the fault executor before the source is paused.
_QUEUE_LIMIT = 256 * 1024

_EOF = b""


class PipeOwner(Protocol):
    """What a pipe needs from the connection it belongs to."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the connection runs on."""

    def source(self, direction: Direction) -> asyncio.Transport | None:
        """The transport the direction reads from."""

    def destination(self, direction: Direction) -> asyncio.Transport | None:
        """The transport the direction writes to."""

    def count_received(self, direction: Direction, n: int) -> None:
        """Count bytes read from the source."""

    def count_sent(self, direction: Direction, n: int) -> None:
        """Count bytes written to the destination."""

    def fault_fired(self, name: str) -> None:
        """Count a firing of a fault."""

    def pipe_finished(self, direction: Direction) -> None:
        """Called once the direction has passed its EOF on."""

    def close(self, *, reset: bool = False) -> None:
        """Close the whole connection (FIN, or RST with reset=True)."""


HoldReason = Literal["backpressure", "queue", "stall", "connect"]


class Pipe:
    """One direction of a connection: forwards chunks, through faults when there are any."""

    def __init__(self, owner: PipeOwner, direction: Direction, *, rng: random.Random) -> None:
        self.owner = owner
        self.direction = direction
        self.rng = rng
        self.sent = 0
        self.received = 0
        self.finished = False
        self._faults: dict[str, tuple[object, int]] = {}
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._holds: set[HoldReason] = set()
        self._pump: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._started = False
        self._stopped = False
        self._eof_seen = False

    # --- fault table ------------------------------------------------------------------

    def install(self, name: str, fault: object, generation: int) -> None:
        """Install (or replace) a fault on this direction."""
        self._faults[name] = (fault, generation)
        self._faults_changed()

    def uninstall(self, name: str) -> None:
        """Remove a fault from this direction, if it is installed."""
        if self._faults.pop(name, None) is not None:
            self._faults_changed()

    def _faults_changed(self) -> None:
        if self._started and not self._stopped:
            self._ensure_pump()
            if self._wake is not None:
                self._wake.set()

    @property
    def _slow(self) -> bool:
        return bool(self._faults) or bool(self._queue) or self._pump is not None

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Both sockets are connected: start reading the source."""
        self._started = True
        if self._faults:
            self._ensure_pump()
        src = self.owner.source(self.direction)
        if src is not None and not self._holds:
            src.resume_reading()

    def stop(self) -> None:
        """The connection is closing: drop queued data and stop the pump."""
        self._stopped = True
        self._queue.clear()
        self._queued = 0
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None

    # --- input from the source --------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """A chunk arrived from the source."""
        n = len(data)
        self.received += n
        self.owner.count_received(self.direction, n)
        if self._stopped:
            return
        if self._slow:
            self._enqueue(data)
            return
        dst = self.owner.destination(self.direction)
        if dst is not None:
            dst.write(data)
            self.sent += n
            self.owner.count_sent(self.direction, n)

    def feed_eof(self) -> None:
        """The source shut down its sending side (FIN)."""
        self._eof_seen = True
        if self._stopped:
            return
        if self._slow:
            self._enqueue(_EOF)
            return
        self._pass_eof()

    def _pass_eof(self) -> None:
        dst = self.owner.destination(self.direction)
        if dst is not None and dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
        self.finished = True
        self.owner.pipe_finished(self.direction)

    # --- holds (pausing the source) ---------------------------------------------------

    def hold(self, reason: HoldReason) -> None:
        """Stop reading the source for ``reason`` (until released)."""
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

    # --- the slow path: queue + pump --------------------------------------------------

    def _enqueue(self, data: bytes) -> None:
        self._queue.append(data)
        self._queued += len(data)
        if self._queued >= _QUEUE_LIMIT:
            self.hold("queue")
        self._ensure_pump()
        if self._wake is not None:
            self._wake.set()

    def _ensure_pump(self) -> None:
        if self._pump is None and not self._stopped:
            self._wake = asyncio.Event()
            self._pump = self.owner.loop.create_task(self._run())

    def _dequeue(self) -> bytes:
        data = self._queue.popleft()
        self._queued -= len(data)
        if self._queued < _QUEUE_LIMIT // 2:
            self.release("queue")
        return data

    def _deliver(self, data: bytes | memoryview) -> None:
        dst = self.owner.destination(self.direction)
        if dst is not None and not dst.is_closing():
            dst.write(data)
            self.sent += len(data)
            self.owner.count_sent(self.direction, len(data))

    async def _run(self) -> None:
        assert self._wake is not None
        try:
            while not self._stopped:
                if not self._queue:
                    if not self._faults:
                        break  # back to the fast path
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                data = self._dequeue()
                if data is _EOF or not data:
                    self._pass_eof()
                    continue
                await self._execute(data)
        finally:
            if self._pump is asyncio.current_task():
                self._pump = None

    async def _execute(self, data: bytes) -> None:
        # TODO: run the sockwork.faults plan here once it lands; until then, forward.
        self._deliver(data)
