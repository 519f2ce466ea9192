"""Group commit: many checkouts in one transaction, each still all or nothing.

``Store.checkout_batch`` (the store's batch), the thread group commit behind
``Store.checkout`` and ``storify.batch.CheckoutQueue`` (the API server's, on asyncio).
Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
from collections.abc import Iterator, Sequence

import pytest

from storify.batch import CheckoutQueue
from storify.errors import (
    EmptyCart,
    InvalidValue,
    OutOfStock,
    RequestConflict,
    StoreError,
    StoreUnavailable,
    UnknownProduct,
)
from storify.records import CheckoutRequest, Receipt
from storify.store import Store

MUG, TSHIRT, STICKERS, NOTEBOOK, LAMP = 1, 2, 3, 4, 5


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    with Store(database, clock=lambda: 1000.0) as store:
        store.seed_demo()
        yield store


def _receipt(outcome: Receipt | StoreError) -> Receipt:
    assert isinstance(outcome, Receipt), outcome
    return outcome


def _balanced(store: Store) -> bool:
    return all(line.balanced for line in store.audit())


def test_batch_one_bad_checkout_does_not_fail_the_others(store: Store) -> None:
    outcomes = store.checkout_batch(
        [
            CheckoutRequest({MUG: 2}, "a", "ok-1"),
            CheckoutRequest({STICKERS: 1, LAMP: 2}, "b", "too-many-lamps"),  # 1 lamp left
            CheckoutRequest({MUG: 1, 999: 1}, "c", "unknown"),
            CheckoutRequest({}, "d", "empty"),
            CheckoutRequest({MUG: 0}, "e", "zero"),
            CheckoutRequest({MUG: 1}, "f", ""),  # a bad request id
            CheckoutRequest({NOTEBOOK: 3}, "g", None),
        ]
    )
    assert len(outcomes) == 7
    first, lamps, unknown, empty, zero, bad_id, last = outcomes
    assert [line.quantity for line in _receipt(first).order.lines] == [2]
    assert isinstance(lamps, OutOfStock) and (lamps.requested, lamps.available) == (2, 1)
    assert isinstance(unknown, UnknownProduct)
    assert isinstance(empty, EmptyCart)
    assert isinstance(zero, InvalidValue) and zero.field == "quantity"
    assert isinstance(bad_id, InvalidValue) and bad_id.field == "request_id"
    assert _receipt(last).order.total == 3 * 525
    # Only the two good checkouts took stock; the failed ones changed nothing at all.
    assert store.product("mug").stock == 18
    assert store.product("stickers").stock == 50
    assert store.product("lamp").stock == 1
    assert store.product("notebook").stock == 12
    assert store.totals() == (2, 2 * 850 + 3 * 525)
    assert [order.customer for order in store.orders()] == ["g", "a"]
    assert _balanced(store)


def test_batch_racers_for_few_units_never_oversell(store: Store) -> None:
    racers = [CheckoutRequest({LAMP: 1, MUG: 1}, f"r{n}", f"lamp-{n}") for n in range(20)]
    outcomes = store.checkout_batch(racers)
    winners = [outcome for outcome in outcomes if isinstance(outcome, Receipt)]
    losers = [outcome for outcome in outcomes if isinstance(outcome, OutOfStock)]
    assert (len(winners), len(losers)) == (1, 19)
    assert winners[0] is outcomes[0]  # in order: the first one in the batch got it
    assert store.product("lamp").stock == 0
    assert store.product("mug").stock == 19  # the losers' mugs were not taken either
    assert _balanced(store)


def test_batch_sees_the_stock_the_checkouts_before_it_left(store: Store) -> None:
    outcomes = store.checkout_batch(
        [
            CheckoutRequest({TSHIRT: 4}, "a"),
            CheckoutRequest({TSHIRT: 4}, "b"),
            CheckoutRequest({TSHIRT: 4}, "c"),
            CheckoutRequest({TSHIRT: 2}, "d"),
        ]  # fmt: skip
    )
    assert [type(outcome).__name__ for outcome in outcomes] == [
        "Receipt", "Receipt", "OutOfStock", "Receipt"]  # fmt: skip
    third = outcomes[2]
    assert isinstance(third, OutOfStock) and third.available == 2
    assert store.product("t-shirt").stock == 0


def test_batch_replays_a_request_id_within_the_batch(store: Store) -> None:
    outcomes = store.checkout_batch(
        [
            CheckoutRequest({MUG: 1}, "a", "same"),
            CheckoutRequest({MUG: 1}, "a", "same"),
            CheckoutRequest({MUG: 2}, "a", "same"),
        ]
    )
    first, again, other = outcomes
    assert not _receipt(first).replayed
    assert _receipt(again).replayed and _receipt(again).order == _receipt(first).order
    assert isinstance(other, RequestConflict) and other.order_id == _receipt(first).order.id
    assert store.product("mug").stock == 19
    assert store.totals() == (1, 850)


def test_batch_replays_a_request_id_across_batches(store: Store) -> None:
    first = _receipt(store.checkout_batch([CheckoutRequest({MUG: 1, LAMP: 1}, "a", "k1")])[0])
    outcomes = store.checkout_batch(
        [
            CheckoutRequest({MUG: 1}, "b", "k2"),
            CheckoutRequest({MUG: 1, LAMP: 1}, "a", "k1"),  # replayed, though the lamp is gone
            CheckoutRequest({MUG: 5}, "a", "k1"),
        ]
    )
    fresh, replayed, conflict = outcomes
    assert not _receipt(fresh).replayed
    assert _receipt(replayed).replayed and _receipt(replayed).order == first.order
    assert isinstance(conflict, RequestConflict)
    assert store.product("mug").stock == 18
    assert store.totals() == (2, 850 + 4200 + 850)


def test_batch_a_failed_request_id_can_commit_later_in_the_batch(store: Store) -> None:
    outcomes = store.checkout_batch(
        [CheckoutRequest({LAMP: 2}, "a", "k"), CheckoutRequest({LAMP: 1}, "a", "k")]
    )
    assert isinstance(outcomes[0], OutOfStock)
    assert _receipt(outcomes[1]).order.request_id == "k"
    assert store.order_for_request("k").lines[0].quantity == 1


def test_batch_of_nothing_valid_touches_nothing(store: Store) -> None:
    assert store.checkout_batch([]) == []
    outcomes = store.checkout_batch([CheckoutRequest({}, "a")])
    assert isinstance(outcomes[0], EmptyCart)
    assert store.totals() == (0, 0)


def test_batch_fails_whole_when_the_database_cannot_answer(tmp_path: object) -> None:
    path = f"{tmp_path}/store.db"
    with Store(path, busy_timeout=0.05) as store:
        store.seed_demo()
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(StoreUnavailable):
                store.checkout_batch(
                    [CheckoutRequest({MUG: 1}, "a", "u1"), CheckoutRequest({MUG: 1}, "b", "u2")]
                )
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert store.totals() == (0, 0)
        # Retried with the same request ids, both commit once.
        outcomes = store.checkout_batch(
            [CheckoutRequest({MUG: 1}, "a", "u1"), CheckoutRequest({MUG: 1}, "b", "u2")]
        )
        assert [_receipt(o).replayed for o in outcomes] == [False, False]
        assert store.product("mug").stock == 18


def test_store_rejects_a_bad_max_batch() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_batch"):
            Store(max_batch=bad)  # type: ignore[arg-type]


class _Recording:
    """Wraps a store's ``checkout_batch`` to record batch sizes, holding the first one."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.real = store.checkout_batch
        self.sizes: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, requests: Sequence[CheckoutRequest]) -> list[Receipt | StoreError]:
        self.sizes.append(len(requests))
        if len(self.sizes) == 1:
            self.entered.set()
            assert self.release.wait(10), "the test never released the first batch"
        return self.real(requests)


def test_group_commit_threads_share_one_transaction_and_never_oversell(database: str) -> None:
    with Store(database) as store:
        store.seed_demo()
        recording = _Recording(store)
        store._group._commit = recording  # the batch behind Store.checkout
        results: list[object] = [None] * 9

        def buy(number: int) -> None:
            try:
                results[number] = store.checkout({LAMP: 1}, customer=f"t{number}")
            except StoreError as error:
                results[number] = error

        first = threading.Thread(target=buy, args=(0,))
        first.start()
        assert recording.entered.wait(10)
        # While the first batch is held, eight more threads queue their checkouts.
        others = [threading.Thread(target=buy, args=(n,)) for n in range(1, 9)]
        for thread in others:
            thread.start()
        while len(store._group._queue) < 8:
            threading.Event().wait(0.001)
        recording.release.set()
        for thread in [first, *others]:
            thread.join(10)
        assert recording.sizes == [1, 8]  # the eight waiting ones: one transaction
        assert isinstance(results[0], Receipt)
        assert all(isinstance(result, OutOfStock) for result in results[1:])
        assert store.product("lamp").stock == 0
        assert _balanced(store)


def test_group_commit_batch_failure_reaches_every_member(database: str) -> None:
    with Store(database) as store:
        store.seed_demo()

        def broken(requests: Sequence[CheckoutRequest]) -> list[Receipt | StoreError]:
            raise StoreUnavailable("test: the database went away")

        store._group._commit = broken
        with pytest.raises(StoreUnavailable):
            store.checkout({MUG: 1}, customer="a", request_id="gone")
        assert store.totals() == (0, 0)


def test_group_commit_max_batch_one_commits_each_alone(database: str) -> None:
    with Store(database, max_batch=1) as store:
        store.seed_demo()
        recording = _Recording(store)
        store._group._commit = recording
        recording.release.set()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: store.checkout({MUG: 1}, customer=f"{n}"), range(8)))
        assert recording.sizes == [1] * 8
        assert store.product("mug").stock == 12


@pytest.mark.parametrize("threaded", [False, True], ids=["inline", "executor"])
def test_checkout_queue_commits_a_loop_iteration_in_one_batch(
    database: str, threaded: bool
) -> None:
    with Store(database) as store:
        store.seed_demo()
        recording = _Recording(store)
        recording.release.set()
        store.checkout_batch = recording  # type: ignore[method-assign]
        # With an executor, a batch that needs no waiting (SQLite) commits on the loop.
        tried: list[int] = []
        try_now = store.try_checkout_batch

        def record_try(requests: Sequence[CheckoutRequest]) -> list[Receipt | StoreError] | None:
            outcomes = try_now(requests)
            if outcomes is not None:
                tried.append(len(requests))
            return outcomes

        store.try_checkout_batch = record_try  # type: ignore[method-assign]
        executor = concurrent.futures.ThreadPoolExecutor(2) if threaded else None

        async def main() -> list[Receipt | StoreError]:
            queue = CheckoutQueue(store, executor=executor)
            requests = [CheckoutRequest({LAMP: 1}, f"c{n}", f"q{n}") for n in range(10)]
            requests.append(CheckoutRequest({MUG: 1}, "c10", "q0"))  # q0 with other items
            return await asyncio.gather(*(queue.submit(request) for request in requests))

        try:
            outcomes = asyncio.run(main())
        finally:
            if executor is not None:
                executor.shutdown()
        assert recording.sizes + tried == [11]
        assert tried == ([11] if threaded and store.kind == "sqlite" else [])
        assert isinstance(outcomes[0], Receipt)
        assert all(isinstance(outcome, OutOfStock) for outcome in outcomes[1:10])
        assert isinstance(outcomes[10], RequestConflict)
        assert store.product("lamp").stock == 0 and store.product("mug").stock == 20


def test_checkout_queue_respects_max_batch_and_hands_failures_to_all(database: str) -> None:
    with Store(database) as store:
        store.seed_demo()
        recording = _Recording(store)
        recording.release.set()
        store.checkout_batch = recording  # type: ignore[method-assign]

        async def main() -> list[Receipt | StoreError]:
            queue = CheckoutQueue(store, max_batch=4)
            requests = [CheckoutRequest({MUG: 1}, f"c{n}", f"m{n}") for n in range(10)]
            return await asyncio.gather(*(queue.submit(request) for request in requests))

        outcomes = asyncio.run(main())
        assert recording.sizes == [4, 4, 2]
        assert all(isinstance(outcome, Receipt) for outcome in outcomes)
        assert store.product("mug").stock == 10

        def broken(requests: Sequence[CheckoutRequest]) -> list[Receipt | StoreError]:
            raise StoreUnavailable("test: the database went away")

        store.checkout_batch = broken  # type: ignore[method-assign]

        async def failing() -> list[Receipt | StoreError]:
            queue = CheckoutQueue(store)
            requests = [CheckoutRequest({MUG: 1}, f"c{n}", f"f{n}") for n in range(3)]
            return await asyncio.gather(*(queue.submit(request) for request in requests))

        assert all(isinstance(outcome, StoreUnavailable) for outcome in asyncio.run(failing()))


def test_checkout_queue_rejects_a_bad_max_batch() -> None:
    with Store() as store, pytest.raises(ValueError, match="max_batch"):
        CheckoutQueue(store, max_batch=0)


@pytest.mark.postgres
def test_try_checkout_batch_never_commits_postgresql_on_the_spot(postgres_url: str) -> None:
    with Store(postgres_url) as store:
        store.seed_demo()
        assert store.try_checkout_batch([CheckoutRequest({MUG: 1}, "t", "x")]) is None
        assert store.product("mug").stock == 20
