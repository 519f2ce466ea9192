"""NetFaults: the scopes behind the netfaults fixture, used without pytest's fixture."""

from __future__ import annotations

import socket

import pytest

from sockwork.faults import Latency, Match, Refuse, executor
from sockwork.testing.netfaults import NetFaults


def test_netfaults_scopes_end_together_and_restore_sockets() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()[:2]
        with NetFaults(seed=7) as net:
            refuse = net.inject(Refuse(), match=Match(role="client"))
            net.inject(Latency(0.01))
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(address, timeout=5)
            assert refuse.seed == 7
        assert not executor.installed()
        with socket.create_connection(address, timeout=5):
            pass
    assert [h.active for h in net.handles] == [False, False]


def test_netfaults_describe_gives_the_seed_and_the_reports() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with NetFaults(seed=42) as net:
            assert net.describe().splitlines() == [
                "seed 42: replay with --sockwork-seed=42",
                "no faults were injected",
            ]
            net.inject(Refuse())
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(listener.getsockname()[:2], timeout=5)
    text = net.describe()
    assert text.startswith(
        "seed 42: replay with --sockwork-seed=42\nsockwork faults report (seed=42)"
    )
    assert "refuse" in text


def test_netfaults_derives_each_scope_seed_from_the_seed() -> None:
    def seeds(seed: int) -> list[int]:
        with NetFaults(seed=seed) as net:
            return [net.inject().seed for _ in range(3)]

    first = seeds(5)
    assert first == seeds(5)
    assert first[0] == 5
    assert len(set(first)) == 3
    assert seeds(6) != first


def test_netfaults_inject_after_close_is_an_error() -> None:
    net = NetFaults(seed=1)
    net.close()
    with pytest.raises(RuntimeError, match="closed"):
        net.inject(Latency(0.1))
