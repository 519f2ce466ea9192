"""HalfClose: one direction ends with a FIN, the other keeps working (sync, asyncio, TLS).

The servers here answer only after they read the client's end of stream, as a server
speaking a "send everything, shut down, read the answer" protocol does: a half-close
taken as a hang-up would show up as a missing answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest

from sockwork.faults import HalfClose, Match, Plan, apply, inject
from sockwork.faults.plan import Close, Deliver, Read, combine
from sockwork.faults.vocabulary import fault_from_dict, fault_to_dict

from .conftest import recv_all

Contexts = tuple[ssl.SSLContext, ssl.SSLContext]


# --- vocabulary and plan --------------------------------------------------------------


def test_half_close_defaults_and_validation() -> None:
    fault = HalfClose(5)
    assert (fault.bytes, fault.direction, fault.after_bytes) == (5, "send", 0)
    assert HalfClose(0, direction="recv").direction == "recv"
    with pytest.raises(ValueError, match="bytes"):
        HalfClose(-1)
    with pytest.raises(TypeError, match="bytes"):
        HalfClose(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="direction"):
        HalfClose(1, direction="up")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        HalfClose(1, "recv")  # type: ignore[misc]


def test_half_close_json_round_trip() -> None:
    fault = HalfClose(7, direction="recv", connections={2})
    data = fault_to_dict(fault)
    assert data == {"type": "HalfClose", "bytes": 7, "direction": "recv", "connections": [2]}
    assert fault_from_dict(data) == fault
    assert fault_to_dict(HalfClose(3)) == {"type": "HalfClose", "bytes": 3}


def test_plan_half_close_caps_then_ends_one_direction_only() -> None:
    plan = Plan([HalfClose(5)], rng=random.Random(1), now=0.0, seed=1)
    conn = plan.open(now=0.0, label="client")
    send, recv = conn.send, conn.recv
    send.feed(8, 0.0)
    assert send.next(0.0) == Deliver(5)
    send.passed(5, 0.0)
    assert send.next(0.0) == Close(half=True)
    assert send.next(1.0) == Close(half=True)  # forever
    recv.feed(4, 0.0)
    assert recv.next(0.0) == Deliver(4)  # the other direction is untouched
    events = [(e.what, e.direction, e.offset) for e in plan.report.events]
    assert events == [("fired", "send", 0), ("half-close", "send", 5)]


def test_plan_close_due_only_for_a_half_close_before_any_byte() -> None:
    plan = Plan(
        [HalfClose(0), HalfClose(3, direction="recv")], rng=random.Random(1), now=0.0, seed=1
    )
    conn = plan.open(now=0.0)
    assert conn.send.close_due(0.0)
    assert not conn.recv.close_due(0.0)
    assert plan.report.events == ()  # asking records nothing
    assert conn.send.next(0.0) == Close(half=True)
    assert not conn.send.close_due(0.0)  # already done
    later = Plan([HalfClose(0, after_seconds=1.0)], rng=random.Random(1), now=0.0, seed=1)
    c = later.open(now=0.0)
    assert not c.send.close_due(0.5)
    assert c.send.close_due(1.0)


def test_combine_prefers_reset_then_fin_then_half_close() -> None:
    half, fin, rst = Close(half=True), Close(), Close(reset=True)
    assert combine([half, fin]) == fin
    assert combine([half, rst, fin]) == rst
    assert combine([Read(None, None), half]) == half


# --- a server that answers after the client's FIN ----------------------------------------


class AnswerAfterEof:
    """Accepts connections; reads each one to EOF, then answers ``got:<bytes>`` and closes."""

    def __init__(self, wrap: Callable[[socket.socket], socket.socket] | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.received: list[bytes] = []
        self.errors: list[BaseException] = []
        self._wrap = wrap
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            conn.settimeout(5)
            if self._wrap is not None:
                conn = self._wrap(conn)
            with conn:
                data = recv_all(conn)
                self.received.append(data)
                conn.sendall(b"got:" + data)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def close(self) -> None:
        self.listener.close()
        self._thread.join(5)
        assert not self._thread.is_alive()
        assert not self.errors, self.errors


@pytest.fixture
def answering() -> Iterator[AnswerAfterEof]:
    server = AnswerAfterEof()
    yield server
    server.close()


def test_sync_client_send_half_close_gets_the_answer(answering: AnswerAfterEof) -> None:
    with inject(HalfClose(5), match=Match(role="client")) as handle:
        with socket.create_connection(answering.address, timeout=5) as client:
            assert client.send(b"helloworld") == 5  # short: the FIN comes after byte 5
            with pytest.raises(BrokenPipeError) as info:
                client.send(b"more")
            assert info.value.errno == errno.EPIPE
            assert recv_all(client) == b"got:hello"  # the reply direction still works
    assert answering.received == [b"hello"]
    assert [(e.what, e.offset) for e in handle.report.fired(HalfClose)] == [
        ("fired", 0),
        ("half-close", 5),
    ]


def test_sync_sendall_stops_at_the_half_close(answering: AnswerAfterEof) -> None:
    with inject(HalfClose(3), match=Match(role="client")):
        with socket.create_connection(answering.address, timeout=5) as client:
            client.sendall(b"abcdef")
            assert recv_all(client) == b"got:abc"
    assert answering.received == [b"abc"]


def test_sync_half_close_at_zero_reaches_a_client_that_only_waits(
    answering: AnswerAfterEof,
) -> None:
    with inject(HalfClose(0), match=Match(role="client")):
        with socket.create_connection(answering.address, timeout=5) as client:
            assert recv_all(client) == b"got:"  # the server saw EOF at once
    assert answering.received == [b""]


def test_sync_server_recv_half_close_answers_and_ends_with_fin() -> None:
    """The server sees the client's FIN after 5 bytes; the client, which never sent one,
    gets the answer and a clean EOF (not a reset: the dropped bytes were drained)."""
    with inject(HalfClose(5, direction="recv"), match=Match(role="server")) as handle:
        server = AnswerAfterEof()
        try:
            with socket.create_connection(server.address, timeout=5) as client:
                client.sendall(b"helloworld")
                assert recv_all(client) == b"got:hello"
                client.sendall(b"still open")  # our side was never shut down
        finally:
            server.close()
    assert server.received == [b"hello"]
    assert [e.what for e in handle.report.events] == ["fired", "half-close"]
    assert handle.report.events[-1].label.startswith("server ")


def test_sync_recv_half_close_wakes_a_blocked_reader() -> None:
    """A reader already blocked in recv when the peer's (made-up) FIN becomes due sees EOF."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    with client, server, apply(client, HalfClose(3, direction="recv")):
        server.sendall(b"abc")
        assert client.recv(10) == b"abc"
        assert client.recv(10) == b""  # at once, though the server sent no FIN
        server.sendall(b"ignored")
        assert client.recv(10) == b""
        client.sendall(b"reply")
        assert server.recv(10) == b"reply"


# --- asyncio --------------------------------------------------------------------------


async def _answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read()  # to EOF
    writer.write(b"got:" + data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def _run(main: Callable[[], object]) -> None:
    asyncio.run(asyncio.wait_for(main(), 20))  # type: ignore[arg-type]


def _ask(request: bytes, client_fault: HalfClose | None = None) -> bytes:
    """Send ``request`` to an _answer_after_eof server, never calling write_eof(), and
    read its answer to EOF; ``client_fault`` is injected into that client's socket."""

    async def main() -> bytes:
        server = await asyncio.start_server(_answer_after_eof, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        faults = (
            contextlib.nullcontext()
            if client_fault is None
            else inject(client_fault, match=Match(role="client", port=port))
        )
        try:
            with faults:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(request)
                    return await reader.read()
                finally:
                    writer.close()
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(asyncio.wait_for(main(), 20))


def test_asyncio_client_send_half_close_gets_the_answer() -> None:
    """The client writes its request and waits, never calling write_eof(): the fault
    supplies the FIN the server waits for, and the answer still comes back."""
    assert _ask(b"hello", HalfClose(5)) == b"got:hello"


def test_asyncio_write_past_the_half_close_fails_with_epipe() -> None:
    with pytest.raises(BrokenPipeError):
        _ask(b"helloworld", HalfClose(5))  # 5 bytes go, then the rest meets EPIPE


def test_asyncio_server_recv_half_close_reads_eof_and_answers() -> None:
    # No write_eof(): only the fault ends the stream the server reads.
    with inject(HalfClose(4, direction="recv"), match=Match(role="server")) as handle:
        assert _ask(b"ping-pong") == b"got:ping"
    assert [e.what for e in handle.report.events] == ["fired", "half-close"]


def test_asyncio_client_recv_half_close_at_zero_wakes_the_reader() -> None:
    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(idle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with inject(HalfClose(0, direction="recv"), match=Match(role="client", port=port)):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                # The server sends nothing: only the made-up FIN can end this read.
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.write(b"bye")
                await writer.drain()
                writer.close()
        finally:
            server.close()
            await server.wait_closed()

    _run(main)


# --- TLS (synchronous): the count is plaintext -----------------------------------------


@pytest.mark.parametrize("lenient", [True, False], ids=["ignore-unexpected-eof", "strict"])
def test_tls_client_send_half_close_is_a_ragged_eof(tls_contexts: Contexts, lenient: bool) -> None:
    """The server reads the first 5 bytes of plaintext, then EOF. Without close_notify
    (see cut.py) only a server that accepts a ragged EOF can still answer."""
    context, client_context = tls_contexts
    saved = context.options
    if lenient:
        context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF  # restored below (shared context)
    server = AnswerAfterEof(wrap=lambda s: context.wrap_socket(s, server_side=True))
    try:
        with inject(HalfClose(5), match=Match(role="client")):
            raw = socket.create_connection(server.address, timeout=5)
            with client_context.wrap_socket(raw, server_hostname="localhost") as client:
                client.sendall(b"hello, TLS")
                if lenient:
                    reply = b""
                    while chunk := client.recv(100):
                        reply += chunk
                    assert reply == b"got:hello"
                else:  # the server's answer fails; its alert reaches the client
                    with pytest.raises(ssl.SSLError):
                        while client.recv(100):
                            pass
    finally:
        server.listener.close()
        server._thread.join(5)
        context.options = saved
    assert server.received == [b"hello"]
    if lenient:
        assert server.errors == []
    else:  # OpenSSL 3 takes the ragged EOF as a truncation: the session is over
        assert [type(e) for e in server.errors] == [ssl.SSLEOFError]


def test_tls_recv_half_close_gives_eof_after_the_plaintext_bytes(tls_contexts: Contexts) -> None:
    server_context, client_context = tls_contexts
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()
    wrapped: list[ssl.SSLSocket] = []
    thread = threading.Thread(
        target=lambda: wrapped.append(server_context.wrap_socket(accepted, server_side=True))
    )
    thread.start()
    client = client_context.wrap_socket(raw, server_hostname="localhost")
    thread.join()
    peer = wrapped[0]
    with client, peer, apply(client, HalfClose(4, direction="recv")):
        peer.sendall(b"abcdefgh")
        data = b""
        while chunk := client.recv(100):
            data += chunk
        assert data == b"abcd"
        client.sendall(b"still sending")
        assert peer.recv(100) == b"still sending"
