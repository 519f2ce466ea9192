"""The Toxiproxy-compatible HTTP API: paths, JSON shapes, status codes, errors, effects."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sockwork.proxy.server import TOXIPROXY_VERSION, ToxiproxyServer
from tests.proxy.conftest import (
    MakeUpstream,
    Upstream,
    echo_then_marker,
    free_port,
    recv_exactly,
    wait_until,
)


class Api:
    """A tiny HTTP/1.1 client on one persistent connection (keep-alive is tested too)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.conn = http.client.HTTPConnection(*address, timeout=5)

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, object, http.client.HTTPResponse]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        self.conn.request(method, path, body=data, headers=headers or {})
        response = self.conn.getresponse()
        text = response.read()
        try:
            value: object = json.loads(text) if text else None
        except ValueError:
            value = text.decode()
        return response.status, value, response

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def server() -> Iterator[ToxiproxyServer]:
    with ToxiproxyServer(port=0, seed=5) as srv:
        yield srv


@pytest.fixture
def api(server: ToxiproxyServer) -> Iterator[Api]:
    client = Api(server.address)
    yield client
    client.close()


def upstream_of(echo_server: Upstream) -> str:
    return f"{echo_server.address[0]}:{echo_server.address[1]}"


def test_server_version_and_empty_list(api: Api) -> None:
    assert api.call("GET", "/version")[:2] == (200, {"version": TOXIPROXY_VERSION})
    assert api.call("GET", "/proxies")[:2] == (200, {})


def test_server_create_proxy_and_forward(api: Api, echo_server: Upstream) -> None:
    body = {"name": "echo", "listen": "127.0.0.1:0", "upstream": upstream_of(echo_server)}
    status, proxy, response = api.call("POST", "/proxies", body)
    assert status == 201
    assert response.getheader("Content-Type") == "application/json"
    assert isinstance(proxy, dict)
    assert proxy["name"] == "echo" and proxy["enabled"] is True and proxy["toxics"] == []
    host, port = proxy["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    with socket.create_connection((host, int(port)), timeout=5) as client:
        client.sendall(b"hello")
        assert recv_exactly(client, 5) == b"hello"
    assert api.call("GET", "/proxies")[1] == {"echo": proxy}
    assert api.call("GET", "/proxies/echo")[1] == proxy


def test_server_errors_are_toxiproxy_json(api: Api, echo_server: Upstream) -> None:
    status, body, response = api.call("GET", "/proxies/nope")
    assert (status, body) == (404, {"error": "proxy not found", "status": 404})
    assert response.getheader("Content-Type", "").startswith("text/plain")
    assert api.call("POST", "/proxies", {"upstream": "127.0.0.1:1"})[:2] == (
        400,
        {"error": "missing required field: name", "status": 400},
    )
    assert api.call("POST", "/proxies", {"name": "x"})[:2] == (
        400,
        {"error": "missing required field: upstream", "status": 400},
    )
    status, body, _ = api.call("POST", "/proxies", raw=b"{not json")
    assert status == 400 and isinstance(body, dict)
    assert str(body["error"]).startswith("bad request body:")
    good = {"name": "a", "listen": "127.0.0.1:0", "upstream": upstream_of(echo_server)}
    assert api.call("POST", "/proxies", good)[0] == 201
    assert api.call("POST", "/proxies", good)[:2] == (
        409,
        {"error": "proxy already exists", "status": 409},
    )
    toxics = "/proxies/a/toxics"
    assert api.call("POST", toxics, {"type": "bogus"})[:2] == (
        400,
        {"error": "invalid toxic type", "status": 400},
    )
    assert api.call("POST", toxics, {"type": "latency", "stream": "sideways"})[:2] == (
        400,
        {"error": "stream was invalid, can be either upstream or downstream", "status": 400},
    )
    assert api.call("GET", "/proxies/a/toxics/none")[:2] == (
        404,
        {"error": "toxic not found", "status": 404},
    )
    status, body, _ = api.call("POST", toxics, {"type": "latency", "attributes": {"latency": "x"}})
    assert status == 400 and "bad request body" in str(body)
    # The listen address is taken: 500 with the bind error, and the server keeps going.
    listen = f"127.0.0.1:{json_port(api, 'a')}"
    status, body, _ = api.call(
        "POST", "/proxies", {"name": "b", "listen": listen, "upstream": "127.0.0.1:1"}
    )
    assert status == 500 and "address already in use" in str(body).lower()
    assert api.call("GET", "/nowhere")[0] == 404
    assert api.call("PUT", "/proxies")[0] == 405
    assert api.call("GET", "/version")[0] == 200


def json_port(api: Api, name: str) -> int:
    proxy = api.call("GET", f"/proxies/{name}")[1]
    assert isinstance(proxy, dict)
    return int(str(proxy["listen"]).rsplit(":", 1)[1])


def test_server_browsers_are_refused(api: Api) -> None:
    status, body, _ = api.call("GET", "/proxies", headers={"User-Agent": "Mozilla/5.0"})
    assert (status, body) == (403, "User agent not allowed\n")


def test_server_toxic_defaults_update_and_delete(api: Api, echo_server: Upstream) -> None:
    api.call("POST", "/proxies", {"name": "e", "upstream": upstream_of(echo_server)})
    status, toxic, _ = api.call(
        "POST", "/proxies/e/toxics", {"type": "latency", "attributes": {"latency": 200}}
    )
    assert status == 200
    assert toxic == {
        "attributes": {"latency": 200, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }
    address = ("127.0.0.1", json_port(api, "e"))
    with socket.create_connection(address, timeout=5) as client:
        started = time.monotonic()
        client.sendall(b"x")
        assert recv_exactly(client, 1) == b"x"
        assert 0.19 <= time.monotonic() - started < 0.7
        status, toxic, _ = api.call(
            "PATCH", "/proxies/e/toxics/latency_downstream", {"attributes": {"latency": 0}}
        )
        assert status == 200 and isinstance(toxic, dict)
        assert toxic["attributes"] == {"latency": 0, "jitter": 0}
        started = time.monotonic()
        client.sendall(b"y")
        assert recv_exactly(client, 1) == b"y"
        assert time.monotonic() - started < 0.15
    assert api.call("GET", "/proxies/e/toxics")[:2] == (200, [toxic])
    assert api.call("POST", "/proxies/e/toxics", {"type": "latency"})[0] == 409
    status, _, _ = api.call("DELETE", "/proxies/e/toxics/latency_downstream")
    assert status == 204
    assert api.call("GET", "/proxies/e/toxics")[1] == []


def test_server_limit_data_and_reset_peer(api: Api, echo_server: Upstream) -> None:
    api.call("POST", "/proxies", {"name": "e", "upstream": upstream_of(echo_server)})
    api.call(
        "POST",
        "/proxies/e/toxics",
        {"type": "limit_data", "stream": "downstream", "attributes": {"bytes": 10}},
    )
    address = ("127.0.0.1", json_port(api, "e"))
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(b"0123456789abcdef")
        assert recv_exactly(client, 100) == b"0123456789"
    api.call("POST", "/reset")
    api.call(
        "POST",
        "/proxies/e/toxics",
        {"type": "reset_peer", "stream": "UPSTREAM", "attributes": {"timeout": 0}},
    )
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(b"boom")
        with pytest.raises(ConnectionResetError):
            client.recv(10)


def test_server_disable_enable_and_delete(api: Api, echo_server: Upstream) -> None:
    api.call("POST", "/proxies", {"name": "e", "upstream": upstream_of(echo_server)})
    address = ("127.0.0.1", json_port(api, "e"))
    status, proxy, _ = api.call("PATCH", "/proxies/e", {"enabled": False})
    assert status == 200 and isinstance(proxy, dict) and proxy["enabled"] is False
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()
    assert api.call("POST", "/reset")[0] == 204  # reset re-enables every proxy
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(b"k")
        assert recv_exactly(client, 1) == b"k"
    assert api.call("DELETE", "/proxies/e")[0] == 204
    assert api.call("GET", "/proxies/e")[0] == 404
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()


def test_server_patch_moves_the_upstream(api: Api, echo_server: Upstream) -> None:
    api.call("POST", "/proxies", {"name": "e", "upstream": f"127.0.0.1:{free_port()}"})
    status, proxy, _ = api.call("PATCH", "/proxies/e", {"upstream": upstream_of(echo_server)})
    assert status == 200 and isinstance(proxy, dict)
    assert proxy["upstream"] == upstream_of(echo_server)
    with socket.create_connection(("127.0.0.1", json_port(api, "e")), timeout=5) as client:
        client.sendall(b"m")
        assert recv_exactly(client, 1) == b"m"


def test_server_populate_is_idempotent(api: Api, echo_server: Upstream) -> None:
    entries = [
        {"name": "one", "listen": "127.0.0.1:0", "upstream": upstream_of(echo_server)},
        {"name": "two", "listen": "127.0.0.1:0", "upstream": upstream_of(echo_server)},
    ]
    status, body, _ = api.call("POST", "/populate", entries)
    assert status == 201 and isinstance(body, dict)
    first = body["proxies"]
    assert [p["name"] for p in first] == ["one", "two"]
    status, body, _ = api.call("POST", "/populate", entries)
    assert status == 201 and isinstance(body, dict) and body["proxies"] == first
    status, body, _ = api.call("POST", "/populate", [{"name": "three"}])
    assert (status, body) == (
        400,
        {"error": "missing required field: upstream at proxy 1", "status": 400},
    )
    assert api.call("POST", "/populate", {"name": "x"})[0] == 400


def test_server_metrics_are_prometheus_text(api: Api, echo_server: Upstream) -> None:
    api.call("POST", "/proxies", {"name": "m", "upstream": upstream_of(echo_server)})
    with socket.create_connection(("127.0.0.1", json_port(api, "m")), timeout=5) as client:
        client.sendall(b"12345")
        assert recv_exactly(client, 5) == b"12345"
    # Bytes are counted as the proxy writes them, before the echo can come back.
    status, text, response = api.call("GET", "/metrics")
    assert status == 200
    assert response.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
    assert isinstance(text, str)
    lines = text.splitlines()
    sent = [line for line in lines if line.startswith("toxiproxy_proxy_sent_bytes_total{")]
    upstream = [line for line in sent if 'direction="upstream"' in line and 'proxy="m"' in line]
    assert len(upstream) == 1 and upstream[0].endswith(" 5")
    assert "# TYPE toxiproxy_proxy_received_bytes_total counter" in lines


def test_server_config_creates_proxies_at_start(echo_server: Upstream) -> None:
    config = [{"name": "c", "listen": "127.0.0.1:0", "upstream": upstream_of(echo_server)}]
    with ToxiproxyServer(port=0, proxies=config) as srv:
        api = Api(srv.address)
        try:
            status, body, _ = api.call("GET", "/proxies")
            assert status == 200 and isinstance(body, dict) and list(body) == ["c"]
        finally:
            api.close()


def test_server_stop_closes_proxies_and_clients(echo_server: Upstream) -> None:
    srv = ToxiproxyServer(port=0)
    srv.start()
    api = Api(srv.address)
    try:
        api.call("POST", "/proxies", {"name": "s", "upstream": upstream_of(echo_server)})
        address = ("127.0.0.1", json_port(api, "s"))
        client = socket.create_connection(address, timeout=5)
        with client:
            client.sendall(b"1")
            assert recv_exactly(client, 1) == b"1"
            started = time.monotonic()
            srv.close()
            assert client.recv(1) == b""
            assert time.monotonic() - started < 1.0
    finally:
        api.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()


def test_server_survives_garbage_and_oversized_requests(server: ToxiproxyServer) -> None:
    with socket.create_connection(server.address, timeout=5) as raw:
        raw.sendall(b"NONSENSE\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(server.address, timeout=5) as raw:
        raw.sendall(b"POST /proxies HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 413 ")
    with socket.create_connection(server.address, timeout=5) as raw:
        raw.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 100_000)
        assert raw.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(server.address, timeout=5) as raw:
        # b"\xb2" is "²" in Latin-1, the header charset: a digit to str.isdigit().
        raw.sendall(b"POST /proxies HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n")
        assert b'"error": "bad Content-Length"' in raw.recv(1000)
    api = Api(server.address)
    try:
        assert api.call("GET", "/version")[0] == 200
    finally:
        api.close()


def test_server_patch_moves_the_listener(api: Api, echo_server: Upstream) -> None:
    api.call("POST", "/proxies", {"name": "e", "upstream": upstream_of(echo_server)})
    old = ("127.0.0.1", json_port(api, "e"))
    port = free_port()
    status, proxy, _ = api.call("PATCH", "/proxies/e", {"listen": f"127.0.0.1:{port}"})
    assert status == 200 and isinstance(proxy, dict)
    assert proxy["listen"] == f"127.0.0.1:{port}"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(old, timeout=5).close()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"v")
        assert recv_exactly(client, 1) == b"v"


def test_server_seed_replays_toxicity_draws(echo_server: Upstream) -> None:
    def outcomes() -> list[bool]:
        with ToxiproxyServer(port=0, seed=42) as srv:
            api = Api(srv.address)
            try:
                api.call("POST", "/proxies", {"name": "p", "upstream": upstream_of(echo_server)})
                api.call(
                    "POST",
                    "/proxies/p/toxics",
                    {"type": "limit_data", "toxicity": 0.5, "attributes": {"bytes": 0}},
                )
                address = ("127.0.0.1", json_port(api, "p"))
            finally:
                api.close()
            cut = []
            for _ in range(10):
                with socket.create_connection(address, timeout=5) as client:
                    client.sendall(b"s")
                    try:
                        cut.append(client.recv(1) == b"")
                    except ConnectionResetError:
                        cut.append(True)  # cut while our byte was unread: RST, not FIN
            return cut

    first = outcomes()
    assert outcomes() == first
    assert True in first and False in first


def test_server_connect_timeout_toxic(api: Api, echo_server: Upstream) -> None:
    api.call("POST", "/proxies", {"name": "t", "upstream": upstream_of(echo_server)})
    status, body, _ = api.call(
        "POST", "/proxies/t/toxics", {"type": "connect_timeout", "toxicity": 0.5}
    )
    assert status == 400 and isinstance(body, dict) and "probability" in str(body["error"])
    assert api.call("POST", "/proxies/t/toxics", {"type": "connect_timeout"})[0] == 200
    address = ("127.0.0.1", json_port(api, "t"))
    with pytest.raises(TimeoutError):
        socket.create_connection(address, timeout=0.3).close()
    assert api.call("DELETE", "/proxies/t/toxics/connect_timeout_downstream")[0] == 204
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(b"c")
        assert recv_exactly(client, 1) == b"c"


def test_server_patch_to_a_port_in_use_keeps_the_old_listener(
    api: Api, echo_server: Upstream
) -> None:
    api.call("POST", "/proxies", {"name": "e", "upstream": upstream_of(echo_server)})
    old = api.call("GET", "/proxies/e")[1]
    assert isinstance(old, dict)
    address = ("127.0.0.1", json_port(api, "e"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        status, body, response = api.call("PATCH", "/proxies/e", {"listen": busy})
        assert status == 500 and isinstance(body, dict)
        assert body == {"error": f"listen tcp {busy}: bind: address already in use", "status": 500}
        assert response.getheader("Content-Type", "").startswith("text/plain")
        # Nothing changed: the API reports the old address, and it still serves.
        assert api.call("GET", "/proxies/e")[1] == old
        with socket.create_connection(address, timeout=5) as client:
            client.sendall(b"still")
            assert recv_exactly(client, 5) == b"still"
        # A failed move of the upstream along with it changes nothing either.
        status, _, _ = api.call("PATCH", "/proxies/e", {"listen": busy, "upstream": "x:1"})
        assert status == 500 and api.call("GET", "/proxies/e")[1] == old


def test_server_patch_keeps_connections_when_the_move_fails(
    api: Api, echo_server: Upstream
) -> None:
    api.call("POST", "/proxies", {"name": "e", "upstream": upstream_of(echo_server)})
    with (
        socket.create_connection(("127.0.0.1", json_port(api, "e")), timeout=5) as client,
        socket.create_server(("127.0.0.1", 0)) as taken,
    ):
        client.sendall(b"1")
        assert recv_exactly(client, 1) == b"1"
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        assert api.call("PATCH", "/proxies/e", {"listen": busy})[0] == 500
        client.sendall(b"2")
        assert recv_exactly(client, 1) == b"2"


def test_server_enable_on_a_port_taken_meanwhile_answers_500(
    api: Api, echo_server: Upstream
) -> None:
    api.call("POST", "/proxies", {"name": "e", "upstream": upstream_of(echo_server)})
    port = json_port(api, "e")
    assert api.call("PATCH", "/proxies/e", {"enabled": False})[0] == 200
    with socket.create_server(("127.0.0.1", port)):
        status, body, _ = api.call("PATCH", "/proxies/e", {"enabled": True})
        assert (status, body) == (
            500,
            {"error": f"listen tcp 127.0.0.1:{port}: bind: address already in use", "status": 500},
        )
        proxy = api.call("GET", "/proxies/e")[1]
        assert isinstance(proxy, dict) and proxy["enabled"] is False
    assert api.call("PATCH", "/proxies/e", {"enabled": True})[0] == 200
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"back")
        assert recv_exactly(client, 4) == b"back"


@pytest.mark.parametrize(
    ("method", "path", "body", "error"),
    [
        (
            "POST",
            "/proxies",
            {"name": "n", "upstream": "127.0.0.1:²"},
            "upstream must be host:port with a port in 0..65535, got '127.0.0.1:²'",
        ),
        (
            "POST",
            "/proxies",
            {"name": "n", "upstream": "127.0.0.1:0"},
            "upstream must be host:port with a port in 1..65535, got '127.0.0.1:0'",
        ),
        (
            "POST",
            "/proxies",
            {"name": "n", "upstream": "127.0.0.1:1", "listen": "h:²"},
            "listen must be host:port with a port in 0..65535, got 'h:²'",
        ),
        (
            "PATCH",
            "/proxies/e",
            {"upstream": "127.0.0.1:²"},
            "upstream must be host:port with a port in 0..65535, got '127.0.0.1:²'",
        ),
        (
            "POST",
            "/populate",
            [{"name": "n", "upstream": "127.0.0.1:0"}],
            "upstream must be host:port with a port in 1..65535, got '127.0.0.1:0'",
        ),
        (
            "POST",
            "/proxies/e/toxics",
            {"type": "latency", "attributes": {"latency": 10**400}},
            f"bad request body: json: cannot unmarshal number {10**400} into Go struct field "
            "latency.latency of type int64",
        ),
        (
            "PATCH",
            "/proxies/e/toxics/slicer_downstream",
            {"attributes": {"delay": 2**63}},
            f"bad request body: json: cannot unmarshal number {2**63} into Go struct field "
            "slicer.delay of type int64",
        ),
    ],
    ids=[
        "upstream ²",
        "upstream :0",
        "listen ²",
        "patch upstream ²",
        "populate :0",
        "latency 400 digits",
        "patch over int64",
    ],
)
def test_server_bad_input_is_400_not_500(
    api: Api, echo_server: Upstream, method: str, path: str, body: object, error: str
) -> None:
    api.call("POST", "/proxies", {"name": "e", "upstream": upstream_of(echo_server)})
    assert api.call("POST", "/proxies/e/toxics", {"type": "slicer"})[0] == 200
    before = api.call("GET", "/proxies")[1]
    status, answer, _ = api.call(method, path, body)
    assert (status, answer) == (400, {"error": error, "status": 400}) or (
        path == "/populate"
        and (status, answer) == (400, {"error": error, "status": 400, "proxies": []})
    )
    assert api.call("GET", "/proxies")[1] == before


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000, b'{"name": ' + b"1" * 5000 + b"}"],
    ids=["nested 100000 deep", "5000-digit number"],
)
def test_server_undecodable_json_is_400(api: Api, raw: bytes) -> None:
    status, body, _ = api.call("POST", "/proxies", raw=raw)
    assert status == 400 and isinstance(body, dict)
    assert str(body["error"]).startswith("bad request body: ")


def test_server_largest_attributes_of_every_toxic_are_served(
    api: Api, echo_server: Upstream
) -> None:
    from sockwork.proxy.toxic import EXTRA_TOXIC_TYPES, TOXIC_TYPES

    api.call("POST", "/proxies", {"name": "e", "upstream": upstream_of(echo_server)})
    for kind, attributes in {**TOXIC_TYPES, **EXTRA_TOXIC_TYPES}.items():
        biggest = {key: 2**63 - 1 for key in attributes}
        status, body, _ = api.call(
            "POST", "/proxies/e/toxics", {"type": kind, "attributes": biggest}
        )
        assert status in (200, 400), (kind, status, body)
        if status == 200:
            assert api.call("DELETE", f"/proxies/e/toxics/{kind}_downstream")[0] == 204


def metric(api: Api, name: str, **labels: str) -> int:
    """The value of one sample of GET /metrics."""
    text = api.call("GET", "/metrics")[1]
    assert isinstance(text, str)
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return int(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels}")


def test_server_delete_toxic_holding_data_for_a_closed_client(
    api: Api, make_upstream: MakeUpstream
) -> None:
    # Issue 9 item 6: the client closed while the server's last bytes were still held
    # by a latency toxic; releasing them meets a reset client socket (ENOTCONN on
    # shutdown). The DELETE must succeed all the same, and the connection end.
    done = threading.Event()
    upstream = make_upstream(echo_then_marker(done))
    api.call("POST", "/proxies", {"name": "e", "upstream": upstream_of(upstream)})
    api.call("POST", "/proxies/e/toxics", {"type": "latency", "attributes": {"latency": 100}})
    with socket.create_connection(("127.0.0.1", json_port(api, "e")), timeout=5) as client:
        for i in range(10):
            client.sendall(b"%d" % i)
            assert recv_exactly(client, 1) == b"%d" % i
        # Hold the server's marker long enough to DELETE while it is held.
        api.call(
            "PATCH", "/proxies/e/toxics/latency_downstream", {"attributes": {"latency": 30_000}}
        )
    assert done.wait(5)
    wait_until(
        lambda: (
            metric(api, "toxiproxy_proxy_received_bytes_total", direction="downstream", proxy="e")
            == 13
        )
    )
    status, body, _ = api.call("DELETE", "/proxies/e/toxics/latency_downstream")
    assert (status, body) == (204, None)
    assert api.call("GET", "/proxies/e/toxics")[1] == []
    wait_until(lambda: metric(api, "sockwork_proxy_connections_open", proxy="e") == 0)
    # The proxy still works.
    with socket.create_connection(("127.0.0.1", json_port(api, "e")), timeout=5) as client:
        client.sendall(b"ok")
        assert recv_exactly(client, 2) == b"ok"
