"""What the socket-owning front ends share: set-up checks, constants, error translation.

``MessageSocket`` (blocking) and ``Endpoint`` (background) both own a connected stream
socket; they check and prepare it here, and turn its ``OSError`` into sockwork errors
with :class:`TranslateErrors`, the one place in either that catches ``OSError``.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from sockwork.errors import ConnectionClosed, TimedOut

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "HAS_SENDMSG",
    "RECV_SIZE",
    "WOULD_BLOCK",
    "Flag",
    "Owner",
    "TranslateErrors",
    "prepare",
]

RECV_SIZE: Final = 256 * 1024  # bytes asked of each recv_into (the decoder may offer fewer)
HAS_SENDMSG: Final = hasattr(socket.socket, "sendmsg")
# A non-blocking socket (or a TLS record) not ready yet: not an error, try again later.
WOULD_BLOCK: Final = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_HAS_EVENTFD: Final = hasattr(os, "eventfd")


def prepare(sock: socket.socket, *, nodelay: bool) -> tuple[object, object]:
    """Check that ``sock`` is a connected stream socket, set TCP_NODELAY if asked.

    Returns:
        ``(peer address, local address)``.

    Raises:
        TypeError: ``sock`` is not a ``SOCK_STREAM`` socket.
        ValueError: ``sock`` is not connected.
    """
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
        raise TypeError(f"sock must be a connected SOCK_STREAM socket, not {sock!r}")
    try:
        addresses = (sock.getpeername(), sock.getsockname())
    except OSError as exc:
        raise ValueError(f"sock must be connected: {exc}") from exc
    if nodelay and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return addresses


class Owner(Protocol):
    """What :class:`TranslateErrors` needs to know about the front end it serves."""

    address: object

    @property
    def closed(self) -> bool:
        """True once this side closed the connection."""

    def _closed_error(self) -> ConnectionClosed:
        """The error for a call on a connection this side closed."""

    def _fail(self, exc: BaseException) -> None:
        """Record a fault that desynchronised the stream and close the socket."""


class TranslateErrors:
    """Context manager turning a socket's OSError into sockwork errors (``__cause__`` kept).

    - would-block errors (:data:`WOULD_BLOCK`) pass through unchanged: a non-blocking
      caller retries later;
    - a timeout (on a socket with one: ``timeout`` tells its value) becomes
      :class:`TimedOut`; when ``fail_on_timeout`` (a send: part of a frame may be
      written) the owner's connection is failed first;
    - after this side closed: the owner's "closed" error;
    - anything else: ``ConnectionClosed(by_peer=True)``, the connection is lost.

    One instance per direction is reused for every call (a generator-based context
    manager costs more than the send of a small message).
    """

    def __init__(
        self,
        owner: Owner,
        action: str,
        *,
        timeout: Callable[[], float | None] | None = None,
        fail_on_timeout: bool = False,
    ) -> None:
        self._owner = owner
        self._action = action
        self._timeout = timeout
        self._fail_on_timeout = fail_on_timeout

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, OSError) or isinstance(exc, WOULD_BLOCK):
            return
        owner = self._owner
        if isinstance(exc, TimeoutError) and self._timeout is not None:
            # socket.timeout is TimeoutError since 3.10
            timeout = self._timeout() if not owner.closed else None
            error = TimedOut(
                f"{self._action} timed out after {timeout} s; raise the timeout with settimeout()",
                timeout=timeout,
            )
            if self._fail_on_timeout:
                owner._fail(error)
            raise error from exc
        if owner.closed:
            raise owner._closed_error() from exc
        raise ConnectionClosed(
            f"{self._action} failed, connection lost: {exc}",
            address=owner.address,
            by_peer=True,
        ) from exc


class Flag:
    """A file descriptor that is readable while set (what ``Endpoint.fileno()`` returns)."""

    def __init__(self) -> None:
        self.is_set = False
        self._eventfd = -1
        self._pair: tuple[socket.socket, socket.socket] | None = None
        if _HAS_EVENTFD:
            self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # not Linux: a socketpair does the same with two descriptors
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self._pair = (reader, writer)

    def fileno(self) -> int:
        """Return the descriptor to wait on."""
        if self._pair is not None:
            return self._pair[0].fileno()
        return self._eventfd

    def set(self) -> None:
        """Make the descriptor readable."""
        if self.is_set:
            return
        self.is_set = True
        if self._pair is not None:
            self._pair[1].send(b"\0")
        else:
            os.eventfd_write(self._eventfd, 1)

    def clear(self) -> None:
        """Make the descriptor not readable."""
        if not self.is_set:
            return
        self.is_set = False
        if self._pair is not None:
            self._pair[0].recv(16)
        else:
            os.eventfd_read(self._eventfd)  # resets the counter to 0: not readable

    def close(self) -> None:
        """Release the descriptor(s)."""
        if self._pair is not None:
            self._pair[0].close()
            self._pair[1].close()
        elif self._eventfd >= 0:
            os.close(self._eventfd)
            self._eventfd = -1
