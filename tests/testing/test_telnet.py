"""The scripted telnet client: parsing, negotiation, expectations and their failures."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from sockwork.console import ConsoleServer
from sockwork.errors import ConnectionClosed, TimedOut
from sockwork.testing import TelnetClient, socket_pair
from sockwork.testing.telnet import (
    DO,
    DONT,
    ECHO,
    IAC,
    SB,
    SE,
    SUPPRESS_GO_AHEAD,
    TIMING_MARK,
    WILL,
    WONT,
    _TelnetReader,
)

NOP, TTYPE = 241, 24


# -- the parser, at every split point ----------------------------------------------------

STREAM = (
    b"hi"
    + bytes([IAC, WILL, ECHO])
    + b"\r\n"
    + bytes([IAC, DO, TTYPE, IAC, SB, TTYPE, 1, IAC, IAC, 7, IAC, SE])
    + b"a"
    + bytes([IAC, IAC])
    + b"b\r\x00c"
    + bytes([IAC, NOP, IAC, WILL, ECHO, IAC, WONT, ECHO, IAC, DONT, ECHO])
    + b"\r\x00"
)
DATA = b"hi\r\na\xffb\rc\r"
REPLIES = bytes([IAC, DO, ECHO, IAC, WONT, TTYPE, IAC, DONT, ECHO])
COMMANDS = [(WILL, ECHO), (DO, TTYPE), (SB, TTYPE), (NOP, None), (WILL, ECHO), (WONT, ECHO),
            (DONT, ECHO)]  # fmt: skip


def feed_in(chunks: list[bytes]) -> tuple[bytes, bytes, _TelnetReader]:
    reader = _TelnetReader(accept=(ECHO,))
    data, replies = b"", b""
    for chunk in chunks:
        d, r = reader.feed(chunk)
        data, replies = data + d, replies + r
    return data, replies, reader


def test_reader_whole_stream() -> None:
    data, replies, reader = feed_in([STREAM])
    assert (data, replies) == (DATA, REPLIES)
    assert reader.commands == COMMANDS
    assert reader.server_options == set()  # WILL ECHO, then WONT ECHO


def test_reader_one_byte_at_a_time() -> None:
    data, replies, _ = feed_in([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert (data, replies) == (DATA, REPLIES)


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_reader_at_every_split_point(split: int) -> None:
    data, replies, reader = feed_in([STREAM[:split], STREAM[split:]])
    assert (data, replies) == (DATA, REPLIES)
    assert reader.commands == COMMANDS


def test_reader_never_acknowledges_a_state_twice() -> None:
    reader = _TelnetReader(accept=(ECHO, SUPPRESS_GO_AHEAD))
    assert reader.feed(bytes([IAC, WILL, ECHO])) == (b"", bytes([IAC, DO, ECHO]))
    assert reader.feed(bytes([IAC, WILL, ECHO])) == (b"", b"")  # already on
    assert reader.server_options == {ECHO}
    assert reader.feed(bytes([IAC, WONT, ECHO])) == (b"", bytes([IAC, DONT, ECHO]))
    assert reader.feed(bytes([IAC, WONT, ECHO])) == (b"", b"")  # already off
    assert reader.feed(bytes([IAC, WILL, TTYPE])) == (b"", bytes([IAC, DONT, TTYPE]))
    assert reader.feed(bytes([IAC, DO, TIMING_MARK])) == (b"", bytes([IAC, WONT, TIMING_MARK]))
    assert reader.feed(bytes([IAC, DONT, ECHO])) == (b"", b"")
    assert reader.server_options == set()


def test_reader_trailing_cr_then_nul_in_the_next_chunk() -> None:
    reader = _TelnetReader(accept=())
    assert reader.feed(b"a\r") == (b"a\r", b"")
    assert reader.feed(b"\x00b\x00") == (b"b\x00", b"")  # only a NUL after CR is dropped


# -- the client against a scripted server ------------------------------------------------


@pytest.fixture
def wire() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client side, server side) of a loopback TCP connection."""
    client, server = socket_pair()
    with client, server:
        server.settimeout(10)
        yield client, server


def test_client_read_until_returns_through_the_marker_and_keeps_the_rest(
    wire: tuple[socket.socket, socket.socket],
) -> None:
    mine, server = wire
    client = TelnetClient(mine, negotiate=False)
    server.sendall(b"Welcome\r\nshop> tail")
    assert client.read_until("shop> ") == b"Welcome\r\nshop> "
    assert client.buffered == b"tail"
    server.sendall(b"\r\nshop> ")
    assert client.read_until(b"shop> ") == b"tail\r\nshop> "


def test_client_read_until_a_marker_split_across_receives(
    wire: tuple[socket.socket, socket.socket],
) -> None:
    mine, server = wire
    client = TelnetClient(mine, negotiate=False)

    def dribble() -> None:
        for byte in b"abc shop> ":
            server.sendall(bytes([byte]))
            time.sleep(0.001)  # one byte per TCP segment

    sender = threading.Thread(target=dribble)
    sender.start()
    assert client.read_until("shop> ") == b"abc shop> "
    sender.join()


def test_client_expect_returns_the_match(wire: tuple[socket.socket, socket.socket]) -> None:
    mine, server = wire
    client = TelnetClient(mine, negotiate=False)
    server.sendall(b"Order #42 confirmed.\r\nStore> ")
    found = client.expect(r"Order #(\d+) confirmed")
    assert found.group(1) == b"42"
    assert found.string[: found.start()] == b""
    assert client.buffered == b".\r\nStore> "


def test_client_send_line_and_raw_send(wire: tuple[socket.socket, socket.socket]) -> None:
    mine, server = wire
    client = TelnetClient(mine, encoding="latin-1")
    client.send_line("café ÿ")  # 0xFF is IAC: doubled
    client.send_line()
    client.send(bytes([IAC, DO, ECHO]))  # as given
    expected = b"caf\xe9 \xff\xff\r\n\r\n" + bytes([IAC, DO, ECHO])
    assert _recv_exactly(server, len(expected)) == expected


def test_client_raw_mode_sends_ff_undoubled(wire: tuple[socket.socket, socket.socket]) -> None:
    mine, server = wire
    TelnetClient(mine, negotiate=False, encoding="latin-1").send_line("ÿ")
    assert _recv_exactly(server, 3) == b"\xff\r\n"


def test_client_negotiates_and_strips_telnet_commands(
    wire: tuple[socket.socket, socket.socket],
) -> None:
    mine, server = wire
    client = TelnetClient(mine)
    server.sendall(bytes([IAC, WILL, ECHO, IAC, DO, TTYPE]) + b"Password: ")
    assert client.read_until("Password: ") == b"Password: "
    assert ECHO in client.server_options
    assert client.commands == [(WILL, ECHO), (DO, TTYPE)]
    assert _recv_exactly(server, 6) == bytes([IAC, DO, ECHO, IAC, WONT, TTYPE])
    server.sendall(bytes([IAC, WONT, ECHO]) + b"ok\r\n")
    assert client.read_until("\r\n") == b"ok\r\n"
    assert client.server_options == frozenset()
    assert _recv_exactly(server, 3) == bytes([IAC, DONT, ECHO])


def test_client_raw_mode_passes_every_byte_and_answers_nothing(
    wire: tuple[socket.socket, socket.socket],
) -> None:
    mine, server = wire
    client = TelnetClient(mine, negotiate=False)
    server.sendall(bytes([IAC, WILL, ECHO]) + b"secret? ")
    assert client.read_until(b"secret? ") == bytes([IAC, WILL, ECHO]) + b"secret? "
    assert client.commands == [] and client.server_options == frozenset()
    server.settimeout(0.2)
    with pytest.raises(TimeoutError):
        server.recv(1)


def test_client_timeout_says_what_arrived(wire: tuple[socket.socket, socket.socket]) -> None:
    mine, server = wire
    client = TelnetClient(mine, timeout=5)
    server.sendall(b"Welcome\r\nStore")
    started = time.monotonic()
    with pytest.raises(TimedOut) as info:
        client.read_until("Store> ", timeout=0.2)
    elapsed = time.monotonic() - started
    assert 0.18 <= elapsed < 3
    assert info.value.timeout == 0.2
    assert "b'Store> '" in str(info.value) and "b'Welcome\\r\\nStore'" in str(info.value)
    server.sendall(b"> ")
    assert client.read_until("Store> ") == b"Welcome\r\nStore> "  # still usable


def test_client_eof_before_the_marker(wire: tuple[socket.socket, socket.socket]) -> None:
    mine, server = wire
    client = TelnetClient(mine)
    server.sendall(b"bye\r\n")
    server.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionClosed, match=r"closed the connection before b'Store> '.*bye"):
        client.read_until("Store> ")
    assert client.eof
    assert client.read_all() == b"bye\r\n"
    with pytest.raises(ConnectionClosed):
        client.expect("anything")


def test_client_reset_before_the_marker(wire: tuple[socket.socket, socket.socket]) -> None:
    mine, server = wire
    client = TelnetClient(mine)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()
    with pytest.raises(ConnectionClosed, match="reset") as info:
        client.read_until("Store> ")
    assert isinstance(info.value.__cause__, ConnectionResetError)


def test_client_read_all_until_the_server_closes(
    wire: tuple[socket.socket, socket.socket],
) -> None:
    mine, server = wire
    client = TelnetClient(mine, negotiate=False)
    server.sendall(b"one\r\ntwo\r\n")
    server.close()
    assert client.read_all() == b"one\r\ntwo\r\n"
    assert client.read_all() == b""


def test_client_read_all_times_out_on_an_open_connection(
    wire: tuple[socket.socket, socket.socket],
) -> None:
    client = TelnetClient(wire[0])
    with pytest.raises(TimedOut, match="the end of the connection"):
        client.read_all(timeout=0.1)


def test_client_buffer_is_bounded(wire: tuple[socket.socket, socket.socket]) -> None:
    mine, server = wire
    client = TelnetClient(mine, max_buffer=1000)
    server.sendall(b"x" * 5000)
    with pytest.raises(AssertionError, match=r"1000 bytes arrived without b'Store> '"):
        client.read_until("Store> ")


def test_client_shutdown_write_sends_eof_and_keeps_reading(
    wire: tuple[socket.socket, socket.socket],
) -> None:
    mine, server = wire
    client = TelnetClient(mine)
    client.shutdown_write()
    assert server.recv(10) == b""
    server.sendall(b"still here\r\n")
    assert client.read_until("\r\n") == b"still here\r\n"


def test_client_context_manager_closes(wire: tuple[socket.socket, socket.socket]) -> None:
    mine, _ = wire
    with TelnetClient(mine) as client:
        assert client.socket is mine
        assert "open" in repr(client)
    assert mine.fileno() == -1
    assert "closed" in repr(client)
    client.close()  # idempotent


def test_client_calls_after_close_raise_connection_closed(
    wire: tuple[socket.socket, socket.socket],
) -> None:
    mine, server = wire
    client = TelnetClient(mine)
    client.close()
    for call in (
        lambda: client.send(b"x"),
        lambda: client.send_line("x"),
        lambda: client.read_until("x"),
        client.read_all,
        client.shutdown_write,
    ):
        with pytest.raises(ConnectionClosed) as info:
            call()
        assert info.value.by_peer is False


def test_client_send_to_a_vanished_server_raises_connection_closed(
    wire: tuple[socket.socket, socket.socket],
) -> None:
    mine, server = wire
    client = TelnetClient(mine)
    server.close()
    deadline = time.monotonic() + 5
    with pytest.raises(ConnectionClosed) as info:  # the first send may still be accepted
        while time.monotonic() < deadline:
            client.send_line("anyone?")
            time.sleep(0.01)
    assert info.value.by_peer is True
    assert isinstance(info.value.__cause__, (BrokenPipeError, ConnectionResetError))


def test_client_rejects_bad_arguments(wire: tuple[socket.socket, socket.socket]) -> None:
    mine, _ = wire
    with pytest.raises(ValueError, match="timeout"):
        TelnetClient(mine, timeout=0)
    with pytest.raises(ValueError, match="max_buffer"):
        TelnetClient(mine, max_buffer=0)
    with pytest.raises(TypeError, match="target"):
        TelnetClient("127.0.0.1:23")  # type: ignore[arg-type]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(TypeError):
        TelnetClient(udp)
    client = TelnetClient(mine)
    with pytest.raises(ValueError, match="marker"):
        client.read_until("")
    with pytest.raises(ValueError, match="timeout"):
        client.read_until("x", timeout=-1)


def test_client_connect_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
    with pytest.raises(ConnectionRefusedError):
        TelnetClient(address)


def test_client_unconnected_socket_is_refused() -> None:
    with socket.socket() as sock, pytest.raises(ValueError, match="connected"):
        TelnetClient(sock)


def test_client_speaks_through_tls(tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls_contexts
    raw_client, raw_server = socket_pair()
    accepted: list[ssl.SSLSocket] = []

    def serve() -> None:
        tls = server_context.wrap_socket(raw_server, server_side=True)
        tls.sendall(b"secure> ")
        accepted.append(tls)

    thread = threading.Thread(target=serve)
    thread.start()
    tls_client = client_context.wrap_socket(raw_client, server_hostname="localhost")
    with TelnetClient(tls_client) as client:
        assert client.read_until("secure> ") == b"secure> "
    thread.join(10)
    accepted[0].close()


# -- against the console server ----------------------------------------------------------


def test_client_logs_in_to_a_console_server_with_echo_negotiated() -> None:
    import cmd

    class Hello(cmd.Cmd):
        prompt = "> "

        def do_hi(self, arg: str) -> None:
            print(f"hi {arg}")

    with ConsoleServer(Hello, password="pw") as server:
        with TelnetClient(server.address) as client:
            assert client.read_until("Password: ") == b"Password: "
            assert ECHO in client.server_options  # the server echoes: we must not
            client.send_line("pw")
            client.read_until("> ")
            assert ECHO not in client.server_options
            assert client.commands == [(WILL, ECHO), (WONT, ECHO)]
            client.send_line("hi there")
            assert client.read_until("> ") == b"hi there\r\n> "


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data
