"""Zero-copy forwarding of one direction with ``os.splice`` (Linux), off the event loop.

# Rules:
# - A Pipe splices only while no fault acts on its direction, nothing of the direction
#   is held in user space (its own buffer, the destination transport's write buffer)
#   and nothing holds its source. Otherwise it forwards through the transports.
# - Why a thread: a chunk forwarded by the asyncio loop costs a loop iteration and
#   selector calls per direction (about 20-40 µs of Python on this kind of machine, the
#   bulk of the round trip the proxy added). One SpliceWorker thread per proxy waits in
#   its own epoll and moves each chunk with two splice calls, so a spliced chunk never
#   enters the event loop; the loop only starts and stops Splicers.
# - The worker's Python is the relay's cost per chunk beyond the kernel's (an epoll wait
#   and two splices): ``_run`` and ``pump`` allocate nothing per wake-up and run as few
#   instructions as they can (about 165 per chunk, down from 210; a bare two-splice loop
#   runs about 40). Measure any change there (benchmarks/proxy.py, relay CPU us/RTT).
# - The asyncio transports own the sockets; a Splicer acts on dup()ed descriptors. A dup
#   shares the socket's O_NONBLOCK, so every splice call is non-blocking; the worker
#   waits in epoll. The source transport's reading is paused while the Splicer reads,
#   and nothing else writes to the destination meanwhile (the Pipe's rule above).
# - Edge-triggered (EPOLLET): while active, a Splicer's source (EPOLLIN) and destination
#   (EPOLLOUT) are registered. The worker moves bytes until a call would block: with the
#   kernel pipe empty it reads the source, otherwise it writes the destination. It stops
#   only at EAGAIN, so the next edge always comes (registering a ready descriptor also
#   reports it). One exception saves a failing call per chunk (a third of the calls of
#   a round trip): a read that returned fewer bytes than the kernel pipe has slots (each
#   holds at least a byte) did not stop for want of room, so it emptied the socket, and
#   any byte arriving later raises a new edge. A FIN raises no edge once it has arrived,
#   so after the source reported EPOLLRDHUP/HUP/ERR every read goes on to EAGAIN or EOF.
#   A source edge taken while the destination was full is remembered (``_drained`` is
#   cleared by every EPOLLIN), so the read it calls for happens once the pipe is empty.
#   A Splicer that moved _BATCH chunks without blocking waits behind the others'
#   events, so a bulk transfer cannot starve a round trip.
# - Hand-over: every splice call runs under the Splicer's lock, after checking
#   ``active``. ``stop()`` (loop thread) takes the lock, clears ``active``, unregisters,
#   and reads back the bytes still in the kernel pipe: they were read from the source,
#   so they count as passed, and the Pipe writes them to the destination before anything
#   else. No byte is lost or reordered when a fault is added.
# - ``received`` and ``sent`` are running totals written by the worker under the lock;
#   the loop reads them (an int is read atomically).
# - The source's EOF and splice errors reach the owner on the loop thread
#   (call_soon_threadsafe). An error stops splicing for good (``failed``): a socket error
#   is reported once (the next call on the socket no longer sees the reset), so the owner
#   must act on it as the transport would have (a reset is passed on as a reset). Errors
#   meaning "splice cannot do this here" (EINVAL, EOPNOTSUPP, ENOSYS) are not connection
#   errors: the owner falls back to the transports.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import os
import select
import sys
import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["AVAILABLE", "UNSUPPORTED", "SpliceWorker", "Splicer", "SplicerOwner"]

#: True where ``os.splice`` exists (Linux, Python 3.10+). Tests set it False to force the
#: ordinary path.
AVAILABLE = sys.platform == "linux" and hasattr(os, "splice")

#: Errors by which splice says it cannot work on these descriptors (not a broken socket).
UNSUPPORTED = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS})

_CHUNK = 1 << 20  # the most one splice call asks for
# Kernel pipe capacity asked for: the most an unprivileged process may set by default
# (/proc/sys/fs/pipe-max-size); fewer, larger moves per wake-up. Smaller sizes are
# tried when refused (EPERM past the user's pipe quota).
_PIPE_SIZES = (1 << 20, 256 * 1024)
_BATCH = 16  # chunks one Splicer moves before the others' events are served
_MAX_EVENTS = 64  # events taken from epoll per wake-up
_JOIN_TIMEOUT = 5.0

if AVAILABLE:
    _FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    _IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
    _ENDING = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
    _READABLE = select.EPOLLIN
    _OUT = select.EPOLLOUT | select.EPOLLET


class SplicerOwner(Protocol):
    """What a Splicer tells the Pipe it works for (always on the loop thread)."""

    def spliced_eof(self) -> None:
        """The source ended (FIN); the kernel pipe is empty."""

    def splice_failed(self, exc: OSError) -> None:
        """A splice call failed with ``exc``: act as the transports would, or fall back."""


class SpliceWorker:
    """The thread that moves the bytes of a proxy's active Splicers (one per proxy).

    Args:
        loop: the proxy's loop, where owners are told of EOFs and errors.
        name: the thread's name.

    Raises:
        OSError: out of descriptors for its epoll and wake-up pipe.
        RuntimeError: the thread could not be started.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._splicers: dict[int, Splicer] = {}  # registered descriptor -> its Splicer
        self._again: collections.deque[Splicer] = collections.deque()  # worker thread only
        self._closing = False
        self._released = False
        self._release_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        try:
            self._thread.start()
        except BaseException:  # RuntimeError: can't start new thread
            self._closing = True
            self._release()
            raise

    def watch(self, splicer: Splicer, fd: int, events: int) -> None:
        """Report ``events`` of ``fd`` to ``splicer`` (any thread)."""
        self._splicers[fd] = splicer
        self._epoll.register(fd, events)

    def unwatch(self, fd: int) -> None:
        """Stop reporting ``fd`` (any thread; an event already taken is ignored)."""
        self._splicers.pop(fd, None)
        with contextlib.suppress(OSError, ValueError):  # ValueError: closed already
            self._epoll.unregister(fd)

    def again(self, splicer: Splicer) -> None:
        """``splicer`` used its batch without blocking: resume it after the others."""
        self._again.append(splicer)

    def close(self) -> None:
        """Stop the thread and free its descriptors (idempotent; Splicers closed first)."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT)
        self._release()

    def _release(self) -> None:
        """Close the epoll and the wake-up pipe, once, and never under a running thread.

        After a join that timed out (a loaded machine) the thread is still in its loop:
        closing its epoll then let the number be reused by a descriptor opened next,
        and the thread could wait on (or pump) that one for ever, outliving its proxy
        (seen: one splice thread alive across later tests). It frees them itself then.
        """
        with self._release_lock:
            if self._released:
                return
            current = threading.current_thread()
            if self._thread is not current and self._thread.is_alive():
                return  # the thread calls _release() as it ends
            self._released = True
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._closing:
                self._release()

    def _loop(self) -> None:
        # The hot loop, one pass per wake-up: it allocates nothing of its own (no
        # comprehension, no list) and binds what it can once; each Python instruction here
        # costs every forwarded chunk (the module rules). maxevents bounds the array
        # CPython allocates per call (1,023 events by default); events left over stay
        # ready in the kernel for the next call.
        poll, get, again = self._epoll.poll, self._splicers.get, self._again
        while not self._closing:
            try:
                events = poll(0 if again else None, _MAX_EVENTS)
            except OSError:  # closed under us: close() is ending the thread
                return
            # Splicers that used their batch before this wake-up go after its events.
            resumed = [again.popleft() for _ in range(len(again))] if again else ()
            for fd, flags in events:
                splicer = get(fd)
                if splicer is not None:
                    try:
                        splicer.pump(self, flags)
                    except Exception as exc:  # a bug: report it, keep serving the others
                        splicer.crashed(exc)
            for splicer in resumed:
                try:
                    splicer.pump(self, 0)
                except Exception as exc:
                    splicer.crashed(exc)


class Splicer:
    """Moves one direction's bytes from a source socket to a destination socket in the kernel.

    Made by :meth:`open`; ``start()`` and ``stop()`` may alternate (loop thread); the
    worker calls :meth:`pump`; ``close()`` frees the descriptors.
    """

    def __init__(
        self,
        worker: SpliceWorker,
        owner: SplicerOwner,
        src: int,
        dst: int,
        pipe: tuple[int, int],
    ) -> None:
        self._worker = worker
        self._owner = owner
        self._src = src
        self._dst = dst
        self._r, self._w = pipe
        self._lock = threading.Lock()
        self._pending = 0  # bytes in the kernel pipe
        self._watched = False
        self._drained = False  # the last read emptied the source
        self._ending = False  # the source reported EPOLLRDHUP/HUP/ERR: read until EAGAIN
        # A read shorter than this emptied the socket (see the module rules).
        self._short = fcntl.fcntl(self._w, fcntl.F_GETPIPE_SZ) // os.sysconf("SC_PAGE_SIZE")
        self.received = 0  # bytes read from the source, in all
        self.sent = 0  # bytes written to the destination, in all
        self.active = False
        self.eof = False
        self.failed = False

    @classmethod
    def open(cls, worker: SpliceWorker, owner: SplicerOwner, src: int, dst: int) -> Splicer:
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
        for size in _PIPE_SIZES:  # a smaller pipe only means more calls
            try:
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
                break
            except OSError:
                continue
        return cls(worker, owner, fds[0], fds[1], (r, w))

    def start(self) -> None:
        """Start moving bytes (the source transport must not be reading)."""
        with self._lock:
            if self.active or self.eof or self.failed or self._src < 0:
                return
            self.active = True
            self._watch()

    def stop(self) -> bytes:
        """Stop moving bytes; return those still in the kernel pipe (read, so passed on)."""
        with self._lock:
            if not self.active:
                return b""
            self.active = False
            self._unwatch()
            return self._take_pending()

    def close(self) -> None:
        """Stop and free the descriptors; bytes in the kernel pipe are dropped."""
        with self._lock:
            self.active = False
            self._unwatch()
            for fd in (self._src, self._dst, self._r, self._w):
                if fd >= 0:
                    os.close(fd)
            self._src = self._dst = self._r = self._w = -1
            self._pending = 0

    # --- the worker thread ------------------------------------------------------------

    def pump(self, worker: SpliceWorker, events: int) -> None:
        """Move bytes until a call would block (worker thread); ``events`` as epoll said."""
        # Hot path, lean on purpose: the lock without `with` (no bound __enter__/__exit__
        # per call), splice's arguments by position (no keyword parsing), the pipe's fill
        # and the drained flag in locals, stored once on the way out.
        lock = self._lock
        lock.acquire()
        pending, drained = self._pending, self._drained
        try:
            if not self.active or self.failed:
                return
            if events & _ENDING:
                self._ending = True
            if events & _READABLE:
                drained = False  # bytes came since the last read (or a FIN)
            splice = os.splice
            for _ in range(_BATCH):
                if not pending:
                    n = splice(self._src, self._w, _CHUNK, None, None, _FLAGS)
                    if not n:
                        self.eof = True
                        self.active = False
                        self._unwatch()
                        self._tell(self._owner.spliced_eof)
                        return
                    pending = n
                    self.received += n
                    drained = n < self._short
                n = splice(self._r, self._dst, pending, None, None, _FLAGS)
                pending -= n
                self.sent += n
                if not pending and drained and not self._ending:
                    return  # the source is empty: its next edge resumes us
            worker.again(self)
        except (BlockingIOError, InterruptedError):
            return  # the next edge of the descriptor that would block resumes us
        except OSError as exc:
            self.failed = True
            self._unwatch()
            self._tell(self._owner.splice_failed, exc)
        finally:
            self._pending, self._drained = pending, drained
            lock.release()

    def crashed(self, exc: Exception) -> None:
        """``pump`` raised ``exc`` (a bug): stop, report it, let the owner fall back."""
        with self._lock:
            self.failed = True
            self._unwatch()
        loop = self._worker.loop
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(
                loop.call_exception_handler,
                {"message": "sockwork proxy: the splice worker failed", "exception": exc},
            )
        self._tell(self._owner.splice_failed, OSError(errno.EINVAL, f"splice worker: {exc!r}"))

    # --- internals (lock held) ----------------------------------------------------------

    def _watch(self) -> None:
        if not self._watched:
            self._watched = True
            self._worker.watch(self, self._src, _IN)
            self._worker.watch(self, self._dst, _OUT)

    def _unwatch(self) -> None:
        if self._watched:
            self._watched = False
            self._worker.unwatch(self._src)
            self._worker.unwatch(self._dst)

    def _tell(self, callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self._worker.loop.call_soon_threadsafe(callback, *args)

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
