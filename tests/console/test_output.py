"""The bounded outbox and its pump, over a socketpair (no telnet, no server)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sockwork.console.output import Outbox, OutputPump
from sockwork.errors import ConnectionClosed


class Pipe:
    """A Channel over one end of a socketpair; the test reads the other end."""

    def __init__(self) -> None:
        self.sock, self.peer = socket.socketpair()
        self.sock.setblocking(False)
        # Small buffers: a few KiB fill them, as a client that stopped reading would.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.failures: list[tuple[str, bool]] = []
        self.drained = threading.Event()
        self.closed = threading.Event()

    def send_now(self, data: memoryview) -> int:
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0

    def output_failed(self, reason: str, *, log: bool) -> None:
        self.failures.append((reason, log))
        self.sock.shutdown(socket.SHUT_RDWR)

    def output_drained(self) -> None:
        self.drained.set()

    def close_transport(self) -> None:
        self.sock.close()
        self.closed.set()

    def read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.peer.recv(65536)
            assert chunk, f"EOF after {len(data)} bytes"
            data += chunk
        return data


@pytest.fixture
def pump() -> Iterator[OutputPump]:
    pump = OutputPump()
    pump.start()
    yield pump
    pump.stop(5)


def make(pump: OutputPump, pipe: Pipe, *, limit: int = 4096, write_timeout: float = 30.0) -> Outbox:
    return Outbox(
        pipe,
        pipe.sock.fileno(),
        lock=threading.RLock(),
        pump=pump,
        limit=limit,
        write_timeout=write_timeout,
        name="test box",
        address=("127.0.0.1", 1),
    )


def test_outbox_sends_at_once_when_the_socket_takes_it(pump: OutputPump) -> None:
    pipe = Pipe()
    box = make(pump, pipe)
    box.put(b"hello", wait=False)
    assert (box.buffered, box.bytes_sent) == (0, 5)
    assert pipe.read(5) == b"hello"
    box.retire()
    assert pipe.drained.is_set() and pipe.closed.is_set()
    pipe.peer.close()


def test_outbox_program_output_waits_for_room_and_arrives_in_order(pump: OutputPump) -> None:
    pipe = Pipe()
    box = make(pump, pipe)
    data = bytes(range(256)) * 4096  # 1 MiB through a 4 KiB limit
    writer = threading.Thread(target=lambda: box.put(data, wait=True))
    writer.start()
    assert pipe.read(len(data)) == data
    writer.join(10)
    # The pump counts a send after the socket took it: the reader can see the bytes
    # first. retire() takes the box's lock, so the count is final once it returns.
    box.retire()
    assert pipe.closed.wait(5)
    assert box.bytes_sent == len(data) and box.buffered == 0
    pipe.peer.close()


def test_outbox_other_threads_never_wait_and_fail_a_box_too_far_behind(
    pump: OutputPump,
) -> None:
    pipe = Pipe()
    box = make(pump, pipe, limit=4096)
    started = time.monotonic()
    with pytest.raises(ConnectionClosed, match="fell behind by more than 8192 bytes"):
        for _ in range(10_000):
            box.put(b"x" * 1000, wait=False)
    assert time.monotonic() - started < 5.0  # it never waited for the reader
    assert pipe.failures == [("fell behind by more than 8192 bytes of output", True)]
    assert box.buffered == 0 and not box.open
    with pytest.raises(ConnectionClosed):
        box.put(b"more", wait=False)
    box.retire()
    assert pipe.closed.wait(5)
    pipe.peer.close()


def test_outbox_pump_fails_a_box_whose_client_takes_nothing(pump: OutputPump) -> None:
    pipe = Pipe()
    box = make(pump, pipe, write_timeout=0.3)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            box.put(b"y" * 1_000_000, wait=True)
        except ConnectionClosed as error:
            errors.append(error)

    writer = threading.Thread(target=write)
    started = time.monotonic()
    writer.start()
    writer.join(10)
    assert not writer.is_alive()
    assert time.monotonic() - started >= 0.25
    assert [str(error) for error in errors] == ["test box: took no output for 0.3 s"]
    assert pipe.failures == [("took no output for 0.3 s", True)]
    box.retire()
    assert pipe.closed.wait(5)
    pipe.peer.close()


def test_outbox_finish_with_grace_drops_what_a_client_does_not_take(pump: OutputPump) -> None:
    pipe = Pipe()
    box = make(pump, pipe, limit=1_000_000)
    box.put(b"z" * 500_000, wait=False)  # more than the socket buffers hold
    assert box.buffered > 0
    box.finish(grace=0.2)
    with pytest.raises(ConnectionClosed):
        box.put(b"late", wait=False)
    box.retire()  # watched: the pump closes it once the grace is over
    assert pipe.closed.wait(5)
    assert pipe.failures == [("closed with output the client did not take", False)]
    assert not pipe.drained.is_set()
    pipe.peer.close()


def test_outbox_retire_waits_for_the_client_to_take_the_last_bytes(pump: OutputPump) -> None:
    pipe = Pipe()
    box = make(pump, pipe, limit=1_000_000)
    box.put(b"w" * 500_000, wait=False)
    box.retire()
    assert not pipe.closed.is_set()  # bytes still waiting: the pump owns the socket
    assert pipe.read(500_000) == b"w" * 500_000
    assert pipe.closed.wait(5) and pipe.drained.is_set()
    assert pipe.failures == []
    pipe.peer.close()


def test_outbox_pump_stop_fails_waiting_output_and_closes_retired_boxes() -> None:
    pump = OutputPump()
    pump.start()
    pipe = Pipe()
    box = make(pump, pipe, limit=1_000_000)
    box.put(b"v" * 500_000, wait=False)
    box.retire()
    pump.stop(5)
    assert pipe.closed.is_set()
    assert pipe.failures == [("the server is stopped", False)]
    other = Pipe()
    late = make(pump, other, limit=1_000_000)
    with pytest.raises(ConnectionClosed, match="the server is stopped"):
        late.put(b"u" * 500_000, wait=False)  # nobody left to drain it
    late.retire()
    assert other.closed.is_set()
    pipe.peer.close()
    other.peer.close()
