"""Tests of the asyncio front end: open_connection, start_server, MessageStream."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TypeVar

import pytest

from sockwork.errors import (
    ConnectionClosed,
    IncompleteMessage,
    MessageTooLarge,
    ProtocolError,
    SockworkError,
)
from sockwork.frames import BYTES, BYTES_OR_TEXT, JSON, Format, FrameEncoder, MessageSocket
from sockwork.frames.aio import MessageServer, MessageStream, open_connection, start_server
from sockwork.frames.aio._direct import DIRECT
from sockwork.frames.aio._protocol import FrameProtocol
from sockwork.frames.codec import FrameDecoder
from tests.frames.conftest import (
    HOSTILE_BUDGET,
    HOSTILE_CONNECTIONS,
    HOSTILE_HEADER,
    TracedMemory,
    mixed_messages,
    reset,
)

R = TypeVar("R")


def run(coro: Coroutine[object, object, R], timeout: float = 20) -> R:
    """Run a test coroutine with an overall timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def echo(stream: MessageStream[bytes]) -> None:
    async for message in stream:
        await stream.send(message)


async def serve(
    handler: Callable[[MessageStream[bytes]], Awaitable[None]], **kw: object
) -> tuple[MessageServer, int]:
    server = await start_server(handler, **kw)  # type: ignore[call-overload]
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("format", list(Format))
def test_stream_round_trip_each_format(format: Format) -> None:
    async def main() -> None:
        server, port = await serve(echo, format=format)
        async with server:
            stream = await open_connection("127.0.0.1", port, format=format)
            async with stream:
                for message in [b"hello", b"", bytes(range(256)) * 300, b"x" * (3 << 20)]:
                    await stream.send(message)
                    assert await stream.recv() == message
                await stream.send(bytearray(b"ba"))
                await stream.send(memoryview(b"mv"))
                assert await stream.recv() == b"ba"
                assert await stream.recv() == b"mv"

    run(main())


def test_stream_send_many_then_iterate_until_clean_eof() -> None:
    messages = [str(i).encode() * (i % 5) for i in range(20_000)]

    async def main() -> None:
        received: list[bytes] = []
        done = asyncio.Event()

        async def collect(stream: MessageStream[bytes]) -> None:
            async for message in stream:
                received.append(message)
            done.set()

        server, port = await serve(collect)
        async with server:
            stream = await open_connection("127.0.0.1", port)
            await stream.send_many(messages[:10_000])
            for message in messages[10_000:]:
                await stream.send(message)
            stream.close()
            await stream.wait_closed()
            await done.wait()
        assert received == messages

    run(main())


def test_stream_codecs_and_stockings_types() -> None:
    async def main() -> None:
        server, port = await serve(echo, codec=JSON)  # type: ignore[arg-type]
        async with server:
            stream = await open_connection("127.0.0.1", port, codec=JSON)
            async with stream:
                await stream.send({"k": [1, "é"]})
                assert await stream.recv() == {"k": [1, "é"]}
        kw = {"format": Format.STOCKINGS, "codec": BYTES_OR_TEXT}
        server, port = await serve(echo, **kw)  # type: ignore[arg-type]
        async with server:
            text_stream = await open_connection("127.0.0.1", port, **kw)  # type: ignore[call-overload]
            async with text_stream:
                await text_stream.send_many(["text", b"bytes", ""])
                assert [await text_stream.recv() for _ in range(3)] == ["text", b"bytes", ""]

    run(main())


def test_stream_send_after_close_and_close_wakes_recv() -> None:
    async def main() -> None:
        server, port = await serve(echo)
        async with server:
            stream = await open_connection("127.0.0.1", port)
            reader = asyncio.ensure_future(stream.recv())
            await asyncio.sleep(0)  # let it wait
            stream.close()
            stream.close()
            with pytest.raises(ConnectionClosed) as info:
                await reader
            assert info.value.by_peer is False
            for call in (lambda: stream.send(b"x"), lambda: stream.send_many([b"x"]), stream.recv):
                with pytest.raises(ConnectionClosed) as info:
                    await call()
                assert info.value.by_peer is False
            await stream.wait_closed()
            assert stream.closed

    run(main())


def test_stream_recv_cancellation_keeps_partial_message() -> None:
    async def main() -> None:
        frame = FrameEncoder().send(b"0123456789")
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        proceed = asyncio.Event()

        async def handler(stream: MessageStream[bytes]) -> None:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.recv(), 0.1)
            proceed.set()
            got.set_result(await stream.recv())

        server, port = await serve(handler)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(frame[:7])
            await proceed.wait()
            writer.write(frame[7:])
            assert await got == b"0123456789"
            writer.close()
            await writer.wait_closed()

    run(main())


def test_stream_two_concurrent_recv_is_an_error() -> None:
    async def main() -> None:
        server, port = await serve(echo)
        async with server:
            stream = await open_connection("127.0.0.1", port)
            first = asyncio.ensure_future(stream.recv())
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="another task"):
                await stream.recv()
            await stream.send(b"x")
            assert await first == b"x"
            stream.close()
            await stream.wait_closed()

    run(main())


def test_stream_send_respects_write_flow_control() -> None:
    """A peer that does not read makes send() wait: the write buffer stays bounded."""

    async def main() -> None:
        release = asyncio.Event()
        count: list[int] = []

        async def slow_reader(stream: MessageStream[bytes]) -> None:
            await release.wait()
            async for _ in stream:
                count.append(1)

        server, port = await serve(slow_reader)
        async with server:
            stream = await open_connection("127.0.0.1", port)
            chunk = b"z" * (1 << 20)
            sent = 0

            async def flood() -> None:
                nonlocal sent
                for _ in range(200):
                    await stream.send(chunk)
                    sent += 1

            flooding = asyncio.ensure_future(flood())
            done, _ = await asyncio.wait([flooding], timeout=0.5)
            assert not done  # send() is waiting for the peer
            assert stream._transport.get_write_buffer_size() <= 2 * len(chunk) + 65536
            assert sent < 200
            release.set()
            await flooding
            stream.close()
            await stream.wait_closed()
            for _ in range(100):
                if len(count) == 200:
                    break
                await asyncio.sleep(0.05)
            assert len(count) == 200

    run(main())


def test_stream_reading_pauses_when_nobody_reads() -> None:
    """A flooding peer cannot grow the receive buffer without bound."""

    async def main() -> None:
        release = asyncio.Event()
        streams: list[MessageStream[bytes]] = []
        total: list[int] = []

        async def lazy(stream: MessageStream[bytes]) -> None:
            streams.append(stream)
            await release.wait()
            async for _ in stream:
                total.append(1)

        server, port = await serve(lazy)
        async with server:
            stream = await open_connection("127.0.0.1", port)
            batch = [b"m" * 100] * 10_000  # ~1 MB per send_many

            async def flood() -> None:
                for _ in range(40):
                    await stream.send_many(batch)

            flooding = asyncio.ensure_future(flood())
            done, _ = await asyncio.wait([flooding], timeout=1.0)
            assert not done
            assert streams[0]._decoder.buffered <= 4 * (1 << 20) + (1 << 20)
            release.set()
            await flooding
            stream.close()
            await stream.wait_closed()
            for _ in range(200):
                if len(total) == 400_000:
                    break
                await asyncio.sleep(0.05)
            assert len(total) == 400_000

    run(main(), timeout=40)


def test_stream_concurrent_senders_never_interleave() -> None:
    async def main() -> None:
        received: list[bytes] = []
        done = asyncio.Event()

        async def collect(stream: MessageStream[bytes]) -> None:
            async for message in stream:
                received.append(message)
            done.set()

        server, port = await serve(collect)
        async with server:
            stream = await open_connection("127.0.0.1", port)

            async def writer(n: int) -> None:
                for i in range(20):
                    await stream.send(bytes([n]) * (100_000 if i % 2 else 10))

            await asyncio.gather(*(writer(n) for n in range(4)))
            stream.close()
            await stream.wait_closed()
            await done.wait()
        assert len(received) == 80
        assert all(m == m[:1] * len(m) for m in received)

    run(main())


def test_open_connection_refused() -> None:
    async def main() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # bound, not listening: refused
            with pytest.raises(ConnectionRefusedError):
                await open_connection("127.0.0.1", port)

    run(main())


def test_start_server_validates_arguments() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="max_size"):
            await start_server(echo, max_size=-1)
        with pytest.raises(TypeError, match="codec"):
            await start_server(echo, codec=(bytes, bytes))  # type: ignore[call-overload]

    run(main())


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
def test_stream_fault_delivers_earlier_messages_closes_and_server_goes_on(
    format: Format, bad: bytes, error: type[SockworkError]
) -> None:
    async def main() -> None:
        outcomes: list[tuple[list[bytes], BaseException | None]] = []
        finished = asyncio.Event()

        async def handler(stream: MessageStream[bytes]) -> None:
            got: list[bytes] = []
            try:
                async for message in stream:
                    got.append(message)
                    await stream.send(message)
                outcomes.append((got, None))
            except SockworkError as exc:
                outcomes.append((got, exc))
                raise  # start_server ends this connection only
            finally:
                finished.set()

        server, port = await serve(handler, format=format, max_size=1000)
        async with server:
            good = await open_connection("127.0.0.1", port, format=format)
            await good.send(b"before")
            assert await good.recv() == b"before"

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(FrameEncoder(format).send_many([b"one", b"two"]) + bad)
            writer.write_eof()
            await finished.wait()
            assert len(outcomes) == 1
            got, exc = outcomes[0]
            assert got == [b"one", b"two"]
            assert type(exc) is error
            # The faulty connection was closed: after the two echoes, EOF.
            echoed = await reader.read()
            assert echoed == FrameEncoder(format).send_many([b"one", b"two"])
            writer.close()
            await writer.wait_closed()

            await good.send(b"after")
            assert await good.recv() == b"after"
            good.close()
            await good.wait_closed()

    run(main())


def test_stream_peer_reset_mid_frame() -> None:
    async def main() -> None:
        outcome: asyncio.Future[tuple[list[bytes], BaseException]] = (
            asyncio.get_running_loop().create_future()
        )

        async def handler(stream: MessageStream[bytes]) -> None:
            got: list[bytes] = []
            try:
                async for message in stream:
                    got.append(message)
            except ConnectionClosed as exc:
                outcome.set_result((got, exc))

        server, port = await serve(handler)
        async with server:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(FrameEncoder().send(b"whole") + b"\x00\x00\x00\x09abc")
            reset(sock)
            got, exc = await outcome
            assert got == [b"whole"]
            assert isinstance(exc, IncompleteMessage)
            assert (exc.received, exc.expected) == (3, 9)
            assert isinstance(exc.__cause__, ConnectionResetError)

    run(main())


def test_stream_peer_reset_between_frames_then_send() -> None:
    async def main() -> None:
        outcome: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        async def handler(stream: MessageStream[bytes]) -> None:
            try:
                async for _ in stream:
                    pass
            except ConnectionClosed as exc:
                with pytest.raises(ConnectionClosed) as info:
                    await stream.send(b"too late")
                assert info.value.by_peer
                outcome.set_result(exc)

        server, port = await serve(handler)
        async with server:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(FrameEncoder().send(b"whole"))
            reset(sock)
            exc = await outcome
            assert type(exc) is ConnectionClosed and exc.by_peer
            assert isinstance(exc.__cause__, ConnectionResetError)

    run(main())


def test_start_server_reports_handler_bugs_and_goes_on() -> None:
    async def main() -> None:
        reported: list[BaseException] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))

        async def buggy(stream: MessageStream[bytes]) -> None:
            if await stream.recv() == b"crash":
                raise KeyError("bug")
            await stream.send(b"ok")

        server, port = await serve(buggy)
        async with server:
            first = await open_connection("127.0.0.1", port)
            await first.send(b"crash")
            with pytest.raises(ConnectionClosed):
                await first.recv()  # the server closed it after the bug
            first.close()
            second = await open_connection("127.0.0.1", port)
            await second.send(b"fine")
            assert await second.recv() == b"ok"
            second.close()
            await second.wait_closed()
        assert len(reported) == 1 and isinstance(reported[0], KeyError)

    run(main())


# -- MessageServer: close() owns the connections ---------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1


def test_server_close_closes_idle_clients_and_cancels_handlers() -> None:
    async def main() -> None:
        fds_before = _open_fds()
        tasks_before = asyncio.all_tasks()
        connected = asyncio.Semaphore(0)
        cancelled: list[str] = []

        async def idle(stream: MessageStream[bytes]) -> None:
            connected.release()
            try:
                await stream.recv()  # the clients never send
            except asyncio.CancelledError:
                cancelled.append("recv")
                raise

        server, port = await serve(idle)
        clients = [await open_connection("127.0.0.1", port) for _ in range(3)]
        for _ in clients:
            await connected.acquire()
        assert server.connections == 3 and server.is_serving()

        started = time.monotonic()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 1.0)
        for client in clients:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(client.recv(), 1.0)
            assert info.value.by_peer
        assert time.monotonic() - started < 1.0
        assert cancelled == ["recv"] * 3
        assert server.connections == 0 and not server.is_serving() and server.sockets == ()
        with pytest.raises(ConnectionRefusedError):
            await open_connection("127.0.0.1", port)
        for client in clients:
            client.close()
            await client.wait_closed()
        assert asyncio.all_tasks() == tasks_before  # no handler task left behind
        assert _open_fds() == fds_before

    run(main())


def test_server_close_flushes_queued_frames_then_eof() -> None:
    async def main() -> None:
        async def greet(stream: MessageStream[bytes]) -> None:
            await stream.send(b"bye")  # queued (coalesced), not yet written
            await asyncio.Event().wait()

        async with await start_server(greet) as server:
            port = server.sockets[0].getsockname()[1]
            client = await open_connection("127.0.0.1", port)
            while server.connections < 1:
                await asyncio.sleep(0.001)
        # The async with exit closed the server: the queued frame still arrived, then EOF.
        assert await asyncio.wait_for(client.recv(), 1.0) == b"bye"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(client.recv(), 1.0)
        client.close()
        await client.wait_closed()

    run(main())


def test_server_abort_ends_a_close_held_up_by_a_peer_that_does_not_read() -> None:
    async def main() -> None:
        flooding = asyncio.Event()

        async def flood(stream: MessageStream[bytes]) -> None:
            flooding.set()
            await stream.send(b"x" * (4 * 1024 * 1024))  # more than the socket buffers hold

        server, port = await serve(flood)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        try:
            await flooding.wait()
            server.close()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 0.3)  # still flushing
            server.abort()
            await asyncio.wait_for(server.wait_closed(), 1.0)
            assert server.connections == 0
        finally:
            sock.close()

    run(main())


def test_server_serve_forever_cancelled_closes_connections() -> None:
    async def main() -> None:
        server, port = await serve(echo)
        serving = asyncio.get_running_loop().create_task(server.serve_forever())
        client = await open_connection("127.0.0.1", port)
        await client.send(b"ping")
        assert await client.recv() == b"ping"
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(client.recv(), 1.0)
        assert server.connections == 0
        client.close()
        await client.wait_closed()

    run(main())


def test_stream_and_socket_local_address() -> None:
    async def main() -> None:
        seen: asyncio.Future[tuple[object, object]] = asyncio.get_running_loop().create_future()

        async def handler(stream: MessageStream[bytes]) -> None:
            seen.set_result((stream.address, stream.local_address))

        async with await start_server(handler) as server:
            port = server.sockets[0].getsockname()[1]
            client = await open_connection("127.0.0.1", port)
            peer, local = await seen
            assert local == ("127.0.0.1", port) == client.address
            assert peer == client.local_address
            assert client.local_address != client.address
            client.close()
            await client.wait_closed()

    run(main())
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with MessageSocket(socket.create_connection(listener.getsockname())) as conn:
            accepted, peer = listener.accept()
            with accepted:
                assert conn.local_address == peer
                assert conn.address == listener.getsockname()


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll state that the event loop changes until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def test_server_hostile_headers_commit_no_memory_and_give_it_back() -> None:
    # Issue 9: `00 ff ff ff` + one byte made each connection allocate 16 MiB, kept after
    # the peers left.
    async def handler(stream: MessageStream[bytes]) -> None:
        await stream.recv()

    async def main() -> None:
        with TracedMemory() as traced:
            server, port = await serve(handler)
            async with server:
                streams = server._streams
                peers = []
                for _ in range(HOSTILE_CONNECTIONS):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(HOSTILE_HEADER)
                    peers.append(writer)
                await until(
                    lambda: (
                        len(streams) == HOSTILE_CONNECTIONS
                        and all(s._decoder.missing == 0xFFFFFF for s in streams)
                    ),
                    what="the headers",
                )
                for writer in peers:
                    writer.write(b"x")
                # Four 16 MiB frames fit in the default max_buffered (64 MiB): those read
                # on; the others wait without reading until memory frees.
                await until(
                    lambda: (
                        sum(s._decoder.missing == 0xFFFFFE for s in streams) == 4
                        and server.waiting == HOSTILE_CONNECTIONS - 4
                    ),
                    what="the bytes",
                )
                held = traced.now()
                assert held < HOSTILE_CONNECTIONS * HOSTILE_BUDGET, held
                assert server.buffered <= 64 * 1024 * 1024
                for writer in peers:
                    writer.close()
                await until(lambda: server.connections == 0, what="the peers to leave")
                assert server.buffered == 0
                assert server.waiting == 0
                assert traced.now() < 2 * 1024 * 1024

    run(main())


def test_server_max_buffered_holds_a_connection_back_until_memory_frees() -> None:
    async def digest(stream: MessageStream[bytes]) -> None:
        async for message in stream:
            await stream.send(hashlib.sha256(message).digest())

    async def main() -> None:
        limit = 1024 * 1024
        server, port = await serve(digest, max_size=limit, max_buffered=limit)
        async with server:
            first = b"a" * (900 * 1024)
            second = bytes(range(256)) * 2400  # 600 KiB
            reader_a, writer_a = await asyncio.open_connection("127.0.0.1", port)
            writer_a.write(FrameEncoder().send(first)[: 100 * 1024])
            await until(lambda: server.buffered >= 800 * 1024, what="A's reservation")
            reader_b, writer_b = await asyncio.open_connection("127.0.0.1", port)
            writer_b.write(FrameEncoder().send(second))
            # B's frame does not fit next to A's: B stops reading (back-pressure)...
            await until(lambda: server.waiting == 1, what="B to wait")
            assert server.buffered <= limit
            # ...until A's message is complete and taken; then B's arrives whole.
            writer_a.write(FrameEncoder().send(first)[100 * 1024 :])
            assert await reader_a.readexactly(36) == FrameEncoder().send(
                hashlib.sha256(first).digest()
            )
            assert await reader_b.readexactly(36) == FrameEncoder().send(
                hashlib.sha256(second).digest()
            )
            assert server.waiting == 0
            assert server.buffered <= limit
            writer_a.close()
            writer_b.close()
            await until(lambda: server.connections == 0, what="the peers to leave")
            assert server.buffered == 0

    run(main())


def test_server_max_buffered_must_hold_one_message() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="max_buffered"):
            await start_server(echo, max_size=2048, max_buffered=1024)
        with pytest.raises(ValueError, match="max_buffered"):
            await start_server(echo, max_buffered=0)

    run(main())


# -- large frames written straight to the socket (Python 3.11's selector transport) -------


Peer = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def raw_peer() -> tuple[asyncio.Server, int, asyncio.Queue[Peer]]:
    """A plain asyncio server that does not read until the test says so."""
    accepted: asyncio.Queue[Peer] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], accepted


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    size = int.from_bytes(await reader.readexactly(4), "big")
    return await reader.readexactly(size)


def small_send_buffers(stream: MessageStream[bytes]) -> None:
    sock = stream._transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)


def test_stream_large_frames_keep_order_with_small_ones_while_the_peer_is_slow() -> None:
    async def main() -> None:
        server, port, accepted = await raw_peer()
        async with server:
            stream = await open_connection("127.0.0.1", port)
            small_send_buffers(stream)
            reader, writer = await accepted.get()
            big1 = bytes(range(256)) * 16384  # 4 MiB
            big2 = b"\x07" * (3 << 20)
            await stream.send(big1)  # the peer is not reading: the kernel takes a part
            # Python 3.11: the rest waits as a memoryview of big1, not copied.
            assert (stream._protocol.tail is not None) == DIRECT
            await stream.send(b"small 1")  # queued behind the rest of big1
            second = asyncio.ensure_future(stream.send(big2))  # waits for its turn
            await stream.send_many([b"small 2", b"small 3"])
            got = [await read_frame(reader) for _ in range(2)]
            await second
            await stream.send(b"small 4")
            got += [await read_frame(reader) for _ in range(4)]
            assert got == [big1, b"small 1", b"small 2", b"small 3", big2, b"small 4"]
            assert stream._protocol.tail is None
            stream.close()
            await stream.wait_closed()
            assert await reader.read() == b""
            writer.close()

    run(main())


def test_stream_close_sends_the_rest_of_a_large_frame_then_eof() -> None:
    async def main() -> None:
        server, port, accepted = await raw_peer()
        async with server:
            stream = await open_connection("127.0.0.1", port)
            small_send_buffers(stream)
            reader, writer = await accepted.get()
            big = b"\x01\x02" * (2 << 20)
            await stream.send(big)
            await stream.send(b"after")
            fds = len(os.listdir("/proc/self/fd"))
            stream.close()  # the rest of big, then "after", then EOF
            with pytest.raises(ConnectionClosed):
                await stream.send(b"too late")
            assert [await read_frame(reader), await read_frame(reader)] == [big, b"after"]
            assert await reader.read() == b""
            await stream.wait_closed()
            assert len(os.listdir("/proc/self/fd")) <= fds  # the tail's descriptor too
            writer.close()

    run(main())


def test_stream_abort_and_peer_reset_drop_the_rest_of_a_large_frame() -> None:
    async def main() -> None:
        server, port, accepted = await raw_peer()
        async with server:
            fds = len(os.listdir("/proc/self/fd"))
            stream = await open_connection("127.0.0.1", port)
            small_send_buffers(stream)
            reader, writer = await accepted.get()
            await stream.send(b"x" * (4 << 20))
            stream.abort()
            await stream.wait_closed()
            assert stream._protocol.tail is None
            writer.close()
            # The peer resets while the rest of a frame waits: the next send says so.
            other = await open_connection("127.0.0.1", port)
            small_send_buffers(other)
            _, peer = await accepted.get()
            await other.send(b"y" * (4 << 20))
            linger = struct.pack("ii", 1, 0)  # close with an RST
            peer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            peer.transport.abort()
            with pytest.raises(ConnectionClosed):
                for _ in range(100):  # until the transport has seen the reset
                    await other.send(b"y" * (4 << 20))
            await other.wait_closed()
            assert len(os.listdir("/proc/self/fd")) <= fds + 2  # the listener's, not ours

    run(main())


def test_stream_over_tls_takes_the_transport_path_for_large_frames(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    # The direct os.writev path is judged by capabilities (aio._direct_fd). A TLS
    # transport exposes the raw socket too; writing there would skip the encryption, so
    # the stream must fall back to transport.write, and the peer must get the message.
    server_ctx, client_ctx = tls_contexts
    payload = os.urandom(3 * 1024 * 1024)

    def protocol_factory(loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.BaseProtocol]:
        return lambda: FrameProtocol(FrameDecoder(), loop)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def echo(stream: MessageStream[bytes]) -> None:
            await stream.send(await stream.recv())

        async with await start_server(echo) as server:
            plain = await open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
            assert plain._fd >= 0  # a plain socket transport qualifies (Python 3.11)
            plain.close()
            await plain.wait_closed()

        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.setblocking(False)

            async def accept() -> MessageStream[bytes]:
                conn, _ = await loop.sock_accept(listener)
                transport, protocol = await loop.connect_accepted_socket(
                    protocol_factory(loop), conn, ssl=server_ctx
                )
                return MessageStream(transport, protocol, FrameEncoder(), BYTES)  # type: ignore[arg-type]

            accepting = asyncio.create_task(accept())
            transport, protocol = await loop.create_connection(
                protocol_factory(loop),
                "127.0.0.1",
                listener.getsockname()[1],
                ssl=client_ctx,
                server_hostname="localhost",
            )
            client: MessageStream[bytes] = MessageStream(
                transport,
                protocol,  # type: ignore[arg-type]
                FrameEncoder(),
                BYTES,
            )
            server_side = await accepting
        assert client._fd == -1 and server_side._fd == -1  # the fallback path
        await client.send(payload)
        received = await server_side.recv()
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        await server_side.send(b"ack")
        assert await client.recv() == b"ack"
        client.close()
        server_side.close()
        await client.wait_closed()
        await server_side.wait_closed()

    run(main())


def test_stream_small_message_batches_arrive_identical() -> None:
    messages = mixed_messages()

    async def main() -> None:
        received: list[bytes] = []
        done = asyncio.Event()

        async def collect(stream: MessageStream[bytes]) -> None:
            received.extend([message async for message in stream])
            done.set()

        server, port = await serve(collect)
        async with server:
            stream = await open_connection("127.0.0.1", port)
            await stream.send_many(messages[:2000])
            for message in messages[2000:]:
                await stream.send(message)
            stream.close()
            await stream.wait_closed()
            await done.wait()
        assert received == messages

    run(main())
