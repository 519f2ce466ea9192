"""The store's products and orders, kept in SQLite.

# Strategy:
# - One SQLite connection per Store, in autocommit mode, guarded by a lock: every
#   change is an explicit ``BEGIN IMMEDIATE`` ... ``COMMIT`` that either commits
#   completely or is rolled back. ``BEGIN IMMEDIATE`` takes the database's write
#   lock at the start, so two processes (or two Store objects) on one file never
#   interleave a read-check-write; ``busy_timeout`` makes the second one wait.
#   Inside one process the lock serialises writers without SQLite's sleeping
#   busy handler, which would otherwise dominate checkout latency.
# - Stock is taken with ``UPDATE ... SET stock = stock - q WHERE stock >= q``: a
#   checkout that would oversell changes nothing and rolls back; the table also
#   has ``CHECK (stock >= 0)`` as the last line of defence.
# - One checkout is one transaction: stock of every line, the order and its lines
#   commit together or not at all. A process killed at any point leaves either the
#   whole order or none of it (SQLite's WAL; ``synchronous=NORMAL`` keeps committed
#   transactions across a process crash, ``FULL`` also across a power failure).
# - A checkout may carry a request id (UNIQUE in ``orders``): the same id again
#   returns the committed order, marked replayed, and charges nothing.
# - Invariant, per product: stocked (units ever put on the shelf) = stock + sold.
#   ``audit()`` checks it from the tables.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from storify.cart import check_quantity
from storify.errors import (
    DuplicateProduct,
    EmptyCart,
    InvalidValue,
    OrderNotFound,
    OutOfStock,
    RequestConflict,
    UnknownProduct,
)
from storify.money import check_price

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "DEMO_CATALOG",
    "AuditLine",
    "Order",
    "OrderLine",
    "Product",
    "Receipt",
    "Store",
    "check_name",
    "check_request_id",
    "product_number",
]

MAX_NAME = 40
MAX_REQUEST_ID = 128
MAX_STOCK = 1_000_000_000
_MAX_ID = 2**63  # SQLite integers are signed 64-bit

# (name, price in cents, stock) seeded by ``storify serve --demo`` into an empty store.
DEMO_CATALOG: tuple[tuple[str, int, int], ...] = (
    ("Mug", 850, 20),
    ("T-shirt", 1500, 10),
    ("Stickers", 300, 50),
    ("Notebook", 525, 15),
    ("Lamp", 4200, 1),
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id      INTEGER PRIMARY KEY,
    name    TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    price   INTEGER NOT NULL CHECK (price >= 0),
    stock   INTEGER NOT NULL CHECK (stock >= 0),
    stocked INTEGER NOT NULL CHECK (stocked >= stock),
    active  INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS orders (
    id         INTEGER PRIMARY KEY,
    request_id TEXT    UNIQUE,
    customer   TEXT    NOT NULL,
    total      INTEGER NOT NULL CHECK (total >= 0),
    created    REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS order_lines (
    order_id   INTEGER NOT NULL REFERENCES orders (id),
    product_id INTEGER NOT NULL REFERENCES products (id),
    name       TEXT    NOT NULL,
    price      INTEGER NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX IF NOT EXISTS order_lines_product ON order_lines (product_id);
"""


@dataclass(frozen=True)
class Product:
    """A product on sale: its number, name, price in cents and units on the shelf."""

    id: int
    name: str
    price: int
    stock: int


@dataclass(frozen=True)
class OrderLine:
    """One product of an order, at the name and price it was sold at."""

    product_id: int
    name: str
    price: int
    quantity: int

    @property
    def subtotal(self) -> int:
        """Price times quantity, in cents."""
        return self.price * self.quantity


@dataclass(frozen=True)
class Order:
    """A committed checkout: who bought what, for how much, when (Unix time)."""

    id: int
    request_id: str | None
    customer: str
    lines: tuple[OrderLine, ...]
    total: int
    created: float

    @property
    def units(self) -> int:
        """The number of units bought, all lines together."""
        return sum(line.quantity for line in self.lines)


@dataclass(frozen=True)
class Receipt:
    """What a checkout returns: the order, and whether it was committed by an earlier try."""

    order: Order
    replayed: bool = False


@dataclass(frozen=True)
class AuditLine:
    """One product's books: units ever stocked, units on the shelf and units sold."""

    product_id: int
    name: str
    stocked: int
    stock: int
    sold: int

    @property
    def balanced(self) -> bool:
        """True when stocked = stock + sold, as it must always be."""
        return self.stocked == self.stock + self.sold and self.stock >= 0


def check_name(name: object) -> str:
    """Return a product name stripped of outer spaces, or raise :class:`InvalidValue`.

    A name is 1 to 40 printable characters, not only digits and not starting
    with ``#`` (``3`` and ``#3`` mean product number 3).
    """
    if not isinstance(name, str):
        raise InvalidValue("name", "a product name is text")
    name = " ".join(name.split())
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise InvalidValue("name", f"a product name is 1 to {MAX_NAME} printable characters")
    if name.isdigit() or name.startswith("#"):
        raise InvalidValue(
            "name", "a product name cannot be a number or start with '#' (those mean product ids)"
        )
    return name


def check_request_id(request_id: object) -> str:
    """Return ``request_id`` if it is 1 to 128 printable characters, else raise InvalidValue."""
    if (
        not isinstance(request_id, str)
        or not 1 <= len(request_id) <= MAX_REQUEST_ID
        or not request_id.isprintable()
    ):
        raise InvalidValue(
            "request_id", f"a request id is 1 to {MAX_REQUEST_ID} printable characters"
        )
    return request_id


def product_number(ref: object) -> int | None:
    """Return the product number ``ref`` means (``3``, ``"3"``, ``"#3"``), or None for a name.

    None too for numbers no product can have (0, negative, 2**63 and above).
    """
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int):
        number = ref
    elif isinstance(ref, str):
        text = ref.strip()
        text = text[1:] if text.startswith("#") else text
        # ASCII digits only: "²".isdigit() is true but int() refuses it, and "٣" is not #3.
        if not (text.isascii() and text.isdigit()) or len(text) > 19:
            return None
        number = int(text)
    else:
        return None
    return number if 0 < number < _MAX_ID else None


def _check_stock(quantity: object, field: str = "stock") -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidValue(field, f"{field} is a whole number")
    if not 0 <= quantity <= MAX_STOCK:
        raise InvalidValue(field, f"{field} is 0 to {MAX_STOCK}")
    return quantity


_Synchronous = Literal["OFF", "NORMAL", "FULL"]


class Store:
    """The products and orders of one store, in the SQLite database at ``path``.

    Thread-safe: every method may be called from any thread. ``path=":memory:"``
    gives a private, throwaway store (for tests and REPL experiments).

    Args:
        path: the database file, created when missing.
        synchronous: SQLite's ``synchronous`` pragma. ``NORMAL`` (default) keeps every
            committed order across a killed process; ``FULL`` also across power loss.
        busy_timeout: seconds to wait for another process holding the write lock.
        clock: returns the time stamped on orders (Unix seconds).
    """

    def __init__(
        self,
        path: str = ":memory:",
        *,
        synchronous: _Synchronous = "NORMAL",
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous not in ("OFF", "NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'OFF', 'NORMAL' or 'FULL', not {synchronous!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, not {busy_timeout}")
        self.path = path
        self._clock = clock
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if path != ":memory:":
                mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"{path}: cannot use WAL mode (got {mode})")
            self._db.execute(f"PRAGMA synchronous = {synchronous}")
            self._db.execute("PRAGMA foreign_keys = ON")
            with self._write() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
        except BaseException:
            self._db.close()
            raise
        self._closed = False

    # -- life cycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; further calls raise ``sqlite3.ProgrammingError``. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Run the body in one write transaction: committed at the end, rolled back on error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Run the body in one read transaction, so it sees a single consistent snapshot."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")

    # -- products ---------------------------------------------------------------------------

    def products(self) -> list[Product]:
        """Return the products on sale, by number (sold-out ones included)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, price, stock FROM products WHERE active ORDER BY id"
            ).fetchall()
        return [Product(*row) for row in rows]

    def product(self, ref: str | int) -> Product:
        """Return the product on sale called ``ref`` (any case), or numbered ``ref``/``#ref``.

        Raises:
            UnknownProduct: none matches.
        """
        with self._lock:
            return self._find(self._db, ref)

    def _find(self, db: sqlite3.Connection, ref: str | int) -> Product:
        query = "SELECT id, name, price, stock FROM products WHERE active AND "
        if isinstance(ref, bool) or not isinstance(ref, (str, int)):
            raise InvalidValue("product", "a product is given by its name or its number")
        number = product_number(ref)
        if number is not None:
            row = db.execute(query + "id = ?", (number,)).fetchone()
        elif isinstance(ref, str) and not ref.strip().lstrip("#").isdigit():
            row = db.execute(query + "name = ?", (" ".join(ref.split()),)).fetchone()
        else:
            row = None  # a number too large to be a product's
        if row is None:
            raise UnknownProduct(str(ref))
        return Product(*row)

    def add_product(self, name: str, price: int, stock: int = 0) -> Product:
        """Put a new product on sale with ``stock`` units; returns it.

        A product removed earlier under the same name comes back with the new
        price and its remaining stock plus ``stock``.

        Raises:
            DuplicateProduct: a product by that name is on sale.
            InvalidValue: bad name, price or stock.
        """
        name = check_name(name)
        check_price(price)
        _check_stock(stock)
        with self._write() as db:
            row = db.execute("SELECT id, active FROM products WHERE name = ?", (name,)).fetchone()
            if row is not None and row[1]:
                raise DuplicateProduct(name)
            if row is not None:
                db.execute(
                    "UPDATE products SET name = ?, price = ?, stock = stock + ?,"
                    " stocked = stocked + ?, active = 1 WHERE id = ?",
                    (name, price, stock, stock, row[0]),
                )
                product_id = int(row[0])
            else:
                cursor = db.execute(
                    "INSERT INTO products (name, price, stock, stocked) VALUES (?, ?, ?, ?)",
                    (name, price, stock, stock),
                )
                product_id = int(cursor.lastrowid or 0)
            return self._find(db, product_id)

    def rename_product(self, ref: str | int, new_name: str) -> Product:
        """Give a product on sale a new name; returns it. Past orders keep the old name.

        Raises:
            UnknownProduct, DuplicateProduct, InvalidValue.
        """
        new_name = check_name(new_name)
        with self._write() as db:
            product = self._find(db, ref)
            clash = db.execute(
                "SELECT id FROM products WHERE name = ? AND id != ?", (new_name, product.id)
            ).fetchone()
            if clash is not None:
                raise DuplicateProduct(new_name)
            db.execute("UPDATE products SET name = ? WHERE id = ?", (new_name, product.id))
            return self._find(db, product.id)

    def set_price(self, ref: str | int, price: int) -> Product:
        """Change a product's price (in cents) for checkouts from now on; returns it."""
        check_price(price)
        with self._write() as db:
            product = self._find(db, ref)
            db.execute("UPDATE products SET price = ? WHERE id = ?", (price, product.id))
            return self._find(db, product.id)

    def restock(self, ref: str | int, quantity: int) -> Product:
        """Put ``quantity`` more units of a product on the shelf; returns it."""
        _check_stock(quantity, "quantity")
        if quantity < 1:
            raise InvalidValue("quantity", "restock at least 1 unit")
        with self._write() as db:
            product = self._find(db, ref)
            if product.stock + quantity > MAX_STOCK:
                raise InvalidValue("quantity", f"a shelf holds at most {MAX_STOCK} units")
            db.execute(
                "UPDATE products SET stock = stock + ?, stocked = stocked + ? WHERE id = ?",
                (quantity, quantity, product.id),
            )
            return self._find(db, product.id)

    def remove_product(self, ref: str | int) -> Product:
        """Take a product off sale (its orders stay); returns it as it was."""
        with self._write() as db:
            product = self._find(db, ref)
            db.execute("UPDATE products SET active = 0 WHERE id = ?", (product.id,))
            return product

    def seed_demo(self) -> bool:
        """Fill an empty store with ``DEMO_CATALOG``; returns False if it had products already."""
        with self._write() as db:
            if db.execute("SELECT COUNT(*) FROM products").fetchone()[0]:
                return False
            db.executemany(
                "INSERT INTO products (name, price, stock, stocked) VALUES (?, ?, ?, ?)",
                [(name, price, stock, stock) for name, price, stock in DEMO_CATALOG],
            )
            return True

    # -- orders -----------------------------------------------------------------------------

    def checkout(
        self,
        items: Mapping[int, int],
        *,
        customer: str,
        request_id: str | None = None,
    ) -> Receipt:
        """Buy ``items`` (``{product_id: quantity}``) in one transaction; returns the receipt.

        All lines are charged at the current prices, or nothing happens. With a
        ``request_id`` the checkout is idempotent: if that id already committed an
        order with the same items, that order is returned with ``replayed=True``.

        Raises:
            EmptyCart: no items.
            OutOfStock: a line asks for more than is on the shelf (nothing is bought).
            UnknownProduct: a product is no longer on sale (nothing is bought).
            RequestConflict: ``request_id`` committed an order with other items.
            InvalidValue: a bad quantity or request id.
        """
        if not items:
            raise EmptyCart()
        wanted = {int(product_id): check_quantity(q) for product_id, q in items.items()}
        for product_id in wanted:
            if product_number(product_id) is None:
                raise UnknownProduct(str(product_id))
        if request_id is not None:
            check_request_id(request_id)
        with self._write() as db:
            if request_id is not None:
                done = db.execute(
                    "SELECT id FROM orders WHERE request_id = ?", (request_id,)
                ).fetchone()
                if done is not None:
                    order = self._order(db, int(done[0]))
                    if {line.product_id: line.quantity for line in order.lines} != wanted:
                        raise RequestConflict(request_id, order.id)
                    return Receipt(order, replayed=True)
            lines: list[OrderLine] = []
            # Sorted by id, so concurrent writers in other processes touch rows in one order.
            for product_id, quantity in sorted(wanted.items()):
                taken = db.execute(
                    "UPDATE products SET stock = stock - ? WHERE id = ? AND active AND stock >= ?",
                    (quantity, product_id, quantity),
                ).rowcount
                product = self._find(db, product_id)  # raises UnknownProduct when off sale
                if taken != 1:
                    raise OutOfStock(product.name, requested=quantity, available=product.stock)
                lines.append(OrderLine(product.id, product.name, product.price, quantity))
            total = sum(line.subtotal for line in lines)
            created = self._clock()
            cursor = db.execute(
                "INSERT INTO orders (request_id, customer, total, created) VALUES (?, ?, ?, ?)",
                (request_id, customer, total, created),
            )
            order_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO order_lines (order_id, product_id, name, price, quantity)"
                " VALUES (?, ?, ?, ?, ?)",
                [(order_id, ln.product_id, ln.name, ln.price, ln.quantity) for ln in lines],
            )
            order = Order(order_id, request_id, customer, tuple(lines), total, created)
        return Receipt(order)

    def order(self, order_id: int) -> Order:
        """Return the committed order ``order_id``.

        Raises:
            OrderNotFound: there is none (the checkout did not commit).
        """
        with self._read() as db:
            return self._order(db, order_id)

    def order_for_request(self, request_id: str) -> Order:
        """Return the order committed by the checkout with ``request_id``.

        Raises:
            OrderNotFound: none committed (it is safe to retry that checkout).
        """
        with self._read() as db:
            row = db.execute("SELECT id FROM orders WHERE request_id = ?", (request_id,)).fetchone()
            if row is None:
                raise OrderNotFound(request_id=request_id)
            return self._order(db, int(row[0]))

    def _order(self, db: sqlite3.Connection, order_id: int) -> Order:
        if not 0 < order_id < _MAX_ID:
            raise OrderNotFound(order_id=order_id)
        row = db.execute(
            "SELECT id, request_id, customer, total, created FROM orders WHERE id = ?", (order_id,)
        ).fetchone()
        if row is None:
            raise OrderNotFound(order_id=order_id)
        lines = db.execute(
            "SELECT product_id, name, price, quantity FROM order_lines"
            " WHERE order_id = ? ORDER BY product_id",
            (order_id,),
        ).fetchall()
        return Order(
            row[0], row[1], row[2], tuple(OrderLine(*line) for line in lines), row[3], row[4]
        )

    def orders(self, limit: int | None = None) -> list[Order]:
        """Return committed orders, newest first; at most ``limit`` of them when given."""
        with self._read() as db:
            ids = db.execute(
                "SELECT id FROM orders ORDER BY id DESC LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
            return [self._order(db, int(row[0])) for row in ids]

    def totals(self) -> tuple[int, int]:
        """Return (number of orders, revenue in cents) over all committed orders."""
        with self._lock:
            count, revenue = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(total), 0) FROM orders"
            ).fetchone()
        return int(count), int(revenue)

    def audit(self) -> list[AuditLine]:
        """Return every product's books (removed ones too); each line must be ``balanced``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT p.id, p.name, p.stocked, p.stock, COALESCE(SUM(l.quantity), 0)"
                " FROM products p LEFT JOIN order_lines l ON l.product_id = p.id"
                " GROUP BY p.id ORDER BY p.id"
            ).fetchall()
        return [AuditLine(*row) for row in rows]
