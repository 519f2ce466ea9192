"""storify.database on SQLite: reads beside a waiting writer, checkpoints in their own thread."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest

from storify.database import SqliteDatabase
from storify.errors import OrderNotFound, StoreUnavailable
from storify.records import CheckoutRequest, Receipt
from storify.store import Store


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def sqlite_of(store: Store) -> SqliteDatabase:
    database = store._db
    assert isinstance(database, SqliteDatabase)
    return database


class _BeginSpy:
    """Wraps the writer connection: sets ``begun`` when a write transaction is asked for."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.begun = threading.Event()

    @property
    def in_transaction(self) -> bool:
        return self._connection.in_transaction

    def execute(self, sql: str, parameters: Sequence[object] = (), /) -> sqlite3.Cursor:
        if sql == "BEGIN IMMEDIATE":
            self.begun.set()
        return self._connection.execute(sql, parameters)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]], /) -> sqlite3.Cursor:
        return self._connection.executemany(sql, rows)


def test_sqlite_reads_do_not_wait_behind_a_writer_waiting_for_the_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    with Store(path, busy_timeout=10) as store:
        store.seed_demo()
        database = sqlite_of(store)
        spy = _BeginSpy(database._db)
        database._db = spy  # type: ignore[assignment]
        other = sqlite3.connect(path, isolation_level=None)  # "another process"
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE products SET stock = 0")  # not committed: nobody sees it
            outcome: list[Receipt | BaseException] = []

            def buy() -> None:
                try:
                    outcome.append(store.checkout({1: 1}, customer="t", request_id="waits"))
                except BaseException as error:  # noqa: BLE001 - checked below
                    outcome.append(error)

            buyer = threading.Thread(target=buy)
            buyer.start()
            assert spy.begun.wait(10)  # the buyer holds the store's write side, waiting
            started = time.monotonic()
            assert store.product("mug").stock == 20  # the last commit, at once
            assert [p.stock for p in store.products()][:2] == [20, 10]
            assert store.totals() == (0, 0)
            assert time.monotonic() - started < 5  # not the 10 s busy_timeout
            assert buyer.is_alive()  # the write is still waiting for the lock
            other.execute("ROLLBACK")
            buyer.join(10)
            assert not buyer.is_alive()
        finally:
            other.close()
            database._db = spy._connection
        [receipt] = outcome
        assert isinstance(receipt, Receipt) and receipt.order.request_id == "waits"
        assert store.product("mug").stock == 19


def test_sqlite_write_waiting_beyond_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    with Store(path, busy_timeout=0.2) as store:
        store.seed_demo()
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable) as raised:
                store.checkout({1: 1}, customer="t")
            assert "locked" in str(raised.value.__cause__)
            assert store.product("mug").stock == 20  # reading goes on
        finally:
            other.close()
        assert store.checkout({1: 1}, customer="t").order.units == 1


def _checkpointer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "storify-sqlite-checkpoint"]


def test_sqlite_checkpoints_in_a_thread_of_its_own(tmp_path: Path) -> None:
    before = len(_checkpointer_threads())
    path = tmp_path / "store.db"
    store = Store(str(path))
    try:
        checkpointer = sqlite_of(store)._checkpointer
        assert checkpointer is not None
        mug = store.add_product("Mug", 850, 1_000_000).id
        for number in range(200):
            store.checkout({mug: 1}, customer="t", request_id=f"r{number}")
        wait_until(lambda: checkpointer.checkpoints > 0)
        assert len(_checkpointer_threads()) == before + 1
        # The checkpointer copied the WAL: a new connection sees every order in the file.
        other = sqlite3.connect(path)
        try:
            assert other.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 200
        finally:
            other.close()
    finally:
        store.close()
    assert len(_checkpointer_threads()) == before  # joined by close()
    assert not (tmp_path / "store.db-wal").exists()  # the last connection folded it in


def test_memory_store_has_no_checkpointer_and_one_connection() -> None:
    with Store() as store:
        database = sqlite_of(store)
        assert database._checkpointer is None and database._reader is None
        store.seed_demo()
        assert store.checkout({1: 2}, customer="t").order.units == 2
        assert store.product(1).stock == 18


_BUYER = """
import sys
from storify.store import Store

store = Store(sys.argv[1])
checkpointer = store._db._checkpointer
for number in range(10**9):
    order = store.checkout({1: 1 + number % 3}, customer="buyer", request_id=f"r{number}").order
    print(order.id, order.request_id, checkpointer.checkpoints, flush=True)
"""


def test_sqlite_orders_survive_sigkill_while_checkpoints_run(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    with Store(path) as store:
        store.add_product("Mug", 850, 100_000_000)
    buyer = subprocess.Popen(
        [sys.executable, "-c", _BUYER, path], stdout=subprocess.PIPE, text=True
    )
    assert buyer.stdout is not None
    lines = []
    with buyer.stdout:
        # Until the checkpointer has run a few times, so the kill lands among checkpoints.
        while len(lines) < 300 or int(lines[-1].split()[2]) < 3:
            line = buyer.stdout.readline()
            assert line, "the buyer stopped"
            lines.append(line)
        buyer.send_signal(signal.SIGKILL)
        assert buyer.wait(timeout=30) == -signal.SIGKILL
        lines += buyer.stdout.readlines()
    acknowledged = {int(line.split()[0]): line.split()[1] for line in lines if line.endswith("\n")}
    with Store(path) as store:
        orders = {order.id: order for order in store.orders()}
        [books] = store.audit()
    for order_id, request_id in acknowledged.items():
        assert orders[order_id].request_id == request_id
    assert len(acknowledged) <= len(orders) <= len(acknowledged) + 1
    assert books.balanced
    assert books.sold == sum(order.units for order in orders.values())


def test_try_checkout_batch_commits_only_when_nothing_must_wait(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    with Store(path, busy_timeout=10) as store:
        store.seed_demo()
        outcomes = store.try_checkout_batch([CheckoutRequest({1: 1}, "t", "free")])
        assert outcomes is not None and isinstance(outcomes[0], Receipt)
        # "Another process" (released from a timer thread below).
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            other.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            assert store.try_checkout_batch([CheckoutRequest({1: 1}, "t", "held")]) is None
            assert time.monotonic() - started < 5  # told at once, not after busy_timeout
            # The busy timeout is back for waiting writes: this one waits for the lock.
            threading.Timer(0.3, other.execute, ("ROLLBACK",)).start()
            [waited] = store.checkout_batch([CheckoutRequest({1: 1}, "t", "waited")])
            assert isinstance(waited, Receipt)
        finally:
            other.close()
        # Another thread of this process writing: not now either.
        database = sqlite_of(store)
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with database._lock:
                holding.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert holding.wait(10)
            assert store.try_checkout_batch([CheckoutRequest({1: 1}, "t", "busy")]) is None
        finally:
            release.set()
            holder.join(10)
        with pytest.raises(OrderNotFound):
            store.order_for_request("held")
        with pytest.raises(OrderNotFound):
            store.order_for_request("busy")
        assert store.product(1).stock == 18  # "free" and "waited" only


def test_try_checkout_batch_never_commits_a_durable_store_on_the_spot(tmp_path: Path) -> None:
    with Store(str(tmp_path / "store.db"), synchronous="FULL") as store:
        store.seed_demo()
        assert store.try_checkout_batch([CheckoutRequest({1: 1}, "t", "x")]) is None
        assert store.product(1).stock == 20
