"""The method replacements: what runs instead of ``socket.socket``'s methods while faults live.

# Strategy:
- The methods of ``socket.socket`` that move bytes or connections (``send``,
  ``sendall``, ``sendmsg``, ``sendto``, ``sendfile``, ``recv``, ``recv_into``,
  ``recvfrom``, ``recvfrom_into``, ``recvmsg``, ``connect``, ``connect_ex``,
  ``accept``, ``getsockopt``, ``shutdown``, ``close``) are replaced **on the class**
  while at least one scope (``apply`` or ``inject``) is alive, and restored when the
  last one ends; those of ``ssl.SSLSocket`` likewise (see :mod:`sockwork.faults.tls`).
  Class-level dispatch reaches every socket, including those made by libraries and
  asyncio, whatever name they imported ``socket`` under.
- The byte-moving methods are replaced only while some scope has a stream fault.
  A socket with no faults then costs one dictionary look-up per call (the look-up
  is written out in each dispatcher: it is the hot path). The originals are
  captured once, at import (:mod:`sockwork.faults.kernel`), never re-read from
  the class.
- A dispatcher only finds the socket's state and hands the call to the executor
  of its kind: :mod:`~sockwork.faults.stream` for bytes,
  :mod:`~sockwork.faults.attempt` for connects and accepts.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from sockwork.faults import kernel, tls
from sockwork.faults.attempt import accept, connect, pending_connect_error
from sockwork.faults.budget import now
from sockwork.faults.deadline import act_on_open, unwatch
from sockwork.faults.readiness import forget, notify_changed
from sockwork.faults.state import REGISTRY_LOCK, STATES, SocketState, attach, lookup
from sockwork.faults.stream import receive, send

if TYPE_CHECKING:
    from sockwork.faults.plan import Connection
    from sockwork.faults.scope import Scope

__all__ = [
    "detach_all",
    "install",
    "installed",
    "set_hooks",
    "set_stream_faults",
    "uninstall",
]

_MISSING = object()
# The byte-moving methods: replaced only while some scope has a stream fault.
_STREAM_METHODS = (
    "send",
    "sendall",
    "sendmsg",
    "sendto",
    "sendfile",
    "recv",
    "recv_into",
    "recvfrom",
    "recvfrom_into",
    "recvmsg",
)
_PATCHED_NAMES = (
    *_STREAM_METHODS,
    "connect",
    "connect_ex",
    "accept",
    "getsockopt",
    "shutdown",
    "close",
)
_ORIGINAL_ATTRS: dict[str, object] = {
    name: kernel.Socket.__dict__.get(name, _MISSING) for name in _PATCHED_NAMES
}
_INSTALLS = 0

# The byte-moving dispatchers are the hot path (every call of every socket while a
# stream fault lives anywhere): they reach the originals and the registry through
# names bound here (measured: ~0.1 us per call less than kernel.send and STATES.get).
_STATES = STATES  # CPython 3.11 calls a method of an imported name without LOAD_METHOD
_real_send = kernel.send
_real_sendall = kernel.sendall
_real_sendmsg = kernel.sendmsg
_real_sendto = kernel.sendto
_real_sendfile = kernel.sendfile
_real_recv = kernel.recv
_real_recv_into = kernel.recv_into
_real_recvfrom = kernel.recvfrom
_real_recvfrom_into = kernel.recvfrom_into
_real_recvmsg = kernel.recvmsg


def detach_all(scope: Scope) -> None:
    """Remove ``scope``'s layers from every socket it was attached to."""
    ended: list[Connection] = []
    with REGISTRY_LOCK:
        for state in list(STATES.values()):
            kept = [layer for layer in state.layers if layer.scope is not scope]
            if len(kept) != len(state.layers):
                ended.extend(
                    layer.conn
                    for layer in state.layers
                    if layer.scope is scope and layer.conn is not None
                )
                state.layers = kept
                if not kept:
                    unwatch(state)
                    sock = state.ref()
                    if state.plaintext and sock is not None:
                        tls.hand_back(sock, state.plaintext)
                        state.plaintext = bytearray()
    scope.forget(ended)  # outside REGISTRY_LOCK (see scope.py)
    notify_changed()


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
    return send(
        self,
        state,
        data,
        lambda v: _real_sendto(self, v, *args),  # type: ignore[call-overload]
        whole=False,
    )


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


def _d_sendfile(
    self: socket.socket, file: object, offset: int = 0, count: int | None = None
) -> int:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or state.idle("send"):
        return _real_sendfile(self, file, offset, count)  # type: ignore[arg-type]
    # The os.sendfile fast path would bypass the faults: use the send() loop.
    return kernel.sendfile_use_send(self, file, offset, count)  # type: ignore[no-any-return]


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
    return receive(
        self,
        state,
        size,
        lambda n: _real_recv_into(self, buffer, n, flags),  # type: ignore[arg-type]
        lambda: 0,
    )


def _d_recvfrom(self: socket.socket, bufsize: int, flags: int = 0) -> tuple[bytes, object]:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or flags & socket.MSG_PEEK or state.idle("recv"):
        return _real_recvfrom(self, bufsize, flags)
    return receive(
        self, state, bufsize, lambda n: _real_recvfrom(self, n, flags), lambda: (b"", None)
    )


def _d_recvfrom_into(
    self: socket.socket, buffer: object, nbytes: int = 0, flags: int = 0
) -> tuple[int, object]:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or flags & socket.MSG_PEEK or state.idle("recv"):
        return _real_recvfrom_into(self, buffer, nbytes, flags)  # type: ignore[arg-type]
    size = nbytes or len(memoryview(buffer))  # type: ignore[arg-type]
    return receive(
        self,
        state,
        size,
        lambda n: _real_recvfrom_into(self, buffer, n, flags),  # type: ignore[arg-type]
        lambda: (0, None),
    )


def _d_recvmsg(
    self: socket.socket, bufsize: int, ancbufsize: int = 0, flags: int = 0
) -> tuple[bytes, list[object], int, object]:
    state = _STATES.get(id(self))
    if state is None or state.ref() is not self or flags & socket.MSG_PEEK or state.idle("recv"):
        return _real_recvmsg(self, bufsize, ancbufsize, flags)  # type: ignore[return-value]
    return receive(
        self,
        state,
        bufsize,
        lambda n: _real_recvmsg(self, n, ancbufsize, flags),  # type: ignore[return-value]
        lambda: (b"", [], 0, None),
    )


def _d_connect(self: socket.socket, address: object) -> None:
    state = _maybe_attach_client(self, address)
    if state is None or not state.layers:
        kernel.connect(self, address)  # type: ignore[arg-type]
        return
    connect(self, state, address, ex=False)


def _d_connect_ex(self: socket.socket, address: object) -> int:
    state = _maybe_attach_client(self, address)
    if state is None or not state.layers:
        return kernel.connect_ex(self, address)  # type: ignore[arg-type]
    code = connect(self, state, address, ex=True)
    return 0 if code is None else code


def _d_accept(self: socket.socket) -> tuple[socket.socket, object]:
    state = _maybe_attach_server(self)
    if state is None or not state.layers:
        return kernel.accept(self)
    return accept(self, state, _wrap_accepted)


def _d_getsockopt(self: socket.socket, level: int, option: int, *args: int) -> object:
    if level == socket.SOL_SOCKET and option == socket.SO_ERROR and not args:
        state = lookup(self)
        if state is not None and state.connect_due is not None:
            code = pending_connect_error(self, state)
            if code is not None:
                return code
        result = kernel.getsockopt(self, level, option)
        if result == 0 and state is not None and state.layers:
            act_on_open(self, state, check=True)  # a non-blocking connect may be done
        return result
    return kernel.getsockopt(self, level, option, *args)


def _d_shutdown(self: socket.socket, how: int) -> None:
    state = lookup(self)
    if state is not None and state.cut == "fin":
        # A FIN cut is our own shutdown(SHUT_RDWR), so the kernel answers as after one:
        # quiet while only our side is closed, ENOTCONN once the peer's FIN has come too
        # (TCP_CLOSE: inet_shutdown), for any ``how`` (tests/faults/test_patch.py).
        kernel.shutdown(self, how)
        return
    if state is not None and state.cut is not None:
        kernel.shutdown_quietly(self, how)
        # After an RST the socket is TCP_CLOSE: Linux's inet_shutdown answers ENOTCONN
        # and leaves the pending ECONNRESET to the next call (tests/faults/test_patch.py).
        raise kernel.oserror(OSError, errno.ENOTCONN)
    if state is not None and "recv" in state.half_closed:
        if state.shut_write or "send" in state.half_closed:
            # The peer's FIN (made up: the real peer never sent one) and ours are both
            # through: Linux would be in TCP_CLOSE and answer ENOTCONN, whatever ``how``.
            kernel.shutdown_quietly(self, how)
            raise kernel.oserror(OSError, errno.ENOTCONN)
    if state is not None and how in (socket.SHUT_WR, socket.SHUT_RDWR):
        state.shut_write = True
    if (
        state is not None
        and how in (socket.SHUT_WR, socket.SHUT_RDWR)
        and state.outbox is not None
        and state.outbox.finish_with(how)
    ):
        return  # the FIN follows the bytes still on their way
    if state is not None and how in (socket.SHUT_WR, socket.SHUT_RDWR):
        due = state.fin_due(now())
        if due is not None:
            _later(self, due, how)
            return
    kernel.shutdown(self, how)


def _d_close(self: socket.socket) -> None:
    state = lookup(self)
    if state is not None:
        with REGISTRY_LOCK:
            if STATES.get(id(self)) is state:
                del STATES[id(self)]
        if state.outbox is not None and self.fileno() >= 0 and state.outbox.finish_with(None):
            pass  # the outbox sends the rest on a duplicate fd, then closes it
        elif state.cut is None and self.fileno() >= 0:
            due = state.fin_due(now())
            if due is not None:
                _later(self, due, None)
        for layer in state.layers:
            if layer.conn is not None:
                layer.scope.forget([layer.conn])  # the plan forgets the connection
        unwatch(state)
        forget(state)
        if "recv" in state.half_closed and self.fileno() >= 0:
            kernel.drain(self)  # unread data would make the close an RST (see cut.py)
    kernel.close(self)


def _later(sock: socket.socket, until: float, how: int | None) -> None:
    """SlowClose: keep the connection open on a duplicate fd, end it at ``until``."""
    try:
        dup = os.dup(sock.fileno())
    except OSError:
        return

    def finish() -> None:
        holder = kernel.Socket(fileno=dup)
        try:
            if how is not None:
                kernel.shutdown_quietly(holder, how)
        finally:
            kernel.close(holder)

    timer = threading.Timer(max(0.0, until - now()), finish)
    timer.daemon = True
    timer.start()


# -- scope matching hooks (set by inject) ------------------------------------------

_client_hook: Callable[[socket.socket, object], None] | None = None
_server_hook: Callable[[socket.socket], None] | None = None


def set_hooks(
    client: Callable[[socket.socket, object], None] | None,
    server: Callable[[socket.socket], None] | None,
) -> None:
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
        attach(conn, layer.scope, connected=True, role="server")
    state = lookup(conn)
    if state is not None:
        act_on_open(conn, state)


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
_STREAM_NAMES = frozenset(_STREAM_METHODS)
_STREAM_USERS: set[int] = set()  # ids of live handles whose faults can touch bytes

# (class, dispatchers, originals, byte-moving names) for each class patched.
_CLASSES: list[tuple[type, dict[str, object], dict[str, object], frozenset[str]]] = [
    (kernel.Socket, _DISPATCHERS, _ORIGINAL_ATTRS, _STREAM_NAMES),
]
if tls.SSL_SOCKET is not None:
    _CLASSES.append((tls.SSL_SOCKET, tls.DISPATCHERS, tls.ORIGINAL_ATTRS, tls.STREAM_NAMES))


def _names(dispatchers: Iterable[str], streams: frozenset[str], which: str) -> set[str]:
    if which == "stream":
        return set(streams)
    if which == "connection":
        return set(dispatchers) - streams
    return set(dispatchers)


def _put(which: str) -> None:
    """Replace the methods ``which`` ("stream", "connection") on every class."""
    for cls, dispatchers, _, streams in _CLASSES:
        for name in _names(dispatchers, streams, which):
            setattr(cls, name, dispatchers[name])


def _restore(which: str) -> None:
    """Put back the original methods ``which`` ("stream", "all") on every class."""
    for cls, dispatchers, originals, streams in _CLASSES:
        for name in _names(dispatchers, streams, which):
            original = originals[name]
            if original is _MISSING:
                if name in cls.__dict__:
                    delattr(cls, name)
            else:
                setattr(cls, name, original)


def install() -> None:
    """Put the connection dispatchers on the socket classes (counted: one per live scope).

    The byte-moving dispatchers (send and receive families) are installed only while
    some scope has a stream fault (:func:`set_stream_faults`), so a socket under a
    scope with no stream fault runs at full speed.
    """
    global _INSTALLS
    with REGISTRY_LOCK:
        _INSTALLS += 1
        if _INSTALLS == 1:
            _put("connection")


def set_stream_faults(scope: Scope, present: bool) -> None:
    """Say whether ``scope`` has stream faults; byte dispatchers follow the total."""
    with REGISTRY_LOCK:
        before = bool(_STREAM_USERS)
        if present:
            _STREAM_USERS.add(id(scope))
        else:
            _STREAM_USERS.discard(id(scope))
        after = bool(_STREAM_USERS)
        if after and not before:
            _put("stream")
        elif before and not after:
            _restore("stream")


def uninstall() -> None:
    """Undo one :func:`install`; the last one restores the original class exactly."""
    global _INSTALLS
    with REGISTRY_LOCK:
        if _INSTALLS == 0:
            return
        _INSTALLS -= 1
        if _INSTALLS == 0:
            _STREAM_USERS.clear()
            _restore("all")


def installed() -> bool:
    """True while the dispatchers are on the socket classes."""
    return _INSTALLS > 0
