"""Every byte-moving socket method goes through the faults."""

from __future__ import annotations

import io
import socket
import time

from sockwork.faults import Latency, Slice, apply

from .conftest import elapsed, recv_all

Pair = tuple[socket.socket, socket.socket]


def test_methods_sendmsg_and_sendto_are_sliced(pair: Pair) -> None:
    a, b = pair
    with apply(a, Slice(3, min_bytes=3, direction="send")):
        assert a.sendmsg([b"ab", b"cdef"]) == 3
        assert a.sendto(b"wxyz", ("127.0.0.1", 9)) == 3  # connected TCP: address ignored
    a.shutdown(socket.SHUT_WR)
    assert recv_all(b) == b"abcwxy"


def test_methods_receive_variants_are_sliced(pair: Pair) -> None:
    a, b = pair
    a.sendall(b"0123456789abcdef")
    a.shutdown(socket.SHUT_WR)
    with apply(b, Slice(2, min_bytes=2)):
        buffer = bytearray(10)
        assert b.recv_into(buffer) == 2 and buffer[:2] == b"01"
        data, _ = b.recvfrom(10)
        assert data == b"23"
        n, _ = b.recvfrom_into(buffer, 10)
        assert n == 2 and buffer[:2] == b"45"
        data, ancdata, flags, _ = b.recvmsg(10)
        assert (data, ancdata) == (b"67", [])
        assert b.recv(10, socket.MSG_PEEK) == b"89abcdef"  # peeking bypasses the faults
        assert b.recv(10) == b"89"
        rest = []
        while chunk := b.recv(10):
            rest.append(chunk)
        assert rest == [b"ab", b"cd", b"ef"]


def test_methods_makefile_reads_and_writes_go_through(pair: Pair) -> None:
    a, b = pair
    with apply(b, Latency(0.1, direction="both")):
        with b.makefile("rwb", buffering=0) as stream:
            a.sendall(b"line\n")
            start = time.monotonic()
            assert stream.readline() == b"line\n"
            assert elapsed(start) >= 0.09
            stream.write(b"reply")
        assert a.recv(10) == b"reply"


def test_methods_sendfile_uses_the_faulted_path(pair: Pair) -> None:
    a, b = pair
    with apply(a, Slice(100, min_bytes=100, direction="send")):
        sent = a.sendfile(io.BytesIO(bytes(1000)))  # type: ignore[arg-type]
        assert sent == 1000
    a.shutdown(socket.SHUT_WR)
    assert recv_all(b) == bytes(1000)


def test_methods_recv_zero_and_empty_send(pair: Pair) -> None:
    a, b = pair
    with apply(a, Latency(0.05, direction="both")):
        assert a.recv(0) == b""
        assert a.send(b"") == 0
        a.sendall(b"")
