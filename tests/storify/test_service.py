from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from sockwork.testing import TelnetClient
from storify.client import ApiError, StoreClient
from storify.conditions import NetworkConditions
from storify.service import StoreService
from storify.store import Store

TIMEOUT = 15


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    with Store(database) as store:
        store.seed_demo()
        store.restock("lamp", 9)  # 10 lamps
        yield store


@pytest.fixture
def service(store: Store) -> Iterator[StoreService]:
    with StoreService(store, port=0, api_port=0, name="Corner") as service:
        yield service


def ask(customer: TelnetClient, command: str) -> bytes:
    """Type ``command`` and return the answer, up to and including the next prompt."""
    customer.send_line(command)
    return customer.read_until("Store> ")


def test_service_greets_and_serves_telnet_customers(service: StoreService) -> None:
    customer = TelnetClient(service.telnet_address, timeout=TIMEOUT)
    try:
        assert b"Welcome to Corner store. Type help or ? to list commands." in customer.read_until(
            b"Store> "
        )
        assert b"Added 2 x Mug (2 in cart)." in ask(customer, "add mug 2")
        assert b"Order #1 confirmed" in ask(customer, "checkout")
    finally:
        customer.close()
    [order] = service.store.orders()
    assert order.customer.startswith("telnet 127.0.0.1:")


def test_service_fifty_telnet_customers_race_for_ten_lamps(store: Store) -> None:
    # All 50 come from 127.0.0.1: lift the per-address limit (10 by default).
    with StoreService(store, port=0, api_port=0, name="Corner", max_per_address=None) as service:
        _race_for_ten_lamps(service, store)


def _race_for_ten_lamps(service: StoreService, store: Store) -> None:
    customers = [TelnetClient(service.telnet_address, timeout=TIMEOUT) for _ in range(50)]
    outcomes: list[bytes] = []
    guard = threading.Lock()
    start = threading.Barrier(50)

    def shop(customer: TelnetClient) -> None:
        customer.read_until(b"Store> ")
        ask(customer, "add lamp")  # everyone sees 10 on the shelf: nothing is reserved
        start.wait()
        answer = ask(customer, "checkout")
        with guard:
            outcomes.append(answer)

    threads = [threading.Thread(target=shop, args=(c,)) for c in customers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
    finally:
        for customer in customers:
            customer.close()
    assert len(outcomes) == 50
    assert sum(b"confirmed" in answer for answer in outcomes) == 10
    assert sum(b"Sorry, Lamp is sold out" in answer for answer in outcomes) == 40
    assert store.product("lamp").stock == 0
    assert all(line.balanced for line in store.audit())


def test_service_fifty_api_programs_race_for_ten_lamps(service: StoreService, store: Store) -> None:
    results: list[str] = []
    guard = threading.Lock()
    start = threading.Barrier(50)

    def shop(number: int) -> None:
        with StoreClient.connect(service.api_address) as client:
            start.wait()
            try:
                client.request("checkout", items={"lamp": 1}, request_id=f"race-{number}")
                outcome = "bought"
            except ApiError as error:
                outcome = error.code
        with guard:
            results.append(outcome)

    threads = [threading.Thread(target=shop, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert sorted(results) == ["bought"] * 10 + ["out_of_stock"] * 40
    assert store.product("lamp").stock == 0


def test_service_visitors_broadcast_and_kick(service: StoreService) -> None:
    first = TelnetClient(service.telnet_address, timeout=TIMEOUT)
    second = TelnetClient(service.telnet_address, timeout=TIMEOUT)
    try:
        first.read_until(b"Store> ")
        second.read_until(b"Store> ")
        with StoreClient.connect(service.api_address) as program:
            program.request("cart")
            visitors = service.visitors()
            kinds = sorted(visitor.kind for visitor in visitors)
            assert kinds == ["api", "telnet", "telnet"]
            assert service.broadcast("Half price on mugs!") == 2
            assert b"*** Corner: Half price on mugs!" in first.read_until(b"Store> ")
            telnet_ids = [v.id for v in visitors if v.kind == "telnet"]
            assert service.kick(telnet_ids[0]) is True
            assert b"*** The manager closed your session. Goodbye." in first.read_until(b"Goodbye.")
            api_id = next(v.id for v in visitors if v.kind == "api")
            assert service.kick(api_id) is True
            with pytest.raises(ConnectionError):
                program.request("cart")
            assert service.kick("t999") is False
            assert service.kick("nobody") is False
    finally:
        first.close()
        second.close()


def test_service_poor_port_and_close(store: Store) -> None:
    service = StoreService(
        store, port=0, api_port=0, poor_port=0, poor_network=NetworkConditions(latency=0.01)
    ).start()
    try:
        poor = service.poor_address
        assert poor is not None and poor[1] not in (0, service.telnet_address[1])
        customer = TelnetClient(poor, timeout=TIMEOUT)
        try:
            assert b"Welcome to OPEN store." in customer.read_until(b"Store> ")
        finally:
            customer.close()
    finally:
        service.close()
    assert service.stopped and service.wait(0)
    service.close()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(service.telnet_address, timeout=TIMEOUT).close()


def test_service_start_failure_leaves_nothing_running(service: StoreService, store: Store) -> None:
    clash = StoreService(store, port=0, api_port=service.api_address[1])
    with pytest.raises(OSError):
        clash.start()
    assert clash.stopped
    assert clash.telnet is not None and not clash.telnet.running
    with pytest.raises(RuntimeError):
        _ = StoreService(store).telnet_address
    with pytest.raises(RuntimeError):
        _ = StoreService(store).api_address
