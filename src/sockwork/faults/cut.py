"""Cutting a connection as the network does: FIN, or RST (an abort).

# Rules:
- A half-close (``HalfClose``) ends one direction only. Sending side:
  ``shutdown(SHUT_WR)``, a real one (the peer reads EOF, the owner's later sends get
  EPIPE from the kernel itself). On an ``SSLSocket`` the FIN goes without a TLS
  ``close_notify``: CPython's only way to send one (``unwrap``, ``SSL_shutdown``
  called twice) goes on to read the peer's alert, and application data found there
  kills the session; so the peer reads a "ragged EOF". Receiving side: the owner
  must read EOF while the peer, which never sent a FIN, may still send:
  ``shutdown(SHUT_RD)`` makes the socket readable for good (Linux: POLLIN|POLLRDHUP,
  so selectors wake), and what the peer sent is drained and dropped, now, at each
  later receive and before the close (unread data at close would make the kernel
  answer with RST, not FIN). Since that FIN is made up, ``dispatch._d_shutdown``
  answers ENOTCONN once our side's FIN is out too, as Linux does in TCP_CLOSE.
- A cut with FIN is ``shutdown(SHUT_RDWR)`` (the peer reads EOF, local sends get
  EPIPE, local receives EOF); a later ``shutdown()`` goes to the kernel, which is
  quiet until the peer's FIN has come too and then answers ENOTCONN (TCP_CLOSE).
  A cut with RST (RFC 793 abort) is ``connect()`` with ``AF_UNSPEC`` on Linux:
  ``tcp_disconnect`` sends RST and the socket stays the same file, so a selector or
  asyncio sees the hang-up on the fd it registered.
  Elsewhere ``SO_LINGER`` 0 and ``dup2`` of an unconnected socket over the fd make
  the connection's last reference close (an RST) while the fd number stays valid.
  Either way the next call raises ``ConnectionResetError`` (ECONNRESET), later sends
  ``BrokenPipeError`` and receives EOF, as Linux does after an RST; ``shutdown()``
  raises ENOTCONN and does not count as that next call (``dispatch._d_shutdown``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import sys

from sockwork.faults import kernel
from sockwork.faults.readiness import notify_changed
from sockwork.faults.state import SocketState

__all__ = ["cut", "half_close", "raise_if_cut"]


def raise_if_cut(state: SocketState, sending: bool) -> None:
    """Raise what the application sees on a cut connection (the first call after an RST)."""
    if state.cut == "reset":
        state.cut = "reset-seen"
        raise kernel.oserror(ConnectionResetError, errno.ECONNRESET)
    if state.cut == "reset-seen" and sending:
        raise kernel.oserror(BrokenPipeError, errno.EPIPE)


def cut(sock: socket.socket, state: SocketState, reset: bool) -> None:
    """End the connection of ``sock`` with FIN, or RST when ``reset``; once."""
    if state.cut is not None:
        return
    if not reset:
        state.cut = "fin"
        kernel.shutdown_quietly(sock, socket.SHUT_RDWR)
        notify_changed()
        return
    state.cut = "reset"
    if not _disconnect(sock):
        kernel.shutdown_quietly(sock, socket.SHUT_RD)  # wake local readers; sends nothing
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            placeholder = kernel.Socket(sock.family, sock.type)
            try:
                os.dup2(placeholder.fileno(), sock.fileno(), inheritable=False)
            finally:
                placeholder.close()
        except OSError:
            pass
    notify_changed()


def half_close(sock: socket.socket, state: SocketState, direction: str) -> None:
    """End one direction of ``sock``'s connection with a FIN (see ``# Rules:``); once."""
    if state.cut is not None:
        return
    if direction in state.half_closed:
        if direction == "recv":
            kernel.drain(sock)
        return
    state.half_closed.add(direction)
    if direction == "send":
        kernel.shutdown_quietly(sock, socket.SHUT_WR)
    else:
        kernel.shutdown_quietly(sock, socket.SHUT_RD)
        kernel.drain(sock)
    notify_changed()


_libc: ctypes.CDLL | None = None


def _disconnect(sock: socket.socket) -> bool:
    """Abort a TCP connection in place with ``connect(AF_UNSPEC)`` (Linux): the kernel
    sends RST (tcp_disconnect) and the file stays the same, so selectors and asyncio
    see the hang-up on the fd they registered. Returns False where unsupported."""
    global _libc
    if not sys.platform.startswith("linux") or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        address = ctypes.create_string_buffer(16)  # sa_family = AF_UNSPEC (0)
        return int(_libc.connect(sock.fileno(), address, 16)) == 0
    except (OSError, AttributeError):
        return False
