"""Connected pairs of message front ends, for tests: the framed twin of ``socket.socketpair()``.

Each helper connects two ends over loopback TCP (or a Unix socket pair for the
blocking ones) and wraps both in the same front end. The signatures match what
:func:`~sockwork.testing.check_message_stream` and
:func:`~sockwork.testing.check_async_message_stream` call, so a helper can be
passed to them as is (``functools.partial`` fixes a format or a codec)::

    left, right = message_socket_pair(codec=JSON)
    with left, right:
        left.send({"op": "ping"})
        assert right.recv() == {"op": "ping"}
"""

# Rules:
# - Only public front-end API is used (MessageSocket(sock), Endpoint(sock),
#   start_server/open_connection): a pair behaves exactly as the front end does in
#   a program, so what passes a check here passes there.
# - Nothing leaks: a failure half-way closes whatever was already opened; the
#   asyncio pair is a context manager because its server must be closed too.
# - Loopback only, port 0 only.

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TypeVar, cast, overload

from sockwork.frames.aio import (
    DEFAULT_MAX_BUFFERED,
    MessageStream,
    open_connection,
    start_server,
)
from sockwork.frames.blocking import MessageSocket
from sockwork.frames.codec import DEFAULT_MAX_SIZE, Format
from sockwork.frames.endpoint import DEFAULT_MAX_QUEUE, Endpoint
from sockwork.frames.payload import BYTES, Codec

__all__ = ["endpoint_pair", "message_socket_pair", "message_stream_pair", "socket_pair"]

T = TypeVar("T")

_FAMILIES = {
    socket.AF_INET: "127.0.0.1",
    socket.AF_INET6: "::1",
}
_ACCEPT_TIMEOUT = 10.0  # seconds; a loopback connection is accepted at once


def socket_pair(
    family: socket.AddressFamily = socket.AF_INET,
) -> tuple[socket.socket, socket.socket]:
    """Return two connected stream sockets: over loopback TCP by default, or a Unix pair.

    Args:
        family: ``AF_INET`` (127.0.0.1, a free port), ``AF_INET6`` (::1) or ``AF_UNIX``
            (``socket.socketpair()``).

    Returns:
        ``(client, server)``: blocking sockets; the caller closes them.

    Raises:
        ValueError: another family.
        OSError: the loopback address is not available (no IPv6, for instance).
    """
    if family == socket.AF_UNIX:
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    host = _FAMILIES.get(family)
    if host is None:
        raise ValueError(f"family must be AF_INET, AF_INET6 or AF_UNIX, not {family!r}")
    with socket.create_server((host, 0), family=family) as listener:
        listener.settimeout(_ACCEPT_TIMEOUT)
        client = socket.create_connection(listener.getsockname()[:2], timeout=_ACCEPT_TIMEOUT)
        try:
            server, _ = listener.accept()
        except BaseException:
            client.close()
            raise
    client.settimeout(None)
    server.settimeout(None)
    return client, server


@overload
def message_socket_pair(
    *,
    format: Format | str = ...,
    max_size: int = ...,
    peer_max_size: int | None = ...,
    family: socket.AddressFamily = ...,
) -> tuple[MessageSocket[bytes], MessageSocket[bytes]]: ...


@overload
def message_socket_pair(
    *,
    format: Format | str = ...,
    max_size: int = ...,
    peer_max_size: int | None = ...,
    codec: Codec[T],
    family: socket.AddressFamily = ...,
) -> tuple[MessageSocket[T], MessageSocket[T]]: ...


def message_socket_pair(
    *,
    format: Format | str = Format.U32,
    max_size: int = DEFAULT_MAX_SIZE,
    peer_max_size: int | None = None,
    codec: Codec[T] | Codec[bytes] = BYTES,
    family: socket.AddressFamily = socket.AF_INET,
) -> tuple[MessageSocket[T], MessageSocket[T]] | tuple[MessageSocket[bytes], MessageSocket[bytes]]:
    """Return two connected :class:`~sockwork.frames.MessageSocket` objects.

    Args:
        format: the wire format of both ends.
        max_size: the first end's limit (what it sends and accepts).
        peer_max_size: the second end's limit (default: ``max_size``). Different limits
            let a test send a message the receiver must refuse.
        codec: the payload codec of both ends.
        family: see :func:`socket_pair` (TCP over 127.0.0.1 by default).

    Returns:
        ``(left, right)``; close both (``with left, right:``).
    """
    a, b = socket_pair(family)
    try:
        left = MessageSocket(a, format=format, max_size=max_size, codec=codec)
        right = MessageSocket(
            b,
            format=format,
            max_size=max_size if peer_max_size is None else peer_max_size,
            codec=codec,
        )
    except BaseException:
        a.close()
        b.close()
        raise
    return cast("tuple[MessageSocket[T], MessageSocket[T]]", (left, right))


@overload
def endpoint_pair(
    *,
    format: Format | str = ...,
    max_size: int = ...,
    peer_max_size: int | None = ...,
    max_queue: int = ...,
    family: socket.AddressFamily = ...,
) -> tuple[Endpoint[bytes], Endpoint[bytes]]: ...


@overload
def endpoint_pair(
    *,
    format: Format | str = ...,
    max_size: int = ...,
    peer_max_size: int | None = ...,
    codec: Codec[T],
    max_queue: int = ...,
    family: socket.AddressFamily = ...,
) -> tuple[Endpoint[T], Endpoint[T]]: ...


def endpoint_pair(
    *,
    format: Format | str = Format.U32,
    max_size: int = DEFAULT_MAX_SIZE,
    peer_max_size: int | None = None,
    codec: Codec[T] | Codec[bytes] = BYTES,
    max_queue: int = DEFAULT_MAX_QUEUE,
    family: socket.AddressFamily = socket.AF_INET,
) -> tuple[Endpoint[T], Endpoint[T]] | tuple[Endpoint[bytes], Endpoint[bytes]]:
    """Return two connected background :class:`~sockwork.frames.Endpoint` objects.

    The arguments are those of :func:`message_socket_pair`, plus ``max_queue``.

    Returns:
        ``(left, right)``; close both (``with left, right:``).
    """
    a, b = socket_pair(family)
    left: Endpoint[T] | None = None
    codec = cast("Codec[T]", codec)
    try:
        left = Endpoint(a, format=format, max_size=max_size, codec=codec, max_queue=max_queue)
        right = Endpoint(
            b,
            format=format,
            max_size=max_size if peer_max_size is None else peer_max_size,
            codec=codec,
            max_queue=max_queue,
        )
    except BaseException:
        if left is not None:
            left.abort()
        a.close()
        b.close()
        raise
    return left, right


@overload
def message_stream_pair(
    *,
    format: Format | str = ...,
    max_size: int = ...,
    peer_max_size: int | None = ...,
) -> AbstractAsyncContextManager[tuple[MessageStream[bytes], MessageStream[bytes]]]: ...


@overload
def message_stream_pair(
    *,
    format: Format | str = ...,
    max_size: int = ...,
    peer_max_size: int | None = ...,
    codec: Codec[T],
) -> AbstractAsyncContextManager[tuple[MessageStream[T], MessageStream[T]]]: ...


def message_stream_pair(
    *,
    format: Format | str = Format.U32,
    max_size: int = DEFAULT_MAX_SIZE,
    peer_max_size: int | None = None,
    codec: Codec[T] | Codec[bytes] = BYTES,
) -> (
    AbstractAsyncContextManager[tuple[MessageStream[T], MessageStream[T]]]
    | AbstractAsyncContextManager[tuple[MessageStream[bytes], MessageStream[bytes]]]
):
    """Connect two asyncio :class:`~sockwork.frames.MessageStream` objects over loopback TCP.

    An async context manager, because a server accepts the second end::

        async with message_stream_pair() as (left, right):
            await left.send(b"ping")
            assert await right.recv() == b"ping"

    On exit both streams and the server are closed and waited for (aborted if a
    flush takes longer than 5 s, so a peer that stopped reading cannot hang a test).
    The arguments are those of :func:`message_socket_pair` (TCP only).
    """
    return _stream_pair(
        format=format,
        max_size=max_size,
        peer_max_size=max_size if peer_max_size is None else peer_max_size,
        codec=cast("Codec[T]", codec),
    )


_CLOSE_TIMEOUT = 5.0  # seconds a pair's exit waits for its flushes before aborting


@contextlib.asynccontextmanager
async def _stream_pair(
    *, format: Format | str, max_size: int, peer_max_size: int, codec: Codec[T]
) -> AsyncIterator[tuple[MessageStream[T], MessageStream[T]]]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[MessageStream[T]] = loop.create_future()
    released: asyncio.Future[None] = loop.create_future()  # never set: server.close() cancels

    async def hold(stream: MessageStream[T]) -> None:
        if accepted.done():  # somebody else connected: not part of the pair
            return
        accepted.set_result(stream)
        # start_server closes the stream when the handler returns, so the handler stays
        # until the pair is done with, whatever happens to the connection meanwhile.
        await released

    server = await start_server(
        hold,
        "127.0.0.1",
        0,
        format=format,
        max_size=peer_max_size,
        codec=codec,
        max_buffered=max(DEFAULT_MAX_BUFFERED, peer_max_size),  # one connection: no sharing
    )
    client: MessageStream[T] | None = None
    try:
        host, port = server.sockets[0].getsockname()[:2]
        client = await open_connection(host, port, format=format, max_size=max_size, codec=codec)
        peer = await asyncio.wait_for(accepted, _ACCEPT_TIMEOUT)
        yield client, peer
    finally:
        if client is not None:
            client.close()
        server.close()
        waits = [server.wait_closed()] + ([client.wait_closed()] if client is not None else [])
        try:
            await asyncio.wait_for(asyncio.gather(*waits), _CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            if client is not None:
                client.abort()
            server.abort()
            await server.wait_closed()
