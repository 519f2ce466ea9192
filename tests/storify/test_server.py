from __future__ import annotations

import io
import json
import logging
import select
import signal
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pexpect
import pytest

from sockwork.errors import Busy
from sockwork.frames import JSON, connect
from storify.cli import main
from storify.client import ApiError, StoreClient
from storify.errors import OrderNotFound, StoreBusy, StoreError
from storify.records import CheckoutRequest, Receipt
from storify.repl import StoreREPL
from storify.server import ApiServer, format_address
from storify.service import StoreService
from storify.store import Store

LINGER_ZERO = struct.pack("ii", 1, 0)


@pytest.fixture
def store() -> Iterator[Store]:
    with Store() as store:
        store.seed_demo()
        yield store


@pytest.fixture
def server(store: Store) -> Iterator[ApiServer]:
    with ApiServer(store, port=0) as server:
        yield server


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def raw(server: ApiServer) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=10)
    return sock


def read_reply(sock: socket.socket) -> object:
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return json.loads(data[4:])


def assert_closed(sock: socket.socket) -> None:
    """The server closed this connection (EOF, or a reset if our bytes were unread)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def test_format_address() -> None:
    assert format_address(("127.0.0.1", 80)) == "127.0.0.1:80"
    assert format_address(("::1", 80, 0, 0)) == "[::1]:80"
    assert format_address("/tmp/sock") == "/tmp/sock"


def test_api_server_shopping(server: ApiServer, store: Store) -> None:
    assert server.address[0] == "127.0.0.1" and server.address[1] > 0
    with StoreClient.connect(server.address) as shop:
        assert len(shop.request("list")["products"]) == 5  # type: ignore[arg-type]
        assert shop.request("add", product="mug", quantity=3)["in_cart"] == 3
        order = shop.request("checkout", request_id="t-1")["order"]
        assert order["total"] == 3 * 850  # type: ignore[index]
        with pytest.raises(ApiError) as info:
            shop.request("add", product="lamp", quantity=5)
        assert info.value.code == "out_of_stock"
        assert info.value.facts() == {"product": "Lamp", "requested": 5, "available": 1}
        assert shop.request("cart")["units"] == 0
    assert store.product("mug").stock == 17


def test_api_server_each_connection_has_its_own_cart(server: ApiServer) -> None:
    with StoreClient.connect(server.address) as a, StoreClient.connect(server.address) as b:
        a.request("add", product="mug")
        assert b.request("cart")["units"] == 0
        assert a.request("cart")["units"] == 1


def test_api_server_bad_frames_close_only_that_connection(server: ApiServer) -> None:
    with StoreClient.connect(server.address) as good:
        good.request("add", product="mug")
        # A header announcing 2 GiB: closed before anything is allocated.
        with raw(server) as huge:
            huge.sendall(struct.pack(">I", 2**31) + b"{}")
            assert_closed(huge)
        # A whole frame that is not JSON: a bad_frame reply, then closed.
        with raw(server) as garbage:
            garbage.sendall(frame(b"\xff\xfe not json"))
            reply = read_reply(garbage)
            assert isinstance(reply, dict) and reply["error"]["code"] == "bad_frame"
            assert_closed(garbage)
        # Deeply nested JSON is refused the same way.
        with raw(server) as nested:
            nested.sendall(frame(b"[" * 100_000 + b"]" * 100_000))
            reply = read_reply(nested)
            assert isinstance(reply, dict) and reply["error"]["code"] == "bad_frame"
            assert_closed(nested)
        # Half a frame, then EOF.
        with raw(server) as half:
            half.sendall(frame(b'{"op": "list"}')[:7])
            half.shutdown(socket.SHUT_WR)
            assert_closed(half)
        # JSON that is no request is answered, and the connection stays usable.
        with connect(server.address, codec=JSON, timeout=10) as odd:
            odd.send([1, 2])
            assert odd.recv() == {
                "id": None,
                "ok": False,
                "error": {
                    "code": "bad_request",
                    "message": "a request is a JSON object with an 'op'",
                },
            }
            odd.send({"id": 1, "op": "cart"})
            assert odd.recv()["ok"] is True  # type: ignore[index]
        assert good.request("cart")["units"] == 1  # the good connection never noticed


def read_strict(sock: socket.socket) -> dict[str, object]:
    """Read one reply frame: strict UTF-8 JSON without NaN or Infinity, else fail."""
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk

    def no_constant(name: str) -> object:
        raise AssertionError(f"{name} in a reply: not JSON")

    reply = json.loads(data[4:].decode("utf-8"), parse_constant=no_constant)
    assert isinstance(reply, dict)
    return reply


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (rb'{"op": "list", "id": "\ud800"}', "id"),
        (rb'{"op": "show", "product": "\udfff", "id": 2}', "product"),
        (b'{"op": "list", "id": NaN}', "id"),
        (b'{"op": "list", "id": Infinity}', "id"),
        (b'{"op": "list", "id": -Infinity}', "id"),
    ],
)
def test_api_server_answers_unencodable_requests_and_goes_on(
    server: ApiServer, payload: bytes, field: str
) -> None:
    with raw(server) as sock:
        sock.sendall(frame(payload))
        reply = read_strict(sock)
        assert reply["ok"] is False
        error = reply["error"]
        assert isinstance(error, dict)
        assert (error["code"], error["field"]) == ("bad_request", field)
        sock.sendall(frame(b'{"op": "show", "product": "\xc2\xb2", "id": 3}'))  # "²"
        reply = read_strict(sock)
        assert reply["id"] == 3 and reply["error"]["code"] == "unknown_product"  # type: ignore[index]
        sock.sendall(frame(b'{"op": "cart", "id": 4}'))
        assert read_strict(sock) == {
            "id": 4,
            "ok": True,
            "result": {"lines": [], "total": 0, "units": 0},
        }


def test_api_server_is_bounded(store: Store) -> None:
    with ApiServer(store, port=0, max_connections=1) as server:
        with StoreClient.connect(server.address) as first:
            with connect(server.address, codec=JSON, timeout=10) as second:
                reply = second.recv()
                assert reply["error"]["code"] == "busy"  # type: ignore[index]
            assert first.request("cart")["units"] == 0
            with StoreClient.connect(server.address) as third:  # the client raises Busy
                with pytest.raises(StoreBusy) as info:
                    third.request("cart")
                assert isinstance(info.value, Busy) and isinstance(info.value, ConnectionError)
                assert "retry later" in str(info.value)
            assert first.request("cart")["units"] == 0


def test_api_server_closes_idle_connections(store: Store) -> None:
    with ApiServer(store, port=0, idle_timeout=0.2) as server:
        with raw(server) as idle:
            started = time.monotonic()
            assert_closed(idle)
            assert 0.15 < time.monotonic() - started < 5.0


def test_api_server_visitors_and_kick(server: ApiServer) -> None:
    with StoreClient.connect(server.address) as shop:
        shop.request("cart")
        [visitor] = server.visitors()
        assert visitor.kind == "api"
        assert visitor.address.startswith("127.0.0.1:")
        assert visitor.address != format_address(server.address)  # the client's side
        assert len(server) == 1
        assert server.kick("nobody") is False
        assert server.kick(visitor.id) is True
        with pytest.raises(ConnectionError):
            shop.request("cart")
    deadline = time.monotonic() + 5
    while server.visitors() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.visitors() == []


def test_api_server_close_closes_connections(store: Store) -> None:
    server = ApiServer(store, port=0).start()
    # A connection being served (on CPython 3.11 asyncio leaks a socket accepted in the
    # very loop turn that closes the server, so the test does not race the accept).
    with StoreClient.connect(server.address) as shop:
        shop.request("cart")
        server.close()
        with pytest.raises(ConnectionError):
            shop.request("cart")
    server.close()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=5).close()


def test_api_server_rejects_bad_arguments(store: Store) -> None:
    with pytest.raises(ValueError, match="port"):
        ApiServer(store, port=70000)
    with pytest.raises(ValueError, match="max_connections"):
        ApiServer(store, max_connections=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        ApiServer(store, idle_timeout=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = ApiServer(store).address


def test_api_server_port_in_use(server: ApiServer, store: Store) -> None:
    with pytest.raises(OSError):
        ApiServer(store, port=server.address[1]).start()


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
    sock.close()


def test_checkout_cut_by_a_reset_mid_request_is_not_committed(
    server: ApiServer, store: Store
) -> None:
    request = json.dumps(
        {"id": 1, "op": "checkout", "items": {"mug": 2}, "request_id": "cut-1"}
    ).encode()
    sock = raw(server)
    sock.sendall(frame(request)[:-5])  # all but the last 5 bytes, then RST
    _reset(sock)
    with StoreClient.connect(server.address) as shop:
        with pytest.raises(ApiError) as info:
            shop.request("order_status", request_id="cut-1")
        assert info.value.code == "not_found"
        assert store.product("mug").stock == 20
        # Not committed, so retrying is safe: it commits exactly once.
        retry = shop.request("checkout", items={"mug": 2}, request_id="cut-1")
        assert retry["replayed"] is False
    assert store.product("mug").stock == 18
    assert store.totals()[0] == 1


def test_checkout_whose_reply_is_lost_to_a_reset_is_charged_once(
    server: ApiServer, store: Store
) -> None:
    request = json.dumps(
        {"id": 1, "op": "checkout", "items": {"mug": 2}, "request_id": "lost-1"}
    ).encode()
    sock = raw(server)
    sock.sendall(frame(request))
    # The reply reaches our kernel; we reset the connection without ever reading it.
    assert select.select([sock], [], [], 10)[0] == [sock]
    _reset(sock)
    with StoreClient.connect(server.address) as shop:
        status = shop.request("order_status", request_id="lost-1")
        # The client never saw the reply; a retry with the same request id is not charged.
        retry = shop.request("checkout", items={"mug": 2}, request_id="lost-1")
        assert retry["replayed"] is True
        assert retry["order"] == status["order"]
    assert store.product("mug").stock == 18
    assert store.totals() == (1, 1700)


# -- telnet customers cannot block the manager (issue 9.1) ------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def returns_within(seconds: float, function: Callable[[], object]) -> None:
    """Call ``function`` in a thread; fail if it has not returned after ``seconds``."""
    thread = threading.Thread(target=function, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the manager's command is still blocked after {seconds} s"


def customer(service: StoreService) -> socket.socket:
    return customer_at(service.telnet_address[1])


def customer_at(port: int) -> socket.socket:
    """A raw telnet customer that has read the greeting up to the first prompt."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    read_to_prompt(sock)
    return sock


def read_to_prompt(sock: socket.socket) -> bytes:
    """Read up to and including the next ``Store> `` prompt, however TCP splits it."""
    data = b""
    while not data.endswith(b"Store> "):
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data


def manager(service: StoreService) -> tuple[StoreREPL, io.StringIO]:
    out = io.StringIO()
    return StoreREPL(service.store, front=service, name="Corner", stdout=out), out


def test_customer_that_never_reads_cannot_freeze_kick_or_broadcast(store: Store) -> None:
    # A customer sends `list` 20,000 times and never reads: its session waits for room
    # in its bounded output, without any lock the manager's commands need. A catalog of
    # 100 more products makes the output (80 MB) far larger than the socket buffers.
    for n in range(100):
        store.add_product(f"widget {n}", 100 + n, 5)
    with StoreService(store, port=0, api_port=0, name="Corner") as service:
        reader, sink = customer(service), customer(service)
        try:
            sender = threading.Thread(target=lambda: _send_quietly(sink, b"list\r\n" * 20_000))
            sender.start()
            assert service.telnet is not None
            stuck = service.telnet.sessions[1]
            # Filling the socket buffers and the bounded output takes CPU (3-8 s seen
            # on a loaded machine, over 10 s once): wait for it generously.
            wait_until(
                lambda: stuck.output_buffered >= service.telnet.policy.max_output, timeout=60
            )
            repl, out = manager(service)
            # A frozen command never returns; 10 s leaves room for a loaded machine.
            returns_within(10.0, lambda: repl.onecmd("broadcast hello"))
            assert "Sent to 2 customer(s)." in out.getvalue()
            assert read_to_prompt(reader) == b"\r\n*** Corner: hello\r\nStore> "
            returns_within(10.0, lambda: repl.onecmd("kick t2"))
            assert "Disconnected t2." in out.getvalue()
            wait_until(lambda: [visitor.id for visitor in service.visitors()] == ["t1"])
        finally:
            sink.close()
            reader.close()
        sender.join(10)


def test_broadcasts_to_a_customer_that_never_reads_never_block_the_manager(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # 3,000 broadcasts of 3 KB with one customer not reading blocked the manager's
    # console after about 660; now that customer is disconnected once 128 KiB behind.
    with StoreService(store, port=0, api_port=0, name="Corner") as service:
        sink = customer(service)
        try:
            repl, out = manager(service)
            message = "x" * 3000
            with caplog.at_level(logging.WARNING, logger="sockwork.console"):
                returns_within(
                    60.0, lambda: [repl.onecmd(f"broadcast {message}") for _ in range(3000)]
                )
            said = out.getvalue().splitlines()
            assert len(said) == 3000
            assert said[0] == "Sent to 1 customer(s)." and said[-1] == "Sent to 0 customer(s)."
            assert service.visitors() == []
        finally:
            sink.close()
    assert "fell behind by more than 131072 bytes of output" in caplog.text


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # disconnected by the store, or closed by the test


def test_serve_passes_the_telnet_limits(tmp_path: Path) -> None:
    from tests.storify.test_cli import spawn_store

    child, port, _ = spawn_store(
        tmp_path, "--no-console", "--max-per-address", "1", "--first-line-timeout", "0.5"
    )
    try:
        first = customer_at(port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as second:
            assert read_all(second) == (
                b"*** too many sessions from 127.0.0.1 (1); try again later\r\n"
            )
        assert read_all(first) == b"\r\n*** nothing typed within 0.5 s; disconnecting\r\n"
        first.close()
        child.kill(signal.SIGTERM)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


@pytest.mark.parametrize(
    ("option", "value"), [("--max-per-address", "-1"), ("--first-line-timeout", "0")]
)
def test_serve_rejects_bad_telnet_limits(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", option, value])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


# -- a busy database never stalls the API loop (issue 12) ---------------------------------


def test_api_answers_while_a_checkout_waits_for_another_process_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "store.db")
    with Store(path, busy_timeout=10) as store:
        store.seed_demo()
        committing = threading.Event()
        batch = store.checkout_batch

        def spy(requests: Sequence[CheckoutRequest]) -> list[Receipt | StoreError]:
            committing.set()
            return batch(requests)

        monkeypatch.setattr(store, "checkout_batch", spy)
        other = sqlite3.connect(path, isolation_level=None)  # "another process"
        with ApiServer(store, port=0) as server:
            try:
                other.execute("BEGIN IMMEDIATE")
                replies: list[dict[str, object]] = []

                def buy() -> None:
                    with StoreClient.connect(server.address, timeout=30) as buyer:
                        replies.append(buyer.request("checkout", items={"1": 2}, request_id="w"))

                buyer = threading.Thread(target=buy)
                buyer.start()
                assert committing.wait(10)  # the batch is committing, waiting for the lock
                with StoreClient.connect(server.address, timeout=3) as browser:
                    # 3 s, not the 10 s busy_timeout: the loop is not waiting for the lock.
                    assert browser.request("show", product="mug")["product"] == {
                        "id": 1, "name": "Mug", "price": 850, "stock": 20
                    }  # fmt: skip
                    with pytest.raises(OrderNotFound):  # not committed yet
                        browser.request("order_status", request_id="w")
                assert buyer.is_alive()
                other.execute("ROLLBACK")
                buyer.join(10)
                assert not buyer.is_alive()
            finally:
                other.close()
        [reply] = replies
        assert reply["order"]["request_id"] == "w"  # type: ignore[index]
        assert store.product("mug").stock == 18
