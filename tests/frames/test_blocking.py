"""Tests of the blocking front end: MessageSocket and connect()."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sockwork.errors import (
    ConnectionClosed,
    IncompleteMessage,
    MessageTooLarge,
    ProtocolError,
    SockworkError,
    TimedOut,
)
from sockwork.frames import (
    BYTES_OR_TEXT,
    JSON,
    TEXT,
    Format,
    FrameEncoder,
    MessageSocket,
    connect,
)
from tests.frames.conftest import (
    HOSTILE_BUDGET,
    HOSTILE_CONNECTIONS,
    HOSTILE_HEADER,
    TracedMemory,
    mixed_messages,
    reset,
)

Pair = tuple[socket.socket, socket.socket]


def run_thread(target: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


@pytest.fixture
def pair(tcp_pair: Pair) -> Iterator[tuple[MessageSocket[bytes], MessageSocket[bytes]]]:
    a, b = tcp_pair
    with MessageSocket(a) as left, MessageSocket(b) as right:
        left.settimeout(10)
        right.settimeout(10)
        yield left, right


@pytest.mark.parametrize("format", list(Format))
def test_message_socket_round_trip_each_format(tcp_pair: Pair, format: Format) -> None:
    a, b = tcp_pair
    with MessageSocket(a, format=format) as left, MessageSocket(b, format=format) as right:
        right.settimeout(5)
        for message in [b"hello", b"", bytes(range(256)) * 300]:
            left.send(message)
            assert right.recv() == message
        left.send(bytearray(b"ba"))
        left.send(memoryview(b"mv"))
        assert right.recv() == b"ba"
        assert right.recv() == b"mv"


def test_message_socket_large_message_goes_whole(pair: tuple[MessageSocket[bytes], ...]) -> None:
    left, right = pair
    payload = bytes(range(256)) * (4 * 4096)  # 4 MiB: more than the socket buffers hold
    sender = run_thread(left.send, payload)
    assert right.recv() == payload
    sender.join(10)


def test_message_socket_send_many_then_iterate_until_clean_eof(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    messages = [str(i).encode() * (i % 7) for i in range(5000)]
    with MessageSocket(a) as left, MessageSocket(b) as right:
        right.settimeout(10)
        left.send_many(messages)
        left.close()
        assert list(right) == messages
        with pytest.raises(ConnectionClosed) as info:
            right.recv()
        assert type(info.value) is ConnectionClosed and info.value.by_peer
        assert info.value.address == right.address
        right.close()
        with pytest.raises(ConnectionClosed) as info:
            right.recv()
        assert info.value.by_peer is False


def test_message_socket_codecs(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    with MessageSocket(a, codec=JSON) as left, MessageSocket(b, codec=JSON) as right:
        right.settimeout(5)
        left.send({"a": [1, 2.5, None], "é": "ü"})
        assert right.recv() == {"a": [1, 2.5, None], "é": "ü"}


def test_message_socket_stockings_keeps_str_and_bytes(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    kw = {"format": Format.STOCKINGS, "codec": BYTES_OR_TEXT}
    with MessageSocket(a, **kw) as left, MessageSocket(b, **kw) as right:  # type: ignore[call-overload]
        right.settimeout(5)
        left.send_many(["text", b"bytes", ""])
        assert [right.recv() for _ in range(3)] == ["text", b"bytes", ""]
    # The wire carries the type bit: a STOCKINGS text frame.
    c, d = socket.socketpair()
    with MessageSocket(c, format="stockings", codec=TEXT) as left, d:
        left.send("é")
        assert d.recv(10) == bytes.fromhex("82 c3 a9")


def test_message_socket_rejects_str_with_bytes_codec(
    pair: tuple[MessageSocket[bytes], ...],
) -> None:
    left, _ = pair
    with pytest.raises(TypeError, match="codec=TEXT"):
        left.send("text")  # type: ignore[arg-type]


def test_message_socket_rejects_bad_arguments() -> None:
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(ValueError, match="max_size"):
            MessageSocket(a, max_size=-1)
        with pytest.raises(TypeError, match="codec"):
            MessageSocket(a, codec=(bytes, bytes))  # type: ignore[call-overload]
    with socket.socket() as unconnected, pytest.raises(ValueError, match="connected"):
        MessageSocket(unconnected)
    with socket.socket(type=socket.SOCK_DGRAM) as dgram, pytest.raises(TypeError, match="STREAM"):
        MessageSocket(dgram)


def test_message_socket_sets_nodelay(tcp_pair: Pair) -> None:
    a, _ = tcp_pair
    with MessageSocket(a) as ms:
        assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert ms.address == a.getpeername()


def test_message_socket_close_is_idempotent_and_send_after_close_raises(
    pair: tuple[MessageSocket[bytes], ...],
) -> None:
    left, right = pair
    left.close()
    left.close()
    assert left.closed and left.fileno() == -1
    for call in (lambda: left.send(b"x"), lambda: left.send_many([b"x"]), left.recv):
        with pytest.raises(ConnectionClosed) as info:
            call()
        assert info.value.by_peer is False
        assert "was closed" in str(info.value)
    # The peer sees a clean EOF.
    assert list(right) == []


def test_message_socket_context_manager_closes(tcp_pair: Pair) -> None:
    a, _ = tcp_pair
    with MessageSocket(a) as ms:
        pass
    assert ms.closed and a.fileno() == -1


def test_message_socket_recv_timeout_keeps_partial_message(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    with MessageSocket(b) as right:
        right.settimeout(0.2)
        frame = FrameEncoder().send(b"0123456789")
        a.sendall(frame[:7])
        started = time.monotonic()
        with pytest.raises(TimedOut) as info:
            right.recv()
        elapsed = time.monotonic() - started
        assert isinstance(info.value, TimeoutError)
        assert info.value.timeout == 0.2
        assert isinstance(info.value.__cause__, TimeoutError)
        assert 0.15 <= elapsed < 2.0
        a.sendall(frame[7:])
        assert right.recv() == b"0123456789"
        assert not right.closed


def test_message_socket_send_timeout_closes(tcp_pair: Pair) -> None:
    a, _ = tcp_pair  # nobody reads the other end
    with MessageSocket(a) as left:
        left.settimeout(0.2)
        with pytest.raises(TimedOut):
            left.send(b"x" * (16 * 1024 * 1024 - 4))
        assert left.closed
        with pytest.raises(TimedOut):
            left.send(b"after")  # the fault is sticky


def test_message_socket_settimeout_validates() -> None:
    a, b = socket.socketpair()
    with MessageSocket(a) as ms, b:
        with pytest.raises(ValueError, match="timeout"):
            ms.settimeout(-1)
        ms.settimeout(1.5)
        assert ms.gettimeout() == 1.5


def test_message_socket_close_wakes_blocked_recv(pair: tuple[MessageSocket[bytes], ...]) -> None:
    _, right = pair
    errors: list[BaseException] = []
    started = threading.Event()

    def reader() -> None:
        started.set()
        try:
            right.recv()
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    thread = run_thread(reader)
    started.wait(5)
    time.sleep(0.05)  # let it block in recv_into (no event exists for "is blocked")
    right.close()
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ConnectionClosed)
    assert errors[0].by_peer is False


def test_message_socket_concurrent_senders_never_interleave(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    threads, per_thread, size = 4, 16, 100_000
    # Small kernel buffers: every 100 kB frame needs several partial sends.
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    with MessageSocket(a) as left, MessageSocket(b) as right:
        # With a timeout, CPython sends in non-blocking steps: partial sends are common,
        # so frames would interleave without the lock.
        left.settimeout(20)
        right.settimeout(20)

        errors: list[BaseException] = []

        def writer(n: int) -> None:
            try:
                for i in range(per_thread):
                    if i % 2:
                        left.send(bytes([n]) * size)
                    else:
                        left.send_many([bytes([n]) * size, bytes([n]) * 10])
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        writers = [run_thread(writer, n) for n in range(threads)]
        received = []
        total = threads * per_thread * 3 // 2
        for _ in range(total):
            message = right.recv()
            assert message == message[:1] * len(message)  # one writer's bytes only
            assert len(message) in (size, 10)
            received.append(message[0])
        for thread in writers:
            thread.join(10)
        assert errors == []
        assert sorted(set(received)) == list(range(threads))
        assert len(received) == total


def test_connect_round_trip_and_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
        with connect(address, timeout=5, format="varint", codec=TEXT) as client:
            server_sock, _ = listener.accept()
            with MessageSocket(server_sock, format="varint", codec=TEXT) as server:
                client.send("ping")
                assert server.recv() == "ping"
                assert client.gettimeout() == 5
    # The listener is closed now: the port refuses.
    with pytest.raises(ConnectionRefusedError):
        connect(address, timeout=5)


# -- bad input and faults --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("format", "bad", "error"),
    [
        (Format.U32, b"\x7f\xff\xff\xff", MessageTooLarge),
        (Format.VARINT, b"\x80" * 50, ProtocolError),
        (Format.STOCKINGS, bytes.fromhex("82 c3 28"), ProtocolError),
        (Format.U32, b"\x00\x00\x00\x10abc", IncompleteMessage),
        (Format.STOCKINGS, b"\x00", IncompleteMessage),
    ],
)
def test_message_socket_fault_delivers_earlier_messages_then_closes(
    tcp_pair: Pair, format: Format, bad: bytes, error: type[SockworkError]
) -> None:
    a, b = tcp_pair
    a.sendall(FrameEncoder(format).send_many([b"one", b"two"]) + bad)
    a.shutdown(socket.SHUT_WR)  # EOF after the bad bytes
    with MessageSocket(b, format=format, max_size=1000) as right:
        right.settimeout(5)
        assert right.recv() == b"one"
        assert right.recv() == b"two"
        with pytest.raises(error) as info:
            right.recv()
        assert isinstance(info.value, SockworkError)
        assert right.closed
        with pytest.raises(error) as again:  # sticky: the same error again
            right.recv()
        assert again.value is info.value
    assert a.recv(10) == b""  # the peer sees the connection closed


def test_message_socket_oversized_header_reports_sizes(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    a.sendall(b"\x40\x00\x00\x00")  # 1 GiB declared; never sent
    with MessageSocket(b, max_size=1000) as right:
        right.settimeout(5)
        with pytest.raises(MessageTooLarge) as info:
            right.recv()
        assert (info.value.size, info.value.limit) == (2**30, 1000)
        assert isinstance(info.value, ValueError)


def test_message_socket_eof_inside_frame(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    a.sendall(FrameEncoder().send(b"0123456789")[:-4])
    a.close()
    with MessageSocket(b) as right:
        right.settimeout(5)
        with pytest.raises(IncompleteMessage) as info:
            list(right)
        assert (info.value.received, info.value.expected) == (6, 10)
        assert info.value.address == right.address


def test_message_socket_peer_reset_mid_frame(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    with MessageSocket(b) as right:
        right.settimeout(5)
        a.sendall(FrameEncoder().send_many([b"whole"]) + b"\x00\x00\x00\x09abc")
        reset(a)
        assert right.recv() == b"whole"
        with pytest.raises(IncompleteMessage) as info:
            right.recv()
        assert (info.value.received, info.value.expected) == (3, 9)
        assert isinstance(info.value.__cause__, ConnectionResetError)
        assert right.closed


def test_message_socket_peer_reset_between_frames_is_not_clean(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    with MessageSocket(b) as right:
        right.settimeout(5)
        a.sendall(FrameEncoder().send(b"whole"))
        reset(a)
        got = []
        with pytest.raises(ConnectionClosed) as info:
            for message in right:  # a reset does not end iteration quietly
                got.append(message)
        assert got == [b"whole"]
        assert isinstance(info.value.__cause__, ConnectionResetError)
        assert info.value.by_peer


def test_message_socket_send_after_peer_reset(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    with MessageSocket(b) as right:
        reset(a)
        with pytest.raises(ConnectionClosed) as info:
            for _ in range(100):  # the first sends may still be accepted by the kernel
                right.send(b"x" * 1000)
        assert info.value.by_peer
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno in (errno.ECONNRESET, errno.EPIPE)


def test_message_socket_server_keeps_serving_other_connections() -> None:
    """A thread-per-connection echo server: a broken client does not affect the others."""
    faults: list[BaseException] = []

    def serve_one(sock: socket.socket) -> None:
        with MessageSocket(sock, max_size=100) as conn:
            conn.settimeout(10)
            try:
                for message in conn:
                    conn.send(message)
            except SockworkError as exc:
                faults.append(exc)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()

        def accept_loop() -> None:
            for _ in range(3):
                sock, _ = listener.accept()
                run_thread(serve_one, sock)

        acceptor = run_thread(accept_loop)
        with connect(address, timeout=10) as good, connect(address, timeout=10) as bad:
            good.send(b"before")
            assert good.recv() == b"before"
            bad.send(b"fine")
            assert bad.recv() == b"fine"
            bad._sock.sendall(b"\xff\xff\xff\xff")  # a header far over max_size=100
            with pytest.raises(ConnectionClosed):
                bad.recv()  # the server closed that connection
            good.send(b"after")
            assert good.recv() == b"after"
            with connect(address, timeout=10) as third:
                third.send(b"new")
                assert third.recv() == b"new"
        acceptor.join(10)
    assert any(isinstance(f, MessageTooLarge) for f in faults)


def test_message_socket_interoperates_with_real_stockings(tcp_pair: Pair) -> None:
    """The STOCKINGS format against the real Stockings 1.2.3 package, both directions."""
    import Stockings as stockings  # a test dependency: make test installs it

    a, b = tcp_pair
    # Stockings' I/O thread races its own close() (reference section 4, defect 8): now and
    # then it dies with ValueError/TypeError from a pipe or socket closed under it. That
    # is its defect, not ours (this test runs no thread of ours), so its thread
    # exceptions are collected here instead of failing the test.
    stockings_thread_errors: list[BaseException | None] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: stockings_thread_errors.append(args.exc_value)
    theirs = stockings.Stocking(a)
    try:
        with MessageSocket(b, format=Format.STOCKINGS, codec=BYTES_OR_TEXT) as ours:
            ours.settimeout(10)
            # Stockings cannot send an empty message, but it receives one as "" or b"".
            sent = ["", "é text", b"", b"\x00bytes", "x" * 70_000]
            ours.send_many(sent)
            got: list[object] = []
            deadline = time.monotonic() + 10
            while len(got) < len(sent) and time.monotonic() < deadline:
                try:
                    message = theirs.read()
                except stockings.NotReady:
                    message = None
                if message is None:
                    time.sleep(0.01)  # Stockings offers no blocking read
                else:
                    got.append(message)
            assert got == sent
            assert [type(m) for m in got] == [str, str, bytes, bytes, str]
            for message in ("hello", b"\xffbin", "ü" * 5000):
                while True:
                    try:
                        theirs.write(message)
                        break
                    except stockings.NotReady:  # its handshake runs in a thread
                        time.sleep(0.01)
            assert [ours.recv() for _ in range(3)] == ["hello", b"\xffbin", "ü" * 5000]
            # Stockings closes first and its thread ends before our side closes: its
            # I/O thread races its own close() when the peer's EOF arrives meanwhile.
            theirs.close()
            theirs.join(10)
            assert not theirs.is_alive()
            assert list(ours) == []  # a clean close, seen from our side
    finally:
        theirs.close()
        theirs.join(10)
        threading.excepthook = previous_hook


def test_message_socket_hostile_headers_commit_no_memory() -> None:
    # Issue 9: each connection's header announced 16 MiB and got it allocated.
    pairs = [socket.socketpair() for _ in range(HOSTILE_CONNECTIONS)]
    try:
        with TracedMemory() as traced:
            conns = [MessageSocket(a) for a, _ in pairs]
            for conn, (_, peer) in zip(conns, pairs, strict=True):
                conn.settimeout(0.01)
                peer.sendall(HOSTILE_HEADER)
                with pytest.raises(TimedOut):
                    conn.recv()
                peer.sendall(b"x")
                with pytest.raises(TimedOut):
                    conn.recv()
            held = traced.now()
            assert held < HOSTILE_CONNECTIONS * HOSTILE_BUDGET, held
            for _, peer in pairs:
                peer.close()
            for conn in conns:
                conn.settimeout(5)
                with pytest.raises(IncompleteMessage) as caught:
                    conn.recv()
                assert (caught.value.received, caught.value.expected) == (1, 0xFFFFFF)
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_message_socket_large_message_memory_is_given_back() -> None:
    a, b = socket.socketpair()
    with MessageSocket(a) as conn, MessageSocket(b) as peer:
        payload = bytes(range(256)) * 16384  # 4 MiB
        sender = threading.Thread(target=peer.send, args=(payload,))
        sender.start()
        assert conn.recv() == payload
        sender.join()
        peer.send(b"small")
        assert conn.recv() == b"small"
        assert conn._decoder.capacity <= 64 * 1024


def test_message_socket_small_message_batches_arrive_identical(
    pair: tuple[MessageSocket[bytes], MessageSocket[bytes]],
) -> None:
    left, right = pair
    messages = mixed_messages()

    def send() -> None:
        left.send_many(messages[:2000])
        for message in messages[2000:]:
            left.send(message)
        left.close()

    sender = run_thread(send)
    assert list(right) == messages  # ends at the clean EOF
    sender.join(5)
