"""Conformance checks for message front ends, as trio's ``check_*_stream``.

``check_message_stream(make_pair)`` runs a battery of checks against a blocking
or background front end (``MessageSocket``, ``Endpoint``, or your own);
``await check_async_message_stream(make_pair)`` against an asyncio one
(``MessageStream``). Each check gets a fresh connected pair, exercises one part
of the contract documented in docs/frames.md and raises ``AssertionError``
naming the check and the deviation. They need no pytest::

    from sockwork.testing import check_message_stream, message_socket_pair
    check_message_stream(message_socket_pair)
"""

# Rules:
# - A check encodes what docs/frames.md promises for every front end, nothing a
#   single front end happens to do. Where the documented front ends differ (a call
#   after a fatal error raises the same error, or ConnectionClosed chained to it),
#   the check accepts each documented behaviour and nothing else.
# - Every check is bounded: a blocking check runs under a watchdog that closes both
#   ends after ``timeout`` seconds (close wakes a blocked recv, as documented), an
#   async one is cancelled; either way the check fails saying it hung. A checker
#   that hangs on a broken front end is as useless as one that cannot fail.
# - Messages are deterministic and distinct (a seeded generator per message), so a
#   dropped, duplicated, reordered or corrupted message is caught, and failures
#   show sizes and the first differing byte, never megabytes of repr.
# - The pair is closed after every check, also when it fails.

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import select
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sockwork.errors import ConnectionClosed, IncompleteMessage, MessageTooLarge, TimedOut

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = [
    "AsyncMessageEndpoint",
    "AsyncPairFactory",
    "MessageEndpoint",
    "PairFactory",
    "check_async_message_stream",
    "check_message_stream",
]

LIMIT = 300_007  # max_size of the pairs the checks make: odd, above every internal buffer size
SIZES = (0, 1, 2, 255, 256, 4096, 16_383, 16_384, 65_537, 262_145, LIMIT)
RECV_TIMEOUT = 0.1  # seconds the timeout check waits for nothing


class MessageEndpoint(Protocol):
    """What :func:`check_message_stream` needs of a blocking or background front end.

    Besides these, the receive timeout is set either by a ``timeout`` keyword of
    ``recv`` (``recv(timeout=0.1)``) or, when ``recv`` takes none, by
    ``settimeout(0.1)`` (as ``MessageSocket`` does).
    """

    def send(self, message: bytes, /) -> None:
        """Send one message."""
        ...

    def send_many(self, messages: Iterable[bytes], /) -> None:
        """Send several messages, in order."""
        ...

    def recv(self) -> bytes:
        """Return the next message."""
        ...

    def __iter__(self) -> Iterator[bytes]:
        """Yield messages until a clean close."""
        ...

    def fileno(self) -> int:
        """Return a descriptor ``select`` can wait on; -1 once closed."""
        ...

    def close(self) -> None:
        """Close; idempotent."""
        ...

    def __enter__(self) -> Self:
        """Return self."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close."""
        ...


class AsyncMessageEndpoint(Protocol):
    """What :func:`check_async_message_stream` needs of an asyncio front end."""

    async def send(self, message: bytes, /) -> None:
        """Send one message."""
        ...

    async def send_many(self, messages: Iterable[bytes], /) -> None:
        """Send several messages, in order."""
        ...

    async def recv(self) -> bytes:
        """Return the next message."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield messages until a clean close."""
        ...

    def close(self) -> None:
        """Start closing; idempotent."""
        ...

    def abort(self) -> None:
        """Close at once, dropping queued messages."""
        ...

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        ...

    async def __aenter__(self) -> Self:
        """Return self."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close and wait."""
        ...


E = TypeVar("E", bound=MessageEndpoint)
A = TypeVar("A", bound=AsyncMessageEndpoint)
E_co = TypeVar("E_co", bound=MessageEndpoint, covariant=True)
A_co = TypeVar("A_co", bound=AsyncMessageEndpoint, covariant=True)


class PairFactory(Protocol[E_co]):
    """Makes two connected front ends: ``make_pair(max_size=..., peer_max_size=...)``.

    The first end sends and accepts messages up to ``max_size`` bytes, the second up
    to ``peer_max_size``. Both carry ``bytes`` unchanged (codec ``BYTES``, the
    default). :func:`~sockwork.testing.message_socket_pair` is one.
    """

    def __call__(self, *, max_size: int, peer_max_size: int) -> tuple[E_co, E_co]:
        """Return ``(left, right)``, connected to each other."""
        ...


class AsyncPairFactory(Protocol[A_co]):
    """Like :class:`PairFactory`, returning an async context manager of the pair.

    :func:`~sockwork.testing.message_stream_pair` is one.
    """

    def __call__(
        self, *, max_size: int, peer_max_size: int
    ) -> AbstractAsyncContextManager[tuple[A_co, A_co]]:
        """Return a context manager whose ``__aenter__`` gives ``(left, right)``."""
        ...


# -- messages and assertions ---------------------------------------------------------------


def _message(tag: int, size: int) -> bytes:
    """Return the deterministic message number ``tag`` of ``size`` bytes."""
    return random.Random(tag * 1_000_003 + size).randbytes(size)


def _tagged(tag: int, size: int) -> bytes:
    """Return a message that names itself: 4-byte tag, 4-byte size, then filler (size >= 8)."""
    return tag.to_bytes(4, "big") + size.to_bytes(4, "big") + _message(tag, size - 8)


def _untag(message: bytes) -> int:
    """Return the tag of a :func:`_tagged` message, checking that it is intact."""
    assert len(message) >= 8, f"got {_show(message)}, not one of the messages sent"
    tag = int.from_bytes(message[:4], "big")
    size = int.from_bytes(message[4:8], "big")
    _same(message, _tagged(tag, size), f"message #{tag}")
    return tag


def _show(message: object) -> str:
    if isinstance(message, (bytes, bytearray)):
        head = bytes(message[:12])
        return f"{len(message)} bytes {head!r}{'...' if len(message) > 12 else ''}"
    return f"{type(message).__name__} {message!r:.60}"


def _same(got: object, expected: bytes, what: str) -> None:
    if type(got) is bytes and got == expected:
        return
    if not isinstance(got, bytes):
        raise AssertionError(f"{what}: expected bytes ({_show(expected)}), got {_show(got)}")
    if len(got) != len(expected):
        raise AssertionError(f"{what}: expected {_show(expected)}, got {_show(got)}")
    index = next(i for i, (x, y) in enumerate(zip(got, expected, strict=True)) if x != y)
    raise AssertionError(
        f"{what}: {len(got)} bytes arrived but differ from those sent at byte {index}"
    )


_Expected = type[BaseException] | tuple[type[BaseException], ...]


def _raises(expected: _Expected, call: Callable[[], object], what: str) -> BaseException:
    """Call ``call``; return what it raised if it is ``expected``, else fail naming ``what``."""
    try:
        result = call()
    except expected as exc:
        return exc
    except Exception as exc:
        raise _unexpected(expected, what, exc, raised=True) from exc
    raise _unexpected(expected, what, result)


async def _araises(
    expected: _Expected, call: Callable[[], Awaitable[object]], what: str
) -> BaseException:
    """The async :func:`_raises`."""
    try:
        result = await call()
    except expected as exc:
        return exc
    except Exception as exc:
        raise _unexpected(expected, what, exc, raised=True) from exc
    raise _unexpected(expected, what, result)


def _unexpected(
    expected: _Expected, what: str, outcome: object, *, raised: bool = False
) -> AssertionError:
    """The failure of a call that should have raised ``expected`` but did ``outcome``."""
    kinds = expected if isinstance(expected, tuple) else (expected,)
    names = " or ".join(kind.__name__ for kind in kinds)
    if raised:
        return AssertionError(f"{what}: expected {names}, got {type(outcome).__name__}: {outcome}")
    return AssertionError(f"{what}: expected {names}, but it returned {_show(outcome)}")


def _closed_by_us(error: BaseException, what: str) -> None:
    assert isinstance(error, ConnectionClosed) and error.by_peer is False, (
        f"{what}: expected ConnectionClosed(by_peer=False), got {error!r}"
        f" (by_peer={getattr(error, 'by_peer', None)})"
    )


def _ended_by_peer(error: BaseException, what: str, *, clean: bool) -> None:
    assert isinstance(error, ConnectionClosed), f"{what}: expected ConnectionClosed, got {error!r}"
    assert not isinstance(error, IncompleteMessage), (
        f"{what}: the peer closed between messages, yet got {error!r}"
    )
    assert error.by_peer is True, f"{what}: expected by_peer=True, got {error!r} by_peer=False"
    if clean:
        assert error.__cause__ is None, (
            f"{what}: a clean close must have no __cause__, got {error.__cause__!r}"
        )


def _too_large(error: BaseException, size: int, limit: int, what: str) -> None:
    assert isinstance(error, MessageTooLarge), f"{what}: expected MessageTooLarge, got {error!r}"
    assert isinstance(error, ValueError), f"{what}: MessageTooLarge must be a ValueError"
    assert (error.size, error.limit) == (size, limit), (
        f"{what}: expected MessageTooLarge(size={size}, limit={limit}), "
        f"got size={error.size}, limit={error.limit}"
    )


def _after_fatal(error: BaseException, first: BaseException, what: str) -> None:
    """A call after a fatal error raises that error again, or ConnectionClosed chained to it."""
    if error is first or type(error) is type(first):
        return
    assert isinstance(error, ConnectionClosed) and error.__cause__ is first, (
        f"{what}: expected {type(first).__name__} again, or ConnectionClosed caused by it; "
        f"got {error!r} (cause {error.__cause__!r})"
    )


# -- running checks ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Check:
    """One named check: ``run(left, right)`` on a pair made with these limits."""

    name: str
    run: Callable[[Any, Any, float], Any]  # (left, right, timeout) -> None, or a coroutine
    peer_max_size: int = LIMIT


_SYNC_CHECKS: list[_Check] = []
_ASYNC_CHECKS: list[_Check] = []


def _sync(
    name: str, *, peer_max_size: int = LIMIT
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(run: Callable[..., None]) -> Callable[..., None]:
        _SYNC_CHECKS.append(_Check(name, run, peer_max_size))
        return run

    return register


def _async(
    name: str, *, peer_max_size: int = LIMIT
) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    def register(run: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        _ASYNC_CHECKS.append(_Check(name, run, peer_max_size))
        return run

    return register


def check_message_stream(make_pair: PairFactory[MessageEndpoint], *, timeout: float = 10.0) -> None:
    """Check that a blocking or background front end keeps the documented contract.

    Each check calls ``make_pair(max_size=..., peer_max_size=...)`` for a fresh pair,
    closes both ends afterwards, and covers: round trips of empty, small, large and
    exactly-``max_size`` messages in both directions; bytes-like payloads; order;
    ``send_many``; concurrent senders; the receive timeout (``TimedOut``, connection
    still usable); the peer's close (iteration ends, then ``ConnectionClosed``);
    ``MessageTooLarge`` for a message sent or announced over the limit; refused
    sends leaving the connection usable; ``close()`` idempotent, waking a blocked
    ``recv``, and every later call raising ``ConnectionClosed(by_peer=False)``;
    ``fileno()`` and ``select``; the context manager.

    Args:
        make_pair: see :class:`PairFactory`; e.g. ``message_socket_pair``.
        timeout: seconds each check may take before it fails as hung.

    Raises:
        AssertionError: the first deviation, naming the check.
    """
    for check in _SYNC_CHECKS:
        _run_sync(check, make_pair, timeout)


async def check_async_message_stream(
    make_pair: AsyncPairFactory[AsyncMessageEndpoint], *, timeout: float = 10.0
) -> None:
    """Check that an asyncio front end keeps the documented contract; the async twin.

    The checks of :func:`check_message_stream`, awaited, where the timeout is
    ``asyncio.wait_for(recv(), t)`` (a cancelled ``recv`` leaves the stream usable),
    ``fileno`` is not required, and ``abort()`` and ``wait_closed()`` are checked.

    Args:
        make_pair: see :class:`AsyncPairFactory`; e.g. ``message_stream_pair``.
        timeout: seconds each check may take before it fails as hung.

    Raises:
        AssertionError: the first deviation, naming the check.
    """
    for check in _ASYNC_CHECKS:
        await _run_async(check, make_pair, timeout)


def _fail(check: _Check, exc: BaseException, note: str = "") -> AssertionError:
    if isinstance(exc, AssertionError):
        text = str(exc) or "assertion failed"
    else:
        text = f"unexpected {type(exc).__name__}: {exc}"
    return AssertionError(f"check {check.name!r} failed: {text}{note}")


def _run_sync(check: _Check, make_pair: PairFactory[MessageEndpoint], timeout: float) -> None:
    left, right = make_pair(max_size=LIMIT, peer_max_size=check.peer_max_size)
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        for end in (left, right):
            with contextlib.suppress(Exception):
                end.close()

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    failure: AssertionError | None = None
    try:
        check.run(left, right, timeout)
    except Exception as exc:
        note = (
            f" (the check did not finish within {timeout} s: a call blocked or a message "
            "was lost; the watchdog closed both ends)"
            if fired.is_set()
            else ""
        )
        failure = _fail(check, exc, note)
        raise failure from exc
    finally:
        watchdog.cancel()
        errors: list[Exception] = []
        for end in (left, right):  # both, even when the first raises
            try:
                end.close()
            except Exception as exc:
                errors.append(exc)
        if errors and failure is None:
            raise _fail(check, errors[0], " (raised by close() after the check)") from errors[0]


async def _run_async(
    check: _Check, make_pair: AsyncPairFactory[AsyncMessageEndpoint], timeout: float
) -> None:
    async with make_pair(max_size=LIMIT, peer_max_size=check.peer_max_size) as (left, right):
        task: asyncio.Future[None] = asyncio.ensure_future(check.run(left, right, timeout))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                await _cancel(task)
                raise AssertionError(
                    f"check {check.name!r} failed: it did not finish within {timeout} s "
                    "(a call blocked or a message was lost)"
                )
            exc = task.exception()
            if exc is not None:
                raise _fail(check, exc) from exc
        finally:
            left.abort()  # nothing left to flush; the factory's exit need not wait
            right.abort()


def _recv_with_timeout(end: MessageEndpoint, seconds: float) -> bytes:
    """``end.recv()`` with a timeout: ``recv(timeout=)`` if it takes one, else ``settimeout``."""
    if "timeout" in inspect.signature(end.recv).parameters:
        return end.recv(timeout=seconds)  # type: ignore[call-arg]
    settimeout = getattr(end, "settimeout", None)
    assert settimeout is not None, (
        "the front end offers no receive timeout: recv() takes no timeout argument "
        "and there is no settimeout()"
    )
    settimeout(seconds)
    try:
        return end.recv()
    finally:
        settimeout(None)


class _Thread:
    """Run ``target`` in a thread; :meth:`join` re-raises what it raised."""

    def __init__(self, target: Callable[[], object]) -> None:
        self._target = target
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # re-raised by join() in the checking thread
            self._error = exc

    def join(self, what: str, timeout: float = 30.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{what} did not return within {timeout} s"
        if self._error is not None:
            raise self._error


# -- the checks: blocking and background front ends -----------------------------------------

_E = MessageEndpoint
_A = AsyncMessageEndpoint


@_sync("round trip")
def _round_trip(left: _E, right: _E, timeout: float) -> None:
    for tag, size in enumerate(SIZES):
        message = _message(tag, size)
        sender = _Thread(lambda m=message: left.send(m))  # type: ignore[misc]
        _same(right.recv(), message, f"a {size}-byte message sent left to right")
        sender.join(f"send() of {size} bytes")
        sender = _Thread(lambda m=message: right.send(m))  # type: ignore[misc]
        _same(left.recv(), message, f"a {size}-byte message sent right to left")
        sender.join(f"send() of {size} bytes")
    for kind in (bytearray, memoryview):
        message = _message(99, 20_000)
        left.send(kind(message))  # type: ignore[arg-type] # BYTES takes any bytes-like
        _same(right.recv(), message, f"a {kind.__name__} payload (received as bytes)")


@_sync("ordering")
def _ordering(left: _E, right: _E, timeout: float) -> None:
    sizes = [(0, 1, 17, 1000, 20_000)[i % 5] for i in range(300)]

    def send_all() -> None:
        for tag, size in enumerate(sizes):
            left.send(_message(tag, size))

    sender = _Thread(send_all)
    for tag, size in enumerate(sizes):
        _same(right.recv(), _message(tag, size), f"message {tag} of 300 sent in a row")
    sender.join("sending 300 messages")


@_sync("send_many")
def _send_many(left: _E, right: _E, timeout: float) -> None:
    sizes = [0, 5, 0, 70_000, 3, LIMIT, 0, 1]
    sender = _Thread(lambda: left.send_many(_message(t, s) for t, s in enumerate(sizes)))
    for tag, size in enumerate(sizes):
        _same(right.recv(), _message(tag, size), f"message {tag} of a send_many() batch")
    sender.join("send_many()")
    left.send_many([])  # sends nothing
    left.send(b"after")
    _same(right.recv(), b"after", "the message sent after send_many([])")


@_sync("concurrent senders")
def _concurrent_senders(left: _E, right: _E, timeout: float) -> None:
    threads, count = 4, 60

    def send_from(thread: int) -> None:
        tags = [thread * 1000 + i for i in range(count)]
        sizes = [(8, 100, 20_000, 70_000)[(thread + i) % 4] for i in range(count)]
        half = count // 2
        for tag, size in zip(tags[:half], sizes[:half], strict=True):
            left.send(_tagged(tag, size))
        left.send_many(_tagged(t, s) for t, s in zip(tags[half:], sizes[half:], strict=True))

    senders = [_Thread(lambda n=n: send_from(n)) for n in range(threads)]  # type: ignore[misc]
    last = [-1] * threads
    for _ in range(threads * count):
        tag = _untag(right.recv())  # a frame interleaved with another is caught here
        thread, index = divmod(tag, 1000)
        assert index == last[thread] + 1, (
            f"thread {thread}'s message {index} arrived after its message {last[thread]}"
        )
        last[thread] = index
    for sender in senders:
        sender.join("concurrent send()")


@_sync("recv timeout")
def _recv_timeout(left: _E, right: _E, timeout: float) -> None:
    started = time.monotonic()
    error = _raises(
        TimedOut, lambda: _recv_with_timeout(right, RECV_TIMEOUT), "recv() with a 0.1 s timeout"
    )
    elapsed = time.monotonic() - started
    assert isinstance(error, TimeoutError), "TimedOut must be a TimeoutError"
    assert elapsed >= RECV_TIMEOUT * 0.9, f"recv() timed out after {elapsed:.3f} s, not 0.1 s"
    reported = getattr(error, "timeout", None)
    assert reported is not None and abs(reported - RECV_TIMEOUT) < 1e-9, (
        f"TimedOut.timeout is {reported!r}, not the {RECV_TIMEOUT} s that ran out"
    )
    message = _message(1, 3000)
    left.send(message)
    _same(right.recv(), message, "the first message after a receive timeout")


@_sync("peer close")
def _peer_close(left: _E, right: _E, timeout: float) -> None:
    sent = [_message(1, 10), _message(2, 70_000), b""]

    def send_and_close() -> None:
        left.send(sent[0])
        left.send_many(sent[1:])
        left.close()

    sender = _Thread(send_and_close)  # the socket buffers need not hold it all
    got = _Collect(right)
    reader = _Thread(got.run)
    reader.join("iterating until the peer's close")
    sender.join("send(), send_many() and close()")
    assert len(got.messages) == len(sent), (
        f"iteration yielded {len(got.messages)} message(s) before the peer's close, "
        f"not the {len(sent)} sent"
    )
    for index, (message, expected) in enumerate(zip(got.messages, sent, strict=True)):
        _same(message, expected, f"message {index} before the peer's close")
    error = _raises(ConnectionClosed, right.recv, "recv() after the peer closed")
    _ended_by_peer(error, "recv() after the peer closed", clean=False)
    deadline = time.monotonic() + 5.0
    while True:  # TCP reports a vanished peer only after a send or two: no event to await
        try:
            right.send(b"anyone there?")
        except ConnectionClosed as exc:
            _ended_by_peer(exc, "send() to a peer that closed", clean=False)
            break
        assert time.monotonic() < deadline, "send() to a peer that closed kept succeeding for 5 s"
        time.sleep(0.001)


class _Collect:
    """Iterate over an endpoint in a thread, keeping what it yields."""

    def __init__(self, end: MessageEndpoint) -> None:
        self.end = end
        self.messages: list[bytes] = []

    def run(self) -> None:
        for message in self.end:
            self.messages.append(message)


@_sync("message too large", peer_max_size=LIMIT - 1000)
def _too_large_checks(left: _E, right: _E, timeout: float) -> None:
    limit = LIMIT - 1000  # right's max_size; left's is LIMIT
    # Refused sends: nothing goes out, the connection stays usable.
    too_big = _message(7, limit + 1)
    error = _raises(MessageTooLarge, lambda: right.send(too_big), "send() over max_size")
    _too_large(error, limit + 1, limit, "send() over max_size")
    error = _raises(
        MessageTooLarge,
        lambda: right.send_many([b"never sent", too_big]),
        "send_many() with one message over max_size",
    )
    _too_large(error, limit + 1, limit, "send_many() with one message over max_size")
    _raises(TypeError, lambda: right.send("text"), "send() of a str with the BYTES codec")  # type: ignore[arg-type]
    sender = _Thread(lambda: right.send(_message(8, limit)))
    _same(left.recv(), _message(8, limit), "the message sent after refused sends")
    sender.join("send() of max_size bytes")
    # An announced message over the limit: what came before it first, then the error.
    before = _message(9, 100)

    def send_both() -> None:
        left.send(before)
        with contextlib.suppress(ConnectionClosed):  # right may close before it all went out
            left.send(_message(10, limit + 1))

    sender = _Thread(send_both)
    _same(right.recv(), before, "the message sent before one over max_size")
    first = _raises(MessageTooLarge, right.recv, "recv() of a message over max_size")
    _too_large(first, limit + 1, limit, "recv() of a message over max_size")
    sender.join("send() of a message over the peer's max_size")
    again = _raises((MessageTooLarge, ConnectionClosed), right.recv, "recv() after MessageTooLarge")
    _after_fatal(again, first, "recv() after MessageTooLarge")
    again = _raises(
        (MessageTooLarge, ConnectionClosed),
        lambda: right.send(b"x"),
        "send() after MessageTooLarge",
    )
    if isinstance(again, MessageTooLarge):
        _after_fatal(again, first, "send() after MessageTooLarge")
    error = _raises(
        ConnectionClosed, left.recv, "recv() on the peer of an end that refused a message"
    )
    _ended_by_peer(error, "recv() on the peer of an end that refused a message", clean=False)


@_sync("close")
def _close(left: _E, right: _E, timeout: float) -> None:
    assert left.fileno() >= 0, f"fileno() of an open end is {left.fileno()}"
    message = _message(3, 20_000)
    left.send(message)
    left.close()
    left.close()  # idempotent
    assert left.fileno() == -1, f"fileno() after close() is {left.fileno()}, not -1"
    for what, call in (
        ("send()", lambda: left.send(b"x")),
        ("send_many()", lambda: left.send_many([b"x"])),
        ("recv()", left.recv),
    ):
        error = _raises(ConnectionClosed, call, f"{what} after close()")
        _closed_by_us(error, f"{what} after close()")
    assert list(left) == [], "iteration after our own close() must end at once"
    _same(right.recv(), message, "the message sent just before close()")
    error = _raises(ConnectionClosed, right.recv, "recv() after the peer's close()")
    _ended_by_peer(error, "recv() after the peer's close()", clean=True)


@_sync("close wakes recv")
def _close_wakes_recv(left: _E, right: _E, timeout: float) -> None:
    started = threading.Event()
    errors: list[BaseException] = []

    def wait() -> None:
        started.set()
        errors.append(_raises(ConnectionClosed, right.recv, "recv() blocked while closed"))

    waiter = _Thread(wait)
    assert started.wait(5.0)
    right.close()
    waiter.join("recv() blocked in another thread when close() was called", timeout=5.0)
    _closed_by_us(errors[0], "recv() blocked in another thread when close() was called")


@_sync("select")
def _select(left: _E, right: _E, timeout: float) -> None:
    left.send(_message(4, 100))
    wait = timeout / 2  # the watchdog closes the ends at ``timeout``
    readable, _, _ = select.select([right], [], [], wait)
    assert readable == [right], f"select() did not report the end readable within {wait} s"
    _same(right.recv(), _message(4, 100), "the message select() reported")


class _Marker(Exception):
    """Raised inside a ``with`` block by the context manager check."""


@_sync("context manager")
def _context_manager(left: _E, right: _E, timeout: float) -> None:
    with left as entered:
        assert entered is left, f"__enter__ returned {entered!r}, not the end itself"
        left.send(b"inside")
    error = _raises(ConnectionClosed, lambda: left.send(b"x"), "send() after the with block")
    _closed_by_us(error, "send() after the with block")
    _same(right.recv(), b"inside", "the message sent inside the with block")
    error = _raises(ConnectionClosed, right.recv, "recv() after the peer's with block")
    _ended_by_peer(error, "recv() after the peer's with block", clean=True)
    try:
        with right:
            raise _Marker
    except _Marker:
        pass
    else:
        raise AssertionError("the with block swallowed the exception raised inside it")
    error = _raises(ConnectionClosed, right.recv, "recv() after a with block that raised")
    _closed_by_us(error, "recv() after a with block that raised")


# -- the checks: asyncio front ends ---------------------------------------------------------


@_async("round trip")
async def _a_round_trip(left: _A, right: _A, timeout: float) -> None:
    for tag, size in enumerate(SIZES):
        message = _message(tag, size)
        sender = asyncio.ensure_future(left.send(message))
        _same(await right.recv(), message, f"a {size}-byte message sent left to right")
        await sender
        sender = asyncio.ensure_future(right.send(message))
        _same(await left.recv(), message, f"a {size}-byte message sent right to left")
        await sender
    for kind in (bytearray, memoryview):
        message = _message(99, 20_000)
        await left.send(kind(message))  # type: ignore[arg-type] # BYTES takes any bytes-like
        _same(await right.recv(), message, f"a {kind.__name__} payload (received as bytes)")


@_async("ordering")
async def _a_ordering(left: _A, right: _A, timeout: float) -> None:
    sizes = [(0, 1, 17, 1000, 20_000)[i % 5] for i in range(300)]

    async def send_all() -> None:
        for tag, size in enumerate(sizes):
            await left.send(_message(tag, size))

    sender = asyncio.ensure_future(send_all())
    try:
        for tag, size in enumerate(sizes):
            _same(await right.recv(), _message(tag, size), f"message {tag} of 300 sent in a row")
    except BaseException:
        await _cancel(sender)
        raise
    await sender


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` (the check already failed) and wait for it, ignoring its outcome."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


@_async("send_many")
async def _a_send_many(left: _A, right: _A, timeout: float) -> None:
    sizes = [0, 5, 0, 70_000, 3, LIMIT, 0, 1]
    sender = asyncio.ensure_future(left.send_many(_message(t, s) for t, s in enumerate(sizes)))
    for tag, size in enumerate(sizes):
        _same(await right.recv(), _message(tag, size), f"message {tag} of a send_many() batch")
    await sender
    await left.send_many([])
    await left.send(b"after")
    _same(await right.recv(), b"after", "the message sent after send_many([])")


@_async("concurrent senders")
async def _a_concurrent_senders(left: _A, right: _A, timeout: float) -> None:
    tasks, count = 4, 60

    async def send_from(task: int) -> None:
        tags = [task * 1000 + i for i in range(count)]
        sizes = [(8, 100, 20_000, 70_000)[(task + i) % 4] for i in range(count)]
        half = count // 2
        for tag, size in zip(tags[:half], sizes[:half], strict=True):
            await left.send(_tagged(tag, size))
            await asyncio.sleep(0)  # let the other senders in between
        await left.send_many(_tagged(t, s) for t, s in zip(tags[half:], sizes[half:], strict=True))

    senders = asyncio.gather(*(send_from(n) for n in range(tasks)))
    last = [-1] * tasks
    try:
        for _ in range(tasks * count):
            tag = _untag(await right.recv())  # a frame interleaved with another is caught here
            task, index = divmod(tag, 1000)
            assert index == last[task] + 1, (
                f"task {task}'s message {index} arrived after its message {last[task]}"
            )
            last[task] = index
    except BaseException:
        await _cancel(senders)
        raise
    await senders


@_async("recv timeout")
async def _a_recv_timeout(left: _A, right: _A, timeout: float) -> None:
    started = time.monotonic()
    await _araises(
        asyncio.TimeoutError,
        lambda: asyncio.wait_for(right.recv(), RECV_TIMEOUT),
        "asyncio.wait_for(recv(), 0.1)",
    )
    elapsed = time.monotonic() - started
    assert elapsed >= RECV_TIMEOUT * 0.9, f"recv() timed out after {elapsed:.3f} s, not 0.1 s"
    message = _message(1, 3000)
    await left.send(message)
    _same(await right.recv(), message, "the first message after a cancelled recv()")


@_async("peer close")
async def _a_peer_close(left: _A, right: _A, timeout: float) -> None:
    sent = [_message(1, 10), _message(2, 70_000), b""]
    await left.send(sent[0])
    await left.send_many(sent[1:])
    left.close()
    got = [message async for message in right]
    assert len(got) == len(sent), (
        f"iteration yielded {len(got)} message(s) before the peer's close, not the {len(sent)} sent"
    )
    for index, (message, expected) in enumerate(zip(got, sent, strict=True)):
        _same(message, expected, f"message {index} before the peer's close")
    error = await _araises(ConnectionClosed, right.recv, "recv() after the peer closed")
    _ended_by_peer(error, "recv() after the peer closed", clean=False)
    deadline = time.monotonic() + 5.0
    while True:  # TCP reports a vanished peer only after a send or two: no event to await
        try:
            await right.send(b"anyone there?")
        except ConnectionClosed as exc:
            _ended_by_peer(exc, "send() to a peer that closed", clean=False)
            break
        assert time.monotonic() < deadline, "send() to a peer that closed kept succeeding for 5 s"
        await asyncio.sleep(0.001)


@_async("message too large", peer_max_size=LIMIT - 1000)
async def _a_too_large(left: _A, right: _A, timeout: float) -> None:
    limit = LIMIT - 1000
    too_big = _message(7, limit + 1)
    error = await _araises(MessageTooLarge, lambda: right.send(too_big), "send() over max_size")
    _too_large(error, limit + 1, limit, "send() over max_size")
    error = await _araises(
        MessageTooLarge,
        lambda: right.send_many([b"never sent", too_big]),
        "send_many() with one message over max_size",
    )
    _too_large(error, limit + 1, limit, "send_many() with one message over max_size")
    await _araises(
        TypeError,
        lambda: right.send("text"),  # type: ignore[arg-type]
        "send() of a str with the BYTES codec",
    )
    await right.send(_message(8, limit))
    _same(await left.recv(), _message(8, limit), "the message sent after refused sends")
    before = _message(9, 100)
    await left.send(before)
    with contextlib.suppress(ConnectionClosed):
        await left.send(_message(10, limit + 1))
    _same(await right.recv(), before, "the message sent before one over max_size")
    first = await _araises(MessageTooLarge, right.recv, "recv() of a message over max_size")
    _too_large(first, limit + 1, limit, "recv() of a message over max_size")
    again = await _araises(
        (MessageTooLarge, ConnectionClosed), right.recv, "recv() after MessageTooLarge"
    )
    _after_fatal(again, first, "recv() after MessageTooLarge")
    again = await _araises(
        (MessageTooLarge, ConnectionClosed),
        lambda: right.send(b"x"),
        "send() after MessageTooLarge",
    )
    if isinstance(again, MessageTooLarge):
        _after_fatal(again, first, "send() after MessageTooLarge")
    error = await _araises(
        ConnectionClosed, left.recv, "recv() on the peer of an end that refused a message"
    )
    _ended_by_peer(error, "recv() on the peer of an end that refused a message", clean=False)


@_async("close")
async def _a_close(left: _A, right: _A, timeout: float) -> None:
    message = _message(3, 20_000)
    await left.send(message)
    left.close()
    left.close()  # idempotent
    for what, call in (
        ("send()", lambda: left.send(b"x")),
        ("send_many()", lambda: left.send_many([b"x"])),
        ("recv()", left.recv),
    ):
        error = await _araises(ConnectionClosed, call, f"{what} after close()")
        _closed_by_us(error, f"{what} after close()")
    assert [m async for m in left] == [], "iteration after our own close() must end at once"
    await left.wait_closed()
    _same(await right.recv(), message, "the message sent just before close()")
    error = await _araises(ConnectionClosed, right.recv, "recv() after the peer's close()")
    _ended_by_peer(error, "recv() after the peer's close()", clean=True)


@_async("abort")
async def _a_abort(left: _A, right: _A, timeout: float) -> None:
    left.abort()
    left.abort()  # idempotent
    error = await _araises(ConnectionClosed, lambda: left.send(b"x"), "send() after abort()")
    _closed_by_us(error, "send() after abort()")
    error = await _araises(ConnectionClosed, left.recv, "recv() after abort()")
    _closed_by_us(error, "recv() after abort()")
    await left.wait_closed()
    error = await _araises(ConnectionClosed, right.recv, "recv() after the peer's abort()")
    _ended_by_peer(error, "recv() after the peer's abort()", clean=False)


@_async("close wakes recv")
async def _a_close_wakes_recv(left: _A, right: _A, timeout: float) -> None:
    waiter = asyncio.ensure_future(right.recv())
    await asyncio.sleep(0)  # one loop iteration: the task is now waiting in recv()
    right.close()
    done, _ = await asyncio.wait({waiter}, timeout=5.0)
    if not done:
        await _cancel(waiter)
        raise AssertionError("a task waiting in recv() did not wake up within 5 s of close()")
    error = waiter.exception()
    assert error is not None, f"recv() waiting when close() was called returned {waiter.result()!r}"
    _closed_by_us(error, "recv() waiting when close() was called")


@_async("context manager")
async def _a_context_manager(left: _A, right: _A, timeout: float) -> None:
    async with left as entered:
        assert entered is left, f"__aenter__ returned {entered!r}, not the stream itself"
        await left.send(b"inside")
    error = await _araises(
        ConnectionClosed, lambda: left.send(b"x"), "send() after the async with block"
    )
    _closed_by_us(error, "send() after the async with block")
    _same(await right.recv(), b"inside", "the message sent inside the async with block")
    error = await _araises(ConnectionClosed, right.recv, "recv() after the peer's async with")
    _ended_by_peer(error, "recv() after the peer's async with", clean=True)
    try:
        async with right:
            raise _Marker
    except _Marker:
        pass
    else:
        raise AssertionError("the async with block swallowed the exception raised inside it")
    error = await _araises(ConnectionClosed, right.recv, "recv() after an async with that raised")
    _closed_by_us(error, "recv() after an async with that raised")
