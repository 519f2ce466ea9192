"""sockwork.compat.stockings: the Stockings API on Endpoint, and interop with the real package."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import Stockings  # the real PyPI package, version 1.2.3

from sockwork.compat import stockings as compat
from sockwork.compat.stockings import StockingClosed
from sockwork.errors import ConnectionClosed, MessageTooLarge, NotReady, TimedOut
from sockwork.frames.endpoint import Endpoint
from sockwork.frames.payload import BYTES_OR_TEXT

SRC = Path(__file__).resolve().parents[2] / "src"

MESSAGES: list[str | bytes] = [
    "a",
    b"a",
    "é",
    "x" * 63,  # largest 1-byte header
    "x" * 64,  # smallest 2-byte header
    b"y" * 300,
    "z" * 8191,
    "z" * 8192,  # smallest 3-byte header
    "ü" * 100_000,  # 200,000 bytes of UTF-8
    b"\x00\xff" * (2**19),  # 1 MiB: 4-byte header
]


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def receive(stocking: Any, count: int, timeout: float = 10.0) -> list[Any]:
    """Read ``count`` messages from a real or compat stocking with a select loop."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(got)} of {count} messages arrived"
        if select.select([stocking], [], [], remaining)[0]:
            message = stocking.read()
            if message is not None:
                got.append(message)
    return got


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    return client, server


@contextlib.contextmanager
def stockings_closing_itself(real: Any) -> Iterator[list[BaseException | None]]:
    """Around a real stocking's own ``close()``: collect what its I/O thread raises.

    Stockings' ``close()`` closes the socket and pipes under its running I/O thread,
    which now and then dies with ValueError/TypeError (reference section 4, defect 8).
    That is its defect, not ours; only exceptions of that thread are collected, any
    other thread's still fail the test. Yields the collected exceptions.
    """
    errors: list[BaseException | None] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.thread is real:
            errors.append(args.exc_value)
        else:
            previous(args)

    threading.excepthook = hook
    try:
        yield errors
    finally:
        real.join(5)
        threading.excepthook = previous


def close_pair(real: Any, ours: compat.PollStocking) -> None:
    """Close ours first and let the real stocking's thread end on the EOF by itself.

    Calling the real ``close()`` while its thread runs races that thread (see above).
    """
    ours.close()
    real.join(5)
    real.close()  # a no-op once its thread has torn the connection down


@pytest.fixture
def real_and_ours() -> Iterator[tuple[Any, compat.PollStocking]]:
    """A real Stockings stocking connected over TCP loopback to one of ours."""
    left, right = tcp_pair()
    real = Stockings.Stocking(left)
    ours = compat.Stocking(right)
    wait_until(lambda: real.handshakeComplete)  # Stockings may raise NotReady right away
    yield real, ours
    close_pair(real, ours)


# -- interop with the real package -----------------------------------------------------------


def test_stockings_real_to_ours_str_and_bytes(
    real_and_ours: tuple[Any, compat.PollStocking],
) -> None:
    real, ours = real_and_ours
    for message in MESSAGES:
        real.write(message)
    assert receive(ours, len(MESSAGES)) == MESSAGES


def test_stockings_ours_to_real_str_and_bytes(
    real_and_ours: tuple[Any, compat.PollStocking],
) -> None:
    real, ours = real_and_ours
    for message in MESSAGES:
        ours.write(message)
    assert receive(real, len(MESSAGES)) == MESSAGES


def test_stockings_both_directions_at_once(real_and_ours: tuple[Any, compat.PollStocking]) -> None:
    real, ours = real_and_ours
    # Stockings' write() blocks while its reader is not drained (its head-of-line stall),
    # so it writes from a thread while this one reads.
    writer = threading.Thread(target=lambda: [real.write(m) for m in MESSAGES])
    writer.start()
    for message in MESSAGES:
        ours.write(message)
    assert receive(real, len(MESSAGES)) == MESSAGES
    assert receive(ours, len(MESSAGES)) == MESSAGES
    writer.join(10)


def test_stockings_real_peer_and_a_plain_endpoint() -> None:
    left, right = tcp_pair()
    real = Stockings.Stocking(left)
    with Endpoint(right, format="stockings", codec=BYTES_OR_TEXT) as endpoint:
        wait_until(lambda: real.handshakeComplete)
        real.write("from Stockings")
        real.write(b"\x01bytes")
        endpoint.send("from sockwork")
        endpoint.send(b"\x02bytes")
        assert [endpoint.recv(timeout=5), endpoint.recv(timeout=5)] == [
            "from Stockings",
            b"\x01bytes",
        ]
        assert receive(real, 2) == ["from sockwork", b"\x02bytes"]
        with stockings_closing_itself(real):
            real.close()
        select.select([endpoint], [], [], 5)
        with pytest.raises(ConnectionClosed):
            endpoint.recv(timeout=0)


def test_stockings_empty_messages_reach_a_real_peer(
    real_and_ours: tuple[Any, compat.PollStocking],
) -> None:
    # Stockings' own write("") sends nothing, but its reader delivers an empty frame.
    real, ours = real_and_ours
    ours.write("")
    ours.write(b"")
    ours.write("end")
    assert receive(real, 3) == ["", b"", "end"]


def test_stockings_real_peer_closing_ends_ours_with_eof(
    real_and_ours: tuple[Any, compat.PollStocking],
) -> None:
    real, ours = real_and_ours
    real.write("last words")
    wait_until(lambda: not real.writeDataQueued())
    with stockings_closing_itself(real):
        real.close()
    assert receive(ours, 1) == ["last words"]
    wait_until(lambda: not ours.active)
    with pytest.raises(EOFError) as info:  # what Stockings raises, so old loops still end
        ours.read()
    assert isinstance(info.value, ConnectionClosed)
    assert info.value.by_peer
    with pytest.raises(EOFError):
        ours._read()
    with pytest.raises(ConnectionClosed):  # Stockings dropped it silently
        ours.write("too late")


def test_stockings_peer_reset_is_reported_and_the_socket_closed() -> None:
    left, right = tcp_pair()
    ours = compat.Stocking(right)
    assert ours.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    left.sendall(b"\x81a")
    left.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert receive(ours, 1) == ["a"]
    left.close()  # RST
    wait_until(lambda: not ours.active)
    with pytest.raises(StockingClosed) as info:
        ours.read()
    assert isinstance(info.value.__cause__.__cause__, ConnectionResetError)
    assert ours.sock.fileno() == -1
    ours.close()


class RealGreeter(Stockings.Stocking):  # type: ignore[misc]
    def handshake(self) -> bool:
        self._write("HELLO real")
        while self.active:
            reply = self._read()
            if reply is not None:
                self.peer = reply
                return bool(reply == "HELLO ours")
            time.sleep(0.001)
        return False


class OurGreeter(compat.Stocking):
    def __init__(self, conn: socket.socket, greeting: str) -> None:
        super().__init__(conn)
        self.greeting = greeting  # set after the base __init__: handshake() must see it

    def handshake(self) -> bool:
        self._write(self.greeting)
        while self.active:
            reply = self._read()
            if reply is not None:
                self.peer = reply
                return bool(reply == "HELLO real")
            time.sleep(0.001)
        return False


def test_stockings_handshakes_with_a_real_peer() -> None:
    left, right = tcp_pair()
    real = RealGreeter(left)
    ours = OurGreeter(right, "HELLO ours")
    wait_until(lambda: real.handshakeComplete and ours.handshakeComplete)
    assert (real.peer, ours.peer) == ("HELLO ours", "HELLO real")
    ours.write("after the handshake")
    assert receive(real, 1) == ["after the handshake"]
    close_pair(real, ours)


# -- the API ---------------------------------------------------------------------------------


@pytest.fixture
def two() -> Iterator[tuple[compat.PollStocking, compat.PollStocking]]:
    a, b = socket.socketpair()
    first, second = compat.Stocking(a), compat.Stocking(b)
    yield first, second
    first.close()
    second.close()


def test_stockings_names_and_repr(two: tuple[compat.PollStocking, compat.PollStocking]) -> None:
    first, _ = two
    assert compat.Stocking is compat.PollStocking
    assert compat.NotReady is NotReady
    assert first.handshakeComplete is True
    assert first.active
    assert repr(first) == f"<Stocking (PollStocking) [{first.addr}]>"
    left, right = tcp_pair()
    with compat.SelectStocking(left) as selecting, compat.PollStocking(right) as polling:
        assert repr(selecting) == f"<Stocking (SelectStocking) [{left.getpeername()}]>"
        assert selecting.sock is left and selecting.addr == left.getpeername()
        started = time.monotonic()
        selecting.write("no polling interval")
        assert receive(polling, 1) == ["no polling interval"]
        assert time.monotonic() - started < 0.3  # Stockings waited up to 0.5 s here
    assert not selecting.active


def test_stockings_send_interval_is_read_from_the_environment_at_import() -> None:
    code = "from sockwork.compat import stockings; print(stockings.STOCKING_SELECT_SEND_INTERVAL)"
    env = {**os.environ, "PYTHONPATH": str(SRC), "STOCKING_SELECT_SEND_INTERVAL": "0.25"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "0.25"
    assert compat.STOCKING_SELECT_SEND_INTERVAL == float(
        os.environ.get("STOCKING_SELECT_SEND_INTERVAL", "0.5")
    )


def test_stockings_hooks_prewrite_args_and_postread() -> None:
    class Tagged(compat.Stocking):
        def preWrite(self, *args: Any, **kwargs: Any) -> str:
            return f"{kwargs['tag']}:{','.join(args)}"

        def postRead(self, message: Any) -> Any:
            return message.upper()

    a, b = socket.socketpair()
    with Tagged(a) as left, Tagged(b) as right:
        left.write("x", "y", tag="t")
        assert receive(right, 1) == ["T:X,Y"]
        left._write("raw")
        wait_until(lambda: select.select([right], [], [], 0)[0])
        assert right._read() == "raw"


def test_stockings_accepts_any_bytes_like(
    two: tuple[compat.PollStocking, compat.PollStocking],
) -> None:
    first, second = two
    first.write(bytearray(b"ba"))
    first.write(memoryview(b"mv"))
    assert receive(second, 2) == [b"ba", b"mv"]


def test_stockings_write_data_queued_and_close_flushes() -> None:
    a, b = socket.socketpair()
    ours = compat.Stocking(a)
    assert ours.writeDataQueued() is False
    for _ in range(30):
        ours.write(b"q" * 100_000)  # 3 MB: more than the socket buffers hold
    assert ours.writeDataQueued() is True
    peer = compat.Stocking(b)
    closer = threading.Thread(target=ours.close)  # Stockings dropped all of this
    closer.start()
    assert receive(peer, 30) == [b"q" * 100_000] * 30
    closer.join(10)
    assert ours.writeDataQueued() is False
    assert not ours.active
    peer.close()


def test_stockings_read_after_own_close_raises_instead_of_none(
    two: tuple[compat.PollStocking, compat.PollStocking],
) -> None:
    first, _ = two
    first.close()
    with pytest.raises(EOFError):
        first.read()
    with pytest.raises(ConnectionClosed):
        first.write("dropped silently by Stockings")
    assert first.fileno() == -1


def test_stockings_not_ready_until_handshake_returns() -> None:
    release = threading.Event()

    class Slow(compat.Stocking):
        def handshake(self) -> bool:
            return release.wait(5)

    a, b = socket.socketpair()
    slow, other = Slow(a), compat.Stocking(b)
    assert slow.handshakeComplete is False
    with pytest.raises(NotReady):
        slow.read()
    with pytest.raises(NotReady):
        slow.write("early")
    release.set()
    wait_until(lambda: slow.handshakeComplete)
    slow.write("ready")
    assert receive(other, 1) == ["ready"]
    slow.close()
    other.close()


def test_stockings_failed_handshake_raises_connection_closed_not_not_ready() -> None:
    class Refusing(compat.Stocking):
        def handshake(self) -> bool:
            return False

    a, b = socket.socketpair()
    refusing, other = Refusing(a), compat.Stocking(b)
    wait_until(lambda: not refusing.active)
    assert not refusing.handshakeComplete
    with pytest.raises(ConnectionClosed, match="handshake failed"):
        refusing.read()
    with pytest.raises(ConnectionClosed):
        refusing.write("x")
    refusing.close()
    other.close()


def test_stockings_oversized_header_is_refused() -> None:
    a, b = socket.socketpair()
    ours = compat.Stocking(a, max_size=1000)
    b.sendall(b"\x40\x00\x00\x81")  # a bytes header declaring 1 MiB
    wait_until(lambda: not ours.active)
    with pytest.raises(MessageTooLarge):
        ours.read()
    ours.close()
    b.close()


def test_stockings_requires_a_connected_socket() -> None:
    with socket.socket() as unconnected, pytest.raises(OSError):
        compat.Stocking(unconnected)


def test_stockings_full_queue_times_out_instead_of_blocking_forever() -> None:
    a, b = socket.socketpair()
    ours = compat.Stocking(a, write_timeout=0.2)
    with pytest.raises(TimedOut):
        for _ in range(1000):
            ours.write(b"w" * 100_000)
    b.close()  # the peer goes away: nothing left to flush to
    ours.close()


def test_stockings_exports_are_documented() -> None:
    doc = (SRC.parent / "docs" / "compat.md").read_text(encoding="utf-8")
    for name in compat.__all__:
        assert f"`{name}" in doc, f"{name} is exported but docs/compat.md does not name it"
    for name in [n for n in vars(compat._Stocking) if not n.startswith("__")]:
        if name.startswith("_") and name not in ("_read", "_write"):
            continue  # plumbing, not Stockings API
        assert f"`{name}" in doc, f"Stocking.{name} is not in docs/compat.md"


class Greeting(compat.Stocking):
    """Sends its name, expects the peer's; ``expect`` is set after super().__init__()."""

    def __init__(self, sock: socket.socket, name: str, expect: str) -> None:
        super().__init__(sock)
        self.name = name
        self.expect = expect  # set after the base __init__: handshake must still see it
        self.peer_name: str | None = None

    def handshake(self) -> bool:
        self._write("HELLO " + self.name)
        deadline = time.monotonic() + 5
        reply = None
        while reply is None and time.monotonic() < deadline:
            select.select([self], [], [], 0.1)
            reply = self._read()
        self.peer_name = reply
        return reply == "HELLO " + self.expect


def test_stockings_handshake_sees_subclass_attributes_and_its_thread_is_joined() -> None:
    threads_before = set(threading.enumerate())
    a, b = socket.socketpair()
    left = Greeting(a, "left", "right")
    with pytest.raises(NotReady):
        left.write("early")
    right = Greeting(b, "right", "left")
    wait_until(lambda: left.handshakeComplete and right.handshakeComplete)
    assert left.peer_name == "HELLO right"
    left.write("after")
    assert receive(right, 1) == ["after"]
    left.close()
    right.close()
    assert set(threading.enumerate()) <= threads_before  # handshake threads joined


def test_stockings_handshake_exception_is_the_cause() -> None:
    class Broken(compat.Stocking):
        def handshake(self) -> bool:
            raise RuntimeError("no such protocol")

    a, b = socket.socketpair()
    broken = Broken(a)
    wait_until(lambda: not broken.active)
    with pytest.raises(StockingClosed, match="handshake failed") as info:
        broken.read()
    assert isinstance(info.value.__cause__, ConnectionClosed)
    assert isinstance(info.value.__cause__.__cause__, RuntimeError)
    with pytest.raises(ConnectionClosed) as sent:
        broken.write("x")
    assert isinstance(sent.value.__cause__, RuntimeError)
    assert b.recv(1) == b""  # the failed side hung up
    broken.close()
    b.close()
