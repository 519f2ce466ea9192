"""Queue and memory accounting for the front ends (sans-IO: no sockets, threads or clocks).

- :class:`SendQueue`: framed bytes waiting to be sent, with per-message accounting
  (append, gather, consume, room), as the background Endpoint's outbox.
- :class:`ReceiveQueue`: decoded messages waiting to be taken, with high/low water
  marks that call ``pause``/``resume`` (websockets' ``sync.messages.Assembler`` does the
  same), as the Endpoint's inbox.
- :class:`MemoryBudget`: bounds the receive memory of all the connections of one
  server: each connection reserves what its decoder holds or has committed to (a large
  frame counts at its announced size from its header on) and stops reading while its
  reservation does not fit.

None of them locks: the front end that owns one guards it.
"""

# Rules:
# - A connection's charge is ``max(0, decoder.commitment - base)``: the first ``base``
#   bytes of each connection (its 64 KiB receive buffer) are free, so idle connections
#   never exhaust the budget and a small message can always be read.
# - Memory already allocated is always charged (it exists); what a large frame will still
#   allocate is charged only if it fits. A connection whose charge does not fit waits,
#   in FIFO order, and reads nothing meanwhile. A frame once reserved is never paused by
#   the budget, so reserved frames always finish and give their memory back: waiters
#   cannot deadlock each other.
# - Waiters are woken in order, and the first that still does not fit stops the wake-up
#   (no starvation of a large frame by a stream of small ones).

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeVar

__all__ = [
    "COPY_LIMIT",
    "DEFAULT_MAX_BUFFERED",
    "MemoryBudget",
    "ReceiveQueue",
    "SendQueue",
    "frame_buffers",
]

M = TypeVar("M")
Buffer = bytes | memoryview

COPY_LIMIT: Final = 16 * 1024  # smaller payloads are joined to their header (one buffer)
_SEND_BATCH: Final = 1024 * 1024  # bytes gathered for one send call
_MAX_BUFFERS: Final = 64  # buffers per sendmsg call

DEFAULT_MAX_BUFFERED: Final = 64 * 1024 * 1024
"""Default bound on the receive memory of all of a server's connections (64 MiB)."""


class MemoryBudget:
    """Bytes of receive memory shared by the connections of one server.

    Args:
        limit: bytes that the connections' charges may add up to.
        base: bytes of each connection that are not charged (its small receive buffer).
    """

    def __init__(self, limit: int, *, base: int) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"max_buffered must be an int >= 1 (bytes), not {limit!r}")
        self.limit: Final = limit
        self.base: Final = base
        self.used = 0
        # Waiting connections: a callable that retries and returns True once it fits.
        self._waiters: deque[Callable[[], bool]] = deque()
        self._waking = False

    def __repr__(self) -> str:
        return f"MemoryBudget(used={self.used}, limit={self.limit}, waiting={len(self._waiters)})"

    @property
    def waiting(self) -> int:
        """Connections that stopped reading until their reservation fits."""
        return len(self._waiters)

    def charge(
        self, held: int, *, waiting: bool, commitment: int, allocated: int
    ) -> tuple[int, bool]:
        """Move one connection's charge from ``held`` towards its decoder's needs.

        Args:
            held: what the connection is charged now.
            waiting: the connection already waits its turn (nothing new is reserved).
            commitment: the decoder's ``commitment`` (allocated + still to allocate).
            allocated: the decoder's ``capacity`` (allocated now).

        Returns:
            ``(new_charge, fits)``: when ``fits`` is False the connection must stop
            reading and :meth:`wait`.
        """
        target = commitment - self.base if commitment > self.base else 0
        if target <= held:
            if target < held:
                self.used -= held - target
                self._wake()
            return target, True
        if not waiting and self.used - held + target <= self.limit:
            self.used += target - held
            return target, True
        # What exists is charged anyway; the rest waits until it fits.
        floor = allocated - self.base if allocated > self.base else 0
        if floor > held:
            self.used += floor - held
            held = floor
        return held, False

    def release(self, held: int) -> None:
        """Give back a connection's whole charge (it closed)."""
        if held:
            self.used -= held
            self._wake()

    def wait(self, retry: Callable[[], bool]) -> None:
        """Queue ``retry``; it is called when memory frees, and returns True once it fits."""
        self._waiters.append(retry)

    def forget(self, retry: Callable[[], bool]) -> None:
        """Drop a waiter whose connection is gone."""
        try:
            self._waiters.remove(retry)
        except ValueError:
            pass
        self._wake()

    def _wake(self) -> None:
        if self._waking:  # a waiter's retry gave memory back: the running loop goes on
            return
        self._waking = True
        try:
            waiters = self._waiters
            while waiters and self.used < self.limit:
                if not waiters[0]():
                    return
                waiters.popleft()
        finally:
            self._waking = False


def frame_buffers(header: bytes, payload: bytes | bytearray | memoryview) -> tuple[Buffer, ...]:
    """Return a frame as buffers to queue: one joined buffer when small, else two.

    A payload of COPY_LIMIT bytes or more stays a separate buffer (sent without a copy
    by ``sendmsg``); a mutable one is copied, because the caller may change it after the
    send call returned.
    """
    if len(payload) < COPY_LIMIT:
        return (header + payload if isinstance(payload, bytes) else header + bytes(payload),)
    return (header, payload if isinstance(payload, bytes) else bytes(payload))


class SendQueue:
    """Framed bytes waiting to be sent, in order, counting whole messages.

    Args:
        limit: bytes the queue holds before :meth:`room` says no (one message or batch
            larger than this is still accepted into an empty queue).
    """

    def __init__(self, limit: int) -> None:
        self.limit: Final = limit
        self.size = 0
        """Bytes waiting to be sent (an attribute: read on every send)."""
        self._items: deque[Buffer] = deque()
        self._offset = 0  # bytes of _items[0] already sent
        self._queued = 0  # bytes ever queued
        self._sent = 0  # bytes ever consumed
        self._ends: deque[int] = deque()  # _queued at the end of each message not yet sent

    def __bool__(self) -> bool:
        """True while bytes wait to be sent."""
        return bool(self._items)

    @property
    def messages(self) -> int:
        """Messages not yet wholly sent (after :meth:`clear`: the messages never sent)."""
        return len(self._ends)

    def room(self, size: int) -> bool:
        """Tell whether ``size`` more bytes may be queued now."""
        return not self.size or self.size + size <= self.limit

    def push(self, buffers: Sequence[Buffer], size: int) -> bool:
        """Queue one message's buffers (``size`` bytes); return True if the queue was empty."""
        items = self._items
        was_empty = not items
        items.extend(buffers)
        self._queued += size
        self.size += size
        self._ends.append(self._queued)
        return was_empty

    def append(self, buffers: Iterable[Buffer], ends: Sequence[int]) -> bool:
        """Queue several messages' buffers; return True if the queue was empty.

        ``ends`` are the offsets just past each message, counted from the first buffer
        (as ``FrameEncoder.send_batch`` returns them).
        """
        items = self._items
        was_empty = not items
        items.extend(buffers)
        base = self._queued
        self._ends.extend(map(base.__add__, ends))
        self._queued = base + ends[-1]
        self.size += ends[-1]
        return was_empty

    def gather(self) -> tuple[list[Buffer], int]:
        """Return the next buffers to send (small ones joined) and their total size."""
        buffers: list[Buffer] = []
        small: list[Buffer] = []
        total = 0
        offset = self._offset
        for item in self._items:
            if offset:
                item = memoryview(item)[offset:]
                offset = 0
            size = len(item)
            total += size
            if size < COPY_LIMIT:
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

    def consume(self, count: int) -> None:
        """Record that the first ``count`` waiting bytes were sent."""
        self._sent += count
        self.size -= count
        items = self._items
        offset = self._offset + count
        while items:
            length = len(items[0])
            if offset < length:
                break
            offset -= length
            items.popleft()
        self._offset = offset
        ends = self._ends
        sent = self._sent
        while ends and ends[0] <= sent:
            ends.popleft()

    def clear(self) -> None:
        """Drop every waiting byte (the connection ended); :attr:`messages` keeps counting them."""
        self._items.clear()
        self._offset = 0
        self._sent = self._queued
        self.size = 0


class ReceiveQueue(deque[M]):
    """Messages waiting to be taken (a deque), with flow-control water marks.

    Args:
        high: when the queued messages reach this many bytes, ``pause()`` is called
            (stop reading the socket).
        low: when a :meth:`get` brings them down to this many bytes, ``resume()`` is
            called.
        pause, resume: the callbacks.

    A message's size is its ``len()``. Being a deque, ``len()`` and truth cost no Python
    call (they run on every receive).
    """

    def __init__(
        self, high: int, low: int, pause: Callable[[], None], resume: Callable[[], None]
    ) -> None:
        super().__init__()
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high, not low={low}, high={high}")
        self.high: Final = high
        self.low: Final = low
        self._pause = pause
        self._resume = resume
        self.size = 0  # bytes queued
        self.paused = False

    def put(self, messages: Sequence[M], size: int) -> None:
        """Queue messages (``size`` bytes in all); pause when the high mark is reached."""
        self.extend(messages)
        self.size += size
        if self.size >= self.high and not self.paused:
            self.paused = True
            self._pause()

    def get(self) -> M:
        """Take the oldest message; resume when the low mark is reached.

        Raises:
            IndexError: the queue is empty.
        """
        message = self.popleft()
        self.size -= len(message)  # type: ignore[arg-type]
        if self.paused and self.size <= self.low:
            self.paused = False
            self._resume()
        return message

    def take_all(self) -> list[M]:
        """Take every queued message at once; their bytes stay counted until :meth:`release`.

        A reader that hands messages out from a batch of its own keeps the queue's bound
        this way: what it holds counts against ``high`` until it has handed it out.
        """
        batch = list(self)
        deque.clear(self)
        return batch

    def release(self, size: int) -> None:
        """Stop counting ``size`` bytes taken by :meth:`take_all`; resume at the low mark."""
        self.size -= size
        if self.paused and self.size <= self.low:
            self.paused = False
            self._resume()

    def clear(self) -> None:
        """Drop every queued message (no callback is called)."""
        super().clear()
        self.size = 0
