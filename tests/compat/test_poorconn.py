"""sockwork.compat.poorconn against the real poorconn 0.2.1: the same behaviour.

Tests parametrized over ``impl`` run the same scenario on both packages and
assert what an application sees, including poorconn's traps (plain sleeps that
ignore timeouts and block asyncio, SSL's double delay, ``sendmsg`` bypassing the
delay): the compat layer keeps them, as code written for poorconn relies on
them. Tests named ``test_native_*`` show the native API (``sockwork.faults``)
doing better, as docs/compat-poorconn.md says.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
import threading
import time
import types
from collections.abc import Callable, Iterator

import poorconn
import pytest

import sockwork.compat.poorconn as ours
from sockwork.faults import Handle, Latency, Slice, apply, dispatch

IMPLS = [pytest.param(poorconn, id="poorconn"), pytest.param(ours, id="sockwork")]


@pytest.fixture(autouse=True)
def _socket_class_restored() -> Iterator[None]:
    """Every test ends with its sockets closed, so socket.socket is restored."""
    yield
    assert not dispatch.installed(), "a scope outlived its test"


T = 0.1  # the delay used throughout: long enough to measure on a loaded machine
SLACK = 0.6  # generous upper tolerance: seven agents share two cores


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Return a connected (client, server) pair of TCP sockets on loopback."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2])
        server, _ = listener.accept()
    return client, server


@pytest.fixture
def pair() -> Iterator[list[socket.socket]]:
    """A connected [client, server] pair; tests replace items with patchable copies."""
    sockets = list(tcp_pair())
    yield sockets
    for s in sockets:
        s.close()


def recv_exactly(s: socket.socket, n: int) -> bytes:
    """Read exactly n bytes (or fewer at EOF)."""
    data = bytearray()
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def timed_sendall(s: socket.socket, data: bytes, peer: socket.socket) -> tuple[float, bytes]:
    """sendall data on s while a thread reads it from peer; return (seconds, bytes read)."""
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(recv_exactly(peer, len(data))))
    reader.start()
    start = time.monotonic()
    s.sendall(data)
    elapsed = time.monotonic() - start
    reader.join()
    return elapsed, received[0]


# --- make_socket_patchable and PatchableSocket ---------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_make_socket_patchable_returns_a_new_socket_on_the_same_fd(
    impl: types.ModuleType, pair: list[socket.socket]
) -> None:
    original = pair[1]
    original.settimeout(2.5)
    fd = original.fileno()
    patchable = impl.make_socket_patchable(original)
    pair[1] = patchable
    assert patchable is not original
    assert isinstance(patchable, impl.PatchableSocket)
    assert isinstance(patchable, socket.socket)
    assert patchable.fileno() == fd
    assert original.fileno() == -1
    assert patchable.gettimeout() == 2.5
    pair[0].sendall(b"still connected")
    assert recv_exactly(patchable, 15) == b"still connected"


@pytest.mark.parametrize("impl", IMPLS)
def test_make_socket_patchable_is_idempotent(
    impl: types.ModuleType, pair: list[socket.socket]
) -> None:
    pair[1] = impl.make_socket_patchable(pair[1])
    assert impl.make_socket_patchable(pair[1]) is pair[1]


@pytest.mark.parametrize("impl", IMPLS)
def test_make_socket_patchable_on_a_closed_socket_raises_value_error(
    impl: types.ModuleType,
) -> None:
    s = socket.socket()
    s.close()
    with pytest.raises(ValueError):
        impl.make_socket_patchable(s)


@pytest.mark.parametrize("impl", IMPLS)
def test_patchable_socket_allows_instance_attributes(impl: types.ModuleType) -> None:
    with impl.PatchableSocket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.send = lambda *args: 0  # type: ignore[method-assign]
        assert s.send(b"x") == 0


# --- delay_before_sending -----------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_delay_before_sending_send_is_a_delayed_short_write(
    impl: types.ModuleType, pair: list[socket.socket]
) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    impl.delay_before_sending(s, T, 4)
    start = time.monotonic()
    sent = s.send(b"0123456789")
    elapsed = time.monotonic() - start
    assert sent == 4
    assert recv_exactly(pair[1], 4) == b"0123"
    assert T * 0.9 <= elapsed < T + SLACK


@pytest.mark.parametrize("impl", IMPLS)
def test_delay_before_sending_sendall_waits_before_each_chunk(
    impl: types.ModuleType, pair: list[socket.socket]
) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    impl.delay_before_sending(s, T, 100)
    data = bytes(range(250))
    elapsed, received = timed_sendall(s, data, pair[1])
    assert received == data
    expected = math.ceil(250 / 100) * T
    assert expected * 0.9 <= elapsed < expected + SLACK


@pytest.mark.parametrize("impl", IMPLS)
def test_delay_before_sending_controller_is_read_at_call_time(
    impl: types.ModuleType, pair: list[socket.socket]
) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    controller = impl.delay_before_sending(s, 5.0, 4)
    assert (controller.t, controller.length) == (5.0, 4)
    controller.t = 0
    controller.length = 6
    start = time.monotonic()
    assert s.send(b"0123456789") == 6
    assert time.monotonic() - start < SLACK
    assert recv_exactly(pair[1], 6) == b"012345"


# --- delay_before_sending_once --------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_delay_before_sending_once_delays_the_first_send_only(
    impl: types.ModuleType, pair: list[socket.socket]
) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    controller = impl.delay_before_sending_once(s, T)
    start = time.monotonic()
    assert s.send(b"0123456789") == 10  # no chopping
    first = time.monotonic() - start
    start = time.monotonic()
    s.sendall(b"abc")
    second = time.monotonic() - start
    assert recv_exactly(pair[1], 13) == b"0123456789abc"
    assert T * 0.9 <= first < T + SLACK
    assert second < T * 0.9
    controller.reset()
    start = time.monotonic()
    s.sendall(b"again")
    assert T * 0.9 <= time.monotonic() - start < T + SLACK
    assert recv_exactly(pair[1], 5) == b"again"


@pytest.mark.parametrize("impl", IMPLS)
def test_delay_before_sending_once_controller_t_is_read_at_call_time(
    impl: types.ModuleType, pair: list[socket.socket]
) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    controller = impl.delay_before_sending_once(s, 5.0)
    assert controller.t == 5.0
    controller.t = T
    start = time.monotonic()
    s.sendall(b"x")
    assert T * 0.9 <= time.monotonic() - start < T + SLACK
    assert recv_exactly(pair[1], 1) == b"x"


# --- accept-side functions ------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[list[socket.socket]]:
    """A [listening socket] on 127.0.0.1:0; tests replace it with a patchable copy."""
    holder = [socket.create_server(("127.0.0.1", 0))]
    yield holder
    holder[0].close()


def _close_upon_acceptance_run(impl: types.ModuleType, listener: list[socket.socket]) -> object:
    """Apply close_upon_acceptance, connect once; return what the server's accept() gave."""
    listener[0] = s = impl.make_socket_patchable(listener[0])
    assert impl.close_upon_acceptance(s) is None
    s.settimeout(5)
    accepted: list[object] = []
    server = threading.Thread(target=lambda: accepted.append(_accept_once(s)))
    server.start()
    with socket.create_connection(s.getsockname()[:2], timeout=5) as client:
        assert client.recv(10) == b""  # what the client sees: EOF
    server.join()
    return accepted[0]


def _accept_once(s: socket.socket) -> object:
    try:
        conn, _ = s.accept()
    except OSError as exc:  # TimeoutError included
        return exc
    conn.close()
    return conn


@pytest.mark.parametrize("impl", IMPLS)
def test_close_upon_acceptance_returns_the_closed_connection(
    impl: types.ModuleType, listener: list[socket.socket]
) -> None:
    accepted = _close_upon_acceptance_run(impl, listener)
    assert isinstance(accepted, socket.socket)  # accept() returned, it did not wait
    assert accepted.fileno() == -1


@pytest.mark.parametrize("impl", IMPLS)
def test_close_upon_acceptance_on_a_tls_listener_completes_the_handshake_then_eof(
    impl: types.ModuleType,
    listener: list[socket.socket],
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = tls_contexts
    tls_listener = server_context.wrap_socket(listener[0], server_side=True)
    listener[0] = tls_listener
    assert impl.make_socket_patchable(tls_listener) is tls_listener
    impl.close_upon_acceptance(tls_listener)
    accepted: list[object] = []
    server = threading.Thread(target=lambda: accepted.append(_accept_once(tls_listener)))
    server.start()
    raw = socket.create_connection(tls_listener.getsockname()[:2], timeout=5)
    with client_context.wrap_socket(raw, server_hostname="localhost") as client:
        # connected (the handshake completed), then a read error or EOF
        try:
            data = client.recv(10)
        except (ssl.SSLError, ConnectionError) as exc:
            data = exc  # type: ignore[assignment]
        assert data == b"" or isinstance(data, (ssl.SSLError, ConnectionError))
    server.join()
    assert isinstance(accepted[0], socket.socket) and accepted[0].fileno() == -1


@pytest.mark.parametrize("impl", IMPLS)
def test_close_upon_acceptance_then_tls_on_the_connection_connects_then_fails_to_read(
    impl: types.ModuleType,
    listener: list[socket.socket],
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    # A TLS server that wraps each accepted connection after close_upon_acceptance.
    server_context, client_context = tls_contexts
    listener[0] = s = impl.make_socket_patchable(listener[0])
    impl.close_upon_acceptance(s)
    s.settimeout(5)
    outcome: list[object] = []

    def serve() -> None:
        conn, _ = s.accept()  # returns at once, with a closed connection
        try:
            server_context.wrap_socket(conn, server_side=True)
        except OSError as exc:  # the connection is closed: no handshake
            outcome.append(exc)

    server = threading.Thread(target=serve)
    server.start()
    raw = socket.create_connection(s.getsockname()[:2], timeout=5)  # connected...
    with raw, pytest.raises((ssl.SSLError, ConnectionError)):
        client_context.wrap_socket(raw, server_hostname="localhost")  # ...then a read error
    server.join()
    assert len(outcome) == 1 and isinstance(outcome[0], OSError)


@pytest.mark.parametrize("impl", IMPLS)
def test_delay_before_sending_upon_acceptance_slows_each_connection(
    impl: types.ModuleType, listener: list[socket.socket]
) -> None:
    listener[0] = s = impl.make_socket_patchable(listener[0])
    controller = impl.delay_before_sending_upon_acceptance(s, T, 100)
    assert (controller.t, controller.length) == (T, 100)
    address = s.getsockname()[:2]
    for _ in range(2):
        with socket.create_connection(address, timeout=5) as client:
            conn, _ = s.accept()
            with conn:
                assert conn.send(bytes(300)) == 100  # a short write of one chunk
                elapsed, received = timed_sendall(conn, bytes(250), client)
        assert received == bytes(250)
        assert 3 * T * 0.9 <= elapsed < 3 * T + SLACK


@pytest.mark.parametrize("impl", IMPLS)
def test_delay_before_sending_upon_acceptance_controller_affects_later_connections(
    impl: types.ModuleType, listener: list[socket.socket]
) -> None:
    listener[0] = s = impl.make_socket_patchable(listener[0])
    controller = impl.delay_before_sending_upon_acceptance(s, 5.0, 100)
    address = s.getsockname()[:2]
    with socket.create_connection(address, timeout=5) as client:
        controller.t = 0
        controller.length = 3
        conn, _ = s.accept()
        with conn:
            start = time.monotonic()
            assert conn.send(b"0123456789") == 3
            assert time.monotonic() - start < SLACK
            assert recv_exactly(client, 3) == b"012"


@pytest.mark.parametrize("impl", IMPLS)
def test_delay_before_sending_upon_acceptance_once_delays_each_connection_once(
    impl: types.ModuleType, listener: list[socket.socket]
) -> None:
    listener[0] = s = impl.make_socket_patchable(listener[0])
    controller = impl.delay_before_sending_upon_acceptance_once(s, T)
    assert controller.t == T
    address = s.getsockname()[:2]
    for _ in range(2):
        with socket.create_connection(address, timeout=5) as client:
            conn, _ = s.accept()
            with conn:
                start = time.monotonic()
                conn.sendall(b"first")
                first = time.monotonic() - start
                start = time.monotonic()
                conn.sendall(b"second")
                second = time.monotonic() - start
            assert recv_exactly(client, 11) == b"firstsecond"
        assert T * 0.9 <= first < T + SLACK
        assert second < T * 0.9


# --- poorconn's behaviour kept as it is ---------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_t_fails_at_send_time(impl: types.ModuleType, pair: list[socket.socket]) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    impl.delay_before_sending(s, -1, 10)  # no error here...
    with pytest.raises(ValueError, match="sleep length must be non-negative"):
        s.send(b"x")  # ...but at send time


@pytest.mark.parametrize("impl", IMPLS)
def test_length_zero_send_sends_nothing(impl: types.ModuleType, pair: list[socket.socket]) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    impl.delay_before_sending(s, 0, 0)
    assert s.send(b"data") == 0  # a caller's send loop would spin forever
    with pytest.raises(ValueError, match="must not be zero"):
        s.sendall(b"data")


@pytest.mark.parametrize("impl", IMPLS)
def test_negative_length_sendall_silently_sends_nothing(
    impl: types.ModuleType, pair: list[socket.socket]
) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    impl.delay_before_sending(s, 0, -1)
    s.sendall(b"data")
    pair[1].settimeout(0.1)
    with pytest.raises(TimeoutError):
        pair[1].recv(10)


def _timed(call: object, *args: object) -> tuple[float, object]:
    start = time.monotonic()
    result = call(*args)  # type: ignore[operator]
    return time.monotonic() - start, result


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("method", ["sendmsg", "sendto"])
def test_sendmsg_and_sendto_bypass_the_delay(
    impl: types.ModuleType, pair: list[socket.socket], method: str
) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    impl.delay_before_sending(s, 1.0, 4)
    args: tuple[object, ...] = ([b"0123456789"],) if method == "sendmsg" else (b"0123456789",)
    if method == "sendto":
        args = (*args, s.getpeername())
    elapsed, sent = _timed(getattr(s, method), *args)
    assert sent == 10
    assert elapsed < 0.5


@pytest.mark.parametrize("impl", IMPLS)
def test_delay_ignores_the_socket_timeout(
    impl: types.ModuleType, pair: list[socket.socket]
) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    s.settimeout(0.05)
    impl.delay_before_sending(s, 0.2, 100)
    elapsed, sent = _timed(s.send, b"late")
    assert sent == 4
    assert elapsed >= 0.18
    elapsed, _ = _timed(s.sendall, b"late again")
    assert elapsed >= 0.18
    assert recv_exactly(pair[1], 14) == b"latelate again"


@pytest.mark.parametrize("impl", IMPLS)
def test_upon_acceptance_delay_ignores_the_connection_timeout(
    impl: types.ModuleType, listener: list[socket.socket]
) -> None:
    listener[0] = s = impl.make_socket_patchable(listener[0])
    impl.delay_before_sending_upon_acceptance(s, 0.2, 100)
    with socket.create_connection(s.getsockname()[:2], timeout=5) as client:
        conn, _ = s.accept()
        with conn:
            conn.settimeout(0.05)  # as an echo server with a short timeout does
            elapsed, _ = _timed(conn.sendall, b"echo")
            assert recv_exactly(client, 4) == b"echo"
    assert elapsed >= 0.18


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("close_upon_acceptance", ()),
        ("delay_before_sending", (T, 10)),
        ("delay_before_sending_once", (T,)),
        ("delay_before_sending_upon_acceptance", (T, 10)),
        ("delay_before_sending_upon_acceptance_once", (T,)),
    ],
)
def test_functions_on_a_plain_socket_raise_attribute_error(
    impl: types.ModuleType, pair: list[socket.socket], function: str, args: tuple[object, ...]
) -> None:
    with pytest.raises(AttributeError, match="read-only"):
        getattr(impl, function)(pair[0], *args)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_wrapper_installed_before_is_delayed_too(
    impl: types.ModuleType, pair: list[socket.socket]
) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    calls: list[bytes] = []
    real_send = s.send

    def my_send(data: bytes, *args: int) -> int:
        calls.append(bytes(data))
        return real_send(data, *args)

    s.send = my_send  # type: ignore[method-assign]
    impl.delay_before_sending(s, T, 4)
    elapsed, sent = _timed(s.send, b"0123456789")
    assert sent == 4
    assert calls == [b"0123"]  # the application's wrapper got the chopped data, late
    assert T * 0.9 <= elapsed < T + SLACK
    assert recv_exactly(pair[1], 4) == b"0123"


@pytest.mark.parametrize("impl", IMPLS)
def test_stacked_simulations_add_their_delays(
    impl: types.ModuleType, pair: list[socket.socket]
) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    impl.delay_before_sending(s, T, 100)
    impl.delay_before_sending_once(s, 2 * T)
    elapsed, sent = _timed(s.send, bytes(300))
    assert sent == 100
    assert 3 * T * 0.9 <= elapsed < 3 * T + SLACK  # 2T (once) + T (per chunk)
    elapsed, sent = _timed(s.send, bytes(300))
    assert T * 0.9 <= elapsed < T + SLACK  # the once-delay is spent
    assert recv_exactly(pair[1], 200) == bytes(200)


@pytest.mark.parametrize("impl", IMPLS)
def test_patches_are_per_instance(impl: types.ModuleType, pair: list[socket.socket]) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    before = s.send
    impl.delay_before_sending(s, T, 4)
    assert "send" in vars(s) and "sendall" in vars(s)
    assert s.send is not before
    other = impl.PatchableSocket()
    with other:
        assert "send" not in vars(other)  # the class is untouched


@pytest.mark.parametrize("impl", IMPLS)
def test_upon_acceptance_controller_ignores_open_connections(
    impl: types.ModuleType, listener: list[socket.socket]
) -> None:
    listener[0] = s = impl.make_socket_patchable(listener[0])
    controller = impl.delay_before_sending_upon_acceptance(s, 0, 100)
    with socket.create_connection(s.getsockname()[:2], timeout=5) as client:
        conn, _ = s.accept()
        with conn:
            controller.t = 5.0
            controller.length = 3
            elapsed, sent = _timed(conn.send, b"0123456789")
            assert sent == 10
            assert recv_exactly(client, 10) == b"0123456789"
    assert elapsed < 0.5


def test_package_exports_poorconns_public_names() -> None:
    public = {n for n in dir(poorconn) if n.isidentifier() and not n.startswith("_")}
    public -= {"pytest_plugin"}  # a subpackage: ours is sockwork.compat.poorconn.pytest_plugin
    assert public <= set(ours.__all__)
    assert set(ours.__all__) - public == {"Server", "__version__"}
    assert ours.__version__ == poorconn.__version__ == "0.2.1"
    assert ours.make_socket_patchable is __import__("sockwork.faults").faults.make_socket_patchable
    assert ours.PatchableSocket is __import__("sockwork.faults").faults.PatchableSocket


# --- SSL ----------------------------------------------------------------------------------


def _tls_sendall_seconds(
    delay: Callable[[socket.socket], object], contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> float:
    """Time a 250-byte sendall over TLS with ``delay(tls)`` applied (T per 100 bytes)."""
    client_raw, server_raw = tcp_pair()
    received: list[bytes] = []

    def serve() -> None:
        with contexts[0].wrap_socket(server_raw, server_side=True) as tls:
            received.append(recv_exactly(tls, 250))

    server = threading.Thread(target=serve)
    server.start()
    with contexts[1].wrap_socket(client_raw, server_hostname="localhost") as tls:
        delay(tls)
        start = time.monotonic()
        tls.sendall(bytes(250))
        elapsed = time.monotonic() - start
        server.join()
    assert received == [bytes(250)]
    return elapsed


@pytest.mark.parametrize("impl", IMPLS)
def test_ssl_sendall_is_delayed_twice_per_chunk(
    impl: types.ModuleType, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    def delay(tls: socket.socket) -> None:
        assert impl.make_socket_patchable(tls) is tls  # SSLSocket is patchable as it is
        impl.delay_before_sending(tls, T, 100)

    assert _tls_sendall_seconds(delay, tls_contexts) >= 6 * T * 0.9


def test_native_ssl_sendall_is_delayed_once_per_chunk(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    handles: list[Handle] = []
    elapsed = _tls_sendall_seconds(lambda tls: handles.append(native_delay(tls)), tls_contexts)
    handles[0].remove()
    assert 3 * T * 0.9 <= elapsed < 3 * T + SLACK


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_send_waits(impl: types.ModuleType, pair: list[socket.socket]) -> None:
    pair[0] = s = impl.make_socket_patchable(pair[0])
    impl.delay_before_sending(s, T, 10)
    elapsed, sent = _timed(s.send, b"")
    assert sent == 0
    assert elapsed >= T * 0.9


# --- the native API does better (docs/compat-poorconn.md) ----------------------------------


def native_delay(s: socket.socket) -> Handle:
    """The native equivalent of delay_before_sending(s, T, 100)."""
    return apply(
        s, Latency(T, direction="send"), Slice(100, min_bytes=100, delay=T, direction="send")
    )


def test_native_delay_respects_the_socket_timeout(pair: list[socket.socket]) -> None:
    s = pair[0]
    s.settimeout(0.05)
    # A latency far from the timeout, so that load cannot blur the two.
    with apply(s, Latency(2.0, direction="send")):
        elapsed, _ = _timed(lambda: pytest.raises(TimeoutError, s.send, b"late"))
    assert elapsed < 1.5


@pytest.mark.parametrize("method", ["sendmsg", "sendto"])
def test_native_delay_covers_sendmsg_and_sendto(pair: list[socket.socket], method: str) -> None:
    s = pair[0]
    args: tuple[object, ...] = ([bytes(250)],) if method == "sendmsg" else (bytes(250),)
    if method == "sendto":
        args = (*args, s.getpeername())
    with native_delay(s):
        elapsed, sent = _timed(getattr(s, method), *args)
    assert sent == 100
    assert T * 0.9 <= elapsed < T + SLACK


# --- asyncio ------------------------------------------------------------------------------


def _asyncio_sendall(delay: Callable[[socket.socket], object]) -> tuple[float, int, bytes]:
    """sock_sendall 300 B with ``delay(sock)`` applied, on asyncio with a 10 ms ticker.

    Returns (seconds until the peer has read everything, ticks meanwhile, bytes read).
    """
    client, server = tcp_pair()

    async def main(sock: socket.socket) -> tuple[float, int, bytes]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        start = time.monotonic()
        try:
            receiving = asyncio.create_task(asyncio.to_thread(recv_exactly, client, 300))
            sending = asyncio.get_running_loop().sock_sendall(sock, bytes(300))
            await asyncio.wait_for(sending, 2)
            received = await asyncio.wait_for(receiving, 2)
        finally:
            task.cancel()
        return time.monotonic() - start, ticks, received

    with client:
        client.settimeout(3)
        with server:
            server.setblocking(False)
            sock = delay(server)
            assert isinstance(sock, socket.socket)
            with sock:
                return asyncio.run(main(sock))


@pytest.mark.parametrize("impl", IMPLS)
def test_delays_block_the_asyncio_loop(impl: types.ModuleType) -> None:
    def delay(s: socket.socket) -> socket.socket:
        s = impl.make_socket_patchable(s)
        impl.delay_before_sending(s, T, 100)
        return s

    elapsed, ticks, received = _asyncio_sendall(delay)
    assert received == bytes(300)
    assert elapsed >= 3 * T * 0.9
    assert ticks <= 3  # the loop slept in time.sleep


def test_native_delays_keep_the_asyncio_loop_running() -> None:
    handles: list[Handle] = []

    def delay(s: socket.socket) -> socket.socket:
        handles.append(native_delay(s))
        return s

    elapsed, ticks, received = _asyncio_sendall(delay)
    handles[0].remove()
    assert received == bytes(300)
    assert 3 * T * 0.9 <= elapsed < 3 * T + SLACK  # the bytes arrive late...
    assert ticks >= 10  # ...and the loop kept running meanwhile (about 30 when idle)


@pytest.mark.parametrize(
    ("function", "name", "kwargs"),
    [
        ("close_upon_acceptance", "accept", {}),
        ("delay_before_sending_upon_acceptance", "accept", {"t": 2, "length": 1600}),
        ("delay_before_sending_upon_acceptance_once", "accept", {"t": 2}),
        ("delay_before_sending", "send", {"t": 0.1, "length": 100}),
        ("delay_before_sending", "sendall", {"t": 0.1, "length": 100}),
        ("delay_before_sending_once", "send", {"t": 0.1}),
    ],
)
def test_replaced_method_ids_differ_whatever_the_garbage_collector_does(
    function: str, name: str, kwargs: dict[str, float]
) -> None:
    # poorconn's own suite (tests/test_send.py, test_accept.py) checks a patch with
    # id(s.accept) before and id(old_socket.accept) after: two temporary bound
    # methods. They differ only while the wrapper keeps the first one's freed block;
    # run here under constant garbage collection. Ours only: the real poorconn
    # fails it (close_upon_acceptance: 17 times in 400), as ours did before it
    # read the method first (upon_acceptance: 24 and 53 in 400); the point is
    # that poorconn's suite cannot fail by luck against ours.
    import gc

    patch = getattr(ours, function)
    thresholds = gc.get_threshold()
    gc.set_threshold(5, 10**6, 10**6)  # young collections only: fast
    same = 0
    try:
        for i in range(400):
            cycles = []
            for _ in range(i % 7):  # garbage for the collector: cycles holding methods
                node: list[object] = [socket.socket.close]
                node.append(node)
                cycles.append(node)
            del cycles
            with socket.socket() as old:
                s = ours.PatchableSocket.create_from(old)
                with s:
                    before = id(getattr(s, name))
                    patch(s, **kwargs)
                    same += before == id(getattr(s, name))
                    same += before == id(getattr(old, name))
    finally:
        gc.set_threshold(*thresholds)
    assert same == 0
