"""The errors of the store's domain: what a customer or the manager asked for cannot be done.

These are application errors, not network errors, so they do not derive from
:class:`sockwork.errors.SockworkError`. Each has a stable ``code`` (sent in API
replies) and ``facts()`` (the fields a program needs to react)::

    StoreError
    ├── UnknownProduct (LookupError)     no product by that name or number
    ├── OrderNotFound (LookupError)      no committed order with that id or request id
    ├── OutOfStock                       fewer units on the shelf than asked for
    ├── EmptyCart                        checkout of an empty cart
    ├── CartFull                         the cart holds its maximum number of lines
    ├── InvalidValue (ValueError)        a name, price, quantity or request id out of range
    ├── DuplicateProduct (ValueError)    a product by that name is already on sale
    ├── RequestConflict (ValueError)     a request id reused for a different checkout
    ├── StoreUnavailable (ConnectionError)  the database cannot answer now; try again
    └── SchemaTooNew (RuntimeError)      the database was made by a newer storify
"""

from __future__ import annotations

__all__ = [
    "CartFull",
    "DuplicateProduct",
    "EmptyCart",
    "InvalidValue",
    "OrderNotFound",
    "OutOfStock",
    "RequestConflict",
    "SchemaTooNew",
    "StoreError",
    "StoreUnavailable",
    "UnknownProduct",
]


class StoreError(Exception):
    """Base class of the store's domain errors; ``code`` names the error in API replies."""

    code = "store_error"

    def facts(self) -> dict[str, object]:
        """Return the fields that describe this error, for structured replies."""
        return {}


class UnknownProduct(StoreError, LookupError):
    """No product on sale matches ``product`` (a name, or a number from ``list``)."""

    code = "unknown_product"

    def __init__(self, product: str) -> None:
        super().__init__(f"no product {product!r}; type 'list' to see what is on sale")
        self.product = product

    def facts(self) -> dict[str, object]:
        """Return ``{"product": ...}``."""
        return {"product": self.product}


class OrderNotFound(StoreError, LookupError):
    """No committed order has this id or request id (so that checkout did not happen)."""

    code = "not_found"

    def __init__(self, *, order_id: int | None = None, request_id: str | None = None) -> None:
        what = f"order #{order_id}" if order_id is not None else f"request id {request_id!r}"
        super().__init__(f"no committed order for {what}")
        self.order_id = order_id
        self.request_id = request_id

    def facts(self) -> dict[str, object]:
        """Return the id that was looked up."""
        return {"order_id": self.order_id, "request_id": self.request_id}


class OutOfStock(StoreError):
    """Only ``available`` units of ``product`` are left; ``requested`` were asked for."""

    code = "out_of_stock"

    def __init__(self, product: str, *, requested: int, available: int) -> None:
        if available == 0:
            left = f"{product} is sold out"
        else:
            left = f"only {available} {product} left"
        super().__init__(f"{left} ({requested} requested)")
        self.product = product
        self.requested = requested
        self.available = available

    def facts(self) -> dict[str, object]:
        """Return the product, the units requested and the units available."""
        return {"product": self.product, "requested": self.requested, "available": self.available}


class EmptyCart(StoreError):
    """A checkout was asked for with nothing in the cart."""

    code = "empty_cart"

    def __init__(self) -> None:
        super().__init__("your cart is empty; add something first")


class CartFull(StoreError):
    """The cart already holds ``limit`` different products."""

    code = "cart_full"

    def __init__(self, limit: int) -> None:
        super().__init__(f"a cart holds at most {limit} different products; check out first")
        self.limit = limit

    def facts(self) -> dict[str, object]:
        """Return ``{"limit": ...}``."""
        return {"limit": self.limit}


class InvalidValue(StoreError, ValueError):
    """The value given for ``field`` is not accepted; the message says what is."""

    code = "invalid_value"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def facts(self) -> dict[str, object]:
        """Return ``{"field": ...}``."""
        return {"field": self.field}


class DuplicateProduct(StoreError, ValueError):
    """A product called ``product`` is already on sale (names ignore case)."""

    code = "product_exists"

    def __init__(self, product: str) -> None:
        super().__init__(f"a product called {product!r} is already on sale")
        self.product = product

    def facts(self) -> dict[str, object]:
        """Return ``{"product": ...}``."""
        return {"product": self.product}


class RequestConflict(StoreError, ValueError):
    """``request_id`` already committed order ``order_id`` with different items."""

    code = "request_conflict"

    def __init__(self, request_id: str, order_id: int) -> None:
        super().__init__(
            f"request id {request_id!r} already committed order #{order_id} with other items; "
            "use a new request id for a new checkout"
        )
        self.request_id = request_id
        self.order_id = order_id

    def facts(self) -> dict[str, object]:
        """Return the request id and the order it committed."""
        return {"request_id": self.request_id, "order_id": self.order_id}


class StoreUnavailable(StoreError, ConnectionError):
    """The database cannot answer now (stopped, unreachable, locked too long); try again.

    The driver's error is the ``__cause__``; ``reason`` is its one-line summary, for logs.
    A checkout that fails this way with a request id can be retried with that id: it is
    either replayed (it had committed) or committed now.
    """

    code = "unavailable"

    def __init__(self, reason: str = "") -> None:
        super().__init__("the store is unavailable, try again")
        self.reason = reason

    def facts(self) -> dict[str, object]:
        """Return ``{"retryable": True}``: nothing a client sent was wrong."""
        return {"retryable": True}


class SchemaTooNew(StoreError, RuntimeError):
    """The database's schema ``found`` is newer than the ``supported`` one of this storify."""

    code = "schema_too_new"

    def __init__(self, database: str, *, found: int, supported: int) -> None:
        super().__init__(
            f"{database} has storify schema version {found}, newer than version {supported} "
            "that this storify knows; upgrade storify (or use another database)"
        )
        self.database = database
        self.found = found
        self.supported = supported

    def facts(self) -> dict[str, object]:
        """Return the schema version found and the newest one supported."""
        return {"found": self.found, "supported": self.supported}
