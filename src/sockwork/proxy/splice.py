"""Zero-copy forwarding of one direction with ``os.splice`` (Linux): socket -> pipe -> socket.

# Rules:
# - A Pipe splices only while no fault acts on its direction, nothing of the direction
#   is held in user space (its own buffer, the destination transport's write buffer)
#   and nothing holds its source. Otherwise it forwards through the transports.
# - The asyncio transports own the sockets; a Splicer acts on dup()ed descriptors, so
#   the loop's public add_reader/add_writer apply (a transport's own descriptor is off
#   limits) on any loop that has them. The source transport's reading is paused while
#   the Splicer reads.
# - One chunk at a time: the kernel pipe is filled from the source only when empty, and
#   emptied into the destination before the source is read again. When the destination
#   is full, the source is not read (back-pressure) until it is writable.
# - Bytes in the kernel pipe were read from the source, so they count as passed:
#   ``stop()`` hands them back, and the Pipe writes them to the destination transport
#   before anything else. No byte is lost or reordered when a fault is added.
# - An error of a splice call stops splicing for good (``failed``) and is handed to the
#   owner with the exception: a socket error is reported once (the next call on the
#   socket no longer sees the reset), so the owner must act on it as the transport would
#   have (a reset is passed on as a reset). Errors meaning "splice cannot do this here"
#   (EINVAL, EOPNOTSUPP, ENOSYS) are not connection errors: the owner falls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import sys
from typing import Protocol

__all__ = ["AVAILABLE", "UNSUPPORTED", "Splicer", "SplicerOwner"]

#: True where ``os.splice`` exists (Linux, Python 3.10+). Tests set it False to force the
#: ordinary path.
AVAILABLE = sys.platform == "linux" and hasattr(os, "splice")

_CHUNK = 1 << 20  # the most one splice call asks for
_PIPE_SIZE = 256 * 1024  # kernel pipe capacity asked for (the default is 64 KiB)
_BATCH = 16  # chunks moved per readiness event before letting other callbacks run


class SplicerOwner(Protocol):
    """What a Splicer tells the Pipe it works for."""

    def spliced(self, received: int, sent: int) -> None:
        """``received`` bytes were read from the source, ``sent`` written to the destination."""

    def spliced_eof(self) -> None:
        """The source ended (FIN); the kernel pipe is empty."""

    def splice_failed(self, exc: OSError) -> None:
        """A splice call failed with ``exc``: act as the transports would, or fall back."""


class Splicer:
    """Moves one direction's bytes from a source socket to a destination socket in the kernel.

    Made by :meth:`open`; ``start()`` and ``stop()`` may alternate; ``close()`` frees the
    descriptors.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        owner: SplicerOwner,
        src: int,
        dst: int,
        pipe: tuple[int, int],
    ) -> None:
        self._loop = loop
        self._owner = owner
        self._src = src
        self._dst = dst
        self._r, self._w = pipe
        self._pending = 0  # bytes in the kernel pipe
        # A read shorter than this emptied the socket: wait for the next readiness event
        # rather than pay a failing call (as asyncio reads once per event).
        self._full_read = min(_CHUNK, fcntl.fcntl(self._w, fcntl.F_GETPIPE_SZ))
        self._reading = False
        self._waiting = False  # for the destination to become writable
        self.active = False
        self.eof = False
        self.failed = False

    @classmethod
    def open(
        cls, loop: asyncio.AbstractEventLoop, owner: SplicerOwner, src: int, dst: int
    ) -> Splicer:
        """Duplicate the two sockets' descriptors and make the kernel pipe.

        Raises:
            OSError: out of descriptors (EMFILE...): the caller keeps the ordinary path.
        """
        fds: list[int] = []
        try:
            fds.append(os.dup(src))
            fds.append(os.dup(dst))
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            fds += [r, w]
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        with contextlib.suppress(OSError):  # a smaller pipe only means more calls
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        return cls(loop, owner, fds[0], fds[1], (r, w))

    def start(self) -> None:
        """Start moving bytes (the source transport must not be reading)."""
        if self.active or self.eof or self.failed:
            return
        self.active = True
        if self._pending:
            self._wait_writable()
        else:
            self._read()

    def stop(self) -> bytes:
        """Stop moving bytes; return those still in the kernel pipe (read, so passed on)."""
        if not self.active:
            return b""
        self.active = False
        self._unread()
        self._unwait()
        return self._take_pending()

    def close(self) -> None:
        """Stop and free the descriptors; bytes in the kernel pipe are dropped."""
        self.active = False
        self._unread()
        self._unwait()
        for fd in (self._src, self._dst, self._r, self._w):
            if fd >= 0:
                os.close(fd)
        self._src = self._dst = self._r = self._w = -1
        self._pending = 0

    # --- the loop's callbacks ---------------------------------------------------------

    def _readable(self) -> None:
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        for _ in range(_BATCH):
            try:
                n = os.splice(self._src, self._w, _CHUNK, flags=flags)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(exc)
                return
            if n == 0:
                self.eof = True
                self.active = False
                self._unread()
                self._owner.spliced_eof()
                return
            self._pending = n
            if not self._drain(received=n) or n < self._full_read:
                return

    def _writable(self) -> None:
        if self._drain(received=0):
            self._unwait()
            if self.active:
                self._read()

    def _drain(self, *, received: int) -> bool:
        """Empty the kernel pipe into the destination; False if it is full (or failed)."""
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        sent = 0
        try:
            while self._pending:
                m = os.splice(self._r, self._dst, self._pending, flags=flags)
                self._pending -= m
                sent += m
        except (BlockingIOError, InterruptedError):
            self._owner.spliced(received, sent)
            self._unread()
            self._wait_writable()
            return False
        except OSError as exc:
            self._owner.spliced(received, sent)
            self._fail(exc)
            return False
        self._owner.spliced(received, sent)
        return True

    # --- internals --------------------------------------------------------------------

    def _read(self) -> None:
        if not self._reading:
            self._reading = True
            self._loop.add_reader(self._src, self._readable)

    def _unread(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._src)

    def _wait_writable(self) -> None:
        if not self._waiting:
            self._waiting = True
            self._loop.add_writer(self._dst, self._writable)

    def _unwait(self) -> None:
        if self._waiting:
            self._waiting = False
            self._loop.remove_writer(self._dst)

    def _take_pending(self) -> bytes:
        chunks = []
        while self._pending:
            try:
                data = os.read(self._r, self._pending)
            except (BlockingIOError, InterruptedError):
                break  # cannot happen: the bytes are in the pipe
            if not data:
                break
            chunks.append(data)
            self._pending -= len(data)
        self._pending = 0
        return b"".join(chunks)

    def _fail(self, exc: OSError) -> None:
        self.failed = True
        self._owner.splice_failed(exc)


#: Errors by which splice says it cannot work on these descriptors (not a broken socket).
UNSUPPORTED = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS})
