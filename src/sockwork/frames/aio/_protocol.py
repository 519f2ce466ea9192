"""The asyncio protocol under a MessageStream: feeds the decoder, paces reading.

:class:`FrameProtocol` is an ``asyncio.BufferedProtocol`` whose ``get_buffer`` is the
decoder's own buffer, so bytes are received straight into it (no ``readexactly``).
It holds the connection state the stream waits on (a reader's future, drain waiters,
``lost``) and decides when reading pauses; sending and the message API are the
stream's (``_stream.py``).
"""

# Rules:
# - Reading is paused when more than _READ_HIGH bytes sit unread in the decoder and is
#   resumed when ``recv()`` runs out of complete messages, so a fast peer cannot grow
#   our buffer without bound. The decoder's memory follows the bytes that arrive (a
#   header alone commits nothing), and a server's connections share a MemoryBudget
#   (``max_buffered``): a connection whose reservation does not fit stops reading until
#   memory frees. Reading is paused while either reason holds (``update_reading``).
# - The reader is woken only when a message may be complete (``decoder.missing`` is 0),
#   at EOF and when the connection is lost.
# - connection_lost drops a pending direct write (``tail``) before the transport closes
#   the socket, gives back the budget, and feeds EOF so buffered messages still come out.

from __future__ import annotations

import asyncio
import socket
from typing import Final, cast

from sockwork.frames._queue import MemoryBudget
from sockwork.frames.aio._direct import Tail
from sockwork.frames.codec import FrameDecoder

__all__ = ["FrameProtocol"]

_READ_HIGH: Final = 4 * 1024 * 1024  # pause reading when this many unread bytes are buffered
_WRITE_HIGH: Final = 1024 * 1024  # send() waits while more than this is queued in the transport


class FrameProtocol(asyncio.BufferedProtocol):
    """Feeds the decoder and signals the stream; no policy lives here."""

    def __init__(
        self,
        decoder: FrameDecoder,
        loop: asyncio.AbstractEventLoop,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.decoder = decoder
        self.loop = loop
        self.budget = budget
        self.charged = 0  # this connection's share of the budget
        self.budget_paused = False  # waiting for the budget to have room
        self.reading_paused = False  # the transport's actual state
        self.transport: asyncio.Transport | None = None
        self.read_waiter: asyncio.Future[None] | None = None
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.write_paused = False
        self.read_paused = False
        self.lost = False
        self.lost_error: Exception | None = None
        self.closed_future: asyncio.Future[None] = loop.create_future()
        self.tail: Tail | None = None  # the stream's direct write in progress

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_WRITE_HIGH)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        decoder = self.decoder
        decoder.buffer_updated(nbytes)
        if self.budget is not None:
            self.account()
        if decoder.missing:
            return  # the pending frame is still incomplete: waking the reader is wasted work
        if decoder.buffered > _READ_HIGH and not self.read_paused:
            self.read_paused = True
            self.update_reading()
        self.wake_reader()

    def update_reading(self) -> None:
        """Pause or resume the transport: paused while either limit holds."""
        paused = self.read_paused or self.budget_paused
        transport = self.transport
        if paused is self.reading_paused or transport is None or self.lost:
            return
        self.reading_paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def account(self) -> None:
        """Bring this connection's budget charge up to date; stop reading if it does not fit."""
        budget = self.budget
        assert budget is not None
        decoder = self.decoder
        self.charged, fits = budget.charge(
            self.charged,
            waiting=self.budget_paused,
            commitment=decoder.commitment,
            allocated=decoder.capacity,
        )
        if not fits and not self.budget_paused:
            self.budget_paused = True
            budget.wait(self._retry_budget)
            self.update_reading()

    def _retry_budget(self) -> bool:
        budget = self.budget
        assert budget is not None
        if self.lost:
            return True  # gone: leave the queue
        decoder = self.decoder
        self.charged, fits = budget.charge(
            self.charged, waiting=False, commitment=decoder.commitment, allocated=decoder.capacity
        )
        if fits:
            self.budget_paused = False
            self.update_reading()
        return fits

    def eof_received(self) -> bool:
        self.decoder.receive_eof()
        self.wake_reader()
        return True  # keep the transport open: we may still send (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_error = exc
        if self.tail is not None:  # before the transport closes the socket
            self.tail.drop()
            self.tail = None
        budget = self.budget
        if budget is not None:
            if self.budget_paused:
                self.budget_paused = False
                budget.forget(self._retry_budget)
            budget.release(self.charged)
            self.charged = 0
        if not self.decoder.eof:
            self.decoder.receive_eof()
        self.wake_reader()
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.drain_waiters.clear()
        if not self.closed_future.done():
            self.closed_future.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.drain_waiters.clear()

    def wake_reader(self) -> None:
        """Wake the task waiting in ``MessageStream.recv()``, if any."""
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
