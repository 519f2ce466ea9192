"""MessageServer: its connection limit, idle timeout and close (sockwork.frames.aio)."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import Coroutine
from typing import TypeVar

import pytest

from sockwork.errors import ConnectionClosed
from sockwork.frames.aio import MessageStream, open_connection, start_server

R = TypeVar("R")


def run(coro: Coroutine[object, object, R], timeout: float = 20) -> R:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def close_all(*streams: MessageStream[bytes]) -> None:
    for stream in streams:
        stream.close()
        await stream.wait_closed()


async def echo(stream: MessageStream[bytes]) -> None:
    async for message in stream:
        await stream.send(message)


def test_server_max_connections_refuses_beyond_the_limit_and_admits_again() -> None:
    async def main() -> None:
        async with await start_server(echo, max_connections=2) as server:
            assert server.max_connections == 2
            port = server.sockets[0].getsockname()[1]
            first = await open_connection("127.0.0.1", port)
            second = await open_connection("127.0.0.1", port)
            for stream in (first, second):
                await stream.send(b"hi")
                assert await stream.recv() == b"hi"
            third = await open_connection("127.0.0.1", port)
            with pytest.raises(ConnectionClosed):
                await third.recv()  # closed at once, nothing sent
            assert server.connections == 2
            first.close()
            await first.wait_closed()
            while server.connections > 1:  # the first handler ends when its peer leaves
                await asyncio.sleep(0.01)
            fourth = await open_connection("127.0.0.1", port)
            await fourth.send(b"again")
            assert await fourth.recv() == b"again"
            await close_all(second, third, fourth)

    run(main())


def test_server_refuse_handler_tells_the_clients_beyond_the_limit() -> None:
    async def busy(stream: MessageStream[bytes]) -> None:
        await stream.send(b"busy")

    async def main() -> None:
        async with await start_server(echo, max_connections=1, refuse=busy) as server:
            port = server.sockets[0].getsockname()[1]
            first = await open_connection("127.0.0.1", port)
            await first.send(b"x")
            assert await first.recv() == b"x"
            refused = [await open_connection("127.0.0.1", port) for _ in range(5)]
            for stream in refused:  # refusals do not count against the limit
                assert await stream.recv() == b"busy"
                with pytest.raises(ConnectionClosed):
                    await stream.recv()
            await first.send(b"y")  # the admitted client goes on
            assert await first.recv() == b"y"
            await close_all(first, *refused)

    run(main())


def test_server_idle_timeout_closes_silent_connections_only() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await start_server(echo, idle_timeout=0.3) as server:
            assert server.idle_timeout == 0.3
            port = server.sockets[0].getsockname()[1]
            silent = await open_connection("127.0.0.1", port)
            talker = await open_connection("127.0.0.1", port)
            started = loop.time()
            while loop.time() - started < 0.6:  # talks every 0.1 s: never idle
                await talker.send(b"ping")
                assert await talker.recv() == b"ping"
                await asyncio.sleep(0.1)
            with pytest.raises(ConnectionClosed):
                await silent.recv()
            assert 0.25 < loop.time() - started < 5.0
            await talker.send(b"still")
            assert await talker.recv() == b"still"
            await close_all(silent, talker)

    run(main())


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_connections": 0}, "max_connections must be None or an int >= 1"),
        ({"max_connections": True}, "max_connections must be None or an int >= 1"),
        ({"idle_timeout": 0}, "idle_timeout must be None or a finite number"),
        ({"idle_timeout": float("inf")}, "idle_timeout must be None or a finite number"),
        ({"idle_timeout": float("nan")}, "idle_timeout must be None or a finite number"),
    ],
)
def test_server_limits_are_validated(kw: dict[str, object], message: str) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match=message):
            await start_server(echo, **kw)  # type: ignore[call-overload]

    run(main())


def test_server_close_leaks_no_socket_accepted_in_the_same_instant() -> None:
    # asyncio.Server.close() just after an accept, before the transport is made, leaked
    # that socket (Python 3.11, Server._attach asserts): a ResourceWarning, 5 in 30 here.
    async def main() -> None:
        for steps in range(6):  # close at each point of the accept's few loop steps
            for _ in range(5):
                server = await start_server(echo)
                port = server.sockets[0].getsockname()[1]
                client = socket.create_connection(("127.0.0.1", port))
                for _ in range(steps):
                    await asyncio.sleep(0)
                server.close()
                assert server.sockets == () and not server.is_serving()
                await server.wait_closed()
                client.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(main())
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
