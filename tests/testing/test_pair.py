"""Framed pairs: connected, configured as asked, and nothing left open afterwards."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from sockwork.errors import ConnectionClosed, MessageTooLarge
from sockwork.frames import JSON, Format
from sockwork.testing import endpoint_pair, message_socket_pair, message_stream_pair, socket_pair


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_UNIX])
def test_socket_pair_is_connected(family: socket.AddressFamily) -> None:
    a, b = socket_pair(family)
    with a, b:
        assert a.family == family and a.type == socket.SOCK_STREAM
        assert a.gettimeout() is None and b.gettimeout() is None
        a.sendall(b"ping")
        assert b.recv(4) == b"ping"
        if family == socket.AF_INET:
            assert a.getpeername() == b.getsockname()
            assert a.getpeername()[0] == "127.0.0.1"


def test_socket_pair_rejects_other_families() -> None:
    with pytest.raises(ValueError, match="AF_INET, AF_INET6 or AF_UNIX"):
        socket_pair(socket.AF_PACKET)


def test_message_socket_pair_uses_the_options_given() -> None:
    left, right = message_socket_pair(format="varint", codec=JSON, max_size=100, peer_max_size=50)
    with left, right:
        assert (left.format, right.format) == (Format.VARINT, Format.VARINT)
        assert (left.max_size, right.max_size) == (100, 50)
        left.send({"n": [1, 2]})
        assert right.recv() == {"n": [1, 2]}
        with pytest.raises(MessageTooLarge):
            right.send("x" * 60)
    assert left.closed and right.closed


def test_message_socket_pair_bad_option_leaks_nothing() -> None:
    before = open_fds()
    with pytest.raises(ValueError):
        message_socket_pair(format="nonsense")
    assert open_fds() == before


def test_endpoint_pair_is_connected_and_closes() -> None:
    before = open_fds()
    left, right = endpoint_pair(codec=JSON, peer_max_size=1000)
    with left, right:
        assert right.max_size == 1000
        assert left.local_address == right.address
        left.send([1, "two"])
        assert right.recv(timeout=10) == [1, "two"]
    with pytest.raises(ConnectionClosed):
        left.send([])
    assert open_fds() <= before


def test_message_stream_pair_is_connected_and_cleans_up() -> None:
    async def main() -> None:
        async with message_stream_pair(codec=JSON, peer_max_size=1000) as (left, right):
            assert (left.max_size, right.max_size) == (16 * 1024 * 1024, 1000)
            assert left.local_address == right.address
            await left.send({"a": 1})
            assert await right.recv() == {"a": 1}
            await right.send([2])
            assert await left.recv() == [2]
        assert left.closed and right.closed
        with pytest.raises(ConnectionClosed):
            await right.recv()

    before = open_fds()
    asyncio.run(main())
    assert open_fds() <= before


def test_message_stream_pair_accepts_a_limit_over_the_server_default_budget() -> None:
    async def main() -> None:
        async with message_stream_pair(max_size=100 << 20) as (left, right):
            assert right.max_size == 100 << 20

    asyncio.run(main())


def test_message_stream_pair_cleans_up_when_the_body_raises() -> None:
    async def main() -> None:
        with pytest.raises(KeyError):
            async with message_stream_pair() as (left, right):
                raise KeyError("boom")
        assert left.closed and right.closed

    before = open_fds()
    asyncio.run(main())
    assert open_fds() <= before
