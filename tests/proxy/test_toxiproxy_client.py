"""The unmodified PyPI client ``toxiproxy-python`` drives sockwork's Toxiproxy server."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
import toxiproxy  # the real PyPI client, a declared test dependency
from toxiproxy import api as toxiproxy_api
from toxiproxy import exceptions as toxiproxy_exceptions

from sockwork.proxy.server import ToxiproxyServer
from tests.proxy.conftest import (
    MakeUpstream,
    Upstream,
    echo_then_marker,
    recv_exactly,
    wait_until,
)


@pytest.fixture
def client() -> Iterator[toxiproxy.Toxiproxy]:
    with ToxiproxyServer(port=0) as server:
        consumer = toxiproxy_api.APIConsumer
        saved = (consumer.host, consumer.port)  # the client keeps its URL in class state
        try:
            tp = toxiproxy.Toxiproxy()
            tp.update_api_consumer(*server.address)
            yield tp
        finally:
            consumer.host, consumer.port = saved


def address_of(proxy: toxiproxy.proxy.Proxy) -> tuple[str, int]:
    host, port = str(proxy.listen).rsplit(":", 1)
    return host, int(port)


def echo_time(address: tuple[str, int]) -> float:
    with socket.create_connection(address, timeout=5) as conn:
        started = time.monotonic()
        conn.sendall(b"ping")
        assert recv_exactly(conn, 4) == b"ping"
        return time.monotonic() - started


def test_toxiproxy_python_drives_the_server(
    client: toxiproxy.Toxiproxy, echo_server: Upstream
) -> None:
    tp = client
    assert tp.running() is True
    assert b'"version"' in tp.version()
    upstream = f"{echo_server.address[0]}:{echo_server.address[1]}"
    proxy = tp.create(upstream=upstream, name="echo")
    assert proxy.name == "echo" and proxy.upstream == upstream and proxy.enabled is True
    assert set(tp.proxies()) == {"echo"}
    with pytest.raises(toxiproxy_exceptions.ProxyExists):
        tp.create(upstream=upstream, name="echo")
    address = address_of(proxy)
    assert echo_time(address) < 0.15

    proxy.add_toxic(type="latency", attributes={"latency": 200, "jitter": 0})
    toxic = proxy.get_toxic("latency_downstream")
    assert toxic is not None and toxic.attributes == {"latency": 200, "jitter": 0}
    assert toxic.stream == "downstream" and toxic.toxicity == 1
    assert 0.19 <= echo_time(address) < 0.7
    with pytest.raises(toxiproxy_exceptions.InvalidToxic):
        proxy.add_toxic(type="no_such_toxic")
    assert proxy.destroy_toxic("latency_downstream") is True
    assert proxy.toxics() == {}
    assert echo_time(address) < 0.15

    with proxy.down():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5).close()
    assert echo_time(address) < 0.5

    proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 100})
    tp.reset()
    assert tp.get_proxy("echo").toxics() == {}

    tp.destroy(proxy)
    assert tp.get_proxy("echo") is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()


def test_toxiproxy_python_populate_and_destroy_all(
    client: toxiproxy.Toxiproxy, echo_server: Upstream
) -> None:
    tp = client
    upstream = f"{echo_server.address[0]}:{echo_server.address[1]}"
    made = tp.populate(
        [
            {"name": "one", "upstream": upstream, "listen": "127.0.0.1:0"},
            {"name": "two", "upstream": upstream, "listen": "127.0.0.1:0"},
        ]
    )
    assert sorted(p.name for p in made) == ["one", "two"]
    for proxy in made:
        assert echo_time(address_of(proxy)) < 0.5
    tp.destroy_all()
    assert tp.proxies() == {}
    with pytest.raises(toxiproxy_exceptions.NotFound):
        made[0].destroy()


def test_toxiproxy_python_destroys_a_toxic_holding_data_for_a_closed_client(
    client: toxiproxy.Toxiproxy, make_upstream: MakeUpstream
) -> None:
    # Issue 9 item 6, as reported: destroy_toxic returned False (a 500, ENOTCONN).
    done = threading.Event()
    upstream = make_upstream(echo_then_marker(done))
    proxy = client.create(upstream=f"127.0.0.1:{upstream.address[1]}", name="m")
    proxy.add_toxic(type="latency", attributes={"latency": 100})
    with socket.create_connection(address_of(proxy), timeout=5) as conn:
        for i in range(10):
            conn.sendall(b"%d" % i)
            assert recv_exactly(conn, 1) == b"%d" % i
        # A second toxic holds the marker while both are destroyed.
        proxy.add_toxic(type="latency", name="hold", attributes={"latency": 30_000})
    assert done.wait(5)
    metrics = f"http://{toxiproxy_api.APIConsumer.host}:{toxiproxy_api.APIConsumer.port}/metrics"
    received = 'toxiproxy_proxy_received_bytes_total{direction="downstream"'

    def marker_held() -> bool:
        with urllib.request.urlopen(metrics, timeout=5) as response:
            text = response.read().decode()
        return any(line.startswith(received) and line.endswith(" 13") for line in text.splitlines())

    wait_until(marker_held)
    assert proxy.destroy_toxic("latency_downstream") is True
    assert proxy.destroy_toxic("hold") is True
    assert proxy.toxics() == {}
    assert echo_time(address_of(proxy)) < 0.5
