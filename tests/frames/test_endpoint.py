"""The background front end: sockwork.frames.endpoint.Endpoint and its shared I/O thread."""

from __future__ import annotations

import contextlib
import gc
import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sockwork.errors import (
    ConnectionClosed,
    IncompleteMessage,
    MessageTooLarge,
    ProtocolError,
    TimedOut,
)
from sockwork.frames._reactor import Reactor, current_thread_count
from sockwork.frames.codec import Format
from sockwork.frames.endpoint import Endpoint
from sockwork.frames.payload import JSON
from tests.frames.conftest import (
    HOSTILE_BUDGET,
    HOSTILE_CONNECTIONS,
    HOSTILE_HEADER,
    TracedMemory,
    mixed_messages,
    wait_until,
)

SRC = Path(__file__).resolve().parents[2] / "src"


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def readable(endpoint: Endpoint[object], timeout: float = 0.0) -> bool:
    return bool(select.select([endpoint], [], [], timeout)[0])


def next_message(endpoint: Endpoint[object], timeout: float = 5.0) -> object:
    """Wait on fileno() like a select loop would, then read one message."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no message arrived in time"
        if readable(endpoint, remaining):
            return endpoint.recv(timeout=0)  # readable: recv() does not wait


def sockwork_cpu_seconds() -> float:
    """CPU time used so far by this thread and the sockwork I/O thread (Linux /proc).

    Measured per thread, so threads left behind by other tests cannot disturb it.
    """
    total = time.thread_time()
    for thread in threading.enumerate():
        if thread.name == "sockwork-endpoints" and thread.native_id is not None:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().split(")")[-1]
            utime, stime = fields.split()[11:13]
            total += (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")
    return total


def open_fds() -> int:
    gc.collect()  # a socket leaked by an earlier test must not close in the middle of ours
    return len(os.listdir("/proc/self/fd"))


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


@pytest.fixture
def pair() -> Iterator[tuple[Endpoint[bytes], socket.socket]]:
    """An endpoint and the plain socket at the other end of a TCP loopback connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    endpoint = Endpoint(client)
    server.settimeout(5)
    yield endpoint, server
    endpoint.abort()
    server.close()


@pytest.fixture
def endpoints() -> Iterator[tuple[Endpoint[bytes], Endpoint[bytes]]]:
    a, b = socket.socketpair()
    first, second = Endpoint(a), Endpoint(b)
    yield first, second
    first.abort()
    second.abort()


def test_endpoint_round_trip_in_order_with_empty_messages(
    endpoints: tuple[Endpoint[bytes], Endpoint[bytes]],
) -> None:
    a, b = endpoints
    sent = [b"one", b"", b"x" * 70_000, b"last"]
    for message in sent:
        a.send(message)
    assert [next_message(b) for _ in sent] == sent
    with pytest.raises(TimedOut):
        b.recv(timeout=0)


def test_endpoint_write_many_queues_a_batch_in_order(
    pair: tuple[Endpoint[bytes], socket.socket],
) -> None:
    endpoint, peer = pair
    batch = [b"a", b"", b"x" * 20_000, bytearray(b"ba"), b"z"]
    endpoint.send_many(batch)
    endpoint.send_many([])
    expected = b"".join(frame(bytes(m)) for m in batch)
    assert recv_exactly(peer, len(expected)) == expected
    # The peer may have every byte before the I/O thread counts the batch as sent, so
    # pending_sends() can only be compared with itself: the refused batch must not add.
    before = endpoint.pending_sends()
    with pytest.raises(MessageTooLarge):
        endpoint.send_many([b"fine", b"x" * (16 * 1024 * 1024 + 1)])
    assert endpoint.pending_sends() <= before  # nothing of the refused batch was queued
    endpoint.send(b"next")
    assert recv_exactly(peer, 8) == frame(b"next")  # and b"fine" was never sent


def test_endpoint_write_many_batches_never_interleave() -> None:
    a, b = socket.socketpair()
    sender, receiver = Endpoint(a), Endpoint(b)

    def write_batches(tag: int) -> None:
        for seq in range(50):
            sender.send_many([bytes([tag, seq, i]) for i in range(20)])

    threads = [threading.Thread(target=write_batches, args=(tag,)) for tag in range(3)]
    for thread in threads:
        thread.start()
    got = [next_message(receiver) for _ in range(3 * 50 * 20)]
    for thread in threads:
        thread.join()
    for start in range(0, len(got), 20):  # every batch arrives whole
        batch = got[start : start + 20]
        assert isinstance(batch[0], bytes)
        assert batch == [bytes([batch[0][0], batch[0][1], i]) for i in range(20)]
    sender.close()
    receiver.close()


def test_endpoint_read_returns_none_until_the_whole_message_is_there(
    pair: tuple[Endpoint[bytes], socket.socket],
) -> None:
    endpoint, peer = pair
    data = frame(b"hello world")
    peer.sendall(data[:7])
    assert not readable(endpoint, 0.2)
    with pytest.raises(TimedOut):
        endpoint.recv(timeout=0)
    peer.sendall(data[7:])
    assert next_message(endpoint) == b"hello world"


def test_endpoint_fileno_readable_exactly_while_messages_wait(
    pair: tuple[Endpoint[bytes], socket.socket],
) -> None:
    endpoint, peer = pair
    assert not readable(endpoint)
    peer.sendall(frame(b"a") + frame(b"b"))
    assert readable(endpoint, 5)
    assert endpoint.recv(timeout=0) == b"a"
    assert readable(endpoint)  # one more is waiting
    assert endpoint.recv() == b"b"
    assert not readable(endpoint)
    with pytest.raises(TimedOut):
        endpoint.recv(timeout=0)


def test_endpoint_recv_with_timeout_waits_for_a_message(
    endpoints: tuple[Endpoint[bytes], Endpoint[bytes]],
) -> None:
    a, b = endpoints
    started = time.monotonic()
    with pytest.raises(TimedOut) as info:
        b.recv(timeout=0.2)
    assert info.value.timeout == 0.2
    assert time.monotonic() - started >= 0.15
    threading.Timer(0.1, a.send, (b"late",)).start()
    assert b.recv(timeout=5) == b"late"
    threading.Timer(0.1, a.send, (b"later",)).start()
    assert b.recv() == b"later"  # no timeout: waits as long as it takes


def test_endpoint_writes_to_a_plain_peer_in_wire_format(
    pair: tuple[Endpoint[bytes], socket.socket],
) -> None:
    endpoint, peer = pair
    endpoint.send(b"abc")
    endpoint.send(bytearray(b"de"))
    endpoint.send(memoryview(b"xfx")[1:2])
    assert recv_exactly(peer, 7 + 6 + 5) == frame(b"abc") + frame(b"de") + frame(b"f")


def test_endpoint_codec_and_format_options() -> None:
    a, b = socket.socketpair()
    with Endpoint(a, codec=JSON, format="varint") as left:
        with Endpoint(b, codec=JSON, format=Format.VARINT) as right:
            left.send({"n": [1, 2], "s": "é"})
            assert next_message(right) == {"n": [1, 2], "s": "é"}


# -- the shared I/O thread -------------------------------------------------------------------


def test_endpoint_fifty_endpoints_share_one_thread_which_stops_after_the_last_close() -> None:
    before = set(threading.enumerate())
    assert current_thread_count() == 0
    pairs = [socket.socketpair() for _ in range(25)]
    eps = [Endpoint(s) for pair in pairs for s in pair]
    assert len(eps) == 50
    started = set(threading.enumerate()) - before
    assert [thread.name for thread in started] == ["sockwork-endpoints"]
    assert current_thread_count() == 1
    for index in range(0, 50, 2):
        eps[index].send(b"%d" % index)
    for index in range(1, 50, 2):
        assert next_message(eps[index]) == b"%d" % (index - 1)
    for endpoint in eps:
        endpoint.close()
    assert current_thread_count() == 0
    assert set(threading.enumerate()) <= before
    # and a new endpoint starts a new one
    a, b = socket.socketpair()
    with Endpoint(a), Endpoint(b):
        assert current_thread_count() == 1
    assert current_thread_count() == 0


def test_endpoint_close_releases_every_descriptor() -> None:
    before = open_fds()
    a, b = socket.socketpair()
    left, right = Endpoint(a), Endpoint(b)
    left.fileno()
    right.fileno()
    left.send(b"x")
    next_message(right)
    left.close()
    right.close()
    assert open_fds() == before
    assert left.fileno() == -1


# -- back-pressure ---------------------------------------------------------------------------


def test_endpoint_full_send_queue_times_out_without_spinning(
    pair: tuple[Endpoint[bytes], socket.socket],
) -> None:
    endpoint, peer = pair  # the peer never reads
    endpoint.send_timeout = 0.5
    chunk = b"z" * 65536
    with pytest.raises(TimedOut) as info:
        for _ in range(10_000):  # kernel buffers fill, then the 4 MiB queue
            endpoint.send(chunk)
    assert info.value.timeout == 0.5
    assert endpoint.pending_sends() > 0
    assert endpoint.active  # a timeout does not break the connection
    # Blocked writer + reactor waiting for writability: no CPU burnt while stuck.
    cpu = sockwork_cpu_seconds()
    wall = time.monotonic()
    with pytest.raises(TimedOut):
        endpoint.send(chunk)
    assert time.monotonic() - wall >= 0.45
    assert sockwork_cpu_seconds() - cpu < 0.1


def test_endpoint_undrained_inbox_pauses_reading_without_spinning() -> None:
    a, b = socket.socketpair()
    sender = Endpoint(a, send_timeout=0.3)
    receiver = Endpoint(b, max_queue=256 * 1024)
    chunk = b"q" * 16384
    count = 0
    with pytest.raises(TimedOut):
        while True:
            sender.send(chunk)
            count += 1
    assert count < 1000  # the receiver's queue is bounded: it stopped reading
    cpu = sockwork_cpu_seconds()
    time.sleep(0.5)  # nothing to wait for: we measure that nothing happens
    assert sockwork_cpu_seconds() - cpu < 0.1
    # The receiver still sends while its inbox is full (no head-of-line stall).
    receiver.send(b"reply")
    assert next_message(sender) == b"reply"
    for _ in range(count):
        assert next_message(receiver) == chunk
    sender.close()
    receiver.close()


def test_endpoint_both_sides_writing_without_reading_time_out_instead_of_deadlocking() -> None:
    a, b = socket.socketpair()
    left = Endpoint(a, max_queue=256 * 1024, send_timeout=0.3)
    right = Endpoint(b, max_queue=256 * 1024, send_timeout=0.3)
    chunk = b"d" * 32768
    written = {}

    def flood(name: str, endpoint: Endpoint[bytes]) -> None:
        count = 0
        try:
            while True:
                endpoint.send(chunk)
                count += 1
        except TimedOut:
            written[name] = count

    threads = [
        threading.Thread(target=flood, args=("left", left)),
        threading.Thread(target=flood, args=("right", right)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert set(written) == {"left", "right"}  # both gave up in time: no deadlock
    # Both connections still work: everything accepted is delivered once the sides read.
    assert [next_message(right) for _ in range(written["left"])] == [chunk] * written["left"]
    assert [next_message(left) for _ in range(written["right"])] == [chunk] * written["right"]
    left.close()
    right.close()


def test_endpoint_close_flushes_queued_messages() -> None:
    a, b = socket.socketpair()
    endpoint = Endpoint(a)
    payload = b"p" * 100_000
    for _ in range(20):  # 2 MB: more than the kernel buffers hold
        endpoint.send(payload)
    assert endpoint.pending_sends() > 0
    received: list[bytes] = []

    def drain() -> None:
        time.sleep(0.2)  # the peer starts reading late
        b.settimeout(5)
        while len(received) < 20:
            size = struct.unpack(">I", recv_exactly(b, 4))[0]
            received.append(recv_exactly(b, size))

    reader = threading.Thread(target=drain)
    reader.start()
    endpoint.close(flush_timeout=10)
    reader.join()
    b.close()
    assert received == [payload] * 20
    assert endpoint.pending_sends() == 0


def test_endpoint_close_reports_unsent_messages_when_the_flush_times_out() -> None:
    before = open_fds()
    a, b = socket.socketpair()
    endpoint = Endpoint(a)
    for _ in range(40):
        endpoint.send(b"u" * 100_000)
    started = time.monotonic()
    with pytest.raises(TimedOut, match="not sent") as info:
        endpoint.close(flush_timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 3
    assert info.value.timeout == 0.3
    assert endpoint.pending_sends() > 0
    assert not endpoint.active
    assert current_thread_count() == 0
    b.close()
    assert open_fds() == before
    endpoint.close()  # idempotent, no second report


# -- ends and faults -------------------------------------------------------------------------


def test_endpoint_peer_close_delivers_queued_messages_then_connection_closed(
    pair: tuple[Endpoint[bytes], socket.socket],
) -> None:
    endpoint, peer = pair
    peer.sendall(frame(b"m1") + frame(b"m2"))
    peer.close()
    assert next_message(endpoint) == b"m1"
    assert next_message(endpoint) == b"m2"
    assert readable(endpoint, 5)  # the end itself is readable: a select loop wakes and sees it
    assert not endpoint.active
    with pytest.raises(ConnectionClosed) as info:
        endpoint.recv(timeout=0)
    assert info.value.by_peer
    assert type(info.value) is ConnectionClosed
    with pytest.raises(ConnectionClosed):
        endpoint.recv(timeout=0)
    with pytest.raises(ConnectionClosed):
        endpoint.send(b"too late")


def test_endpoint_eof_inside_a_frame_raises_incomplete_message(
    pair: tuple[Endpoint[bytes], socket.socket],
) -> None:
    endpoint, peer = pair
    peer.sendall(frame(b"whole") + frame(b"cut short")[:6])
    peer.close()
    assert next_message(endpoint) == b"whole"
    readable(endpoint, 5)
    with pytest.raises(IncompleteMessage) as info:
        endpoint.recv(timeout=0)
    assert (info.value.received, info.value.expected) == (2, 9)


def test_endpoint_peer_reset_is_surfaced_and_the_socket_released() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    before = open_fds()
    endpoint = Endpoint(client)
    server.sendall(frame(b"before") + frame(b"partial")[:5])
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert next_message(endpoint) == b"before"
    server.close()  # RST
    readable(endpoint, 5)
    with pytest.raises(ConnectionClosed) as info:
        endpoint.recv(timeout=0)
    assert info.value.by_peer
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert client.fileno() == -1  # released as soon as the end was seen, before close()
    endpoint.close()
    assert open_fds() == before - 2  # client and server


def test_endpoint_write_to_a_reset_peer_raises_connection_closed(
    pair: tuple[Endpoint[bytes], socket.socket],
) -> None:
    endpoint, peer = pair
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # RST
    readable(endpoint, 5)
    assert not endpoint.active
    with pytest.raises(ConnectionClosed) as info:
        endpoint.send(b"into the void")
    assert info.value.by_peer


def test_endpoint_a_broken_connection_leaves_the_others_served() -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    broken, healthy, healthy_peer = Endpoint(a), Endpoint(c), Endpoint(d)
    b.sendall(struct.pack(">I", 2**31))  # oversized header on the first connection
    readable(broken, 5)
    with pytest.raises(MessageTooLarge):
        broken.recv(timeout=0)
    for index in range(100):
        healthy.send(b"%d" % index)
    assert [next_message(healthy_peer) for _ in range(100)] == [b"%d" % i for i in range(100)]
    for endpoint in (broken, healthy, healthy_peer):
        endpoint.close()
    b.close()


def test_endpoint_oversized_header_raises_message_too_large_after_earlier_messages(
    pair: tuple[Endpoint[bytes], socket.socket],
) -> None:
    endpoint, peer = pair
    peer.sendall(frame(b"fine") + struct.pack(">I", 2**31))
    assert next_message(endpoint) == b"fine"
    readable(endpoint, 5)
    with pytest.raises(MessageTooLarge) as info:
        endpoint.recv(timeout=0)
    assert (info.value.size, info.value.limit) == (2**31, 16 * 1024 * 1024)
    assert not endpoint.active
    with pytest.raises(ConnectionClosed) as again:
        endpoint.recv(timeout=0)
    assert again.value.__cause__ is info.value
    peer.settimeout(5)
    assert peer.recv(1) == b""  # our side closed the connection


def test_endpoint_bad_stockings_text_raises_protocol_error() -> None:
    a, b = socket.socketpair()
    with Endpoint(a, format="stockings") as endpoint:
        b.sendall(b"\x81a" + b"\x82\xff\xfe")
        assert next_message(endpoint) == b"a"
        readable(endpoint, 5)
        with pytest.raises(ProtocolError, match="UTF-8"):
            endpoint.recv(timeout=0)
    b.close()


def test_endpoint_runaway_header_raises_protocol_error() -> None:
    a, b = socket.socketpair()
    with Endpoint(a, format="varint") as endpoint:
        b.sendall(b"\xff" * 20)
        readable(endpoint, 5)
        with pytest.raises(ProtocolError, match="header longer"):
            endpoint.recv(timeout=0)
    b.close()


def test_endpoint_oversized_write_is_refused_and_the_connection_stays_usable(
    endpoints: tuple[Endpoint[bytes], Endpoint[bytes]],
) -> None:
    a, b = endpoints
    with pytest.raises(MessageTooLarge):
        a.send(b"x" * (16 * 1024 * 1024 + 1))
    a.send(b"ok")
    assert next_message(b) == b"ok"


def test_endpoint_after_close_recv_and_send_raise_connection_closed(
    endpoints: tuple[Endpoint[bytes], Endpoint[bytes]],
) -> None:
    a, _ = endpoints
    a.close()
    a.close()
    assert not a.active
    for call in (a.recv, lambda: a.send(b"x")):
        with pytest.raises(ConnectionClosed) as info:
            call()
        assert not info.value.by_peer


def test_endpoint_concurrent_writers_never_interleave_frames() -> None:
    a, b = socket.socketpair()
    sender, receiver = Endpoint(a), Endpoint(b)
    per_thread = 40

    def write_all(tag: int) -> None:
        for seq in range(per_thread):
            sender.send(bytes([tag]) + seq.to_bytes(4, "big") + bytes([tag]) * 100_000)

    threads = [threading.Thread(target=write_all, args=(tag,)) for tag in range(4)]
    for thread in threads:
        thread.start()
    seen: dict[int, list[int]] = {tag: [] for tag in range(4)}
    for _ in range(4 * per_thread):
        message = next_message(receiver)
        assert isinstance(message, bytes)
        tag = message[0]
        assert message[5:] == bytes([tag]) * 100_000
        seen[tag].append(int.from_bytes(message[1:5], "big"))
    for thread in threads:
        thread.join()
    assert seen == {tag: list(range(per_thread)) for tag in range(4)}
    sender.close()
    receiver.close()


def test_endpoint_close_racing_the_peer_eof_is_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    # The peer's close ends the other endpoint on the I/O thread (which then stops)
    # while that endpoint's own close() is on its way: neither may trip. A slower
    # call_soon widens the window where the race used to hit.
    real_call_soon = Reactor.call_soon

    def slow_call_soon(self: Reactor, callback: Callable[[], None]) -> None:
        time.sleep(0.002)
        real_call_soon(self, callback)

    monkeypatch.setattr(Reactor, "call_soon", slow_call_soon)
    for _ in range(30):
        a, b = socket.socketpair()
        left, right = Endpoint(a), Endpoint(b)
        left.send(b"x")
        assert right.recv(timeout=5) == b"x"
        left.close()  # its EOF reaches right while right.close() starts
        right.close()
    assert current_thread_count() == 0


def test_endpoint_a_failure_inside_the_io_thread_ends_only_that_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    victim, healthy, healthy_peer = Endpoint(a), Endpoint(c), Endpoint(d)
    real_receive = Endpoint._receive

    def receive(self: Endpoint[bytes]) -> None:
        if self is victim:
            raise RuntimeError("simulated bug")
        real_receive(self)

    monkeypatch.setattr(Endpoint, "_receive", receive)
    b.sendall(frame(b"x"))
    readable(victim, 5)
    with pytest.raises(ConnectionClosed, match="I/O thread failed") as info:
        victim.recv(timeout=0)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert a.fileno() == -1  # released
    healthy.send(b"still served")
    assert next_message(healthy_peer) == b"still served"
    for endpoint in (victim, healthy, healthy_peer):
        endpoint.close()
    b.close()


def test_endpoint_write_without_timeout_waits_until_the_peer_reads() -> None:
    a, b = socket.socketpair()
    sender = Endpoint(a, max_queue=64 * 1024, send_timeout=None)
    receiver_started = threading.Event()
    received: list[object] = []

    def receive_later() -> None:
        receiver_started.wait(5)
        with Endpoint(b) as receiver:
            while len(received) < 200:
                message = receiver.recv(timeout=5)
                assert message is not None
                received.append(message)

    reader = threading.Thread(target=receive_later)
    reader.start()
    threading.Timer(0.3, receiver_started.set).start()  # the peer starts reading late
    started = time.monotonic()
    for index in range(200):  # 3 MB through a 64 KiB queue: write() must wait
        sender.send(b"%03d" % index * 5000)
    assert time.monotonic() - started >= 0.25  # it waited for the reader, without a timeout
    reader.join(10)
    assert received == [b"%03d" % index * 5000 for index in range(200)]
    sender.close()


def test_endpoint_context_manager_does_not_mask_an_exception_with_a_flush_timeout() -> None:
    class Impatient(Endpoint[bytes]):
        def close(self, flush_timeout: float | None = 0.2) -> None:
            super().close(flush_timeout)

    a, b = socket.socketpair()
    with pytest.raises(KeyError):
        with Impatient(a) as endpoint:
            for _ in range(40):
                endpoint.send(b"w" * 100_000)  # the peer never reads
            raise KeyError("the real problem")
    assert not endpoint.active
    assert endpoint.pending_sends() > 0
    b.close()
    c, d = socket.socketpair()
    with pytest.raises(TimedOut):  # without an exception in flight, the timeout is reported
        with Impatient(c) as other:
            for _ in range(40):
                other.send(b"w" * 100_000)
    d.close()


def test_endpoint_rejects_bad_arguments() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unconnected = socket.socket()
    try:
        with pytest.raises(TypeError, match="SOCK_STREAM"):
            Endpoint(udp)
        with pytest.raises(ValueError, match="connected"):
            Endpoint(unconnected)
        a, b = socket.socketpair()
        with a, b:
            with pytest.raises(ValueError, match="max_queue"):
                Endpoint(a, max_queue=0)
            with pytest.raises(ValueError, match="send_timeout"):
                Endpoint(a, send_timeout=-1)
            with pytest.raises(TypeError, match="codec"):
                Endpoint(a, codec="json")  # type: ignore[call-overload]
    finally:
        udp.close()
        unconnected.close()
    assert current_thread_count() == 0


# -- under sockwork.faults (a poor network, in-process) ---------------------------------------


def faulty_tcp_pair(*faults: object) -> tuple[socket.socket, socket.socket, object]:
    """A loopback TCP pair whose connection suffers ``faults`` (both ends)."""
    from sockwork.faults import Match, inject

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    scope = inject(*faults, match=Match(port=port), seed=1)  # type: ignore[arg-type]
    scope.__enter__()
    try:
        client = socket.create_connection(("127.0.0.1", port))
        server, _ = listener.accept()
    finally:
        listener.close()
    return client, server, scope


def test_endpoint_short_reads_and_writes_deliver_messages_intact() -> None:
    from sockwork.faults import Slice

    client, server, scope = faulty_tcp_pair(Slice(700, direction="both"))
    try:
        with Endpoint(client) as left, Endpoint(server) as right:
            # 20 kB payloads go out as header + payload buffers (sendmsg), cut anywhere.
            sent = [b"", b"a", os.urandom(300), os.urandom(20_000), b"end"] * 3
            for message in sent:
                left.send(message)
                right.send(message)
            assert [next_message(right) for _ in sent] == sent
            assert [next_message(left) for _ in sent] == sent
    finally:
        scope.__exit__(None, None, None)  # type: ignore[attr-defined]


def test_endpoint_reset_inside_a_frame_under_faults() -> None:
    from sockwork.faults import CloseAfter

    client, server, scope = faulty_tcp_pair(CloseAfter(1000, reset=True, direction="send"))
    try:
        with Endpoint(client) as left, Endpoint(server) as right:
            for _ in range(4):  # 4 x 304 bytes: the reset falls inside the fourth frame
                try:
                    left.send(b"z" * 300)
                except ConnectionClosed:
                    break
            assert [next_message(right) for _ in range(3)] == [b"z" * 300] * 3
            readable(right, 5)
            with pytest.raises(IncompleteMessage) as info:
                right.recv(timeout=0)
            assert isinstance(info.value.__cause__, ConnectionResetError)
    finally:
        scope.__exit__(None, None, None)  # type: ignore[attr-defined]


# -- TLS and interpreter exit ----------------------------------------------------------------


# A self-signed certificate for 127.0.0.1, valid until 2126, made for these tests only
# (its key is public: it protects nothing). Regenerate with:
#   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500 \
#     -subj "/CN=sockwork test certificate (not secret)" \
#     -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout k.pem -out c.pem
TLS_PEM = Path(__file__).resolve().parent / "data" / "tls-test-only.pem"


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(TLS_PEM)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(TLS_PEM)
    return server, client


def test_endpoint_over_tls(tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls_contexts
    listener = socket.create_server(("127.0.0.1", 0))
    result: list[ssl.SSLSocket] = []
    accepter = threading.Thread(
        target=lambda: result.append(server_context.wrap_socket(listener.accept()[0], True))
    )
    accepter.start()
    client = client_context.wrap_socket(
        socket.create_connection(listener.getsockname()), server_hostname="127.0.0.1"
    )
    accepter.join()
    listener.close()
    with Endpoint(client) as left, Endpoint(result[0]) as right:
        big = os.urandom(3 * 1024 * 1024)
        for message in (b"small", big, b""):
            left.send(message)
        right.send(b"back")
        assert next_message(right) == b"small"
        assert next_message(right) == big
        assert next_message(right) == b""
        assert next_message(left) == b"back"


def test_endpoint_queued_messages_are_flushed_at_interpreter_exit() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    script = (
        "import socket\n"
        "from sockwork.frames.endpoint import Endpoint\n"
        f"sock = socket.create_connection(('127.0.0.1', {port}))\n"
        "ep = Endpoint(sock, max_queue=32 * 1024 * 1024)\n"
        "for i in range(40):\n"
        "    ep.send(b'%03d' % i * 100_000)\n"
        "print(ep.pending_sends(), flush=True)\n"
        # no close(): the interpreter exits with messages still queued
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stdout=subprocess.PIPE,
    )
    conn, _ = listener.accept()
    listener.close()
    assert child.stdout is not None
    queued_at_exit = int(child.stdout.readline())
    assert queued_at_exit > 10  # most of the 12 MB was still queued when the script ended
    conn.settimeout(10)
    with conn:
        for i in range(40):
            size = struct.unpack(">I", recv_exactly(conn, 4))[0]
            assert recv_exactly(conn, size) == b"%03d" % i * 100_000
        assert conn.recv(1) == b""
    assert child.wait(10) == 0
    child.stdout.close()


def test_endpoint_works_in_a_forked_child_and_the_child_exits() -> None:
    script = (
        "import os, socket, sys\n"
        "from sockwork.frames import Endpoint\n"
        "a, b = socket.socketpair()\n"
        "parent_side = Endpoint(a)\n"  # the parent's reactor thread is running
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    c, d = socket.socketpair()\n"
        "    left, right = Endpoint(c), Endpoint(d)\n"
        "    left.send(b'child')\n"
        "    ok = right.recv(timeout=5) == b'child'\n"
        "    sys.exit(0 if ok else 3)\n"  # a normal exit: atexit hooks run
        "_, status = os.waitpid(pid, 0)\n"
        "parent_side.close(); b.close()\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=20,
        capture_output=True,
    )
    assert result.returncode == 0, result.stderr


def test_endpoint_is_exported_from_sockwork_frames_and_documented() -> None:
    import sockwork.frames
    import sockwork.frames.endpoint

    doc = (SRC.parent / "docs" / "frames.md").read_text(encoding="utf-8")
    for name in sockwork.frames.endpoint.__all__:
        assert getattr(sockwork.frames, name) is getattr(sockwork.frames.endpoint, name)
        assert name in sockwork.frames.__all__
        assert f"`{name}`" in doc
    public = [name for name in vars(Endpoint) if not name.startswith("_")]
    for name in public:
        assert f"`{name}" in doc, f"Endpoint.{name} is not in docs/frames.md"
        docstring = getattr(Endpoint, name).__doc__
        assert docstring and docstring.splitlines()[0].endswith("."), name


def test_endpoint_hostile_headers_commit_no_memory() -> None:
    # Issue 9: `00 ff ff ff` + one byte made each endpoint allocate the 16 MiB announced.
    pairs = [socket.socketpair() for _ in range(HOSTILE_CONNECTIONS)]
    endpoints: list[Endpoint[bytes]] = []
    try:
        with TracedMemory() as traced:
            endpoints = [Endpoint(a) for a, _ in pairs]
            for _, peer in pairs:
                peer.sendall(HOSTILE_HEADER)
            wait_until(lambda: all(e._decoder.missing == 0xFFFFFF for e in endpoints))
            for _, peer in pairs:
                peer.sendall(b"x")
            wait_until(lambda: all(e._decoder.missing == 0xFFFFFE for e in endpoints))
            held = traced.now()
            assert held < HOSTILE_CONNECTIONS * HOSTILE_BUDGET, held
            for endpoint in endpoints:
                with pytest.raises(TimedOut):
                    endpoint.recv(timeout=0)
            for _, peer in pairs:
                peer.close()
            for endpoint in endpoints:
                with pytest.raises(IncompleteMessage) as caught:
                    next_message(endpoint)  # type: ignore[arg-type]
                assert (caught.value.received, caught.value.expected) == (1, 0xFFFFFF)
    finally:
        for endpoint in endpoints:
            endpoint.abort()
        for a, b in pairs:
            a.close()
            b.close()


def test_endpoint_small_message_batches_arrive_identical(
    endpoints: tuple[Endpoint[bytes], Endpoint[bytes]],
) -> None:
    a, b = endpoints
    messages = mixed_messages()
    a.send_many(messages[:2000])
    for message in messages[2000:]:
        a.send(message)
    a.close()
    assert list(b) == messages  # ends at the clean EOF


def test_endpoint_batch_taken_by_recv_still_counts_against_max_queue() -> None:
    a, b = socket.socketpair()
    sender = Endpoint(a, max_queue=64 * 1024, send_timeout=0.3)
    receiver = Endpoint(b, max_queue=64 * 1024)
    chunk = b"q" * 1000
    sent = 0
    with pytest.raises(TimedOut):
        while True:
            sender.send(chunk)
            sent += 1
    # recv() takes every waiting message at once; until they are handed out they still
    # count against max_queue, so reading stays paused and the sender stays blocked.
    assert receiver.recv(timeout=5) == chunk
    with pytest.raises(TimedOut):
        sender.send(chunk)
    for _ in range(sent - 1):
        assert receiver.recv(timeout=5) == chunk
    sender.send(b"after")  # the receiver read on once the messages were taken
    assert receiver.recv(timeout=5) == b"after"
    sender.close()
    receiver.close()


def test_endpoint_concurrent_receivers_get_each_message_once(
    endpoints: tuple[Endpoint[bytes], Endpoint[bytes]],
) -> None:
    a, b = endpoints
    messages = [i.to_bytes(4, "big") for i in range(20_000)]
    a.send_many(messages)
    a.close()
    got: list[list[bytes]] = [[], []]

    def take(into: list[bytes]) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                into.append(b.recv(timeout=5))

    threads = [threading.Thread(target=take, args=(into,)) for into in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(got[0] + got[1]) == messages  # none lost, none twice
    assert all(into == sorted(into) for into in got)  # each thread sees them in order


def test_endpoint_recv_after_close_raises_even_with_messages_taken(
    endpoints: tuple[Endpoint[bytes], Endpoint[bytes]],
) -> None:
    a, b = endpoints
    a.send_many([b"1", b"2", b"3"])
    assert next_message(b) == b"1"  # "2" and "3" are in the batch recv() took
    b.close()
    with pytest.raises(ConnectionClosed) as caught:
        b.recv(timeout=0)
    assert caught.value.by_peer is False
