from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from storify import store as store_module
from storify.errors import (
    DuplicateProduct,
    EmptyCart,
    InvalidValue,
    OrderNotFound,
    OutOfStock,
    RequestConflict,
    SchemaTooNew,
    UnknownProduct,
)
from storify.records import Order, Product, check_name, check_request_id, product_number
from storify.schema import SCHEMA_VERSION
from storify.store import DEMO_CATALOG, Store


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    with Store(database, clock=lambda: 1000.0) as store:
        yield store


def test_store_products_add_find_rename_price_restock_remove(store: Store) -> None:
    mug = store.add_product("Blue  mug", 850, 3)
    assert mug == Product(1, "Blue mug", 850, 3)
    assert store.product("blue MUG") == mug
    assert store.product(1) == store.product("#1") == store.product("1") == mug
    assert store.rename_product("blue mug", "Red mug").name == "Red mug"
    assert store.set_price("red mug", 900).price == 900
    assert store.restock(1, 7).stock == 10
    assert store.remove_product("Red mug") == Product(1, "Red mug", 900, 10)
    assert store.products() == []
    with pytest.raises(UnknownProduct) as info:
        store.product("red mug")
    assert info.value.facts() == {"product": "red mug"}
    # Back on sale under the same name: new price, old stock plus the new units.
    assert store.add_product("red mug", 1000, 2) == Product(1, "red mug", 1000, 12)


def test_store_rejects_duplicates_and_bad_values(store: Store) -> None:
    store.add_product("Mug", 100, 1)
    store.add_product("Cup", 100, 1)
    with pytest.raises(DuplicateProduct):
        store.add_product("MUG", 100)
    with pytest.raises(DuplicateProduct):
        store.rename_product("cup", "mug")
    with pytest.raises(InvalidValue):
        store.add_product("Pen", -5)
    with pytest.raises(InvalidValue):
        store.add_product("Pen", 5, -1)
    with pytest.raises(InvalidValue):
        store.restock("mug", 0)
    with pytest.raises(InvalidValue):
        store.product(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "   ", "42", "#mug", "x" * 41, "bell\x07", 7])
def test_check_name_rejects(name: object) -> None:
    with pytest.raises(InvalidValue) as info:
        check_name(name)
    assert info.value.field == "name"


@pytest.mark.parametrize("request_id", ["", "x" * 129, "a\nb", 12])
def test_check_request_id_rejects(request_id: object) -> None:
    with pytest.raises(InvalidValue):
        check_request_id(request_id)


def test_store_checkout_commits_order_and_takes_stock(store: Store) -> None:
    mug = store.add_product("Mug", 850, 5)
    pen = store.add_product("Pen", 120, 10)
    receipt = store.checkout({pen.id: 3, mug.id: 2}, customer="alice")
    order = receipt.order
    assert not receipt.replayed
    assert order.total == 2 * 850 + 3 * 120
    assert order.units == 5
    assert order.customer == "alice"
    assert order.created == 1000.0
    assert [(line.name, line.quantity, line.subtotal) for line in order.lines] == [
        ("Mug", 2, 1700),
        ("Pen", 3, 360),
    ]
    assert store.product("mug").stock == 3
    assert store.product("pen").stock == 7
    assert store.order(order.id) == order
    assert store.orders() == [order]
    assert store.totals() == (1, 2060)


def test_store_checkout_is_all_or_nothing(store: Store) -> None:
    mug = store.add_product("Mug", 850, 5)
    lamp = store.add_product("Lamp", 4200, 1)
    with pytest.raises(OutOfStock) as info:
        store.checkout({mug.id: 2, lamp.id: 2}, customer="bob")
    assert info.value.facts() == {"product": "Lamp", "requested": 2, "available": 1}
    assert str(info.value) == "only 1 Lamp left (2 requested)"
    assert store.product("mug").stock == 5  # the first line was rolled back
    assert store.orders() == []
    store.remove_product("lamp")
    with pytest.raises(UnknownProduct):
        store.checkout({mug.id: 1, lamp.id: 1}, customer="bob")
    assert store.product("mug").stock == 5
    with pytest.raises(EmptyCart):
        store.checkout({}, customer="bob")
    with pytest.raises(InvalidValue):
        store.checkout({mug.id: 0}, customer="bob")


def test_store_checkout_sold_out_message(store: Store) -> None:
    lamp = store.add_product("Lamp", 4200, 1)
    store.checkout({lamp.id: 1}, customer="a")
    with pytest.raises(OutOfStock, match="Lamp is sold out"):
        store.checkout({lamp.id: 1}, customer="b")


def test_store_checkout_with_request_id_is_idempotent(store: Store) -> None:
    mug = store.add_product("Mug", 850, 5)
    first = store.checkout({mug.id: 2}, customer="c", request_id="r-1")
    again = store.checkout({mug.id: 2}, customer="c", request_id="r-1")
    assert again.replayed and again.order == first.order
    assert store.product("mug").stock == 3
    assert store.totals() == (1, 1700)
    assert store.order_for_request("r-1") == first.order
    with pytest.raises(RequestConflict) as info:
        store.checkout({mug.id: 1}, customer="c", request_id="r-1")
    assert info.value.facts() == {"request_id": "r-1", "order_id": first.order.id}
    with pytest.raises(OrderNotFound):
        store.order_for_request("r-2")
    with pytest.raises(OrderNotFound):
        store.order(99)


def test_store_audit_balances_after_sales_restock_and_removal(store: Store) -> None:
    mug = store.add_product("Mug", 850, 5)
    store.checkout({mug.id: 4}, customer="a")
    store.restock("mug", 10)
    store.remove_product("mug")
    [line] = store.audit()
    assert (line.stocked, line.stock, line.sold) == (15, 11, 4)
    assert line.balanced


def test_store_seed_demo_only_when_empty(store: Store) -> None:
    assert store.seed_demo() is True
    assert [(p.name, p.price, p.stock) for p in store.products()] == list(DEMO_CATALOG)
    assert store.seed_demo() is False


def test_store_reopens_with_committed_orders(database: str) -> None:
    with Store(database) as store:
        mug = store.add_product("Mug", 850, 5)
        order = store.checkout({mug.id: 2}, customer="a", request_id="x").order
    with Store(database) as store:
        assert store.orders() == [order]
        assert store.product("mug").stock == 3
        assert store.schema_version() == SCHEMA_VERSION
    if store.kind == "sqlite":
        mode = sqlite3.connect(database)
        try:
            assert mode.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            mode.close()


def test_store_refuses_a_newer_schema(database: str) -> None:
    with Store(database) as store:
        store.add_product("Mug", 850, 5)
        store._db.run(  # as a newer storify would leave it
            lambda db: db.execute("UPDATE storify_schema SET version = ?", (SCHEMA_VERSION + 1,)),
            write=True,
        )
    with pytest.raises(SchemaTooNew) as info:
        Store(database)
    assert info.value.facts() == {"found": SCHEMA_VERSION + 1, "supported": SCHEMA_VERSION}
    assert "upgrade storify" in str(info.value)
    assert "\n" not in str(info.value)


def test_store_migrates_an_older_schema_once(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(database) as store:
        store.add_product("Mug", 850, 5)
    # A storify whose version 2 adds a column: opening the version 1 database migrates it.
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    step = ("ALTER TABLE products ADD COLUMN colour TEXT",)
    monkeypatch.setitem(store_module.MIGRATIONS["sqlite"], SCHEMA_VERSION + 1, step)
    monkeypatch.setitem(store_module.MIGRATIONS["postgresql"], SCHEMA_VERSION + 1, step)
    for _ in range(2):  # the second start finds version 2 and changes nothing
        with Store(database) as store:
            assert store.schema_version() == SCHEMA_VERSION + 1
            assert store.product("mug").stock == 5
            colours = store._db.run(
                lambda db: db.execute("SELECT colour FROM products").fetchall(), write=False
            )
            assert colours == [(None,)]


def test_store_marks_a_sqlite_file_from_before_the_version_table(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    try:  # the tables as storify made them before schema versions
        old.executescript(
            "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE"
            " NOCASE, price INTEGER NOT NULL, stock INTEGER NOT NULL, stocked INTEGER NOT NULL,"
            " active INTEGER NOT NULL DEFAULT 1);"
            "INSERT INTO products (name, price, stock, stocked) VALUES ('Mug', 850, 4, 5);"
        )
    finally:
        old.close()
    with Store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.product("mug") == Product(1, "Mug", 850, 4)
        assert store.orders() == []


def test_store_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        Store(synchronous="SOMETIMES")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="busy_timeout"):
        Store(busy_timeout=-1)
    with pytest.raises(ValueError, match="pool_size"):
        Store(pool_size=0)
    with pytest.raises(ValueError, match="unsupported database URL scheme 'mysql'"):
        Store("mysql://shop@db/store")
    with pytest.raises(ValueError, match="bad PostgreSQL URL"):
        Store("postgresql://shop:secret@db:notaport/store")


def test_store_opens_sqlite_urls(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path}/store.db") as store:
        store.add_product("Mug", 850, 5)
        assert store.database == f"{tmp_path}/store.db"
    with Store(str(tmp_path / "store.db")) as store:
        assert store.product("mug").stock == 5
    with Store("sqlite://") as store:
        assert store.kind == "sqlite" and store.database == ":memory:"


def test_store_close_is_idempotent(database: str) -> None:
    store = Store(database)
    store.close()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.products()


def _race(stores: list[Store], product_id: int, customers: int) -> tuple[list[Order], int]:
    """Let ``customers`` threads try to buy one unit each at the same moment."""
    start = threading.Barrier(customers)
    bought: list[Order] = []
    refused: list[OutOfStock] = []
    guard = threading.Lock()

    def customer(number: int) -> None:
        store = stores[number % len(stores)]
        start.wait()
        try:
            order = store.checkout({product_id: 1}, customer=f"c{number}").order
        except OutOfStock as error:
            with guard:
                refused.append(error)
        else:
            with guard:
                bought.append(order)

    threads = [threading.Thread(target=customer, args=(n,)) for n in range(customers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return bought, len(refused)


def test_store_fifty_customers_race_for_ten_units(database: str) -> None:
    with Store(database) as store:
        lamp = store.add_product("Lamp", 4200, 10)
        bought, refused = _race([store], lamp.id, 50)
        assert len(bought) == 10
        assert refused == 40
        assert len({order.id for order in bought}) == 10
        assert store.product("lamp").stock == 0
        assert all(line.balanced for line in store.audit())


def test_store_race_across_connections_never_oversells(database: str) -> None:
    # Five Store objects, as if five processes shared the database: only the
    # transactions and the conditional UPDATE keep them apart.
    stores = [Store(database, busy_timeout=30) for _ in range(5)]
    try:
        lamp = stores[0].add_product("Lamp", 4200, 10)
        bought, refused = _race(stores, lamp.id, 50)
        assert (len(bought), refused) == (10, 40)
        assert stores[3].product("lamp").stock == 0
        assert stores[4].totals() == (10, 42000)
    finally:
        for store in stores:
            store.close()


_BUYER = """
import sys
from storify.store import Store

store = Store(sys.argv[1])
mug = store.product("Mug").id
number = int(sys.argv[2])
while True:
    number += 1
    order = store.checkout({mug: 1 + number % 3}, customer="buyer", request_id=f"r{number}").order
    print(order.id, order.request_id, flush=True)
"""


def test_store_survives_kill_minus_nine_mid_checkout(database: str) -> None:
    path = database
    with Store(path) as store:
        store.add_product("Mug", 850, 1_000_000)
    acknowledged: dict[int, str] = {}
    for round_number in range(3):
        # Each round a buyer process commits checkouts as fast as it can, printing each
        # order after its COMMIT, and is killed with SIGKILL (no clean-up of any kind).
        buyer = subprocess.Popen(
            [sys.executable, "-c", _BUYER, path, str(round_number * 1_000_000)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert buyer.stdout is not None
        with buyer.stdout:
            lines = [buyer.stdout.readline() for _ in range(100 + 77 * round_number)]
            buyer.send_signal(signal.SIGKILL)
            assert buyer.wait(timeout=30) == -signal.SIGKILL
            lines += buyer.stdout.readlines()
        for line in lines:
            if line.endswith("\n"):
                order_id, request_id = line.split()
                acknowledged[int(order_id)] = request_id
        with Store(path) as store:
            orders = {order.id: order for order in store.orders()}
            [books] = store.audit()
        # Every order the buyer saw committed is there; at most one more per kill (committed,
        # not yet printed); none is partial; stock and sales still balance.
        for order_id, request_id in acknowledged.items():
            assert orders[order_id].request_id == request_id
        assert len(acknowledged) <= len(orders) <= len(acknowledged) + round_number + 1
        for order in orders.values():
            assert order.lines and order.total == sum(line.subtotal for line in order.lines)
        assert books.balanced
        assert books.sold == sum(order.units for order in orders.values())


@pytest.mark.parametrize(
    ("ref", "number"),
    [
        (3, 3),
        ("3", 3),
        ("#3", 3),
        (" 12 ", 12),
        ("mug", None),
        ("#mug", None),
        (0, None),
        (-1, None),
        ("0", None),
        (2**63, None),
        ("9" * 20, None),
        (True, None),
        (1.0, None),
        ("²", None),  # str.isdigit() is true, int() refuses it
        ("#①", None),
        ("٣", None),  # int() reads 3, but it is no product number
        ("３", None),
    ],
)
def test_product_number(ref: object, number: int | None) -> None:
    assert product_number(ref) == number


def test_store_refuses_impossible_product_numbers(store: Store) -> None:
    store.add_product("Mug", 100, 5)
    for ref in (0, -4, 2**63, "0", "9" * 30):
        with pytest.raises(UnknownProduct):
            store.product(ref)
    with pytest.raises(UnknownProduct):
        store.checkout({2**63: 1}, customer="c")
    with pytest.raises(UnknownProduct):
        store.checkout({1: 1, 99: 1}, customer="c")
    assert store.product("mug").stock == 5
