"""What the operating system does, untouched: ``socket.socket``'s own methods and errors.

The executor replaces methods on ``socket.socket`` while faults are in force, so
every module that needs the real thing calls it from here: the methods are
captured once, at import (``kernel.send(sock, data)`` is ``socket.socket.send``
as it was), never re-read from a possibly patched class.
"""

from __future__ import annotations

import errno
import os
import select
import socket

__all__ = [
    "Socket",
    "accept",
    "close",
    "connect",
    "connect_ex",
    "drain",
    "getpeername",
    "getsockopt",
    "oserror",
    "recv",
    "recv_into",
    "recvfrom",
    "recvfrom_into",
    "recvmsg",
    "send",
    "sendall",
    "sendfile",
    "sendfile_use_send",
    "sendmsg",
    "sendto",
    "shutdown",
    "shutdown_quietly",
    "timeout_error",
    "wait_readable",
    "would_block",
]

Socket = socket.socket
send = Socket.send
sendall = Socket.sendall
sendmsg = Socket.sendmsg
sendto = Socket.sendto
sendfile = Socket.sendfile
sendfile_use_send = Socket._sendfile_use_send  # type: ignore[attr-defined]  # private, stable since 3.5
recv = Socket.recv
recv_into = Socket.recv_into
recvfrom = Socket.recvfrom
recvfrom_into = Socket.recvfrom_into
recvmsg = Socket.recvmsg
connect = Socket.connect
connect_ex = Socket.connect_ex
accept = Socket.accept
getsockopt = Socket.getsockopt
shutdown = Socket.shutdown
close = Socket.close
getpeername = Socket.getpeername


def shutdown_quietly(sock: socket.socket, how: int) -> None:
    """Shut ``sock`` down; a connection that is already gone is not an error here."""
    try:
        shutdown(sock, how)
    except OSError:
        pass


def drain(sock: socket.socket, limit: int = 4 << 20) -> int:
    """Read and drop what ``sock`` has received, without waiting; return how many bytes.

    At most about ``limit`` bytes per call, so a peer that keeps sending cannot keep
    the caller here.
    """
    dropped = 0
    while dropped < limit:
        try:
            data = recv(sock, 65536, socket.MSG_DONTWAIT)
        except OSError:  # BlockingIOError: nothing more now; anything else: gone
            break
        if not data:
            break
        dropped += len(data)
    return dropped


# -- errors the network would raise ------------------------------------------------


def oserror(cls: type[OSError], code: int) -> OSError:
    """The error ``cls`` with ``code`` and its C library message, as CPython raises it."""
    return cls(code, os.strerror(code))


def timeout_error() -> TimeoutError:
    """What a socket raises when its timeout ends (``TimeoutError("timed out")``)."""
    return TimeoutError("timed out")


def would_block(code: int = errno.EAGAIN) -> BlockingIOError:
    """What a non-blocking socket raises when it cannot go on now."""
    return BlockingIOError(code, os.strerror(code))


def wait_readable(sock: socket.socket, timeout: float | None) -> bool:
    """Poll ``sock`` for input for at most ``timeout`` seconds; True when readable (or gone)."""
    try:
        fd = sock.fileno()
        if fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(None if timeout is None else timeout * 1000.0))
    except (OSError, ValueError):
        return True
