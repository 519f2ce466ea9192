"""An asyncio client that takes one ``reader.read()`` as one whole message.

Protocol: a reply is a 4-byte big-endian length and that many bytes. The buggy
client awaits ``reader.read(65536)`` once and decodes what came; a split read
(``Slice``) gives it part of the message. The correct one uses ``readexactly``.

Contract: the message, or ConnectionError/TimeoutError/IncompleteReadError,
within 3 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
from collections.abc import Iterator

from sockwork.testing.contract import contract

try:
    from . import _kit
except ImportError:  # run as a script
    import _kit  # type: ignore[no-redef]

BUG = "one asyncio read taken as one message"
NEWS = b"sockwork 2.0 released: explore finds your network bugs. " * 8


def _handle(conn: socket.socket) -> None:
    if _kit.recv_line(conn, bytearray()) == b"NEWS":
        conn.sendall(struct.pack("!I", len(NEWS)) + NEWS)


@contextlib.contextmanager
def serve() -> Iterator[_kit.Address]:
    """Run the news server; yield its address."""
    with _kit.Server(_handle) as server:
        yield server.address


async def buggy_news(address: _kit.Address) -> bytes:
    """Fetch the news: one read() is the message."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 1.0)
    try:
        writer.write(b"NEWS\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), 1.0)
        (size,) = struct.unpack("!I", data[:4])
        return data[4 : 4 + size]
    finally:
        writer.close()


async def correct_news(address: _kit.Address) -> bytes:
    """Fetch the news: read the header, then exactly the body."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 1.0)
    try:
        writer.write(b"NEWS\n")
        await writer.drain()
        (size,) = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 1.0))
        return await asyncio.wait_for(reader.readexactly(size), 1.0)
    finally:
        writer.close()


VARIANTS = {"buggy": buggy_news, "correct": correct_news}
PROMISED = (ConnectionError, TimeoutError, asyncio.IncompleteReadError)


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: the news comes back whole."""
    news = VARIANTS[variant]
    with _kit.maybe_server(server, serve) as address:
        with contract(*PROMISED, within=3.0):
            assert asyncio.run(news(address)) == NEWS


if __name__ == "__main__":
    sys.exit(_kit.main(test, serve=serve))
