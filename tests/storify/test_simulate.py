from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from sockwork.faults import ResetPeer
from sockwork.proxy import FaultProxy
from storify.server import ApiServer
from storify.simulate import run_simulation
from storify.store import Store


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    with Store(database) as store:
        yield store


def test_simulate_keeps_the_books(store: Store) -> None:
    for name in ("Mug", "Pen", "Cap"):
        store.add_product(name, 250, 100_000)
    progress = io.StringIO()
    with ApiServer(store, port=0) as server:
        result = run_simulation(
            server.address, customers=5, duration=1.0, seed=3, progress=progress
        )
    assert result.ok, result.summary()
    assert result.invariant is not None and result.invariant.ok
    tally = result.tally
    assert tally.purchases > 0 and tally.failed == 0 and tally.retried == 0
    assert len(tally.latencies) == tally.purchases
    # The server's view agrees with the simulation's count.
    assert store.totals()[0] == tally.purchases
    assert sum(line.sold for line in store.audit()) == tally.units
    assert "100%" in progress.getvalue()
    text = result.summary()
    assert "5 customers" in text and "(seed 3)" in text and "invariant   ok:" in text
    assert result.purchases_per_second == pytest.approx(tally.purchases / result.seconds)


def test_simulate_customers_race_for_the_last_units(store: Store) -> None:
    store.add_product("Lamp", 4200, 10)
    with ApiServer(store, port=0) as server:
        result = run_simulation(server.address, customers=20, duration=2.0, seed=1)
    assert result.ok, result.summary()
    assert result.tally.units == 10  # exactly the stock, never more
    assert store.product("lamp").stock == 0
    assert result.tally.rejected >= 1  # someone asked for more than was left


def test_simulate_through_resets_charges_nothing_twice(store: Store) -> None:
    # Each checkout comes on a new connection; a proxy resets about a quarter of them at
    # the request (nothing committed) and a quarter at the reply (committed, but the
    # customer never hears of it). Customers retry with the same request id: each
    # purchase is charged exactly once.
    store.add_product("Mug", 850, 100_000)
    with ApiServer(store, port=0) as server:
        with FaultProxy(upstream=server.address, seed=11) as proxy:
            proxy.add(ResetPeer(probability=0.25), direction="upstream")
            proxy.add(ResetPeer(probability=0.25), direction="downstream")
            result = run_simulation(
                proxy.address,
                customers=4,
                duration=1.5,
                seed=5,
                attempts=20,
                timeout=5.0,
                reconnect_every=1,
            )
    assert result.ok, result.summary()
    tally = result.tally
    assert tally.retried > 0 and tally.replayed > 0, result.summary()
    assert tally.failed == 0
    orders, _ = store.totals()
    assert orders == tally.purchases + tally.recovered
    assert sum(line.sold for line in store.audit()) == tally.units


def test_simulate_rejects_bad_arguments() -> None:
    for bad in (
        {"customers": 0},
        {"duration": 0},
        {"attempts": 0},
        {"timeout": 0},
        {"reconnect_every": 0},
    ):
        with pytest.raises(ValueError):
            run_simulation(("127.0.0.1", 1), **bad)  # type: ignore[arg-type]


def test_simulate_resolves_checkouts_that_failed_every_attempt(store: Store) -> None:
    # One attempt per checkout: a reset fails it outright. At the end order_status tells
    # which of those committed (reply lost) and which did not (request lost).
    store.add_product("Mug", 850, 100_000)
    with ApiServer(store, port=0) as server:
        with FaultProxy(upstream=server.address, seed=3) as proxy:
            proxy.add(ResetPeer(probability=0.3), direction="upstream")
            proxy.add(ResetPeer(probability=0.3), direction="downstream")
            result = run_simulation(
                proxy.address,
                customers=3,
                duration=1.0,
                seed=8,
                attempts=1,
                reconnect_every=1,
            )
    tally = result.tally
    assert result.ok, result.summary()
    assert tally.failed > 0 and tally.retried == 0
    assert 0 < tally.recovered < tally.failed  # some replies were lost, some requests
    assert tally.unresolved == []
    assert store.totals()[0] == tally.purchases + tally.recovered
    assert "found committed afterwards" in result.summary()


def test_simulate_against_a_sold_out_store_says_so(store: Store) -> None:
    store.add_product("Mug", 850, 0)
    store.add_product("Pen", 120, 0)
    with ApiServer(store, port=0) as server:
        result = run_simulation(server.address, customers=2, duration=5.0, seed=1)
    assert (result.ended, result.products) == ("nothing_in_stock", 2)
    assert result.tally.purchases == 0 and result.seconds < 5.0
    text = result.summary()
    assert (
        "  note        nothing to buy: the store is sold out (2 product(s) on sale, none in "
        "stock); restock at the manager's console (restock mug 100)\n"
    ) in text
    assert "no products on sale" not in text


def test_simulate_against_a_store_without_products_says_so(store: Store) -> None:
    with ApiServer(store, port=0) as server:
        result = run_simulation(server.address, customers=2, duration=5.0, seed=1)
    assert (result.ended, result.products) == ("no_products", 0)
    assert "  note        nothing to buy: the store has no products on sale" in result.summary()
    assert "sold out" not in result.summary()


def test_simulate_that_sells_out_says_when(store: Store) -> None:
    store.add_product("Lamp", 4200, 3)
    with ApiServer(store, port=0) as server:
        result = run_simulation(server.address, customers=4, duration=30.0, seed=2)
    assert result.ended == "sold_out" and result.tally.units == 3
    assert result.seconds < 30.0
    assert f"everything sold out (or was taken off sale) after {result.seconds:.1f} s" in (
        result.summary()
    )
    assert result.ok


def test_simulate_whose_time_is_up_has_no_note(store: Store) -> None:
    store.add_product("Mug", 850, 100_000)
    with ApiServer(store, port=0) as server:
        result = run_simulation(server.address, customers=1, duration=0.3, seed=2)
    assert result.ended == "time" and result.note is None
    assert "note" not in result.summary()
