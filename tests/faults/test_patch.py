"""Per-socket faults with apply(): what the application sees, on blocking sockets."""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time

import pytest

from sockwork.faults import (
    AcceptDelay,
    Bandwidth,
    Blackhole,
    CloseAfter,
    CloseOnAccept,
    Coalesce,
    ConnectDelay,
    ConnectTimeout,
    HalfClose,
    Latency,
    PatchableSocket,
    Refuse,
    ResetPeer,
    Slice,
    SlowClose,
    Stall,
    Timeout,
    apply,
    dispatch,
    kernel,
    make_socket_patchable,
)

from .conftest import elapsed, recv_all, tcp_pair

Pair = tuple[socket.socket, socket.socket]


def test_patch_no_faults_passes_data_and_restores_the_class(pair: Pair) -> None:
    a, b = pair
    with apply(a) as handle:
        assert dispatch.installed()
        a.sendall(b"hello")
        assert b.recv(10) == b"hello"
        b.sendall(b"back")
        assert a.recv(10) == b"back"
        assert handle.report.events == ()
    assert not dispatch.installed()
    assert socket.socket.send is kernel.send


def test_patch_latency_delays_what_the_application_reads(pair: Pair) -> None:
    a, b = pair
    with apply(b, Latency(0.2)):
        start = time.monotonic()
        a.sendall(b"ping")
        assert b.recv(10) == b"ping"
        assert 0.19 <= elapsed(start) < 1.0


def test_patch_latency_send_direction_delays_the_writer(pair: Pair) -> None:
    a, b = pair
    with apply(a, Latency(0.2, direction="send")):
        start = time.monotonic()
        a.sendall(b"ping")
        assert 0.19 <= elapsed(start) < 1.0
        assert b.recv(10) == b"ping"


def test_patch_delay_longer_than_timeout_raises_timeout_and_keeps_data(pair: Pair) -> None:
    a, b = pair
    b.settimeout(0.05)
    # A latency well apart from the timeout: a thread descheduled for 0.2 s on a loaded
    # machine must not look like a timeout that waited for the data.
    with apply(b, Latency(1.0)):
        a.sendall(b"late")
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            b.recv(10)
        assert 0.04 <= elapsed(start) < 0.8
        b.settimeout(5.0)
        assert b.recv(10) == b"late"  # nothing was lost


def test_patch_send_delay_respects_the_timeout(pair: Pair) -> None:
    a, _ = pair
    a.settimeout(0.05)
    with apply(a, Latency(2.0, direction="send")):  # far from the timeout: see above
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            a.sendall(b"x")
        assert elapsed(start) < 1.5


def test_patch_bandwidth_limits_the_rate(pair: Pair) -> None:
    a, b = pair
    payload = bytes(20_000)
    with apply(a, Bandwidth(100_000, direction="send")):
        start = time.monotonic()
        a.sendall(payload)
        took = elapsed(start)
    a.shutdown(socket.SHUT_WR)
    assert recv_all(b) == payload
    assert 0.14 <= took < 0.8  # 20 KB at 100 KB/s, the first 5 KB slice at once


def test_patch_slice_gives_short_writes_and_short_reads(pair: Pair) -> None:
    a, b = pair
    payload = bytes(range(256)) * 4
    with apply(a, Slice(16, min_bytes=4, direction="send"), seed=3):
        sizes = []
        view = memoryview(payload)
        while view:
            n = a.send(view)
            assert 1 <= n <= 16
            sizes.append(n)
            view = view[n:]
        assert len(set(sizes)) > 1
    a.shutdown(socket.SHUT_WR)
    with apply(b, Slice(7, direction="recv")):
        chunks = []
        while chunk := b.recv(4096):
            assert len(chunk) <= 7
            chunks.append(chunk)
    assert b"".join(chunks) == payload


def test_patch_close_after_fin_truncates_the_stream(pair: Pair) -> None:
    a, b = pair
    with apply(a, CloseAfter(10, direction="send")) as handle:
        a.sendall(b"0123456789abcdef")  # the cut falls inside: the writer is not told yet
        assert recv_all(b) == b"0123456789"
        with pytest.raises(BrokenPipeError) as info:
            a.sendall(b"more")
        assert info.value.errno == errno.EPIPE
        assert a.recv(10) == b""
        [fired, closed] = handle.report.events
        assert (closed.what, closed.offset, closed.direction) == ("close", 10, "send")


def test_patch_close_after_reset_peer_sees_econnreset(pair: Pair) -> None:
    a, b = pair
    with apply(a, CloseAfter(4, reset=True, direction="send")):
        a.sendall(b"abcdefgh")
        time.sleep(0.05)  # let the RST land before the peer reads
        assert b.recv(100) == b"abcd"  # Linux hands out queued data before the error
        with pytest.raises(ConnectionResetError) as info:
            b.recv(100)
        assert info.value.errno == errno.ECONNRESET
        with pytest.raises(ConnectionResetError) as info:
            a.recv(10)  # the cut side sees the reset too, once
        assert info.value.errno == errno.ECONNRESET
        with pytest.raises(BrokenPipeError):
            a.send(b"x")
        assert a.recv(10) == b""
        assert a.fileno() >= 0  # the fd number stays valid and closes cleanly


def test_patch_close_after_on_recv_side(pair: Pair) -> None:
    a, b = pair
    with apply(b, CloseAfter(3, reset=True, direction="recv")):
        a.sendall(b"abcdef")
        assert b.recv(100) == b"abc"
        with pytest.raises(ConnectionResetError):
            b.recv(100)
    time.sleep(0.05)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        for _ in range(50):
            a.sendall(b"x" * 1000)
            time.sleep(0.01)


def test_patch_stall_gives_the_writer_backpressure(pair: Pair) -> None:
    a, b = pair
    a.settimeout(0.3)
    with apply(b, Stall()):
        with pytest.raises(TimeoutError):
            a.sendall(bytes(50_000_000))  # nothing is read: the buffers fill up
        b.settimeout(0.1)
        with pytest.raises(TimeoutError):
            b.recv(10)


def test_patch_stall_ends_when_removed(pair: Pair) -> None:
    a, b = pair
    b.settimeout(3.0)
    handle = apply(b, Stall())
    a.sendall(b"held")
    timer = threading.Timer(0.1, handle.remove)
    timer.start()
    start = time.monotonic()
    assert b.recv(10) == b"held"
    assert 0.08 <= elapsed(start) < 2.0
    timer.join()


def test_patch_blackhole_swallows_what_is_sent(pair: Pair) -> None:
    a, b = pair
    b.settimeout(0.1)
    with apply(a, Blackhole(direction="send")):
        a.sendall(b"into the void" * 1000)
        assert a.send(b"more") == 4
        with pytest.raises(TimeoutError):
            b.recv(10)


def test_patch_timeout_discards_then_closes(pair: Pair) -> None:
    a, b = pair
    with apply(b, Timeout(0.2)):
        a.sendall(b"lost")
        start = time.monotonic()
        assert b.recv(10) == b""  # discarded, then the connection closes
        assert 0.18 <= elapsed(start) < 1.0


def test_patch_reset_peer_resets_after_first_chunk(pair: Pair) -> None:
    a, b = pair
    with apply(b, ResetPeer(0.1)):
        a.sendall(b"hello")
        start = time.monotonic()
        with pytest.raises(ConnectionResetError) as info:
            b.recv(10)
        assert info.value.errno == errno.ECONNRESET
        assert 0.09 <= elapsed(start) < 1.0
    time.sleep(0.05)
    with pytest.raises(ConnectionResetError):
        a.recv(10)


def test_patch_slow_close_holds_the_fin(pair: Pair) -> None:
    a, b = pair
    with apply(a, SlowClose(0.2, direction="send")):
        a.sendall(b"bye")
        a.close()
        start = time.monotonic()
        assert b.recv(10) == b"bye"
        assert b.recv(10) == b""
        assert 0.15 <= elapsed(start) < 1.0


def test_patch_slow_close_on_recv_delays_eof(pair: Pair) -> None:
    a, b = pair
    with apply(b, SlowClose(0.2, direction="recv")):
        a.sendall(b"bye")
        a.shutdown(socket.SHUT_WR)
        start = time.monotonic()
        assert b.recv(10) == b"bye"
        assert b.recv(10) == b""
        assert 0.18 <= elapsed(start) < 1.0


def test_patch_coalesce_merges_close_writes(pair: Pair) -> None:
    a, b = pair
    with apply(b, Coalesce(window=0.1)):
        a.sendall(b"one")
        threading.Timer(0.02, lambda: a.sendall(b"two")).start()
        assert b.recv(100) == b"onetwo"


def test_patch_refuse_connect(listener: socket.socket) -> None:
    with socket.socket() as s:
        with apply(s, Refuse(connections=1)) as handle:
            with pytest.raises(ConnectionRefusedError) as info:
                s.connect(listener.getsockname())
            assert info.value.errno == errno.ECONNREFUSED
            assert s.connect_ex(listener.getsockname()) == 0  # the second attempt passes
            assert [e.what for e in handle.report.events] == ["refuse"]


def test_patch_connect_ex_returns_the_errno(listener: socket.socket) -> None:
    with socket.socket() as s, apply(s, Refuse()):
        assert s.connect_ex(listener.getsockname()) == errno.ECONNREFUSED


def test_patch_connect_delay_and_timeouts(listener: socket.socket) -> None:
    with socket.socket() as s, apply(s, ConnectDelay(0.2)):
        start = time.monotonic()
        s.connect(listener.getsockname())
        assert 0.19 <= elapsed(start) < 1.0
    with socket.socket() as s, apply(s, ConnectDelay(0.5)):
        s.settimeout(0.05)
        with pytest.raises(TimeoutError):
            s.connect(listener.getsockname())
    with socket.socket() as s, apply(s, ConnectTimeout()):
        s.settimeout(0.1)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            s.connect(listener.getsockname())
        assert 0.09 <= elapsed(start) < 1.0
    with socket.socket() as s, apply(s, ConnectTimeout(kernel_timeout=0.1)):
        with pytest.raises(TimeoutError) as info:
            s.connect(listener.getsockname())
        assert info.value.errno == errno.ETIMEDOUT


def test_patch_accept_delay(listener: socket.socket) -> None:
    with apply(listener, AcceptDelay(0.2)):
        with socket.create_connection(listener.getsockname()):
            start = time.monotonic()
            conn, _ = listener.accept()
            with conn:
                assert 0.19 <= elapsed(start) < 1.0


def test_patch_accept_delay_past_timeout_keeps_the_connection(listener: socket.socket) -> None:
    listener.settimeout(0.05)
    with apply(listener, AcceptDelay(0.2)):
        with socket.create_connection(listener.getsockname()) as client:
            with pytest.raises(TimeoutError):
                listener.accept()
            listener.settimeout(2.0)
            conn, address = listener.accept()
            with conn:
                assert address == client.getsockname()


@pytest.mark.parametrize("reset", [False, True])
def test_patch_close_on_accept(listener: socket.socket, reset: bool) -> None:
    with apply(listener, CloseOnAccept(reset=reset, connections=1)):
        first = socket.create_connection(listener.getsockname(), timeout=2.0)
        second = socket.create_connection(listener.getsockname(), timeout=2.0)
        with first, second:
            conn, address = listener.accept()  # the first was dropped: this is the second
            with conn:
                assert address == second.getsockname()
                if reset:
                    with pytest.raises(ConnectionResetError):
                        first.recv(10)
                else:
                    assert first.recv(10) == b""


def test_patch_accepted_sockets_get_stream_faults(listener: socket.socket) -> None:
    with apply(listener, CloseAfter(2, direction="send")):
        with socket.create_connection(listener.getsockname(), timeout=2.0) as client:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"abcdef")
                assert recv_all(client) == b"ab"


def test_patch_layers_stack_and_undo(pair: Pair) -> None:
    a, b = pair
    first = apply(b, Latency(0.1))
    second = apply(b, Latency(0.1))
    try:
        a.sendall(b"1")
        start = time.monotonic()
        assert b.recv(10) == b"1"
        assert 0.09 <= elapsed(start) < 0.5  # layers wait concurrently (latest wait wins)
        first.remove()
        second.update(Slice(1))
        a.sendall(b"23")
        assert b.recv(10) == b"2"
    finally:
        first.remove()
        second.remove()
    assert not dispatch.installed()


def test_patch_update_changes_a_live_socket(pair: Pair) -> None:
    a, b = pair
    with apply(b) as handle:
        a.sendall(b"abc")
        assert b.recv(10) == b"abc"
        handle.update(Slice(1))
        a.sendall(b"def")
        assert b.recv(10) == b"d"
        assert handle.faults == (Slice(1),)


def test_patch_probability_zero_is_a_noop(pair: Pair) -> None:
    a, b = pair
    with apply(a, CloseAfter(0, reset=True, probability=0)) as handle:
        a.sendall(b"ok")
        assert b.recv(10) == b"ok"
        assert handle.report.events == ()
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER) == 0


def test_patch_seed_replays_the_same_pieces() -> None:
    def pieces(seed: int) -> list[int]:
        a, b = tcp_pair()
        with a, b, apply(a, Slice(50, direction="send"), seed=seed) as handle:
            assert handle.seed == seed
            return [a.send(bytes(100)) for _ in range(10)]

    assert pieces(5) == pieces(5)
    assert pieces(5) != pieces(6)


def test_patch_apply_rejects_bad_sockets() -> None:
    with pytest.raises(TypeError, match="socket"):
        apply("not a socket")  # type: ignore[arg-type]
    s = socket.socket()
    s.close()
    with pytest.raises(ValueError, match="closed"):
        apply(s)
    with socket.socket() as s, pytest.raises(TypeError, match="not a fault"):
        apply(s, "latency")  # type: ignore[arg-type]
    assert not dispatch.installed()


def test_patch_make_socket_patchable_semantics(pair: Pair) -> None:
    a, b = pair
    a.settimeout(1.5)
    patched = make_socket_patchable(a)
    try:
        assert isinstance(patched, PatchableSocket)
        assert a.fileno() == -1  # the old object is detached
        assert patched.gettimeout() == 1.5
        assert make_socket_patchable(patched) is patched
        patched.send = lambda data, flags=0: 0  # type: ignore[method-assign]
        assert patched.send(b"x") == 0
        with pytest.raises(AttributeError):
            b.send = lambda data, flags=0: 0  # type: ignore[method-assign]
        assert make_socket_patchable(b, ()) is b
        with pytest.raises(AttributeError, match="nope"):
            make_socket_patchable(b, ("nope",))
    finally:
        patched.close()
    closed = socket.socket()
    closed.close()
    with pytest.raises(ValueError, match="negative file descriptor"):
        make_socket_patchable(closed)


def test_patch_faults_follow_make_socket_patchable(pair: Pair) -> None:
    a, b = pair
    with apply(a, CloseAfter(2, direction="send")):
        patched = make_socket_patchable(a)
        with patched:
            patched.sendall(b"abcd")
            assert recv_all(b) == b"ab"


def test_patch_half_close_still_lets_the_faulted_side_reply(pair: Pair) -> None:
    a, b = pair
    with apply(b, Latency(0.05, direction="both")):
        a.sendall(b"request")
        a.shutdown(socket.SHUT_WR)
        assert recv_all(b) == b"request"
        b.sendall(b"reply")  # the peer's EOF did not cut our sending side
        b.shutdown(socket.SHUT_WR)
        assert recv_all(a) == b"reply"


def test_patch_timeout_on_send_closes_while_the_app_waits_elsewhere(pair: Pair) -> None:
    a, b = pair
    with apply(a, Timeout(0.2, direction="send")):
        start = time.monotonic()  # before the send: its bytes start the idle timer
        a.sendall(b"request")  # discarded
        assert a.recv(10) == b""  # no reply: the idle timer closes the connection
        assert 0.18 <= elapsed(start) < 1.5
        assert b.recv(10) == b""  # the peer sees the close, never the request


def test_patch_deadline_timers_end_with_the_socket() -> None:
    # Watch the timer thread itself: counting every thread of the process raced with
    # threads of earlier tests still ending. Both sockets are closed on every path.
    a, b = tcp_pair()
    with a, b, apply(a, Timeout(30, direction="send")):
        before = set(threading.enumerate())
        a.sendall(b"x")  # arms the 30 s idle timer
        timers = [
            t for t in threading.enumerate() if t not in before and isinstance(t, threading.Timer)
        ]
        assert len(timers) == 1
        a.close()
        timers[0].join(timeout=5)  # the close cancelled it: it ends at once
        assert not timers[0].is_alive()


def test_patch_nonblocking_send_hands_bytes_over_and_flushes_on_close(pair: Pair) -> None:
    a, b = pair
    a.setblocking(False)
    with apply(a, Latency(0.5, direction="send")):
        start = time.monotonic()
        assert a.send(b"early") == 5  # taken at once, as a kernel buffer would
        a.sendall(b" bird")
        assert elapsed(start) < 0.3  # not the latency (0.05 failed under load)
        a.close()  # the bytes still on their way are sent, then the FIN
        assert recv_all(b) == b"early bird"
        assert elapsed(start) >= 0.49


def test_patch_nonblocking_send_reports_a_later_failure(pair: Pair) -> None:
    a, b = pair
    a.setblocking(False)
    with apply(a, Latency(0.05, direction="send"), CloseAfter(3, reset=True, direction="send")):
        assert a.send(b"abcdef") == 6
        # The outbox's thread hits the reset after the latency; on a loaded machine that
        # took longer than a fixed 0.2 s sleep. A later send() fails once it has.
        deadline = time.monotonic() + 10
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            while time.monotonic() < deadline:
                a.send(b"more")
                time.sleep(0.01)


def _after_a_reset(sock: socket.socket) -> list[object]:
    """What the calls of an application see on ``sock`` once its connection was reset."""
    seen: list[object] = []
    for call in ("shutdown", "recv", "shutdown", "send", "recv"):
        try:
            if call == "shutdown":
                sock.shutdown(socket.SHUT_WR)
                seen.append((call, "ok"))
            elif call == "recv":
                seen.append((call, sock.recv(10)))
            else:
                seen.append((call, sock.send(b"x")))
        except OSError as exc:
            seen.append((call, type(exc), exc.errno))
    return seen


# What Linux does after an RST came in (tcp_reset: the socket is TCP_CLOSE, so
# inet_shutdown answers ENOTCONN and leaves the pending ECONNRESET for the next call).
AFTER_A_RESET = [
    ("shutdown", OSError, errno.ENOTCONN),
    ("recv", ConnectionResetError, errno.ECONNRESET),
    ("shutdown", OSError, errno.ENOTCONN),
    ("send", BrokenPipeError, errno.EPIPE),
    ("recv", b""),
]


def test_patch_real_reset_then_shutdown_is_enotconn(pair: Pair) -> None:
    a, b = pair
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    b.close()  # SO_LINGER 0: the close is an RST
    readable, _, _ = select.select([a], [], [], 2.0)  # the RST makes the socket readable
    assert readable == [a]
    assert _after_a_reset(a) == AFTER_A_RESET


def test_patch_injected_reset_then_shutdown_is_enotconn(pair: Pair) -> None:
    a, _ = pair
    with apply(a, CloseAfter(4, reset=True, direction="send")):
        a.sendall(b"abcdefgh")  # the connection is reset at byte 4
        assert _after_a_reset(a) == AFTER_A_RESET


# After a FIN cut the socket is in the state our own shutdown(SHUT_RDWR) leaves (the
# injected cut is one). Linux's inet_shutdown answers ENOTCONN only in TCP_CLOSE: once
# the peer's FIN has come too and ours was acknowledged (TIME_WAIT hands the connection
# to a timewait socket and leaves the file TCP_CLOSE), whatever ``how``. Before that
# (FIN_WAIT1/2: only our side closed) every shutdown() is quiet. recv and send answer
# EOF and EPIPE in both states.
_TCP_CLOSE = 7  # include/net/tcp_states.h; tcp_info.tcpi_state is the first byte


def _tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def _await_tcp_close(sock: socket.socket) -> None:
    """Wait (up to 10 s) until the kernel moved ``sock`` to TCP_CLOSE; no event tells it."""
    deadline = time.monotonic() + 10.0
    while _tcp_state(sock) != _TCP_CLOSE:
        assert time.monotonic() < deadline, f"still in TCP state {_tcp_state(sock)}"
        time.sleep(0.001)


def _after_a_fin_cut(sock: socket.socket) -> list[object]:
    """What the calls of an application see on ``sock`` once its connection was cut with FIN."""
    seen: list[object] = []
    for call, how in (("shutdown", socket.SHUT_WR), ("recv", 0), ("shutdown", socket.SHUT_RD)):
        try:
            if call == "shutdown":
                sock.shutdown(how)
                seen.append((call, "ok"))
            else:
                seen.append((call, sock.recv(10)))
        except OSError as exc:
            seen.append((call, type(exc), exc.errno))
    try:
        sock.send(b"x")
    except OSError as exc:
        seen.append(("send", type(exc), exc.errno))
    return seen


# Only our side closed (FIN_WAIT): quiet; both sides closed (TCP_CLOSE): ENOTCONN.
AFTER_A_FIN_CUT = [("shutdown", "ok"), ("recv", b""), ("shutdown", "ok")]
AFTER_BOTH_FINS = [
    ("shutdown", OSError, errno.ENOTCONN),
    ("recv", b""),
    ("shutdown", OSError, errno.ENOTCONN),
]
_SEND_FAILS = [("send", BrokenPipeError, errno.EPIPE)]


def _peer_reads_and_closes(b: socket.socket, expected: bytes) -> None:
    assert recv_all(b) == expected  # unread data would turn the peer's close into an RST
    b.close()


def test_patch_real_fin_then_shutdown_is_enotconn_once_both_sides_closed(pair: Pair) -> None:
    a, b = pair
    a.sendall(b"abcd")
    a.shutdown(socket.SHUT_RDWR)  # our FIN: what a FIN cut does
    assert _after_a_fin_cut(a) == AFTER_A_FIN_CUT + _SEND_FAILS
    _peer_reads_and_closes(b, b"abcd")
    _await_tcp_close(a)
    assert _after_a_fin_cut(a) == AFTER_BOTH_FINS + _SEND_FAILS


def test_patch_real_peer_fin_then_our_shutdown_makes_shutdown_enotconn(pair: Pair) -> None:
    a, b = pair
    b.close()  # the peer's FIN first
    assert a.recv(10) == b""
    a.shutdown(socket.SHUT_RD)  # ends nothing on the wire: CLOSE_WAIT stays quiet
    a.shutdown(socket.SHUT_RD)
    a.shutdown(socket.SHUT_WR)  # our FIN: LAST_ACK, then TCP_CLOSE when acknowledged
    _await_tcp_close(a)
    assert _after_a_fin_cut(a) == AFTER_BOTH_FINS + _SEND_FAILS


@pytest.mark.parametrize("direction", ["send", "recv"])
def test_patch_injected_fin_then_shutdown_is_enotconn_once_both_sides_closed(
    pair: Pair, direction: str
) -> None:
    a, b = pair
    with apply(a, CloseAfter(4, direction=direction)):  # type: ignore[arg-type]
        if direction == "send":
            a.sendall(b"abcdefgh")  # cut at byte 4
        else:
            b.sendall(b"abcdefgh")
            assert a.recv(10) == b"abcd"  # cut at byte 4 (what b sent after it is dropped)
        assert _after_a_fin_cut(a) == AFTER_A_FIN_CUT + _SEND_FAILS
        _peer_reads_and_closes(b, b"abcd" if direction == "send" else b"")
        _await_tcp_close(a)
        assert _after_a_fin_cut(a) == AFTER_BOTH_FINS + _SEND_FAILS


def test_patch_real_peer_half_close_then_ours_makes_shutdown_enotconn(pair: Pair) -> None:
    a, b = pair
    b.shutdown(socket.SHUT_WR)  # the peer's FIN; the peer still reads
    assert a.recv(10) == b""
    a.shutdown(socket.SHUT_RD)  # CLOSE_WAIT: quiet
    a.shutdown(socket.SHUT_WR)  # our FIN: LAST_ACK, then TCP_CLOSE when acknowledged
    _await_tcp_close(a)
    assert _after_a_fin_cut(a) == AFTER_BOTH_FINS + _SEND_FAILS


def test_patch_injected_half_close_then_ours_makes_shutdown_enotconn(pair: Pair) -> None:
    a, _ = pair
    with apply(a, HalfClose(0, direction="recv")):  # the peer's FIN, made up at once
        assert a.recv(10) == b""
        a.shutdown(socket.SHUT_RD)
        a.shutdown(socket.SHUT_WR)  # both sides closed now, as far as a can tell
        assert _after_a_fin_cut(a) == AFTER_BOTH_FINS + _SEND_FAILS


def test_patch_injected_half_close_after_our_shutdown_makes_shutdown_enotconn(pair: Pair) -> None:
    a, b = pair
    with apply(a, HalfClose(2, direction="recv")):
        a.shutdown(socket.SHUT_WR)  # our FIN first: FIN_WAIT, quiet
        a.shutdown(socket.SHUT_WR)
        b.sendall(b"abcd")
        assert recv_all(a) == b"ab"  # the peer's FIN, made up at byte 2
        assert _after_a_fin_cut(a) == AFTER_BOTH_FINS + _SEND_FAILS
