"""Synchronous TLS sockets (``ssl.SSLSocket``): faults on the plaintext, once per call.

# Strategy:
- ``SSLSocket`` overrides the byte-moving methods with ones that go through
  OpenSSL, which uses the fd itself, so ``socket.socket``'s dispatchers never see
  its bytes. Its ``send``, ``sendall``, ``write``, ``read`` (the one funnel of
  ``recv``, ``recv_into`` and ``read``) and ``pending`` are replaced too, and
  ``_create`` (used by ``wrap_socket``) so that faults move with the fd.
- Faults act on the plaintext, what the application sends and reads: a
  dispatcher runs the faults once and calls the original one level down
  (``SSLObject``), never a method that is itself dispatched (``SSLSocket.sendall``
  loops over ``self.send``: replacing only ``send`` would fault it twice). When
  TLS is not active (``_sslobj`` None: not yet connected, or unwrapped) the
  original calls ``socket.socket``'s method, whose dispatcher applies the faults.
- OpenSSL cannot peek: decrypted bytes the plan has seen wait in
  ``SocketState.plaintext`` until delivered, and are handed back if the faults
  go first (:func:`hand_back`). A non-blocking SSLSocket gets ``SSLWantReadError``
  or ``SSLWantWriteError`` while bytes are not due, and no outbox (OpenSSL must
  not write from another thread while the application reads).
"""

from __future__ import annotations

import socket
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sockwork.faults import kernel
from sockwork.faults.budget import Budget, now
from sockwork.faults.state import STATES, SocketState, lookup, rekey
from sockwork.faults.stream import receive, send

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without OpenSSL
    ssl = None  # type: ignore[assignment]

__all__ = [
    "DISPATCHERS",
    "ORIGINAL_ATTRS",
    "PATCHED_NAMES",
    "SSL_SOCKET",
    "STREAM_NAMES",
    "TlsSource",
    "hand_back",
]

_MISSING = object()
SSL_SOCKET = ssl.SSLSocket if ssl is not None else None
PATCHED_NAMES = ("send", "sendall", "write", "read", "pending", "_create")
# Reads stay replaced while any scope is alive (not only while stream faults are):
# they also hand out plaintext read ahead before the stream faults went away.
STREAM_NAMES = frozenset(("send", "sendall", "write"))
ORIGINAL_ATTRS: dict[str, object] = {}
if SSL_SOCKET is not None:
    ORIGINAL_ATTRS = {name: SSL_SOCKET.__dict__.get(name, _MISSING) for name in PATCHED_NAMES}
    _real_tls_send = SSL_SOCKET.send
    _real_tls_sendall = SSL_SOCKET.sendall
    _real_tls_write = SSL_SOCKET.write
    _real_tls_read = SSL_SOCKET.read
    _real_tls_pending = SSL_SOCKET.pending
    _real_tls_create = SSL_SOCKET.__dict__["_create"].__func__  # private, stable since 3.7


class TlsSource:
    """Plaintext of an ``ssl.SSLSocket``. OpenSSL cannot peek, so the bytes the plan
    has been fed wait in ``state.plaintext`` until they are delivered (user space,
    unlike :class:`KernelSource`)."""

    __slots__ = ("sock", "buffer")
    quiet = False  # the kernel may be empty while plaintext waits here

    def __init__(self, sock: socket.socket, state: SocketState) -> None:
        self.sock = sock
        self.buffer = state.plaintext

    def _pull(self, size: int) -> bytes:
        data: bytes = _real_tls_read(self.sock, size)  # type: ignore[arg-type]
        self.buffer += data
        return data

    def peek(self, size: int, budget: Budget, until: float | None) -> bytes | None:
        """Decrypt at most ``size`` bytes into the buffer; None: nothing came before ``until``."""
        if not self.buffer and not _real_tls_pending(self.sock):  # type: ignore[arg-type]
            if not budget.nonblocking and not kernel.wait_readable(
                self.sock, budget.remaining(until)
            ):
                if budget.deadline is not None and now() >= budget.deadline:
                    raise kernel.timeout_error()
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

    def discard_all(self) -> None:
        """Drop the buffered plaintext (the direction ended: a HalfClose)."""
        self.buffer.clear()


@contextmanager
def _tls_errors(kind: str) -> Iterator[None]:
    """Raise what a non-blocking SSLSocket raises when its bytes are not due."""
    try:
        yield
    except BlockingIOError:
        if kind == "read":
            raise ssl.SSLWantReadError(
                ssl.SSL_ERROR_WANT_READ, "The operation did not complete (read)"
            ) from None
        raise ssl.SSLWantWriteError(
            ssl.SSL_ERROR_WANT_WRITE, "The operation did not complete (write)"
        ) from None


def _tls_state(sock: socket.socket, flags: int, direction: str) -> SocketState | None:
    """The state to act on for a TLS call, or None to call the original method."""
    state = STATES.get(id(sock))
    if state is None or state.ref() is not sock or flags or sock._sslobj is None:  # type: ignore[attr-defined]
        return None
    if state.idle(direction) and not (direction == "recv" and state.plaintext):
        return None
    return state


def _d_tls_send(self: socket.socket, data: object, flags: int = 0) -> int:
    state = _tls_state(self, flags, "send")
    if state is None:
        return _real_tls_send(self, data, flags)  # type: ignore[arg-type]
    with _tls_errors("write"):
        return send(
            self,
            state,
            data,
            lambda v: _real_tls_send(self, v),  # type: ignore[arg-type]
            whole=False,
            deferrable=False,
        )


def _d_tls_write(self: socket.socket, data: object) -> int:
    state = _tls_state(self, 0, "send")
    if state is None:
        return _real_tls_write(self, data)  # type: ignore[arg-type]
    with _tls_errors("write"):
        return send(
            self,
            state,
            data,
            lambda v: _real_tls_write(self, v),  # type: ignore[arg-type]
            whole=False,
            deferrable=False,
        )


def _d_tls_sendall(self: socket.socket, data: object, flags: int = 0) -> None:
    state = _tls_state(self, flags, "send")
    if state is None:
        return _real_tls_sendall(self, data, flags)  # type: ignore[arg-type]
    with _tls_errors("write"):
        # One pass for the whole call: the original loops over self.send, which
        # would meet the faults a second time.
        send(
            self,
            state,
            data,
            lambda v: _real_tls_send(self, v),  # type: ignore[arg-type]
            whole=True,
            deferrable=False,
        )
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
        return receive(
            self, state, size, consume, lambda: b"" if buffer is None else 0, TlsSource(self, state)
        )


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


def hand_back(sock: socket.socket, plaintext: bytearray) -> None:
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


DISPATCHERS: dict[str, object] = {
    "send": _d_tls_send,
    "sendall": _d_tls_sendall,
    "write": _d_tls_write,
    "read": _d_tls_read,
    "pending": _d_tls_pending,
    "_create": classmethod(_d_tls_create),
}
