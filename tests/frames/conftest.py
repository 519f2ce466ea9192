"""Fixtures for the frames tests: connected socket pairs that are always closed."""

from __future__ import annotations

import gc
import random
import socket
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest


def make_tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Return two connected TCP sockets on loopback (client, server side)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST instead of a FIN (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected loopback TCP sockets, closed after the test."""
    a, b = make_tcp_pair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


# Issue 9: a header announcing 16 MiB - 1 (the default max_size allows it), then one byte.
HOSTILE_HEADER = b"\x00\xff\xff\xff"
HOSTILE_CONNECTIONS = 20
# What each hostile connection may cost: a 64 KiB buffer and a first 64 KiB piece, with
# room to spare. Before the fix each one cost the 16 MiB its header announced.
HOSTILE_BUDGET = 256 * 1024


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` (state another thread changes) until true, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.005)


class TracedMemory:
    """Bytes allocated by Python (tracemalloc) since the block was entered, in every thread."""

    def __enter__(self) -> TracedMemory:
        gc.collect()
        tracemalloc.start()
        self._before = tracemalloc.get_traced_memory()[0]
        return self

    def now(self) -> int:
        """Bytes allocated since the start and still held."""
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - self._before

    def __exit__(self, *exc: object) -> None:
        tracemalloc.stop()


def mixed_messages(count: int = 4000, seed: int = 3) -> list[bytes]:
    """Distinct messages of sizes around the decoder's thresholds, mostly small.

    Empty, 64 B and ~1 KiB messages (small frames are decoded in batches of at most
    16 KiB of data), a few of 5-20 KiB and one of 70 KB (a large frame in its own
    buffer), each with its own bytes so a swap, loss or shift shows.
    """
    rng = random.Random(seed)
    sizes = [0, 1, 64, 64, 64, 1023, 1024, 1025]
    messages = [rng.randbytes(rng.choice(sizes)) for _ in range(count)]
    for where in range(0, count, count // 4):
        messages[where] = rng.randbytes(rng.randrange(5000, 20_000))
    messages[count // 2] = rng.randbytes(70_000)
    return messages
