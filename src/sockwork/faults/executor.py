"""The in-process executor: carries out a plan's actions on real sockets.

# Strategy:
- The methods of ``socket.socket`` that move bytes or connections (``send``,
  ``sendall``, ``sendmsg``, ``sendto``, ``sendfile``, ``recv``, ``recv_into``,
  ``recvfrom``, ``recvfrom_into``, ``recvmsg``, ``connect``, ``connect_ex``,
  ``accept``, ``getsockopt``, ``shutdown``, ``close``) are replaced **on the class**
  while at least one scope (``apply`` or ``inject``) is alive, and restored when the
  last one ends. Class-level dispatch reaches every socket, including those made by
  libraries and asyncio, whatever name they imported ``socket`` under.
- ``ssl.SSLSocket`` overrides those methods with ones that go through OpenSSL on
  the fd, so its ``send``, ``sendall``, ``write``, ``read``, ``pending`` and
  ``_create`` are replaced too. Faults act on the plaintext (what the application
  sees), once per call: a dispatcher calls the original of the level below, never
  a method that is itself dispatched, and defers to ``socket.socket``'s dispatcher
  when TLS is not active. OpenSSL cannot peek, so plaintext the plan has seen waits
  in ``SocketState.plaintext`` until delivered.
- A socket with no faults costs one dictionary look-up per call: per-socket state
  lives in ``_STATES`` keyed by ``id()`` with a weak reference to check identity.
  The originals are captured once, at import, never re-read from the class.
- One socket may carry several layers (stacked ``apply``/``inject`` scopes). Each
  layer has its own plan and connection; their decisions combine with the plan's
  own rule (Close, then Stalled, then the latest Wait, then Discard, then the
  smallest Deliver).

# Rules:
- Blocking sockets wait in the calling thread, never past the socket's timeout: a
  wait that would end after it raises ``TimeoutError("timed out")``, as CPython does.
- Non-blocking sockets (timeout 0, asyncio) never wait. A sender whose bytes are
  not due hands them to an outbox (bounded, ``_OUTBOX_LIMIT``) and returns at once,
  as a kernel buffer would; a thread sends them when due, in order, and a later
  failure is raised by the next send. A receiver whose data is not due raises
  ``BlockingIOError`` and is hidden from poll/epoll with SO_RCVLOWAT until it is
  (Linux TCP, see ``_quiet``), so the loop sleeps. Where readiness cannot be hidden
  (a full outbox, connects, accepts, other platforms) the kernel still reports the
  socket ready and a selector loop calls again at once; to spare the CPU such a
  not-yet-due call sleeps at most ``_POLL_NAP`` (0.2 ms) before raising.
- Receives peek (``MSG_PEEK``) and consume only what is delivered, so the kernel's
  readiness always matches what the application may read; nothing is buffered
  in user space.
- A cut with FIN is ``shutdown(SHUT_RDWR)`` (the peer reads EOF, local sends get
  EPIPE, local receives EOF). A cut with RST (RFC 793 abort) is ``connect()`` with
  ``AF_UNSPEC`` on Linux: ``tcp_disconnect`` sends RST and the socket stays the same
  file, so a selector or asyncio sees the hang-up on the fd it registered.
  Elsewhere ``SO_LINGER`` 0 and ``dup2`` of an unconnected socket over the fd make
  the connection's last reference close (an RST) while the fd number stays valid.
  Either way the next call raises ``ConnectionResetError`` (ECONNRESET), later sends
  ``BrokenPipeError`` and receives EOF, as Linux does after an RST.
- Faults raise what the network raises (ECONNREFUSED, ECONNRESET, EPIPE,
  TimeoutError, socket.gaierror), never a sockwork error.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import struct
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without OpenSSL
    ssl = None  # type: ignore[assignment]

from sockwork.faults.plan import (
    Action,
    Close,
    Connection,
    Deliver,
    Discard,
    Fail,
    Hang,
    Plan,
    Proceed,
    Read,
    Refused,
    Stalled,
    Wait,
)

if TYPE_CHECKING:
    from sockwork.faults.patch import Handle

__all__ = [
    "SocketState",
    "attach",
    "detach_all",
    "install",
    "installed",
    "lookup",
    "notify_changed",
    "rekey",
    "set_hooks",
    "set_stream_faults",
    "uninstall",
]

# -- originals, captured once ------------------------------------------------------

_SOCKET = socket.socket
_MISSING = object()
_PATCHED_NAMES = (
    "send", "sendall", "sendmsg", "sendto", "sendfile",
    "recv", "recv_into", "recvfrom", "recvfrom_into", "recvmsg",
    "connect", "connect_ex", "accept", "getsockopt", "shutdown", "close",
)
_ORIGINAL_ATTRS: dict[str, object] = {
    name: _SOCKET.__dict__.get(name, _MISSING) for name in _PATCHED_NAMES
}
_real_send = _SOCKET.send
_real_sendall = _SOCKET.sendall
_real_sendmsg = _SOCKET.sendmsg
_real_sendto = _SOCKET.sendto
_real_sendfile = _SOCKET.sendfile
_real_sendfile_use_send = _SOCKET._sendfile_use_send  # type: ignore[attr-defined]  # private, stable since 3.5
_real_recv = _SOCKET.recv
_real_recv_into = _SOCKET.recv_into
_real_recvfrom = _SOCKET.recvfrom
_real_recvfrom_into = _SOCKET.recvfrom_into
_real_recvmsg = _SOCKET.recvmsg
_real_connect = _SOCKET.connect
_real_connect_ex = _SOCKET.connect_ex
_real_accept = _SOCKET.accept
_real_getsockopt = _SOCKET.getsockopt
_real_shutdown = _SOCKET.shutdown
_real_close = _SOCKET.close
_real_getpeername = _SOCKET.getpeername
_real_getsockname = _SOCKET.getsockname

# ssl.SSLSocket overrides the byte-moving methods with ones that go through
# OpenSSL (which uses the fd itself): those are replaced too, at the plaintext
# level. ``read`` is the one funnel of recv/recv_into/read; ``send``, ``write``
# and ``sendall`` each reach ``SSLObject.write``.
_TLS = ssl.SSLSocket if ssl is not None else None
_TLS_PATCHED_NAMES = ("send", "sendall", "write", "read", "pending", "_create")
_TLS_ORIGINAL_ATTRS: dict[str, object] = {
    name: _TLS.__dict__.get(name, _MISSING) for name in _TLS_PATCHED_NAMES
} if _TLS is not None else {}
if _TLS is not None:
    _real_tls_send = _TLS.send
    _real_tls_write = _TLS.write
    _real_tls_read = _TLS.read
    _real_tls_pending = _TLS.pending
    _real_tls_create = _TLS.__dict__["_create"].__func__  # private, stable since 3.7

_POLL_NAP = 0.0002
_INF = float("inf")

T = TypeVar("T")


def _now() -> float:
    return time.monotonic()


# -- errors the network would raise ------------------------------------------------


def _oserror(cls: type[OSError], code: int) -> OSError:
    return cls(code, os.strerror(code))


def _timeout() -> TimeoutError:
    return TimeoutError("timed out")


def _would_block(code: int = errno.EAGAIN) -> BlockingIOError:
    return BlockingIOError(code, os.strerror(code))


# -- changes wake waiters ----------------------------------------------------------

_CHANGED = threading.Condition()


def notify_changed() -> None:
    """Wake every thread waiting on a fault, and every hidden receiver: the faults changed."""
    with _CHANGED:
        _CHANGED.notify_all()
    _loud_all()


class _Budget:
    """The caller's time budget, from the socket's timeout."""

    __slots__ = ("deadline", "nonblocking")

    def __init__(self, sock: socket.socket) -> None:
        timeout = sock.gettimeout()
        self.nonblocking = timeout == 0.0
        self.deadline = None if timeout is None else _now() + timeout

    def wait(self, until: float) -> None:
        """Wait until ``until``; raise what a slow network would when the budget ends first."""
        if self.nonblocking:
            if until > _now():
                time.sleep(min(_POLL_NAP, max(0.0, until - _now())))
            if until > _now():
                raise _would_block()
            return
        end = until if self.deadline is None else min(until, self.deadline)
        now = _now()
        if end > now:
            with _CHANGED:
                _CHANGED.wait(None if end == _INF else end - now)
        if self.deadline is not None and _now() >= self.deadline and until > self.deadline:
            raise _timeout()

    def remaining(self, until: float | None = None) -> float | None:
        """Seconds left before the budget or ``until`` ends (None: no limit)."""
        ends = [t for t in (self.deadline, until) if t is not None]
        if not ends:
            return None
        return max(0.0, min(ends) - _now())


# -- per-socket state --------------------------------------------------------------


class _Layer:
    __slots__ = ("handle", "conn")

    def __init__(self, handle: Handle, conn: Connection | None) -> None:
        self.handle = handle
        self.conn = conn


class SocketState:
    """The faults attached to one socket, and what they already did to it."""

    def __init__(self, sock: socket.socket) -> None:
        self.ref = weakref.ref(sock)
        self.layers: list[_Layer] = []
        self.cut: str | None = None  # None, "fin", "reset", "reset-seen"
        self.connect_due: float | None = None  # non-blocking connect held back until
        self.connect_address: object = None
        self.connect_hang = False
        self.accept_seen: float | None = None  # non-blocking accept: when readiness was seen
        self.accept_decision: list[tuple[_Layer, tuple[Action, ...]]] | None = None
        self.outbox: _Outbox | None = None  # non-blocking sends handed over early
        self.plaintext = bytearray()  # TLS: decrypted bytes the plan saw, not yet delivered

    # -- streams over all layers --

    def _live(self) -> list[_Layer]:
        return [layer for layer in self.layers if layer.conn is not None]

    def idle(self, direction: str) -> bool:
        if self.cut is not None:
            return False
        for layer in self.layers:
            if layer.conn is not None:
                stream = layer.conn.send if direction == "send" else layer.conn.recv
                if not stream.idle:
                    return False
        return True

    def _each(self, direction: str, call: Callable[..., T], *args: object) -> list[T]:
        results = []
        for layer in self._live():
            assert layer.conn is not None
            stream = layer.conn.send if direction == "send" else layer.conn.recv
            with layer.handle._lock:
                results.append(call(stream, *args))
        return results

    def feed(self, direction: str, n: int, now: float) -> None:
        self._each(direction, lambda s, *a: s.feed(*a), n, now)

    def feed_eof(self, direction: str, now: float) -> None:
        self._each(direction, lambda s, *a: s.feed_eof(*a), now)

    def passed(self, direction: str, n: int, now: float) -> None:
        self._each(direction, lambda s, *a: s.passed(*a), n, now)

    def unfeed(self, direction: str) -> None:
        self._each(direction, lambda s: s.unfeed())

    def pending(self, direction: str) -> int:
        values = self._each(direction, lambda s: s.pending)
        return values[0] if values else 0

    def next(self, direction: str, now: float) -> Action:
        return _combine(self._each(direction, lambda s, *a: s.next(*a), now))


def _combine(actions: list[Action]) -> Action:
    """Combine the actions of stacked layers with the plan's own rule."""
    if len(actions) == 1:
        return actions[0]
    if not actions:
        return Read(None, None)
    for a in actions:
        if isinstance(a, Close):
            return a
    if any(isinstance(a, Stalled) for a in actions):
        return Stalled()
    waits = [a.until for a in actions if isinstance(a, Wait)]
    if waits:
        return Wait(max(waits))
    reads = [a for a in actions if isinstance(a, Read)]
    if reads:
        caps = [r.max_bytes for r in reads if r.max_bytes is not None]
        untils = [r.until for r in reads if r.until is not None]
        return Read(min(caps) if caps else None, min(untils) if untils else None)
    sizes = [a.n for a in actions if isinstance(a, (Deliver, Discard))]
    if any(isinstance(a, Discard) for a in actions):
        return Discard(min(sizes))
    return Deliver(min(sizes))


# -- registry ----------------------------------------------------------------------

_STATES: dict[int, SocketState] = {}
_REGISTRY_LOCK = threading.RLock()
_INSTALLS = 0


def lookup(sock: socket.socket) -> SocketState | None:
    """Return the fault state of ``sock``, or None when it has none."""
    state = _STATES.get(id(sock))
    if state is None or state.ref() is not sock:
        return None
    return state


def _forget(key: int, ref: weakref.ref[socket.socket]) -> None:
    with _REGISTRY_LOCK:
        state = _STATES.get(key)
        if state is not None and state.ref is ref:
            del _STATES[key]


def _state_for(sock: socket.socket) -> SocketState:
    with _REGISTRY_LOCK:
        state = lookup(sock)
        if state is None:
            state = SocketState(sock)
            key = id(sock)
            state.ref = weakref.ref(sock, lambda r, key=key: _forget(key, r))  # type: ignore[misc]
            _STATES[key] = state
        return state


def rekey(old: socket.socket, new: socket.socket) -> None:
    """Move the fault state of ``old`` to ``new`` (same fd, new Python object)."""
    with _REGISTRY_LOCK:
        state = lookup(old)
        if state is None:
            return
        del _STATES[id(old)]
        key = id(new)
        state.ref = weakref.ref(new, lambda r, key=key: _forget(key, r))  # type: ignore[misc]
        _STATES[key] = state
        for layer in state.layers:
            layer.handle._sockets.add(new)


def _label(sock: socket.socket, role: str) -> str:
    try:
        peer = _real_getpeername(sock)
    except OSError:
        peer = None
    if peer is None:
        return role
    if isinstance(peer, tuple):
        return f"{role} {peer[0]}:{peer[1]}"
    return f"{role} {peer!r}"


def attach(sock: socket.socket, handle: Handle, *, connected: bool, role: str = "") -> None:
    """Add ``handle``'s layer to ``sock``; open its connection when already connected."""
    state = _state_for(sock)
    conn = None
    if connected:
        with handle._lock:
            conn = handle._plan.open(now=_now(), label=_label(sock, role))
    with _REGISTRY_LOCK:
        state.layers.append(_Layer(handle, conn))
    handle._sockets.add(sock)


def _open_layers(sock: socket.socket, state: SocketState, role: str) -> None:
    for layer in state.layers:
        if layer.conn is None:
            with layer.handle._lock:
                layer.conn = layer.handle._plan.open(now=_now(), label=_label(sock, role))


def detach_all(handle: Handle) -> None:
    """Remove ``handle``'s layers from every socket it was attached to."""
    with _REGISTRY_LOCK:
        for state in list(_STATES.values()):
            kept = [layer for layer in state.layers if layer.handle is not handle]
            if len(kept) != len(state.layers):
                for layer in state.layers:
                    if layer.handle is handle and layer.conn is not None:
                        layer.conn.close()
                state.layers = kept
                if not kept:
                    _unwatch(state)
                    sock = state.ref()
                    if state.plaintext and sock is not None:
                        _hand_back(sock, state.plaintext)
                        state.plaintext = bytearray()
    notify_changed()


# -- sending -----------------------------------------------------------------------


def _raise_if_cut(state: SocketState, sending: bool) -> None:
    if state.cut == "reset":
        state.cut = "reset-seen"
        raise _oserror(ConnectionResetError, errno.ECONNRESET)
    if state.cut == "reset-seen" and sending:
        raise _oserror(BrokenPipeError, errno.EPIPE)


def _cut(sock: socket.socket, state: SocketState, reset: bool) -> None:
    if state.cut is not None:
        return
    if not reset:
        state.cut = "fin"
        try:
            _real_shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass
        notify_changed()
        return
    state.cut = "reset"
    if not _disconnect(sock):
        try:
            _real_shutdown(sock, socket.SHUT_RD)  # wake local readers; sends nothing
        except OSError:
            pass
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            placeholder = _SOCKET(sock.family, sock.type)
            try:
                os.dup2(placeholder.fileno(), sock.fileno(), inheritable=False)
            finally:
                placeholder.close()
        except OSError:
            pass
    notify_changed()


_libc: ctypes.CDLL | None = None


def _disconnect(sock: socket.socket) -> bool:
    """Abort a TCP connection in place with ``connect(AF_UNSPEC)`` (Linux): the kernel
    sends RST (tcp_disconnect) and the file stays the same, so selectors and asyncio
    see the hang-up on the fd they registered. Returns False where unsupported."""
    global _libc
    if not sys.platform.startswith("linux") or sock.family not in (socket.AF_INET,
                                                                    socket.AF_INET6):
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        address = ctypes.create_string_buffer(16)  # sa_family = AF_UNSPEC (0)
        return int(_libc.connect(sock.fileno(), address, 16)) == 0
    except (OSError, AttributeError):
        return False


def _after_pass(sock: socket.socket, state: SocketState, direction: str) -> None:
    """A Close may be due right after the last byte passed: carry it out now."""
    action = state.next(direction, _now())
    if isinstance(action, Close):
        if direction == "recv" and not action.reset and _eof_reached(state):
            return
        _cut(sock, state, action.reset)
    else:
        _watch_deadline(sock, state, direction, action)


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
    _raise_if_cut(state, True)
    if state.cut == "fin":
        raise _oserror(BrokenPipeError, errno.EPIPE)
    outbox = state.outbox
    if outbox is not None:
        outbox.raise_error()
        if outbox.busy:  # earlier bytes are still on their way: keep the order
            return outbox.put(data, whole=whole)
    with memoryview(data) as raw:  # type: ignore[arg-type]
        view = raw.cast("B")
        total = len(view)
        budget = _Budget(sock)
        state.feed("send", total, _now())
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
                action = state.next("send", _now())
                if (budget.nonblocking and deferrable and isinstance(action, (Wait, Stalled))
                        and not sent):
                    # Not due: take the bytes now, as a kernel buffer would, and
                    # let a thread send them when due (writability stays true).
                    if state.outbox is None:
                        state.outbox = _Outbox(sock, state)
                    accepted = state.outbox.adopt(view, whole=whole)
                    handed_over = accepted > 0
                    if not handed_over:
                        raise _would_block()
                    return accepted
                if isinstance(action, Wait):
                    if sent and not whole:
                        break
                    budget.wait(action.until)
                elif isinstance(action, Deliver):
                    k = lower(view[sent : sent + action.n])
                    state.passed("send", k, _now())
                    sent += k
                    if not whole:
                        break
                elif isinstance(action, Discard):
                    state.passed("send", action.n, _now())
                    sent += action.n
                elif isinstance(action, Stalled):
                    if sent and not whole:
                        break
                    budget.wait(_INF)
                elif isinstance(action, Close):
                    _cut(sock, state, action.reset)
                    if sent:
                        break
                    _raise_if_cut(state, True)
                    raise _oserror(BrokenPipeError, errno.EPIPE)
                else:  # Read: nothing pending, everything passed
                    break
        finally:
            if not handed_over:
                state.unfeed("send")
            view.release()
    _after_pass(sock, state, "send")
    return sent


_OUTBOX_LIMIT = 256 * 1024  # bytes a non-blocking sender may hand over ahead


class _Outbox:
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
        with self.lock:
            error, self.error = self.error, None
        if error is not None:
            raise error

    def adopt(self, view: memoryview, *, whole: bool) -> int:
        """Take the bytes already fed to the plan; return how many (0: full)."""
        total = len(view)
        room = _OUTBOX_LIMIT - self.size
        take = total if total <= room else (0 if whole else room)
        if take < total:
            self.state.unfeed("send")
            if take:
                self.state.feed("send", take, _now())
        if take:
            self._append(bytes(view[:take]))
        return take

    def put(self, data: object, *, whole: bool) -> int:
        """Queue more bytes behind the ones in flight; return how many were taken."""
        with memoryview(data) as raw:  # type: ignore[arg-type]
            view = raw.cast("B")
            room = _OUTBOX_LIMIT - self.size
            take = len(view) if len(view) <= room else (0 if whole else room)
            if not take:
                view.release()
                if len(view) == 0:
                    return 0
                time.sleep(_POLL_NAP)
                raise _would_block()
            chunk = bytes(view[:take])
            view.release()
        self.state.feed("send", take, _now())
        self._append(chunk)
        return take

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
                self.sock = _SOCKET(fileno=os.dup(self.sock.fileno()))
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
                action = state.next("send", _now()) if not state.idle("send") else None
                if action is None:
                    n = self._send(head)
                    state.passed("send", min(n, state.pending("send")), _now())
                    self._pop(n)
                elif isinstance(action, (Wait, Stalled)):
                    until = action.until if isinstance(action, Wait) else _INF
                    with _CHANGED:
                        _CHANGED.wait(None if until == _INF else max(0.0, until - _now()))
                elif isinstance(action, Deliver):
                    n = self._send(head[: action.n])
                    state.passed("send", n, _now())
                    self._pop(n)
                elif isinstance(action, Discard):
                    n = min(action.n, len(head))
                    state.passed("send", n, _now())
                    self._pop(n)
                elif isinstance(action, Close):
                    _cut(self.sock, state, action.reset)
                    raise _oserror(BrokenPipeError, errno.EPIPE)
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
        if after is not None and not state.idle("send"):
            state.feed_eof("send", _now())  # SlowClose holds the FIN back
            action = state.next("send", _now())
            if isinstance(action, Wait):
                sleep_until(action.until)
        if after == -1:
            _real_close(self.sock)
        elif after is not None:
            try:
                _real_shutdown(self.sock, after)
            except OSError:
                pass

    def _send(self, data: bytes) -> int:
        while True:
            try:
                return _real_send(self.sock, data)
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


# -- receiving ---------------------------------------------------------------------


def _wait_readable(sock: socket.socket, timeout: float | None) -> bool:
    try:
        fd = sock.fileno()
        if fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(None if timeout is None else timeout * 1000.0))
    except (OSError, ValueError):
        return True


# -- readiness for non-blocking receivers -------------------------------------------
#
# A non-blocking receiver whose data is not due yet must not look readable, or a
# selector loop would call it again at once. Linux honours SO_RCVLOWAT in poll and
# epoll for TCP, and tcp_set_rcvlowat() signals EPOLLIN when lowering it makes the
# socket readable (net/ipv4/tcp.c, Linux >= 4.18): raise it while the data waits,
# lower it back when due, and the loop sleeps until then. Elsewhere (or when the
# socket stays readable: half its buffer full, EOF, an error) the caller naps.

_QUIETED: dict[int, tuple[weakref.ref[socket.socket], int, threading.Timer | None]] = {}
_RCVLOWAT_HIGH = 1 << 30  # the kernel caps it at half the receive buffer


def _quiet(sock: socket.socket, state: SocketState, until: float) -> bool:
    """Hide ``sock``'s readability until ``until`` (inf: until the faults change)."""
    if not sys.platform.startswith("linux") or sock.family not in (socket.AF_INET,
                                                                    socket.AF_INET6):
        return False
    key = id(state)
    with _REGISTRY_LOCK:
        entry = _QUIETED.get(key)
    if entry is None:
        try:
            original = int(_real_getsockopt(sock, socket.SOL_SOCKET, socket.SO_RCVLOWAT))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, _RCVLOWAT_HIGH)
        except OSError:
            return False
    else:
        original = entry[1]
        if entry[2] is not None:
            entry[2].cancel()
    timer = None
    if until != _INF:
        ref = weakref.ref(sock)

        def wake() -> None:
            target = ref()
            if target is not None:
                _loud(target, state)

        timer = threading.Timer(max(0.0, until - _now()), wake)
        timer.daemon = True
    with _REGISTRY_LOCK:
        _QUIETED[key] = (weakref.ref(sock), original, timer)
    if timer is not None:
        timer.start()
    if _wait_readable(sock, 0):  # still readable: hiding does not work here
        _loud(sock, state)
        return False
    return True


def _loud(sock: socket.socket, state: SocketState) -> None:
    """Undo :func:`_quiet`: the socket reports readiness again (and wakes waiters)."""
    with _REGISTRY_LOCK:
        entry = _QUIETED.pop(id(state), None)
    if entry is None:
        return
    if entry[2] is not None:
        entry[2].cancel()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, entry[1])
    except OSError:
        pass


def _loud_all() -> None:
    with _REGISTRY_LOCK:
        entries = list(_QUIETED.items())
    for key, (ref, _, _) in entries:
        sock = ref()
        state = _STATES.get(id(sock)) if sock is not None else None
        if sock is not None and state is not None and id(state) == key:
            _loud(sock, state)
        else:
            with _REGISTRY_LOCK:
                _QUIETED.pop(key, None)


class _KernelSource:
    """Received bytes as the kernel holds them: peeked, never copied to user space."""

    __slots__ = ("sock",)
    quiet = True  # readiness can be hidden with SO_RCVLOWAT (see _quiet)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def peek(self, size: int, budget: _Budget, until: float | None) -> bytes | None:
        """Peek at most ``size`` bytes; None when nothing came before ``until``."""
        sock = self.sock
        if budget.nonblocking:
            return _real_recv(sock, size, socket.MSG_PEEK)  # BlockingIOError when empty
        limit = budget.remaining(until)
        if not _wait_readable(sock, limit):
            if budget.deadline is not None and _now() >= budget.deadline:
                raise _timeout()
            return None
        try:
            return _real_recv(sock, size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None

    def peek_now(self, size: int) -> bytes:
        """Peek at what is there now, without waiting."""
        try:
            return _real_recv(self.sock, size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return b""

    def discard(self, n: int) -> int:
        """Consume ``n`` bytes the application will not see; return how many."""
        return len(_real_recv(self.sock, n))


class _TlsSource:
    """Plaintext of an ``ssl.SSLSocket``. OpenSSL cannot peek, so the bytes the plan
    has been fed wait in ``state.plaintext`` until they are delivered (user space,
    unlike :class:`_KernelSource`)."""

    __slots__ = ("sock", "buffer")
    quiet = False  # the kernel may be empty while plaintext waits here

    def __init__(self, sock: socket.socket, state: SocketState) -> None:
        self.sock = sock
        self.buffer = state.plaintext

    def _pull(self, size: int) -> bytes:
        data: bytes = _real_tls_read(self.sock, size)  # type: ignore[arg-type]
        self.buffer += data
        return data

    def peek(self, size: int, budget: _Budget, until: float | None) -> bytes | None:
        """Decrypt at most ``size`` bytes into the buffer; None: nothing came before ``until``."""
        if not self.buffer and not _real_tls_pending(self.sock):  # type: ignore[arg-type]
            if not budget.nonblocking and not _wait_readable(self.sock, budget.remaining(until)):
                if budget.deadline is not None and _now() >= budget.deadline:
                    raise _timeout()
                return None
            # Non-blocking: SSLWantReadError when no whole record is there.
            if not self._pull(size):
                return b""  # EOF
        return self.peek_now(size)

    def peek_now(self, size: int) -> bytes:
        """What is decrypted now (the buffer, topped up from OpenSSL's own), without waiting."""
        missing = size - len(self.buffer)
        if missing > 0:
            pending = _real_tls_pending(self.sock)  # type: ignore[arg-type]
            if pending:
                self._pull(min(pending, missing))
        return bytes(self.buffer[:size])

    def discard(self, n: int) -> int:
        """Drop ``n`` buffered bytes; return how many."""
        n = min(n, len(self.buffer))
        del self.buffer[:n]
        return n


_Source = _KernelSource | _TlsSource


def receive(
    sock: socket.socket,
    state: SocketState,
    size: int,
    consume: Callable[[int], T],
    empty: Callable[[], T],
    source: _Source | None = None,
) -> T:
    """Receive through the faults: peek, decide, then ``consume(n)`` the delivered bytes.

    ``source`` is where undelivered bytes are looked at (default: the kernel).
    """
    _raise_if_cut(state, False)
    if state.cut is not None:
        return empty()
    if size <= 0:
        return consume(size)
    budget = _Budget(sock)
    if source is None:
        source = _KernelSource(sock)
    while True:
        if state.idle("recv"):  # the faults were removed meanwhile
            return consume(size)
        pending = state.pending("recv")
        if pending and not _eof_reached(state):
            # Bytes that arrived since the last look join the pending ones (Coalesce).
            more = source.peek_now(size)
            if len(more) > pending:
                state.feed("recv", len(more) - pending, _now())
        now = _now()
        action = state.next("recv", now)
        _watch_deadline(sock, state, "recv", action)
        if isinstance(action, Read):
            _loud(sock, state)
            cap = size if action.max_bytes is None else min(size, action.max_bytes)
            data = source.peek(cap, budget, action.until)
            if data is None:
                continue
            if data:
                state.feed("recv", len(data), _now())
            else:
                state.feed_eof("recv", _now())
        elif isinstance(action, (Wait, Stalled)):
            until = action.until if isinstance(action, Wait) else _INF
            if (budget.nonblocking and until > _now() and source.quiet
                    and _quiet(sock, state, until)):
                raise _would_block()
            budget.wait(until)
        elif isinstance(action, Deliver):
            _loud(sock, state)
            result = consume(min(action.n, size))
            n = _length(result)
            state.passed("recv", n, _now())
            _after_pass(sock, state, "recv")
            return result
        elif isinstance(action, Discard):
            _loud(sock, state)
            state.passed("recv", source.discard(action.n), _now())
        elif isinstance(action, Close):
            _loud(sock, state)
            if action.reset:
                _cut(sock, state, True)
                _raise_if_cut(state, False)
            if state.pending("recv") == 0 and _eof_reached(state):
                return empty()  # the peer's own EOF, forwarded
            _cut(sock, state, False)
            return empty()
        else:
            raise AssertionError(f"unexpected action {action!r}")


# -- deadlines that no readiness event will announce --------------------------------
#
# Some faults act at a time with nothing to read or write (Timeout closes an idle
# connection, ResetPeer resets after it discarded the data): no call of the
# application would come to carry the action out, so a timer re-asks the plan at
# that time and performs a due Close. The cut itself wakes selectors (hang-up).

_WATCHED: dict[tuple[int, str], tuple[float, threading.Timer]] = {}


def _unwatch(state: SocketState) -> None:
    """Cancel the deadline timers of ``state`` (its socket closed or lost its faults)."""
    with _REGISTRY_LOCK:
        for direction in ("send", "recv"):
            entry = _WATCHED.pop((id(state), direction), None)
            if entry is not None:
                entry[1].cancel()


def _watch_deadline(sock: socket.socket, state: SocketState, direction: str,
                    action: Action) -> None:
    if isinstance(action, Read):
        until = action.until
    elif isinstance(action, Wait):
        until = action.until
    else:
        return
    if until is None or until == _INF or state.pending(direction):
        return
    key = (id(state), direction)
    ref = weakref.ref(sock)

    def fire() -> None:
        with _REGISTRY_LOCK:
            entry = _WATCHED.get(key)
            if entry is not None and entry[0] == until:
                del _WATCHED[key]
        target = ref()
        if target is None or lookup(target) is not state or state.cut is not None:
            return
        if state.idle(direction) or state.pending(direction):
            return
        again = state.next(direction, _now())
        if isinstance(again, Close):
            if direction == "recv" and _eof_reached(state) and not again.reset:
                return  # the peer's own EOF: the application will read it
            _cut(target, state, again.reset)
        else:
            _watch_deadline(target, state, direction, again)

    timer = threading.Timer(max(0.0, until - _now()) + 0.0005, fire)
    timer.daemon = True
    with _REGISTRY_LOCK:
        scheduled = _WATCHED.get(key)
        if scheduled is not None and scheduled[0] <= until:
            return
        if scheduled is not None:
            scheduled[1].cancel()
        _WATCHED[key] = (until, timer)
    timer.start()


def _eof_reached(state: SocketState) -> bool:
    for layer in state._live():
        assert layer.conn is not None
        if layer.conn.recv.eof:
            return True
    return False


def _length(result: object) -> int:
    if isinstance(result, (bytes, bytearray)):
        return len(result)
    if isinstance(result, int):
        return result
    if isinstance(result, tuple):
        first = result[0]
        return len(first) if isinstance(first, (bytes, bytearray)) else int(first)
    raise TypeError(f"unexpected receive result {result!r}")


# -- connecting --------------------------------------------------------------------


def _decide(layers: Iterable[_Layer], call: Callable[[Plan, float], tuple[Action, ...]]
            ) -> tuple[float, Action]:
    """Run a connect-phase decision on every layer: (latest wait end, first non-Proceed)."""
    until = 0.0
    terminal: Action = Proceed()
    for layer in layers:
        with layer.handle._lock:
            actions = call(layer.handle._plan, _now())
        for a in actions:
            if isinstance(a, Wait):
                until = max(until, a.until)
            elif not isinstance(a, Proceed) and isinstance(terminal, Proceed):
                terminal = a
    return until, terminal


def connect(sock: socket.socket, state: SocketState, address: object, *, ex: bool) -> int | None:
    """Connect through the connect faults; returns connect_ex's errno when ``ex``."""
    budget = _Budget(sock)
    if budget.nonblocking:
        return _connect_nonblocking(sock, state, address, ex=ex)
    label = _address_label("client", address)
    until, terminal = _decide(state.layers, lambda p, now: p.connect(now=now, label=label))
    try:
        if until:
            budget.wait(until)
        if isinstance(terminal, Refused):
            raise _oserror(ConnectionRefusedError, errno.ECONNREFUSED)
        if isinstance(terminal, Hang):
            budget.wait(terminal.until)
            raise _oserror(TimeoutError, errno.ETIMEDOUT)
    except OSError as exc:
        if ex and exc.errno is not None:
            return exc.errno
        if ex and isinstance(exc, TimeoutError):
            return errno.EAGAIN  # what connect_ex returns on a socket timeout
        raise
    if ex:
        code = _real_connect_ex(sock, address)  # type: ignore[arg-type]
        if code == 0:
            _open_layers(sock, state, "client")
        return code
    _real_connect(sock, address)  # type: ignore[arg-type]
    _open_layers(sock, state, "client")
    return None


def _address_label(role: str, address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{role} {address[0]}:{address[1]}"
    return f"{role} {address!r}"


def _connect_nonblocking(sock: socket.socket, state: SocketState, address: object, *,
                         ex: bool) -> int | None:
    label = _address_label("client", address)
    until, terminal = _decide(state.layers, lambda p, now: p.connect(now=now, label=label))
    if isinstance(terminal, Refused):
        if ex:
            return errno.ECONNREFUSED
        raise _oserror(ConnectionRefusedError, errno.ECONNREFUSED)
    if isinstance(terminal, Hang):
        until = max(until, terminal.until)
        state.connect_hang = True
    if until > _now():
        # Held back: report "in progress"; getsockopt(SO_ERROR) answers until it is due.
        state.connect_due = until
        state.connect_address = address
        if ex:
            return errno.EINPROGRESS
        raise _would_block(errno.EINPROGRESS)
    return _start_connect(sock, state, address, ex=ex)


def _start_connect(sock: socket.socket, state: SocketState, address: object, *,
                   ex: bool) -> int | None:
    if state.connect_hang:
        state.connect_hang = False
        if ex:
            return errno.ETIMEDOUT
        raise _oserror(TimeoutError, errno.ETIMEDOUT)
    _open_layers(sock, state, "client")
    if ex:
        return _real_connect_ex(sock, address)  # type: ignore[arg-type]
    _real_connect(sock, address)  # type: ignore[arg-type]
    return None


def pending_connect_error(sock: socket.socket, state: SocketState) -> int | None:
    """SO_ERROR of a held-back non-blocking connect; None when nothing is held back."""
    due = state.connect_due
    if due is None:
        return None
    if _now() < due:
        time.sleep(_POLL_NAP)
        return errno.EINPROGRESS
    state.connect_due = None
    address, state.connect_address = state.connect_address, None
    code = _start_connect(sock, state, address, ex=True)
    if code in (0, None):
        return None
    return code


# -- accepting ---------------------------------------------------------------------


def accept(sock: socket.socket, state: SocketState,
           wrap: Callable[[socket.socket, SocketState], None]) -> tuple[socket.socket, object]:
    """Accept through the accept faults; ``wrap`` attaches the layers to the new socket."""
    budget = _Budget(sock)
    while True:
        decision = state.accept_decision
        if decision is None:
            if budget.nonblocking or budget.deadline is not None:
                if not _wait_readable(sock, budget.remaining()):
                    if budget.nonblocking:
                        raise _would_block()
                    raise _timeout()
            elif not _wait_readable(sock, None):
                continue
            arrived = _now()
            decision = []
            for layer in state.layers:
                with layer.handle._lock:
                    actions = layer.handle._plan.accept(now=arrived, label="server")
                decision.append((layer, actions))
            state.accept_decision = decision
        until = max((a.until for _, acts in decision for a in acts if isinstance(a, Wait)),
                    default=0.0)
        budget.wait(until)  # raises TimeoutError/BlockingIOError and keeps the decision
        state.accept_decision = None
        conn, address = _real_accept(sock)
        close = next((a for _, acts in decision for a in acts if isinstance(a, Close)), None)
        if close is not None:
            if close.reset:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                try:
                    _real_shutdown(conn, socket.SHUT_RDWR)
                except OSError:
                    pass
            _real_close(conn)
            if budget.nonblocking:
                raise _would_block()
            continue
        wrap(conn, state)
        return conn, address


def resolve_decision(handles: Iterable[Handle], host: str) -> tuple[float, Fail | None]:
    """Decide one name look-up over ``handles``: (wait end, failure or None)."""
    until = 0.0
    failure: Fail | None = None
    for handle in handles:
        with handle._lock:
            actions = handle._plan.resolve(now=_now(), label=host)
        for a in actions:
            if isinstance(a, Wait):
                until = max(until, a.until)
            elif isinstance(a, Fail) and failure is None:
                failure = a
    return until, failure


def sleep_until(until: float) -> None:
    """Sleep in the calling thread until ``until`` (DNS look-ups have no socket timeout)."""
    while True:
        left = until - _now()
        if left <= 0:
            return
        time.sleep(left)


# -- the class-level dispatchers ---------------------------------------------------


def _d_send(self: socket.socket, data: object, flags: int = 0) -> int:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or state.idle("send"):
        return _real_send(self, data, flags)  # type: ignore[arg-type]
    return send(self, state, data, lambda v: _real_send(self, v, flags), whole=False)


def _d_sendall(self: socket.socket, data: object, flags: int = 0) -> None:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or state.idle("send"):
        return _real_sendall(self, data, flags)  # type: ignore[arg-type]
    send(self, state, data, lambda v: _real_send(self, v, flags), whole=True)
    return None


def _d_sendto(self: socket.socket, data: object, *args: object) -> int:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or state.idle("send"):
        return _real_sendto(self, data, *args)  # type: ignore[call-overload, no-any-return]
    return send(self, state, data, lambda v: _real_sendto(self, v, *args),  # type: ignore[call-overload]
                whole=False)


def _d_sendmsg(self: socket.socket, buffers: Iterable[object], *args: object) -> int:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or state.idle("send"):
        return _real_sendmsg(self, buffers, *args)  # type: ignore[arg-type]
    data = b"".join(bytes(memoryview(b)) for b in buffers)  # type: ignore[arg-type]
    ancdata: list[object] = list(args[0]) if args else []  # type: ignore[call-overload]
    rest = args[1:]

    def lower(view: memoryview) -> int:
        nonlocal ancdata
        extra, ancdata = ancdata, []
        return _real_sendmsg(self, [view], extra, *rest)  # type: ignore[arg-type]

    return send(self, state, data, lower, whole=False)


def _d_sendfile(self: socket.socket, file: object, offset: int = 0,
                count: int | None = None) -> int:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or state.idle("send"):
        return _real_sendfile(self, file, offset, count)  # type: ignore[arg-type]
    # The os.sendfile fast path would bypass the faults: use the send() loop.
    return _real_sendfile_use_send(self, file, offset, count)  # type: ignore[no-any-return]


def _d_recv(self: socket.socket, bufsize: int, flags: int = 0) -> bytes:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or flags & socket.MSG_PEEK or state.idle("recv"):
        return _real_recv(self, bufsize, flags)
    return receive(self, state, bufsize, lambda n: _real_recv(self, n, flags), lambda: b"")


def _d_recv_into(self: socket.socket, buffer: object, nbytes: int = 0, flags: int = 0) -> int:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or flags & socket.MSG_PEEK or state.idle("recv"):
        return _real_recv_into(self, buffer, nbytes, flags)  # type: ignore[arg-type]
    size = nbytes or len(memoryview(buffer))  # type: ignore[arg-type]
    return receive(self, state, size,
                   lambda n: _real_recv_into(self, buffer, n, flags),  # type: ignore[arg-type]
                   lambda: 0)


def _d_recvfrom(self: socket.socket, bufsize: int, flags: int = 0) -> tuple[bytes, object]:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or flags & socket.MSG_PEEK or state.idle("recv"):
        return _real_recvfrom(self, bufsize, flags)
    return receive(self, state, bufsize, lambda n: _real_recvfrom(self, n, flags),
                   lambda: (b"", None))


def _d_recvfrom_into(self: socket.socket, buffer: object, nbytes: int = 0,
                     flags: int = 0) -> tuple[int, object]:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or flags & socket.MSG_PEEK or state.idle("recv"):
        return _real_recvfrom_into(self, buffer, nbytes, flags)  # type: ignore[arg-type]
    size = nbytes or len(memoryview(buffer))  # type: ignore[arg-type]
    return receive(self, state, size,
                   lambda n: _real_recvfrom_into(self, buffer, n, flags),  # type: ignore[arg-type]
                   lambda: (0, None))


def _d_recvmsg(self: socket.socket, bufsize: int, ancbufsize: int = 0,
               flags: int = 0) -> tuple[bytes, list[object], int, object]:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or flags & socket.MSG_PEEK or state.idle("recv"):
        return _real_recvmsg(self, bufsize, ancbufsize, flags)  # type: ignore[return-value]
    return receive(self, state, bufsize,
                   lambda n: _real_recvmsg(self, n, ancbufsize, flags),  # type: ignore[return-value]
                   lambda: (b"", [], 0, None))


# ssl.SSLSocket: at the plaintext level, once per call. When the TLS layer is not
# active (``_sslobj`` None: not yet connected, or unwrapped) the original method
# calls socket.socket's, whose dispatcher applies the faults instead.


@contextmanager
def _tls_errors(kind: str) -> Iterator[None]:
    """Raise what a non-blocking SSLSocket raises when its bytes are not due."""
    try:
        yield
    except BlockingIOError:
        if kind == "read":
            raise ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ,
                                       "The operation did not complete (read)") from None
        raise ssl.SSLWantWriteError(ssl.SSL_ERROR_WANT_WRITE,
                                    "The operation did not complete (write)") from None


def _tls_state(sock: socket.socket, flags: int, direction: str) -> SocketState | None:
    """The state to act on for a TLS call, or None to call the original method."""
    state = _STATES.get(id(sock))
    if (state is None or state.ref() is not sock or flags
            or sock._sslobj is None):  # type: ignore[attr-defined]
        return None
    if state.idle(direction) and not (direction == "recv" and state.plaintext):
        return None
    return state


def _d_tls_send(self: socket.socket, data: object, flags: int = 0) -> int:
    state = _tls_state(self, flags, "send")
    if state is None:
        return _real_tls_send(self, data, flags)  # type: ignore[arg-type]
    with _tls_errors("write"):
        return send(self, state, data, lambda v: _real_tls_send(self, v),  # type: ignore[arg-type]
                    whole=False, deferrable=False)


def _d_tls_write(self: socket.socket, data: object) -> int:
    state = _tls_state(self, 0, "send")
    if state is None:
        return _real_tls_write(self, data)  # type: ignore[arg-type]
    with _tls_errors("write"):
        return send(self, state, data, lambda v: _real_tls_write(self, v),  # type: ignore[arg-type]
                    whole=False, deferrable=False)


def _d_tls_sendall(self: socket.socket, data: object, flags: int = 0) -> None:
    state = _tls_state(self, flags, "send")
    if state is None:
        return _TLS_ORIGINAL_ATTRS["sendall"](self, data, flags)  # type: ignore[operator, no-any-return]
    with _tls_errors("write"):
        # One pass for the whole call: the original loops over self.send, which
        # would meet the faults a second time.
        send(self, state, data, lambda v: _real_tls_send(self, v),  # type: ignore[arg-type]
             whole=True, deferrable=False)
    return None


def _d_tls_read(self: socket.socket, len: int = 1024, buffer: object = None) -> object:  # noqa: A002
    state = _tls_state(self, 0, "recv")
    if state is None:
        return _real_tls_read(self, len, buffer)  # type: ignore[arg-type]
    size = len
    if buffer is not None:
        with memoryview(buffer) as view:  # type: ignore[arg-type]
            if size <= 0 or size > view.nbytes:
                size = view.nbytes
    plaintext = state.plaintext

    def consume(n: int) -> object:
        if not plaintext:
            return _real_tls_read(self, n, buffer)  # type: ignore[arg-type]
        return _take(plaintext, n, buffer)

    with _tls_errors("read"):
        return receive(self, state, size, consume,
                       lambda: b"" if buffer is None else 0, _TlsSource(self, state))


def _take(plaintext: bytearray, n: int, buffer: object) -> bytes | int:
    """Hand ``n`` buffered plaintext bytes over as ``SSLSocket.read`` would."""
    n = min(n, len(plaintext))
    if buffer is None:
        chunk = bytes(plaintext[:n])
        del plaintext[:n]
        return chunk
    with memoryview(buffer) as view, view.cast("B") as target:  # type: ignore[arg-type]
        n = min(n, target.nbytes)
        target[:n] = plaintext[:n]
    del plaintext[:n]
    return n


def _d_tls_pending(self: socket.socket) -> int:
    pending: int = _real_tls_pending(self)  # type: ignore[arg-type]
    state = lookup(self)
    return pending + len(state.plaintext) if state is not None else pending


def _d_tls_create(cls: type, /, sock: socket.socket, *args: object, **kwargs: object) -> object:
    # wrap_socket() moves the fd to a new SSLSocket and detaches ``sock``: the faults
    # move with the fd (the handshake, done inside, is not affected by them).
    tls = _real_tls_create(cls, sock, *args, **kwargs)
    rekey(sock, tls)
    return tls


def _hand_back(sock: socket.socket, plaintext: bytearray) -> None:
    """The faults left a TLS socket holding undelivered plaintext: make its reads
    return it first (an instance attribute, removed once it is drained)."""
    ref = weakref.ref(sock)

    def read(len: int = 1024, buffer: object = None) -> object:  # noqa: A002
        target = ref()
        assert target is not None
        if not plaintext:
            target.__dict__.pop("read", None)
            target.__dict__.pop("pending", None)
            return type(target).read(target, len, buffer)  # type: ignore[attr-defined]
        return _take(plaintext, len if len > 0 else 1 << 30, buffer)

    def pending() -> int:
        target = ref()
        assert target is not None
        return len(plaintext) + int(type(target).pending(target))  # type: ignore[attr-defined]

    sock.__dict__["read"] = read
    sock.__dict__["pending"] = pending


def _d_connect(self: socket.socket, address: object) -> None:
    state = _maybe_attach_client(self, address)
    if state is None or not state.layers:
        _real_connect(self, address)  # type: ignore[arg-type]
        return
    connect(self, state, address, ex=False)


def _d_connect_ex(self: socket.socket, address: object) -> int:
    state = _maybe_attach_client(self, address)
    if state is None or not state.layers:
        return _real_connect_ex(self, address)  # type: ignore[arg-type]
    code = connect(self, state, address, ex=True)
    return 0 if code is None else code


def _d_accept(self: socket.socket) -> tuple[socket.socket, object]:
    state = _maybe_attach_server(self)
    if state is None or not state.layers:
        return _real_accept(self)
    return accept(self, state, _wrap_accepted)


def _d_getsockopt(self: socket.socket, level: int, option: int, *args: int) -> object:
    if level == socket.SOL_SOCKET and option == socket.SO_ERROR and not args:
        state = lookup(self)
        if state is not None and state.connect_due is not None:
            code = pending_connect_error(self, state)
            if code is not None:
                return code
    return _real_getsockopt(self, level, option, *args)


def _d_shutdown(self: socket.socket, how: int) -> None:
    state = lookup(self)
    if state is not None and state.cut is not None:
        try:
            _real_shutdown(self, how)
        except OSError:
            pass
        return
    if (state is not None and how in (socket.SHUT_WR, socket.SHUT_RDWR)
            and state.outbox is not None and state.outbox.finish_with(how)):
        return  # the FIN follows the bytes still on their way
    if state is not None and how in (socket.SHUT_WR, socket.SHUT_RDWR) and not state.idle("send"):
        state.feed_eof("send", _now())
        action = state.next("send", _now())
        if isinstance(action, Wait):
            _later(self, action.until, how)
            return
    _real_shutdown(self, how)


def _d_close(self: socket.socket) -> None:
    state = lookup(self)
    if state is not None:
        with _REGISTRY_LOCK:
            if _STATES.get(id(self)) is state:
                del _STATES[id(self)]
        if state.outbox is not None and self.fileno() >= 0 and state.outbox.finish_with(None):
            pass  # the outbox sends the rest on a duplicate fd, then closes it
        elif state.cut is None and self.fileno() >= 0 and not state.idle("send"):
            state.feed_eof("send", _now())
            action = state.next("send", _now())
            if isinstance(action, Wait):
                _later(self, action.until, None)
        for layer in state.layers:
            if layer.conn is not None:
                layer.conn.close()
        _unwatch(state)
        with _REGISTRY_LOCK:
            entry = _QUIETED.pop(id(state), None)
        if entry is not None and entry[2] is not None:
            entry[2].cancel()
    _real_close(self)


def _later(sock: socket.socket, until: float, how: int | None) -> None:
    """SlowClose: keep the connection open on a duplicate fd, end it at ``until``."""
    try:
        dup = os.dup(sock.fileno())
    except OSError:
        return

    def finish() -> None:
        holder = _SOCKET(fileno=dup)
        try:
            if how is not None:
                try:
                    _real_shutdown(holder, how)
                except OSError:
                    pass
        finally:
            _real_close(holder)

    timer = threading.Timer(max(0.0, until - _now()), finish)
    timer.daemon = True
    timer.start()


# -- scope matching hooks (set by inject) ------------------------------------------

_client_hook: Callable[[socket.socket, object], None] | None = None
_server_hook: Callable[[socket.socket], None] | None = None


def set_hooks(client: Callable[[socket.socket, object], None] | None,
              server: Callable[[socket.socket], None] | None) -> None:
    """Install the functions that attach ``inject`` scopes to new connections."""
    global _client_hook, _server_hook
    _client_hook, _server_hook = client, server


def _maybe_attach_client(sock: socket.socket, address: object) -> SocketState | None:
    hook = _client_hook
    if hook is not None:
        hook(sock, address)
    return lookup(sock)


def _maybe_attach_server(sock: socket.socket) -> SocketState | None:
    hook = _server_hook
    if hook is not None:
        hook(sock)
    return lookup(sock)


def _wrap_accepted(conn: socket.socket, listener: SocketState) -> None:
    for layer in listener.layers:
        attach(conn, layer.handle, connected=True, role="server")


_DISPATCHERS: dict[str, object] = {
    "send": _d_send,
    "sendall": _d_sendall,
    "sendmsg": _d_sendmsg,
    "sendto": _d_sendto,
    "sendfile": _d_sendfile,
    "recv": _d_recv,
    "recv_into": _d_recv_into,
    "recvfrom": _d_recvfrom,
    "recvfrom_into": _d_recvfrom_into,
    "recvmsg": _d_recvmsg,
    "connect": _d_connect,
    "connect_ex": _d_connect_ex,
    "accept": _d_accept,
    "getsockopt": _d_getsockopt,
    "shutdown": _d_shutdown,
    "close": _d_close,
}
_TLS_DISPATCHERS: dict[str, object] = {
    "send": _d_tls_send,
    "sendall": _d_tls_sendall,
    "write": _d_tls_write,
    "read": _d_tls_read,
    "pending": _d_tls_pending,
    "_create": classmethod(_d_tls_create),
}

_STREAM_NAMES = frozenset((
    "send", "sendall", "sendmsg", "sendto", "sendfile",
    "recv", "recv_into", "recvfrom", "recvfrom_into", "recvmsg",
))
# TLS reads stay on while any scope is alive: they also hand out plaintext read
# ahead before the stream faults went away.
_TLS_STREAM_NAMES = frozenset(("send", "sendall", "write"))
_STREAM_USERS: set[int] = set()  # ids of live handles whose faults can touch bytes


def _targets(names: Iterable[str], tls_names: Iterable[str]
             ) -> list[tuple[type, str, object, object]]:
    """(class, name, dispatcher, original) for the given names."""
    found: list[tuple[type, str, object, object]] = [
        (_SOCKET, name, _DISPATCHERS[name], _ORIGINAL_ATTRS[name]) for name in names
    ]
    if _TLS is not None:
        found += [(_TLS, name, _TLS_DISPATCHERS[name], _TLS_ORIGINAL_ATTRS[name])
                  for name in tls_names]
    return found


def _put(names: Iterable[str], tls_names: Iterable[str]) -> None:
    for cls, name, dispatcher, _ in _targets(names, tls_names):
        setattr(cls, name, dispatcher)


def _restore(names: Iterable[str], tls_names: Iterable[str]) -> None:
    for cls, name, _, original in _targets(names, tls_names):
        if original is _MISSING:
            if name in cls.__dict__:
                delattr(cls, name)
        else:
            setattr(cls, name, original)


def install() -> None:
    """Put the connection dispatchers on ``socket.socket`` (counted: one per live scope).

    The byte-moving dispatchers (send and receive families) are installed only while
    some scope has a stream fault (:func:`set_stream_faults`), so a socket under a
    scope with no stream fault runs at full speed.
    """
    global _INSTALLS
    with _REGISTRY_LOCK:
        _INSTALLS += 1
        if _INSTALLS == 1:
            _put(set(_DISPATCHERS) - _STREAM_NAMES, set(_TLS_DISPATCHERS) - _TLS_STREAM_NAMES)


def set_stream_faults(handle: object, present: bool) -> None:
    """Say whether ``handle`` has stream faults; byte dispatchers follow the total."""
    with _REGISTRY_LOCK:
        before = bool(_STREAM_USERS)
        if present:
            _STREAM_USERS.add(id(handle))
        else:
            _STREAM_USERS.discard(id(handle))
        after = bool(_STREAM_USERS)
        if after and not before:
            _put(_STREAM_NAMES, _TLS_STREAM_NAMES)
        elif before and not after:
            _restore(_STREAM_NAMES, _TLS_STREAM_NAMES)


def uninstall() -> None:
    """Undo one :func:`install`; the last one restores the original class exactly."""
    global _INSTALLS
    with _REGISTRY_LOCK:
        if _INSTALLS == 0:
            return
        _INSTALLS -= 1
        if _INSTALLS == 0:
            _STREAM_USERS.clear()
            _restore(_DISPATCHERS, _TLS_DISPATCHERS)


def installed() -> bool:
    """True while the dispatchers are on ``socket.socket``."""
    return _INSTALLS > 0
