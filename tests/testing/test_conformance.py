"""The conformance checks pass on every front end and fail on broken ones."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pytest

from sockwork.errors import ConnectionClosed, TimedOut
from sockwork.frames import Endpoint, Format, MessageSocket, MessageStream
from sockwork.testing import (
    check_async_message_stream,
    check_message_stream,
    endpoint_pair,
    message_socket_pair,
    message_stream_pair,
    socket_pair,
)

FORMATS = [Format.U32, Format.VARINT, Format.STOCKINGS]


# -- the real front ends pass ------------------------------------------------------------


@pytest.mark.parametrize("format", FORMATS, ids=lambda f: f.name)
def test_check_message_stream_passes_on_message_socket(format: Format) -> None:
    check_message_stream(functools.partial(message_socket_pair, format=format))


def test_check_message_stream_passes_on_message_socket_over_unix_sockets() -> None:
    check_message_stream(functools.partial(message_socket_pair, family=socket.AF_UNIX))


@pytest.mark.parametrize("format", FORMATS, ids=lambda f: f.name)
def test_check_message_stream_passes_on_endpoint(format: Format) -> None:
    check_message_stream(functools.partial(endpoint_pair, format=format))


def test_check_message_stream_passes_on_endpoint_over_unix_sockets() -> None:
    check_message_stream(functools.partial(endpoint_pair, family=socket.AF_UNIX))


@pytest.mark.parametrize("format", FORMATS, ids=lambda f: f.name)
def test_check_async_message_stream_passes_on_message_stream(format: Format) -> None:
    asyncio.run(check_async_message_stream(functools.partial(message_stream_pair, format=format)))


# -- broken blocking front ends fail, naming the check -----------------------------------


def pair_of(cls: type[MessageSocket[bytes]], *, honour_peer_max_size: bool = True) -> Any:
    """A PairFactory making two ``cls`` objects over loopback TCP."""

    def make(*, max_size: int, peer_max_size: int) -> tuple[Any, Any]:
        a, b = socket_pair()
        limit = peer_max_size if honour_peer_max_size else max_size
        return cls(a, max_size=max_size), cls(b, max_size=limit)

    return make


class DropsMessages(MessageSocket[bytes]):
    """Loses every 7th message it is asked to send."""

    count = 0

    def send(self, message: bytes) -> None:
        self.count += 1
        if self.count % 7:
            super().send(message)


class CorruptsLargeMessages(MessageSocket[bytes]):
    def send(self, message: bytes) -> None:
        if len(message) > 1000:
            message = bytes(message[:-1]) + b"!"
        super().send(message)


class ReordersBatches(MessageSocket[bytes]):
    def send_many(self, messages: Iterable[bytes]) -> None:
        super().send_many(list(messages)[::-1])


class InterleavesFrames(MessageSocket[bytes]):
    """Sends headers and payloads separately without holding the lock across them."""

    def send(self, message: bytes) -> None:
        header, payload = self._encoder.send_parts(message)
        self._sock.sendall(header)
        time.sleep(0.001)  # another thread's frame gets in here
        self._sock.sendall(payload)

    def send_many(self, messages: Iterable[bytes]) -> None:
        for message in messages:
            self.send(message)


class PlainTimeout(MessageSocket[bytes]):
    """Raises the built-in TimeoutError instead of TimedOut."""

    def recv(self) -> bytes:
        try:
            return super().recv()
        except TimedOut:
            raise TimeoutError("timed out") from None


class IgnoresTimeouts(MessageSocket[bytes]):
    def settimeout(self, timeout: float | None) -> None:
        pass


class NoisyIteration(MessageSocket[bytes]):
    """Lets the clean close escape from iteration."""

    def __iter__(self) -> Iterator[bytes]:
        while True:
            yield self.recv()


class CloseTwiceFails(MessageSocket[bytes]):
    def close(self) -> None:
        if self.closed:
            raise RuntimeError("already closed")
        super().close()


class BlamesThePeer(MessageSocket[bytes]):
    """Reports its own close as the peer's."""

    def recv(self) -> bytes:
        try:
            return super().recv()
        except ConnectionClosed as exc:
            raise ConnectionClosed(str(exc), by_peer=True) from None


class SwallowsExceptions(MessageSocket[bytes]):
    def __exit__(self, *exc_info: object) -> bool:  # type: ignore[override]
        self.close()
        return True


class NoTimeoutAtAll(MessageSocket[bytes]):
    """Offers neither recv(timeout=) nor settimeout()."""

    settimeout = None  # type: ignore[assignment]


class DeafToSelect(MessageSocket[bytes]):
    """Hands select() a pipe nobody writes to."""

    def __init__(self, sock: socket.socket, *, max_size: int) -> None:
        super().__init__(sock, max_size=max_size)
        self._never, self._writer = os.pipe()

    def fileno(self) -> int:
        return -1 if self.closed else self._never

    def close(self) -> None:
        if not self.closed:
            os.close(self._never)
            os.close(self._writer)
        super().close()


# The watchdog of each check: where the wait is what catches the defect (a lost
# message, an ignored timeout, a select() that stays silent for half of it), the
# test waits for it, so 2 s; elsewhere an assertion catches the defect and the
# watchdog only stops a check that hangs, so it can be generous: on a loaded machine
# an earlier, passing check must not time out instead.
CAUGHT_BY_WATCHDOG = 2.0
GENEROUS = 20.0

BROKEN = [
    (DropsMessages, "round trip", "did not finish within 2"),
    (CorruptsLargeMessages, "round trip", "4096 bytes arrived but differ from those sent at byte"),
    (ReordersBatches, "send_many", "message 0 of a send_many"),
    (InterleavesFrames, "concurrent senders", ""),
    (PlainTimeout, "recv timeout", "expected TimedOut, got TimeoutError"),
    (IgnoresTimeouts, "recv timeout", "did not finish within 2"),
    (NoTimeoutAtAll, "recv timeout", "offers no receive timeout"),
    (NoisyIteration, "peer close", "ConnectionClosed"),
    # The first check that closes an end twice is "peer close" (then the runner closes it).
    (CloseTwiceFails, "peer close", "RuntimeError: already closed"),
    (BlamesThePeer, "close", "expected ConnectionClosed(by_peer=False)"),
    (SwallowsExceptions, "context manager", "swallowed the exception"),
    (DeafToSelect, "select", "select() did not report"),
]


def watchdog_for(detail: str) -> float:
    """The check timeout for a broken front end whose failure message contains ``detail``."""
    waited_for = ("did not finish within", "select() did not report")
    return CAUGHT_BY_WATCHDOG if detail.startswith(waited_for) else GENEROUS


@pytest.mark.parametrize(
    ("cls", "check", "detail"), BROKEN, ids=[cls.__name__ for cls, _, _ in BROKEN]
)
def test_check_message_stream_fails_on_a_broken_front_end(
    cls: type[MessageSocket[bytes]], check: str, detail: str
) -> None:
    with pytest.raises(AssertionError, match=f"^check '{check}' failed") as info:
        check_message_stream(pair_of(cls), timeout=watchdog_for(detail))
    assert detail in str(info.value)


class EndpointDropsMessages(Endpoint[bytes]):
    """A background endpoint that loses one message of every batch."""

    def send_many(self, messages: Iterable[bytes]) -> None:
        super().send_many(list(messages)[1:])


def test_check_message_stream_fails_on_a_broken_endpoint() -> None:
    def make(*, max_size: int, peer_max_size: int) -> tuple[Any, Any]:
        a, b = socket_pair()
        return (
            EndpointDropsMessages(a, max_size=max_size),
            EndpointDropsMessages(b, max_size=peer_max_size),
        )

    with pytest.raises(AssertionError, match="^check 'send_many' failed: message 0 of a"):
        check_message_stream(make, timeout=GENEROUS)


def test_check_message_stream_fails_when_the_receiver_ignores_its_limit() -> None:
    with pytest.raises(AssertionError, match="^check 'message too large' failed: send"):
        check_message_stream(pair_of(MessageSocket, honour_peer_max_size=False))


def test_check_message_stream_closes_every_pair_even_when_a_check_fails() -> None:
    made: list[MessageSocket[bytes]] = []

    def make(*, max_size: int, peer_max_size: int) -> tuple[Any, Any]:
        left, right = pair_of(ReordersBatches)(max_size=max_size, peer_max_size=peer_max_size)
        made.extend((left, right))
        return left, right

    with pytest.raises(AssertionError):
        check_message_stream(make)
    assert made and all(end.closed for end in made)


# -- broken asyncio front ends fail, naming the check ------------------------------------


class Wrapper:
    """An asyncio front end delegating to a MessageStream; subclasses break one thing."""

    def __init__(self, inner: MessageStream[bytes]) -> None:
        self.inner = inner

    async def send(self, message: bytes) -> None:
        await self.inner.send(message)

    async def send_many(self, messages: Iterable[bytes]) -> None:
        await self.inner.send_many(messages)

    async def recv(self) -> bytes:
        return await self.inner.recv()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.inner.__aiter__()

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()

    async def wait_closed(self) -> None:
        await self.inner.wait_closed()

    async def __aenter__(self) -> Wrapper:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


class AsyncDropsMessages(Wrapper):
    count = 0

    async def send(self, message: bytes) -> None:
        self.count += 1
        if self.count % 7:
            await super().send(message)


class AsyncReordersBatches(Wrapper):
    async def send_many(self, messages: Iterable[bytes]) -> None:
        await super().send_many(list(messages)[::-1])


class AsyncNoisyIteration(Wrapper):
    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            yield await self.recv()


class AsyncAbortDoesNothing(Wrapper):
    def abort(self) -> None:
        pass


class AsyncEnterReturnsInner(Wrapper):
    async def __aenter__(self) -> Any:
        return self.inner


def wrapped(cls: type[Wrapper]) -> Any:
    @contextlib.asynccontextmanager
    async def make(*, max_size: int, peer_max_size: int) -> AsyncIterator[tuple[Any, Any]]:
        async with message_stream_pair(max_size=max_size, peer_max_size=peer_max_size) as (a, b):
            yield cls(a), cls(b)

    return make


ASYNC_BROKEN = [
    (AsyncDropsMessages, "round trip", "did not finish within 2"),
    (AsyncReordersBatches, "send_many", "message 0 of a send_many"),
    (AsyncNoisyIteration, "peer close", "ConnectionClosed"),
    (AsyncAbortDoesNothing, "abort", "expected ConnectionClosed"),
    (AsyncEnterReturnsInner, "context manager", "not the stream itself"),
]


@pytest.mark.parametrize(
    ("cls", "check", "detail"), ASYNC_BROKEN, ids=[cls.__name__ for cls, _, _ in ASYNC_BROKEN]
)
def test_check_async_message_stream_fails_on_a_broken_front_end(
    cls: type[Wrapper], check: str, detail: str
) -> None:
    with pytest.raises(AssertionError, match=f"^check '{check}' failed") as info:
        asyncio.run(check_async_message_stream(wrapped(cls), timeout=watchdog_for(detail)))
    assert detail in str(info.value)


def test_check_async_message_stream_passes_through_a_faithful_wrapper() -> None:
    # The wrapper itself is sound: each broken subclass fails for its one defect.
    asyncio.run(check_async_message_stream(wrapped(Wrapper)))
