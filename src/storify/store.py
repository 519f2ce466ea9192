"""The store's products and orders, kept in SQLite (the default) or PostgreSQL.

# Strategy:
# - Every query is written once, here; storify.database runs the transactions and
#   holds the little that differs (the schema's types, case-insensitive names).
#   Every change is one transaction that either commits completely or is rolled
#   back. On SQLite it is ``BEGIN IMMEDIATE`` (the file's write lock first, so two
#   processes never interleave a read-check-write); on PostgreSQL it is ``BEGIN``
#   at READ COMMITTED, where the conditional UPDATE below waits for a row another
#   transaction holds and then re-checks its WHERE against the committed row.
# - Stock is taken with ``UPDATE ... SET stock = stock - q WHERE stock >= q``: a
#   checkout that would oversell changes nothing and rolls back; the table also
#   has ``CHECK (stock >= 0)`` as the last line of defence. Rows are taken in
#   product-id order, so two checkouts never wait on each other in a circle.
# - One checkout is one transaction: stock of every line, the order and its lines
#   commit together or not at all. A process killed at any point leaves either the
#   whole order or none of it (SQLite's WAL, ``synchronous=NORMAL`` keeps committed
#   transactions across a process crash, ``FULL`` also across a power failure;
#   PostgreSQL rolls back the transactions of a connection that died).
# - A checkout may carry a request id (UNIQUE in ``orders``): the same id again
#   returns the committed order, marked replayed, and charges nothing. Two servers
#   committing the same id at once: the second insert waits for the first, does
#   nothing, and the checkout is replayed.
# - The schema's version is in ``storify_schema``: created or migrated at start, in
#   one transaction (on PostgreSQL under an advisory lock, so servers starting
#   together do it once); a newer version than this code knows refuses to start.
# - Invariant, per product: stocked (units ever put on the shelf) = stock + sold.
#   ``audit()`` checks it from the tables.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from storify.cart import check_quantity
from storify.database import Connection, Synchronous, WouldWait, open_database
from storify.errors import (
    DuplicateProduct,
    EmptyCart,
    InvalidValue,
    OrderNotFound,
    OutOfStock,
    RequestConflict,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
    UnknownProduct,
)
from storify.money import check_price
from storify.records import (
    MAX_ID,
    AuditLine,
    CheckoutRequest,
    Order,
    OrderLine,
    Product,
    Receipt,
    check_name,
    check_request_id,
    product_number,
)
from storify.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION

if TYPE_CHECKING:
    from typing import Self

__all__ = ["DEMO_CATALOG", "MAX_BATCH", "Store"]

MAX_STOCK = 1_000_000_000
# Checkouts committed in one transaction at most: enough to take a burst from every
# connection at once, few enough that a batch stays a few milliseconds long.
MAX_BATCH = 256
_RACE_RETRIES = 3  # batches run again after another server committed one of their request ids
_T = TypeVar("_T")

# (name, price in cents, stock) seeded by ``storify serve --demo`` into an empty store.
DEMO_CATALOG: tuple[tuple[str, int, int], ...] = (
    ("Mug", 850, 20),
    ("T-shirt", 1500, 10),
    ("Stickers", 300, 50),
    ("Notebook", 525, 15),
    ("Lamp", 4200, 1),
)


def _check_stock(quantity: object, field: str = "stock") -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidValue(field, f"{field} is a whole number")
    if not 0 <= quantity <= MAX_STOCK:
        raise InvalidValue(field, f"{field} is 0 to {MAX_STOCK}")
    return quantity


def _validated(request: CheckoutRequest) -> dict[int, int]:
    """Return the request's items as ``{product_id: quantity}``, or raise its StoreError."""
    if not request.items:
        raise EmptyCart()
    wanted = {int(product_id): check_quantity(q) for product_id, q in request.items.items()}
    for product_id in wanted:
        if product_number(product_id) is None:
            raise UnknownProduct(str(product_id))
    if request.request_id is not None:
        check_request_id(request.request_id)
    return wanted


def _marks(values: Sequence[object]) -> str:
    """``?, ?, ?``: one placeholder per value, for ``IN (...)``."""
    return ", ".join("?" * len(values))


def _take(
    shelf: Mapping[int, tuple[str, int]], stock: Mapping[int, int], wanted: Mapping[int, int]
) -> tuple[OrderLine, ...]:
    """Return the order lines for ``wanted``, or raise why it cannot be bought.

    ``shelf`` maps a product on sale to its name and price, ``stock`` to its units left.
    """
    lines = []
    for product_id, quantity in sorted(wanted.items()):
        found = shelf.get(product_id)
        if found is None:
            raise UnknownProduct(str(product_id))
        if stock[product_id] < quantity:
            raise OutOfStock(found[0], requested=quantity, available=stock[product_id])
        lines.append(OrderLine(product_id, found[0], found[1], quantity))
    return tuple(lines)


class _RequestRace(Exception):
    """PostgreSQL: another server committed these request ids while this batch ran."""


def _replay(order: Order, wanted: Mapping[int, int]) -> Receipt | StoreError:
    """The answer to a checkout whose request id committed ``order`` already."""
    if {line.product_id: line.quantity for line in order.lines} != wanted:
        assert order.request_id is not None
        return RequestConflict(order.request_id, order.id)
    return Receipt(order, replayed=True)


class _Waiter:
    """One thread's checkout in the group commit queue."""

    __slots__ = ("done", "event", "lead", "outcome", "request")

    def __init__(self, request: CheckoutRequest) -> None:
        self.request = request
        self.event = threading.Event()
        self.lead = False  # woken to lead the next batch, not because it is done
        self.done = False
        self.outcome: Receipt | BaseException | None = None


class _GroupCommit:
    """Group commit for threads: whoever finds no batch running commits the queue.

    # Rules:
    # - A thread queues its checkout; if no batch is running it leads: it takes up
    #   to ``max_batch`` queued checkouts, commits them in one transaction, hands
    #   each thread its outcome, and goes on until its own checkout is done.
    # - Then it passes the lead to the oldest checkout still queued (or leaves none
    #   running), so no thread commits for others for ever.
    # - An exception of the whole batch (StoreUnavailable, a bug) is every member's.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[CheckoutRequest]], list[Receipt | StoreError]],
        max_batch: int,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self._running = False

    def submit(self, request: CheckoutRequest) -> Receipt | StoreError:
        waiter = _Waiter(request)
        with self._lock:
            self._queue.append(waiter)
            lead = not self._running
            self._running = True
        if not lead:
            waiter.event.wait()
        if not waiter.done:
            try:
                while not waiter.done:
                    with self._lock:
                        count = min(self._max_batch, len(self._queue))
                        batch = [self._queue.popleft() for _ in range(count)]
                    self._run(batch, waiter)
            finally:
                with self._lock:
                    if self._queue:
                        self._queue[0].lead = True
                        self._queue[0].event.set()
                    else:
                        self._running = False
        if isinstance(waiter.outcome, (Receipt, StoreError)):
            return waiter.outcome
        assert waiter.outcome is not None
        raise waiter.outcome

    def _run(self, batch: list[_Waiter], leader: _Waiter) -> None:
        outcomes: Sequence[Receipt | BaseException]
        try:
            outcomes = self._commit([waiter.request for waiter in batch])
        except BaseException as error:  # noqa: BLE001 - every member of the batch gets it
            outcomes = [error] * len(batch)
        for waiter, outcome in zip(batch, outcomes, strict=True):
            waiter.outcome = outcome
            waiter.done = True
            if waiter is not leader:
                waiter.event.set()


class Store:
    """The products and orders of one store, in SQLite (default) or PostgreSQL.

    Thread-safe: every method may be called from any thread. Several Store objects,
    in several processes or on several machines, may share one database (a SQLite file
    on one machine, or a PostgreSQL database): the guarantees hold across them.

    Args:
        database: a SQLite file path (created when missing), ``sqlite:///PATH``,
            ``":memory:"`` (a private, throwaway store) or a PostgreSQL URL
            ``postgresql://user@host/dbname`` (needs the ``postgres`` extra).
        synchronous: SQLite's ``synchronous`` pragma. ``NORMAL`` (default) keeps every
            committed order across a killed process; ``FULL`` also across power loss.
            (PostgreSQL's durability is the server's ``synchronous_commit``.)
        busy_timeout: seconds to wait for another writer's lock (and, on PostgreSQL, for
            a pooled connection and to connect) before :class:`StoreUnavailable`.
        pool_size: PostgreSQL connections this Store opens at most.
        clock: returns the time stamped on orders (Unix seconds).
        max_batch: checkouts committed together at most (group commit, see
            :meth:`checkout_batch`); 1 commits each checkout alone.

    Raises:
        ValueError: a bad option, or a database URL that cannot be used.
        ImportError: a PostgreSQL URL without psycopg installed.
        StoreUnavailable: the database cannot be opened or reached.
        SchemaTooNew: the database was made by a newer storify.
    """

    def __init__(
        self,
        database: str = ":memory:",
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout: float = 5.0,
        pool_size: int = 10,
        clock: Callable[[], float] = time.time,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a whole number >= 1, not {max_batch!r}")
        self.max_batch = max_batch
        self._group = _GroupCommit(self.checkout_batch, max_batch)
        self._db = open_database(
            database, synchronous=synchronous, busy_timeout=busy_timeout, pool_size=pool_size
        )
        self.database = self._db.description
        self._clock = clock
        try:
            self._db.run(self._set_up_schema, write=True)
        except BaseException:
            self._db.close()
            raise

    @property
    def kind(self) -> str:
        """The database: ``"sqlite"`` or ``"postgresql"``."""
        return self._db.kind

    @property
    def remote(self) -> bool:
        """True when each call waits on a network round trip (run it off an event loop)."""
        return self._db.remote

    def _set_up_schema(self, db: Connection) -> None:
        """Create the tables, or migrate them to SCHEMA_VERSION; refuse a newer schema."""
        if self._db.lock_schema:
            db.execute(self._db.lock_schema)
        db.execute("CREATE TABLE IF NOT EXISTS storify_schema (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM storify_schema").fetchone()
        version = None if row is None or row[0] is None else int(row[0])
        if version is not None and version > SCHEMA_VERSION:
            raise SchemaTooNew(self.database, found=version, supported=SCHEMA_VERSION)
        if version is None:
            # A new database, or a SQLite file from before the version table (version 1).
            for statement in SCHEMA[self._db.kind]:
                db.execute(statement)
            db.execute("INSERT INTO storify_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            return
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[self._db.kind][step]:
                db.execute(statement)
        if version != SCHEMA_VERSION:
            db.execute("UPDATE storify_schema SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        """Return the schema version recorded in the database."""
        row = self._db.run(
            lambda db: db.execute("SELECT MAX(version) FROM storify_schema").fetchone(),
            write=False,
        )
        return int(row[0])

    # -- life cycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; further calls raise RuntimeError. Idempotent."""
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

    def _write(self, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` in one write transaction: committed at the end, rolled back on error."""
        return self._db.run(work, write=True)

    def _read(self, work: Callable[[Connection], _T], *, snapshot: bool = False) -> _T:
        """Run ``work`` reading; ``snapshot``: several statements see one consistent state."""
        return self._db.run(work, write=False, snapshot=snapshot)

    # -- products ---------------------------------------------------------------------------

    def products(self) -> list[Product]:
        """Return the products on sale, by number (sold-out ones included)."""
        rows = self._read(
            lambda db: db.execute(
                "SELECT id, name, price, stock FROM products WHERE active ORDER BY id"
            ).fetchall()
        )
        return [Product(*row) for row in rows]

    def product(self, ref: str | int) -> Product:
        """Return the product on sale called ``ref`` (any case), or numbered ``ref``/``#ref``.

        Raises:
            UnknownProduct: none matches.
        """
        if isinstance(ref, bool) or not isinstance(ref, (str, int)):
            raise InvalidValue("product", "a product is given by its name or its number")
        return self._read(lambda db: self._find(db, ref))

    def _find(self, db: Connection, ref: str | int) -> Product:
        query = "SELECT id, name, price, stock FROM products WHERE active AND "
        if isinstance(ref, bool) or not isinstance(ref, (str, int)):
            raise InvalidValue("product", "a product is given by its name or its number")
        number = product_number(ref)
        if number is not None:
            row = db.execute(query + "id = ?", (number,)).fetchone()
        elif isinstance(ref, str) and not ref.strip().lstrip("#").isdigit():
            row = db.execute(query + self._db.name_equals, (" ".join(ref.split()),)).fetchone()
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

        def work(db: Connection) -> Product:
            row = db.execute(
                "SELECT id, active FROM products WHERE " + self._db.name_equals, (name,)
            ).fetchone()
            if row is not None and row[1]:
                raise DuplicateProduct(name)
            if row is not None:
                db.execute(
                    "UPDATE products SET name = ?, price = ?, stock = stock + ?,"
                    " stocked = stocked + ?, active = TRUE WHERE id = ?",
                    (name, price, stock, stock, row[0]),
                )
                product_id = int(row[0])
            else:
                # Another server may add the same name at the same moment: the unique
                # index decides, and the loser's insert changes nothing.
                inserted = db.execute(
                    "INSERT INTO products (name, price, stock, stocked) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING RETURNING id",
                    (name, price, stock, stock),
                ).fetchone()
                if inserted is None:
                    raise DuplicateProduct(name)
                product_id = int(inserted[0])
            return self._find(db, product_id)

        return self._write(work)

    def rename_product(self, ref: str | int, new_name: str) -> Product:
        """Give a product on sale a new name; returns it. Past orders keep the old name.

        Raises:
            UnknownProduct, DuplicateProduct, InvalidValue.
        """
        new_name = check_name(new_name)

        def work(db: Connection) -> Product:
            product = self._find(db, ref)
            clash = db.execute(
                f"SELECT id FROM products WHERE {self._db.name_equals} AND id != ?",
                (new_name, product.id),
            ).fetchone()
            if clash is not None:
                raise DuplicateProduct(new_name)
            db.execute("UPDATE products SET name = ? WHERE id = ?", (new_name, product.id))
            return self._find(db, product.id)

        try:
            return self._write(work)
        except self._db.integrity_errors:
            raise DuplicateProduct(new_name) from None  # another server took the name first

    def set_price(self, ref: str | int, price: int) -> Product:
        """Change a product's price (in cents) for checkouts from now on; returns it."""
        check_price(price)

        def work(db: Connection) -> Product:
            product = self._find(db, ref)
            db.execute("UPDATE products SET price = ? WHERE id = ?", (price, product.id))
            return self._find(db, product.id)

        return self._write(work)

    def restock(self, ref: str | int, quantity: int) -> Product:
        """Put ``quantity`` more units of a product on the shelf; returns it."""
        _check_stock(quantity, "quantity")
        if quantity < 1:
            raise InvalidValue("quantity", "restock at least 1 unit")

        def work(db: Connection) -> Product:
            product = self._find(db, ref)
            # Conditional, so two servers restocking at once cannot pass the limit together.
            changed = db.execute(
                "UPDATE products SET stock = stock + ?, stocked = stocked + ?"
                " WHERE id = ? AND stock <= ?",
                (quantity, quantity, product.id, MAX_STOCK - quantity),
            ).rowcount
            if changed != 1:
                raise InvalidValue("quantity", f"a shelf holds at most {MAX_STOCK} units")
            return self._find(db, product.id)

        return self._write(work)

    def remove_product(self, ref: str | int) -> Product:
        """Take a product off sale (its orders stay); returns it as it was."""

        def work(db: Connection) -> Product:
            product = self._find(db, ref)
            db.execute("UPDATE products SET active = FALSE WHERE id = ?", (product.id,))
            return product

        return self._write(work)

    def seed_demo(self) -> bool:
        """Fill an empty store with ``DEMO_CATALOG``; returns False if it had products already."""

        def work(db: Connection) -> bool:
            if db.execute("SELECT COUNT(*) FROM products").fetchone()[0]:
                return False
            db.executemany(
                "INSERT INTO products (name, price, stock, stocked) VALUES (?, ?, ?, ?)",
                [(name, price, stock, stock) for name, price, stock in DEMO_CATALOG],
            )
            return True

        try:
            return self._write(work)
        except self._db.integrity_errors:
            return False  # another server seeded the same empty store first

    # -- orders -----------------------------------------------------------------------------

    def checkout(
        self,
        items: Mapping[int, int],
        *,
        customer: str,
        request_id: str | None = None,
    ) -> Receipt:
        """Buy ``items`` (``{product_id: quantity}``) all or nothing; returns the receipt.

        All lines are charged at the current prices, or nothing happens. With a
        ``request_id`` the checkout is idempotent: if that id already committed an
        order with the same items, that order is returned with ``replayed=True``.
        Checkouts made at the same moment by other threads are committed together
        (group commit, see :meth:`checkout_batch`); this returns once its own
        order is committed.

        Raises:
            EmptyCart: no items.
            OutOfStock: a line asks for more than is on the shelf (nothing is bought).
            UnknownProduct: a product is no longer on sale (nothing is bought).
            RequestConflict: ``request_id`` committed an order with other items.
            InvalidValue: a bad quantity or request id.
            StoreUnavailable: the database cannot answer; retry with the same request id.
        """
        request = CheckoutRequest(dict(items), customer, request_id)
        _validated(request)  # a bad argument fails here, in the caller's thread
        outcome = self._group.submit(request)
        if isinstance(outcome, Receipt):
            return outcome
        raise outcome

    def checkout_batch(self, requests: Sequence[CheckoutRequest]) -> list[Receipt | StoreError]:
        """Commit several checkouts in one transaction (group commit); returns each outcome.

        Each checkout is all or nothing on its own and sees the ones before it in the
        list: one that cannot be bought (out of stock, off sale, a conflicting request
        id, a bad value) gets its error in its slot and changes nothing, and the others
        commit. The transaction commits once (one fsync on SQLite ``FULL`` or on
        PostgreSQL), so every Receipt returned is as durable as a lone checkout's.

        Raises:
            StoreUnavailable: the database could not answer: none of them committed (or,
                when the connection broke during the commit, it is unknown: retry the
                checkouts with their request ids).
        """
        outcomes = self._batch(requests, wait=True)
        assert outcomes is not None
        return outcomes

    def try_checkout_batch(
        self, requests: Sequence[CheckoutRequest]
    ) -> list[Receipt | StoreError] | None:
        """:meth:`checkout_batch` now if that needs no waiting, else None (nothing done).

        For an event loop: it waits for no lock another thread or process holds, no
        fsync (SQLite ``synchronous=FULL``) and no network (PostgreSQL always answers
        None); run :meth:`checkout_batch` in a thread instead.

        Raises:
            StoreUnavailable: as :meth:`checkout_batch`.
        """
        return self._batch(requests, wait=False)

    def _batch(
        self, requests: Sequence[CheckoutRequest], *, wait: bool
    ) -> list[Receipt | StoreError] | None:
        outcomes: list[Receipt | StoreError | None] = [None] * len(requests)
        valid: list[tuple[int, dict[int, int], CheckoutRequest]] = []
        for index, request in enumerate(requests):
            try:
                valid.append((index, _validated(request), request))
            except StoreError as error:
                outcomes[index] = error
        if valid:
            for attempt in range(_RACE_RETRIES + 1):
                try:
                    if wait:
                        committed = self._write(lambda db: self._commit_checkouts(db, valid))
                    else:
                        try:
                            committed = self._db.write_now(
                                lambda db: self._commit_checkouts(db, valid)
                            )
                        except WouldWait:
                            return None
                    break
                except _RequestRace as race:
                    # Rolled back; run again, and those request ids are replays now.
                    if attempt == _RACE_RETRIES:
                        raise StoreUnavailable(
                            f"request ids {race.args[0]!r} kept being committed by another"
                            " server while this batch ran"
                        ) from None
            for (index, _, _), outcome in zip(valid, committed, strict=True):
                outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def _commit_checkouts(
        self, db: Connection, valid: Sequence[tuple[int, dict[int, int], CheckoutRequest]]
    ) -> list[Receipt | StoreError]:
        """Decide and write a batch of checkouts inside one write transaction.

        The shelf of every product the batch touches is read first, under the write
        lock (SQLite) or row locks taken in id order (PostgreSQL, ``FOR UPDATE``), and
        so are the orders of the batch's request ids; each checkout is then decided in
        Python against the stock the ones before it left, and the orders, stock and
        lines of those that can be bought are written with one statement each (run once
        per row: ``executemany``, pipelined on PostgreSQL).

        Raises:
            _RequestRace: PostgreSQL: another server committed one of the request ids
                meanwhile (our insert of it did nothing); the caller runs the batch again.
        """
        product_ids = sorted({product_id for _, wanted, _ in valid for product_id in wanted})
        rows = db.execute(
            f"SELECT id, name, price, stock FROM products WHERE active AND id IN"
            f" ({_marks(product_ids)}) ORDER BY id{self._db.lock_rows}",
            product_ids,
        ).fetchall()
        shelf = {int(i): (name, int(price)) for i, name, price, _ in rows}
        stock = {int(i): int(left) for i, _, _, left in rows}
        request_ids = sorted({r.request_id for _, _, r in valid if r.request_id is not None})
        known: dict[str, Order] = {}
        if request_ids:
            done = db.execute(
                f"SELECT request_id, id FROM orders WHERE request_id IN ({_marks(request_ids)})",
                request_ids,
            ).fetchall()
            for request_id, order_id in done:
                known[request_id] = self._order(db, int(order_id))
        # Decide: each slot is a StoreError, a replay of an order committed before, an
        # index into ``new`` (bought now), or the request id bought earlier in the batch.
        decided: list[StoreError | Receipt | int | str] = []
        new: list[tuple[CheckoutRequest, dict[int, int], tuple[OrderLine, ...], int, float]] = []
        buying: dict[str, int] = {}  # request id -> index into new
        taken: dict[int, int] = {}
        for _, wanted, request in valid:
            request_id = request.request_id
            if request_id is not None:
                if request_id in known:
                    decided.append(_replay(known[request_id], wanted))
                    continue
                if request_id in buying:
                    decided.append(request_id)
                    continue
            try:
                lines = _take(shelf, stock, wanted)
            except StoreError as error:
                decided.append(error)
                continue
            for product_id, quantity in wanted.items():
                stock[product_id] -= quantity
                taken[product_id] = taken.get(product_id, 0) + quantity
            if request_id is not None:
                buying[request_id] = len(new)
            decided.append(len(new))
            total = sum(line.price * line.quantity for line in lines)
            new.append((request, wanted, lines, total, self._clock()))
        order_ids = self._insert_orders(db, new)
        for product_id, quantity in sorted(taken.items()):
            # Conditional all the same: the CHECK and this WHERE are the last line of defence.
            changed = db.execute(
                "UPDATE products SET stock = stock - ? WHERE id = ? AND stock >= ?",
                (quantity, product_id, quantity),
            ).rowcount
            if changed != 1:
                raise RuntimeError(f"product {product_id}'s stock changed under its lock")
        if new:
            db.executemany(
                "INSERT INTO order_lines (order_id, product_id, name, price, quantity)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (order_id, line.product_id, line.name, line.price, line.quantity)
                    for order_id, (_, _, lines, _, _) in zip(order_ids, new, strict=True)
                    for line in lines
                ],
            )
        orders = [
            Order(order_id, request.request_id, request.customer, lines, total, created)
            for order_id, (request, _, lines, total, created) in zip(order_ids, new, strict=True)
        ]
        results: list[Receipt | StoreError] = []
        for slot, (_, wanted, _) in zip(decided, valid, strict=True):
            if isinstance(slot, int):
                results.append(Receipt(orders[slot]))
            elif isinstance(slot, str):
                results.append(_replay(orders[buying[slot]], wanted))
            else:
                results.append(slot)
        return results

    def _insert_orders(
        self,
        db: Connection,
        new: Sequence[tuple[CheckoutRequest, dict[int, int], tuple[OrderLine, ...], int, float]],
    ) -> list[int]:
        """Insert the orders of ``new``; returns their ids, in order."""
        if not new:
            return []
        if self._db.serial_writes:
            # SQLite: the write lock covers the whole file, so the new orders take the ids
            # after the largest, as INTEGER PRIMARY KEY would give them one by one, and no
            # request id can have been committed since the batch looked them up.
            row = db.execute("SELECT COALESCE(MAX(id), 0) FROM orders").fetchone()
            first = int(row[0]) + 1
            db.executemany(
                "INSERT INTO orders (id, request_id, customer, total, created)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (first + n, request.request_id, request.customer, total, created)
                    for n, (request, _, _, total, created) in enumerate(new)
                ],
            )
            return list(range(first, first + len(new)))
        # PostgreSQL: the same request id committing at this moment on another server
        # makes its insert wait for that transaction, then do nothing.
        returned = self._db.run_each(
            db,
            "INSERT INTO orders (request_id, customer, total, created) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING RETURNING id",
            [
                (request.request_id, request.customer, total, created)
                for request, _, _, total, created in new
            ],
        )
        raced = [new[n][0].request_id for n, row in enumerate(returned) if row is None]
        if raced:
            raise _RequestRace(raced)
        return [int(row[0]) for row in returned]

    def order(self, order_id: int) -> Order:
        """Return the committed order ``order_id``.

        Raises:
            OrderNotFound: there is none (the checkout did not commit).
        """
        return self._read(lambda db: self._order(db, order_id), snapshot=True)

    def order_for_request(self, request_id: str) -> Order:
        """Return the order committed by the checkout with ``request_id``.

        Raises:
            OrderNotFound: none committed (it is safe to retry that checkout).
        """

        def work(db: Connection) -> Order:
            row = db.execute("SELECT id FROM orders WHERE request_id = ?", (request_id,)).fetchone()
            if row is None:
                raise OrderNotFound(request_id=request_id)
            return self._order(db, int(row[0]))

        return self._read(work, snapshot=True)

    def _order(self, db: Connection, order_id: int) -> Order:
        if not 0 < order_id < MAX_ID:
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

        def work(db: Connection) -> list[Order]:
            if limit is None:
                ids = db.execute("SELECT id FROM orders ORDER BY id DESC").fetchall()
            else:
                ids = db.execute(
                    "SELECT id FROM orders ORDER BY id DESC LIMIT ?", (max(limit, 0),)
                ).fetchall()
            return [self._order(db, int(row[0])) for row in ids]

        return self._read(work, snapshot=True)

    def totals(self) -> tuple[int, int]:
        """Return (number of orders, revenue in cents) over all committed orders."""
        count, revenue = self._read(
            lambda db: db.execute("SELECT COUNT(*), COALESCE(SUM(total), 0) FROM orders").fetchone()
        )
        return int(count), int(revenue)

    def audit(self) -> list[AuditLine]:
        """Return every product's books (removed ones too); each line must be ``balanced``."""
        rows = self._read(
            lambda db: db.execute(
                "SELECT p.id, p.name, p.stocked, p.stock, COALESCE(SUM(l.quantity), 0)"
                " FROM products p LEFT JOIN order_lines l ON l.product_id = p.id"
                " GROUP BY p.id ORDER BY p.id"
            ).fetchall()
        )
        return [AuditLine(int(i), name, int(a), int(b), int(c)) for i, name, a, b, c in rows]
