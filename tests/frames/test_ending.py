"""The shared end-of-stream policy of the receiving front ends (sans-IO)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from sockwork.errors import ConnectionClosed, IncompleteMessage, MessageTooLarge, ProtocolError
from sockwork.frames._ending import (
    closed_error,
    end_error,
    is_clean_close,
    until_clean_close,
    until_clean_close_async,
)

ADDRESS = ("127.0.0.1", 4242)


def _end(
    error: ConnectionClosed | ProtocolError | MessageTooLarge,
    *,
    closed: bool = False,
    lost: BaseException | None = None,
) -> tuple[BaseException, bool]:
    return end_error(error, what="MessageSocket", address=ADDRESS, closed=closed, lost=lost)


def test_end_error_incomplete_message_is_fatal_with_the_reset_as_cause() -> None:
    reset = ConnectionResetError(104, "Connection reset by peer")
    incomplete = IncompleteMessage(3, 10)
    error, fatal = _end(incomplete, closed=True, lost=reset)
    assert error is incomplete and fatal
    assert error.__cause__ is reset
    assert incomplete.address == ADDRESS


@pytest.mark.parametrize("error", [ProtocolError("bad header"), MessageTooLarge(100, 10)])
def test_end_error_format_faults_are_fatal_and_keep_their_own_cause(
    error: ProtocolError | MessageTooLarge,
) -> None:
    own = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    error.__cause__ = own
    raised, fatal = _end(error, lost=ConnectionResetError())
    assert raised is error and fatal
    assert raised.__cause__ is own


def test_end_error_eof_after_our_close_is_ours_without_cause() -> None:
    error, fatal = _end(
        ConnectionClosed("the peer closed the connection"), closed=True, lost=ConnectionResetError()
    )
    assert type(error) is ConnectionClosed and not fatal
    assert error.by_peer is False and error.address == ADDRESS
    assert error.__cause__ is None and error.__suppress_context__
    assert "this MessageSocket was closed" in str(error)


def test_end_error_eof_after_a_reset_is_a_lost_connection() -> None:
    reset = ConnectionResetError(104, "Connection reset by peer")
    error, fatal = _end(ConnectionClosed("the peer closed the connection"), lost=reset)
    assert type(error) is ConnectionClosed and not fatal
    assert error.by_peer is True and error.address == ADDRESS
    assert error.__cause__ is reset
    assert "connection lost" in str(error)
    assert not is_clean_close(error)


def test_end_error_clean_eof_is_the_decoders_error_with_the_address() -> None:
    eof = ConnectionClosed("the peer closed the connection", by_peer=True)
    error, fatal = _end(eof)
    assert error is eof and not fatal
    assert eof.address == ADDRESS and eof.by_peer is True
    assert is_clean_close(eof)


def test_is_clean_close_rejects_an_incomplete_message() -> None:
    assert not is_clean_close(IncompleteMessage(1, 4))
    assert is_clean_close(closed_error("endpoint", ADDRESS))


def _script(*steps: bytes | BaseException) -> Callable[[], bytes]:
    """A recv() that returns or raises the given steps in turn."""
    queue = list(steps)

    def recv() -> bytes:
        step = queue.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    return recv


def _reset_close() -> ConnectionClosed:
    error = ConnectionClosed("connection lost", address=ADDRESS, by_peer=True)
    error.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    return error


def test_until_clean_close_stops_at_a_clean_close() -> None:
    recv = _script(b"a", b"b", ConnectionClosed("peer closed", address=ADDRESS, by_peer=True))
    assert list(until_clean_close(recv)) == [b"a", b"b"]


@pytest.mark.parametrize("end", [_reset_close, lambda: IncompleteMessage(1, 4)])
def test_until_clean_close_raises_any_other_end_after_the_messages(
    end: Callable[[], BaseException],
) -> None:
    error = end()
    messages = until_clean_close(_script(b"a", error))
    assert next(messages) == b"a"
    with pytest.raises(type(error)) as caught:
        next(messages)
    assert caught.value is error


def test_until_clean_close_async_stops_at_a_clean_close_and_raises_a_reset() -> None:
    async def collect(recv: Callable[[], bytes]) -> list[bytes]:
        async def arecv() -> bytes:
            return recv()

        return [m async for m in until_clean_close_async(arecv)]

    clean = _script(b"a", closed_error("MessageStream", ADDRESS))
    assert asyncio.run(collect(clean)) == [b"a"]
    reset = _reset_close()
    with pytest.raises(ConnectionClosed) as caught:
        asyncio.run(collect(_script(b"a", reset)))
    assert caught.value is reset
