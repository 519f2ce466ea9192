"""Large frames written straight to the socket, skipping Python 3.11's transport copy.

Python 3.11's selector transport copies the unsent part of a write into its own
buffer (3.12 keeps the caller's buffer). On a plain socket transport of a selector
loop, :class:`~sockwork.frames.aio.MessageStream` writes a large frame with
``os.writev`` while the transport's buffer is empty, and keeps what the kernel did
not take as a :class:`Tail`: memoryviews of the caller's bytes, written as the socket
drains.
"""

# Rules:
# - Only where it saves a copy and cannot skip a layer: DIRECT (3.11 with os.writev), a
#   selector loop, a SOCK_STREAM socket under the transport and no TLS (direct_fd).
# - A Tail writes through a dup of the transport's descriptor: the loop refuses
#   add_writer on a transport's own. While a tail is pending nothing else is written
#   (the stream keeps small frames in its _pending, a large send waits for ``done``, and
#   close() closes after it); connection_lost and abort() drop it.
# - An OSError is not reported here: the transport meets the same error on its side
#   and reports it; the tail just stops.

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable
from typing import Final

__all__ = ["DIRECT", "Tail", "direct_fd"]

# Write large frames to the socket directly (see Rules): only where it saves a copy.
DIRECT: Final = sys.version_info < (3, 12) and hasattr(os, "writev")


def direct_fd(transport: asyncio.BaseTransport, loop: asyncio.AbstractEventLoop) -> int:
    """The socket descriptor large frames may be written to directly, or -1.

    Judged by capabilities, not by the transport's class: a socket under the transport
    (``get_extra_info("socket")``), no TLS layer (``sslcontext``/``ssl_object``: a TLS
    transport exposes the raw socket too, and bytes written there would skip the
    encryption), a write buffer to check for emptiness before each direct write, and a
    selector loop (``add_writer`` on the descriptor for the unsent rest).
    """
    if not DIRECT or not isinstance(loop, asyncio.SelectorEventLoop):
        return -1
    sock = transport.get_extra_info("socket")
    if (
        sock is None
        or getattr(sock, "type", None) != socket.SOCK_STREAM
        or transport.get_extra_info("sslcontext") is not None
        or transport.get_extra_info("ssl_object") is not None
        or not callable(getattr(transport, "get_write_buffer_size", None))
    ):
        return -1
    fd = sock.fileno()
    return fd if isinstance(fd, int) else -1


class Tail:
    """The unsent rest of a large frame, written straight to the socket as it drains."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        buffers: list[memoryview],
        on_done: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._fd = os.dup(fd)  # add_writer() refuses the transport's own descriptor
        self._buffers = buffers
        self._on_done = on_done
        self.done: asyncio.Future[None] = loop.create_future()
        loop.add_writer(self._fd, self._write)

    def _write(self) -> None:
        try:
            sent = os.writev(self._fd, self._buffers)
        except BlockingIOError:
            return
        except OSError:
            # The transport meets the same error on its side and reports it.
            self.drop()
            self._on_done()
            return
        buffers = self._buffers
        while sent and buffers:
            size = len(buffers[0])
            if sent < size:
                buffers[0] = buffers[0][sent:]
                break
            sent -= size
            buffers.pop(0)
        if not buffers:
            self.drop()
            self._on_done()

    def drop(self) -> None:
        """Stop writing (done, or the connection is gone) and release the descriptor."""
        if self._fd < 0:
            return
        self._loop.remove_writer(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._buffers = []
        if not self.done.done():
            self.done.set_result(None)
