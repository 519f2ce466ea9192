"""Faults under asyncio: the application sees a slow network, the loop never blocks."""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

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
    DnsFailure,
    Latency,
    Match,
    Refuse,
    ResetPeer,
    Slice,
    SlowClose,
    Stall,
    Timeout,
    dispatch,
    inject,
)

# A loop blocked by a fault would stall for the whole DELAY; a loaded 2-core machine
# can pause a healthy loop for a good part of 0.25 s, so the two are told apart at 0.3 s.
DELAY = 0.4
LOOP_BLOCKED = 0.3


class Ticker:
    """A task that ticks every 10 ms and records the longest gap between ticks."""

    def __init__(self) -> None:
        self.ticks = 0
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            self.ticks += 1
            last = now

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 20))


async def with_server(
    body: Callable[[int], Awaitable[None]],
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] = echo,
) -> None:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        await body(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


def test_asyncio_latency_keeps_the_loop_running() -> None:
    async def body(port: int) -> None:
        with inject(Latency(DELAY), match=Match(port=port, role="client")):
            async with Ticker() as ticker:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                start = time.monotonic()
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
                took = time.monotonic() - start
                await close(writer)
        assert DELAY - 0.01 <= took < DELAY + 2.0
        assert ticker.ticks >= 10
        assert ticker.longest < LOOP_BLOCKED  # the loop kept running during the delay

    run(lambda: with_server(body))


def test_asyncio_bandwidth_and_slices_deliver_everything() -> None:
    payload = bytes(range(256)) * 200  # 51 200 B

    async def body(port: int) -> None:
        with inject(Bandwidth(200_000), Slice(1000), match=Match(port=port, role="client")):
            async with Ticker() as ticker:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                start = time.monotonic()
                writer.write(payload)
                await writer.drain()
                assert await reader.readexactly(len(payload)) == payload
                took = time.monotonic() - start
                await close(writer)
        assert 0.2 <= took < 5.0  # 51 KB each way at 200 KB/s
        assert ticker.longest < LOOP_BLOCKED

    run(lambda: with_server(body))


def test_asyncio_refused_connection() -> None:
    async def body(port: int) -> None:
        with inject(Refuse()):
            with pytest.raises(ConnectionRefusedError) as info:
                await asyncio.open_connection("127.0.0.1", port)
            assert info.value.errno == errno.ECONNREFUSED

    run(lambda: with_server(body))


def test_asyncio_connect_delay_does_not_block_the_loop() -> None:
    async def body(port: int) -> None:
        with inject(ConnectDelay(DELAY), match=Match(role="client")):
            async with Ticker() as ticker:
                start = time.monotonic()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                took = time.monotonic() - start
                writer.write(b"x")
                assert await reader.readexactly(1) == b"x"
                await close(writer)
        assert DELAY - 0.01 <= took < DELAY + 2.0
        assert ticker.longest < LOOP_BLOCKED

    run(lambda: with_server(body))


def test_asyncio_connect_timeout() -> None:
    async def body(port: int) -> None:
        with inject(ConnectTimeout(), match=Match(role="client")):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 0.2)

    run(lambda: with_server(body))


def test_asyncio_reset_after_bytes() -> None:
    async def body(port: int) -> None:
        with inject(
            CloseAfter(5, reset=True, direction="recv"), match=Match(role="client", port=port)
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"0123456789")
            assert await reader.readexactly(5) == b"01234"
            with pytest.raises(ConnectionResetError):
                await reader.read(100)
            await close(writer)

    run(lambda: with_server(body))


def test_asyncio_fin_after_bytes_truncates() -> None:
    async def body(port: int) -> None:
        with inject(CloseAfter(5, direction="recv"), match=Match(role="client", port=port)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"0123456789")
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readexactly(10)
            assert info.value.partial == b"01234"
            await close(writer)

    run(lambda: with_server(body))


def test_asyncio_stall_then_read_timeout() -> None:
    async def body(port: int) -> None:
        with inject(Stall(), match=Match(role="client", port=port)):
            async with Ticker() as ticker:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"hello")
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(reader.read(10), DELAY)
                await close(writer)
        assert ticker.longest < LOOP_BLOCKED

    run(lambda: with_server(body))


def test_asyncio_dns_failure() -> None:
    async def body(port: int) -> None:
        with inject(DnsFailure("again")):
            with pytest.raises(socket.gaierror) as info:
                await asyncio.open_connection("localhost", port)
            assert info.value.errno == socket.EAI_AGAIN

    run(lambda: with_server(body))


def test_asyncio_server_accept_delay_and_close_on_accept() -> None:
    async def body(port: int) -> None:
        with inject(
            AcceptDelay(DELAY),
            CloseOnAccept(connections=[1]),
            match=Match(role="server", port=port),
        ):
            async with Ticker() as ticker:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert await reader.read(10) == b""  # the first connection was closed
                await close(writer)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                start = time.monotonic()
                writer.write(b"hi")
                assert await reader.readexactly(2) == b"hi"
                took = time.monotonic() - start
                await close(writer)
        assert DELAY - 0.05 <= took < DELAY + 2.0  # the server saw the connection late
        assert ticker.longest < LOOP_BLOCKED

    run(lambda: with_server(body))


def test_asyncio_blackhole_swallows_writes() -> None:
    async def body(port: int) -> None:
        with inject(Blackhole(direction="send"), match=Match(role="client", port=port)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello")
            await writer.drain()  # the write "succeeds"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(10), 0.2)  # nothing was echoed
            await close(writer)

    run(lambda: with_server(body))


def test_asyncio_timeout_discards_then_closes() -> None:
    async def body(port: int) -> None:
        with inject(Timeout(0.2, direction="recv"), match=Match(role="client", port=port)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"echo me")
            start = time.monotonic()
            assert await reader.read(10) == b""  # discarded, then EOF
            assert 0.15 <= time.monotonic() - start < 2.0
            await close(writer)

    run(lambda: with_server(body))


def test_asyncio_reset_peer() -> None:
    async def body(port: int) -> None:
        with inject(ResetPeer(0.1, direction="recv"), match=Match(role="client", port=port)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"echo me")
            start = time.monotonic()
            with pytest.raises(ConnectionResetError):
                await reader.read(10)
            assert 0.09 <= time.monotonic() - start < 2.0
            await close(writer)

    run(lambda: with_server(body))


def test_asyncio_slow_close_holds_the_fin() -> None:
    eof_at: list[float] = []

    async def until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(100):
            pass
        eof_at.append(time.monotonic())
        writer.close()

    async def body(port: int) -> None:
        with inject(SlowClose(0.2, direction="send"), match=Match(role="client", port=port)):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"bye")
            await writer.drain()
            closed_at = time.monotonic()
            await close(writer)
            for _ in range(200):
                if eof_at:
                    break
                await asyncio.sleep(0.01)
        assert eof_at and 0.15 <= eof_at[0] - closed_at < 2.0

    run(lambda: with_server(body, until_eof))


def test_asyncio_coalesce_merges_writes() -> None:
    async def two_writes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"one")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"two")
        await writer.drain()
        await reader.read(10)
        writer.close()

    async def body(port: int) -> None:
        with inject(Coalesce(window=0.15), match=Match(role="client", port=port)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await reader.read(100) == b"onetwo"
            await close(writer)

    run(lambda: with_server(body, two_writes))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_RCVLOWAT readiness is Linux")
@pytest.mark.parametrize("direction", ["send", "recv"])
def test_asyncio_delays_do_not_poll(monkeypatch: pytest.MonkeyPatch, direction: str) -> None:
    calls = []
    for name in ("send", "receive"):
        original = getattr(dispatch, name)

        def counting(*args: object, _original: Any = original, **kwargs: object) -> Any:
            calls.append(1)
            return _original(*args, **kwargs)

        monkeypatch.setattr(dispatch, name, counting)

    async def body(port: int) -> None:
        with inject(
            Latency(0.3, direction=direction),  # type: ignore[arg-type]
            match=Match(role="client", port=port),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            cpu = time.process_time()
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            assert time.process_time() - cpu < 0.15  # slept, did not spin
            await close(writer)
        assert len(calls) <= 6  # a handful of calls, not one per poll

    run(lambda: with_server(body))


def test_asyncio_writes_handed_over_early_keep_their_order() -> None:
    payload = bytes(range(256)) * 64

    async def body(port: int) -> None:
        with inject(
            Latency(0.05, direction="send"),
            Slice(300, direction="send"),
            match=Match(role="client", port=port),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in range(0, len(payload), 1000):
                writer.write(payload[i : i + 1000])
            await writer.drain()
            assert await reader.readexactly(len(payload)) == payload
            await close(writer)

    run(lambda: with_server(body))
