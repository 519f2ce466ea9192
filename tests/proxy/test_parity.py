"""One vocabulary, two executors: a fault looks the same to a client in-process and via the proxy.

The client connects to an echo server, sends 1000 bytes and reads until the end. In one run
the fault is applied to the client's socket (``sockwork.faults.apply``); in the other the
client goes through a FaultProxy carrying the same fault object (``"recv"`` is downstream).
"""

from __future__ import annotations

import socket
import time

import pytest

from sockwork.faults import CloseAfter, Fault, HalfClose, Latency, Slice, apply
from sockwork.proxy import FaultProxy
from tests.proxy.conftest import Upstream


def observe(address: tuple[str, int], fault: Fault | None) -> tuple[bytes, str, float]:
    """What the client sees: the bytes, how the stream ended, and how long the first byte took."""
    with socket.create_connection(address, timeout=5) as client:
        handle = apply(client, fault, seed=1) if fault is not None else None
        try:
            started = time.monotonic()
            client.sendall(b"x" * 1000)
            received = b""
            first = 0.0
            ending = "eof"
            try:
                while len(received) < 1000:
                    data = client.recv(65536)
                    if not data:
                        break
                    if not received:
                        first = time.monotonic() - started
                    received += data
                else:
                    ending = "complete"
            except ConnectionResetError:
                ending = "reset"
            return received, ending, first
        finally:
            if handle is not None:
                handle.remove()


@pytest.mark.parametrize(
    "fault",
    [
        CloseAfter(100, direction="recv"),
        CloseAfter(100, reset=True, direction="recv"),
        Latency(0.2, direction="recv"),
        Slice(7, min_bytes=3, direction="recv"),
        HalfClose(100, direction="recv"),
    ],
    ids=["close-after", "reset-after", "latency", "slice", "half-close"],
)
def test_parity_in_process_and_through_the_proxy(echo_server: Upstream, fault: Fault) -> None:
    in_process = observe(echo_server.address, fault)
    with FaultProxy(upstream=echo_server.address, seed=1) as proxy:
        proxy.add(fault)  # the fault's own direction: "recv" is downstream
        assert proxy.faults[0].direction == "downstream"
        proxied = observe(proxy.address, None)
    assert proxied[1] == in_process[1]  # same ending: complete, EOF or reset
    if in_process[1] == "reset":
        assert len(proxied[0]) <= 100 and len(in_process[0]) <= 100
    else:
        assert proxied[0] == in_process[0]
    if isinstance(fault, Latency):
        assert proxied[2] >= 0.19 and in_process[2] >= 0.19
