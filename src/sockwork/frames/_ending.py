"""How a receiving front end reports the end of a stream (sans-IO, shared policy).

The blocking ``MessageSocket``, the asyncio ``MessageStream`` and the background
``Endpoint`` read differently but end the same way: when the decoder raises,
:func:`end_error` decides what the caller sees and whether the connection must be
failed, and iteration over any of them stops on a clean close only
(:func:`until_clean_close`, :func:`until_clean_close_async`). The front ends keep the
hot path (``next_messages()`` and the codec) inline and call in here only on the way
out.
"""

# Rules:
# - IncompleteMessage, ProtocolError and MessageTooLarge desynchronise the stream: they
#   are fatal, keep the transport's error (a reset) as ``__cause__`` and, for an
#   IncompleteMessage, the peer's address.
# - A ConnectionClosed from the decoder means EOF between messages. It is reported as
#   our own close (``by_peer=False``) if this side closed, as a lost connection
#   (``__cause__`` = the reset) if the transport failed, else as the peer's clean EOF.
# - A clean close is a plain ConnectionClosed with no ``__cause__``: iteration ends on
#   it and on nothing else (:func:`is_clean_close`).

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

from sockwork.errors import ConnectionClosed, IncompleteMessage, MessageTooLarge, ProtocolError

__all__ = [
    "closed_error",
    "end_error",
    "is_clean_close",
    "until_clean_close",
    "until_clean_close_async",
]

T = TypeVar("T")


def closed_error(what: str, address: object) -> ConnectionClosed:
    """Return the error for a call on a connection this side closed (``what`` names it)."""
    return ConnectionClosed(f"this {what} was closed", address=address, by_peer=False)


def end_error(
    error: ConnectionClosed | ProtocolError | MessageTooLarge,
    *,
    what: str,
    address: object,
    closed: bool,
    lost: BaseException | None,
) -> tuple[BaseException, bool]:
    """Return the exception to raise for the decoder's ``error``, and whether it is fatal.

    Args:
        error: what ``FrameDecoder.next_message()`` raised.
        what: the front end's name for itself, used when this side closed.
        address: the peer's address, recorded on the error.
        closed: this side has closed the connection.
        lost: the transport's error that ended the receive side (a reset), or None.

    Returns:
        ``(exception, fatal)``: raise the exception (with ``raise exc``: its ``__cause__``
        is set here); when ``fatal`` the caller fails the connection first.
    """
    if isinstance(error, (IncompleteMessage, ProtocolError, MessageTooLarge)):
        if lost is not None and error.__cause__ is None:
            error.__cause__ = lost
        if isinstance(error, IncompleteMessage):
            error.address = address
        return error, True
    if closed:
        mine = closed_error(what, address)
        mine.__cause__ = None
        mine.__suppress_context__ = True  # as ``raise ... from None``
        return mine, False
    if lost is not None:
        reset = ConnectionClosed(f"connection lost: {lost}", address=address, by_peer=True)
        reset.__cause__ = lost
        return reset, False
    error.address = address
    return error, False


def is_clean_close(error: ConnectionClosed) -> bool:
    """Tell whether ``error`` is a clean close (EOF between messages, or ours): iteration ends."""
    return type(error) is ConnectionClosed and error.__cause__ is None


def until_clean_close(recv: Callable[[], T]) -> Iterator[T]:
    """Yield ``recv()`` until it raises a clean close; any other error propagates.

    What ``__iter__`` of the blocking and background front ends returns.
    """
    while True:
        try:
            message = recv()
        except ConnectionClosed as exc:
            if is_clean_close(exc):
                return
            raise
        yield message


async def until_clean_close_async(recv: Callable[[], Awaitable[T]]) -> AsyncIterator[T]:
    """Yield ``await recv()`` until it raises a clean close; the asyncio front end's iteration."""
    while True:
        try:
            message = await recv()
        except ConnectionClosed as exc:
            if is_clean_close(exc):
                return
            raise
        yield message
