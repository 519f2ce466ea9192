"""The static-file HTTP server behind poorconn_http_server and the poorconn CLI."""

from __future__ import annotations

import dataclasses
import http.client
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from sockwork.compat.poorconn import (
    close_upon_acceptance,
    delay_before_sending_upon_acceptance,
    make_socket_patchable,
)
from sockwork.compat.poorconn.server import HTTPServer, Server, serve, simulation_of, url_of
from tests.conftest import IN_CI


def _ipv6_loopback_works() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


# CI machines have IPv6 loopback: there a missing one fails the tests instead of skipping them.
_NO_IPV6 = not _ipv6_loopback_works()
needs_ipv6 = pytest.mark.skipif(not IN_CI and _NO_IPV6, reason="no IPv6 loopback here")


def get(server: Server, path: str, *, timeout: float = 5) -> tuple[int, bytes]:
    """GET path from the server; return (status, body)."""
    address = server.server.server_address
    conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_bytes(b"hello, poor network\n")
    return tmp_path


def test_url_of_brackets_ipv6_hosts() -> None:
    assert url_of(("127.0.0.1", 8080)) == "http://127.0.0.1:8080"
    assert url_of(("::1", 8080, 0, 0)) == "http://[::1]:8080"


def test_serve_binds_a_free_port_and_serves_the_directory(site: Path) -> None:
    with serve(site) as server:
        port = server.server.server_address[1]
        assert port != 0
        assert server.url == f"http://127.0.0.1:{port}"
        assert get(server, "/hello.txt") == (200, b"hello, poor network\n")
        assert get(server, "/missing")[0] == 404


def test_server_is_frozen(site: Path) -> None:
    with serve(site) as server:
        with pytest.raises(dataclasses.FrozenInstanceError):
            server.url = "http://elsewhere"  # type: ignore[misc]


def test_serve_resolves_localhost(site: Path) -> None:
    with serve(site, host="localhost") as server:
        assert server.server.server_address[0] in ("127.0.0.1", "::1")
        assert get(server, "/hello.txt")[0] == 200


@needs_ipv6
def test_serve_on_ipv6_loopback(site: Path) -> None:
    with serve(site, host="::1") as server:
        assert server.url.startswith("http://[::1]:")
        assert get(server, "/hello.txt") == (200, b"hello, poor network\n")


def test_serve_with_an_unresolvable_host_raises_gaierror(site: Path) -> None:
    with pytest.raises(socket.gaierror):
        HTTPServer(site, host="no-such-host.invalid")


def test_serve_on_a_port_in_use_raises_oserror(site: Path) -> None:
    with serve(site) as server:
        with pytest.raises(OSError):
            HTTPServer(site, port=server.server.server_address[1])


def test_serve_stops_every_thread_it_started(site: Path) -> None:
    before = set(threading.enumerate())
    with serve(site) as server:
        for _ in range(3):
            assert get(server, "/hello.txt")[0] == 200
    assert set(threading.enumerate()) <= before


def test_a_client_that_gives_up_prints_no_traceback(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (site / "big.bin").write_bytes(bytes(4 << 20))
    with serve(site) as server:
        with socket.create_connection(server.server.server_address[:2], timeout=5) as client:
            client.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
            assert client.recv(100).startswith(b"HTTP/1.0 200")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert get(server, "/hello.txt")[0] == 200
    assert capsys.readouterr().err == ""


def test_simulation_error_closes_the_listening_socket(site: Path) -> None:
    listening: list[socket.socket] = []

    def broken(s: socket.socket) -> socket.socket:
        listening.append(s)
        raise ValueError("bad simulation")

    with pytest.raises(ValueError, match="bad simulation"):
        HTTPServer(site, simulation=broken)
    assert listening[0].fileno() == -1


def test_simulation_returns_the_socket_to_listen_on(site: Path) -> None:
    seen: list[socket.socket] = []

    def replace(s: socket.socket) -> socket.socket:
        copy = socket.socket(s.family, s.type, s.proto, fileno=s.detach())
        seen.append(copy)
        return copy

    with serve(site, simulation=replace) as server:
        assert server.server.socket is seen[0]  # type: ignore[attr-defined]
        assert get(server, "/hello.txt")[0] == 200


def test_start_twice_is_an_error(site: Path) -> None:
    with HTTPServer(site) as httpd:
        httpd.start()
        with pytest.raises(RuntimeError, match="only once"):
            httpd.start()


@pytest.mark.parametrize("threaded", [True, False])
def test_close_cuts_a_slow_response_short(site: Path, threaded: bool) -> None:
    (site / "slow.bin").write_bytes(bytes(1000))  # 100 chunks, 0.3 s apart: 30 s in full
    slow = simulation_of(delay_before_sending_upon_acceptance, 0.3, 10)
    with HTTPServer(site, simulation=slow, threaded=threaded) as httpd:
        httpd.start()
        with socket.create_connection(httpd.server_address[:2], timeout=10) as client:
            client.sendall(b"GET /slow.bin HTTP/1.0\r\n\r\n")
            assert client.recv(10)  # the response has started
            start = time.monotonic()
            httpd.close()
            elapsed = time.monotonic() - start
            received = b""
            while chunk := client.recv(4096):
                received += chunk
    assert elapsed < 0.3 + 1.0
    assert not received.endswith(bytes(1000))  # cut short, not served in full


@pytest.mark.parametrize("impl", ["poorconn", "sockwork"])
def test_connections_closed_upon_acceptance_print_no_traceback(
    site: Path, capsys: pytest.CaptureFixture[str], impl: str
) -> None:
    import poorconn  # its close_upon_acceptance hands the server a closed socket, as ours does

    close = poorconn.close_upon_acceptance if impl == "poorconn" else close_upon_acceptance
    with serve(site, simulation=simulation_of(close)) as server:
        with socket.create_connection(server.server.server_address[:2], timeout=5) as client:
            assert client.recv(10) == b""
    assert capsys.readouterr().err == ""


def test_single_threaded_server_serves_one_request_at_a_time(site: Path) -> None:
    (site / "slow.txt").write_bytes(b"x" * 10)
    slow = simulation_of(delay_before_sending_upon_acceptance, 0.2, 1024)
    with serve(site, simulation=slow, threaded=False) as server:
        threads = [threading.Thread(target=get, args=(server, "/slow.txt")) for _ in range(2)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - start
    # each response waits 0.2 s twice (headers, body); served one after the other
    assert elapsed >= 4 * 0.2 * 0.9


def test_threaded_server_serves_requests_concurrently(site: Path) -> None:
    # Each connection's first sendall waits until two responses are being sent at
    # once: only a server that handles both requests at the same time gets them
    # through (no timing bound: a loaded machine cannot make this fail).
    both_sending = threading.Barrier(2, timeout=10)

    def meet_before_sending(s: socket.socket) -> None:
        accept = s.accept

        def accept_and_meet() -> tuple[socket.socket, object]:
            conn, address = accept()
            conn = make_socket_patchable(conn)
            sendall = conn.sendall

            def meet_then_sendall(data: bytes, *args: int) -> None:
                conn.sendall = sendall  # type: ignore[method-assign]
                both_sending.wait()
                sendall(data, *args)

            conn.sendall = meet_then_sendall  # type: ignore[method-assign]
            return conn, address

        s.accept = accept_and_meet  # type: ignore[method-assign]

    results: list[tuple[int, bytes]] = []
    with serve(site, simulation=simulation_of(meet_before_sending)) as server:
        threads = [
            threading.Thread(target=lambda: results.append(get(server, "/hello.txt", timeout=20)))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [(200, b"hello, poor network\n")] * 2
    assert not both_sending.broken


def test_log_requests_writes_access_lines_to_stderr(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve(site, log_requests=True) as server:
        assert get(server, "/hello.txt")[0] == 200
    assert '"GET /hello.txt HTTP/1.1" 200 -' in capsys.readouterr().err


def test_a_port_out_of_range_raises_overflow_error(site: Path) -> None:
    with pytest.raises(OverflowError, match="port must be 0-65535, got 70000"):
        HTTPServer(site, port=70000)


def test_simulation_of_closes_the_socket_when_the_function_fails(site: Path) -> None:
    def broken(s: socket.socket) -> None:
        raise ValueError("bad simulation")

    listening = socket.create_server(("127.0.0.1", 0))
    with pytest.raises(ValueError, match="bad simulation"):
        simulation_of(broken)(listening)
    assert listening.fileno() == -1  # detached into a patchable copy, which was closed
