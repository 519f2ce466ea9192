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
    ├── SchemaTooNew (RuntimeError)      the database was made by a newer storify
    └── ApiError                         the store's API answered a request with an error
        ├── BadRequest (ValueError)              ``bad_request``: a field missing or malformed
        ├── UnknownOperation (ValueError)        ``unknown_op``: no such ``op``
        ├── BadFrame (ValueError)                ``bad_frame``: a frame that is not JSON; closed
        ├── StoreBusy (sockwork Busy)            ``busy``: too many connections; closed, retry later
        └── <Domain>Reply (<Domain>)             the domain error above with that code:
            UnknownProductReply, OrderNotFoundReply, OutOfStockReply, EmptyCartReply,
            CartFullReply, InvalidValueReply, DuplicateProductReply, RequestConflictReply,
            StoreUnavailableReply (``unavailable``: nothing was committed; retry)

A client (``storify.client``) raises the class of the reply's ``code`` (plain
:class:`ApiError` for a code it does not know), so ``except OutOfStock`` catches the
store's refusal whether the store runs in this process or answers over the API, and
``except ApiError`` catches every error reply. A ``<Domain>Reply`` carries the domain
error's attributes as the server sent them (``error.available``), and ``facts()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from sockwork.errors import Busy

__all__ = [
    "ApiError",
    "BadFrame",
    "BadRequest",
    "CartFull",
    "CartFullReply",
    "DuplicateProduct",
    "DuplicateProductReply",
    "EmptyCart",
    "EmptyCartReply",
    "InvalidValue",
    "InvalidValueReply",
    "OrderNotFound",
    "OrderNotFoundReply",
    "OutOfStock",
    "OutOfStockReply",
    "RequestConflict",
    "RequestConflictReply",
    "SchemaTooNew",
    "StoreBusy",
    "StoreError",
    "StoreUnavailable",
    "StoreUnavailableReply",
    "UnknownOperation",
    "UnknownProduct",
    "UnknownProductReply",
    "api_error",
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


class ApiError(StoreError):
    """The store answered a request with an error; ``code`` and ``facts()`` say which.

    Subclasses name each documented code; :func:`api_error` picks the class of a reply.
    """

    #: The attributes a subclass copies from the reply's facts (its domain error's fields).
    fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, code: str, message: str, facts: Mapping[str, object]) -> None:
        # Not super().__init__: a <Domain>Reply's next base is the domain error, whose
        # constructor takes the domain's arguments. The reply already says everything.
        Exception.__init__(self, message)
        self.code = code
        self.details = dict(facts)
        for name in self.fields:
            setattr(self, name, facts.get(name))

    def facts(self) -> dict[str, object]:
        """Return the error's fields as the server sent them (without code and message)."""
        return dict(self.details)


class BadRequest(ApiError, ValueError):
    """``bad_request``: a field is missing, of the wrong type or not valid Unicode (``field``)."""

    code = "bad_request"
    fields = ("field",)


class UnknownOperation(ApiError, ValueError):
    """``unknown_op``: the request's ``op`` is not one the store knows (``operations``)."""

    code = "unknown_op"
    fields = ("operations",)


class BadFrame(ApiError, ValueError):
    """``bad_frame``: a frame's payload was not JSON; the store closed the connection."""

    code = "bad_frame"


class StoreBusy(ApiError, Busy):
    """``busy``: the store serves as many programs as it may and closed this one; retry later."""

    code = "busy"


class UnknownProductReply(ApiError, UnknownProduct):
    """``unknown_product`` over the API (``product``)."""

    code = UnknownProduct.code
    fields = ("product",)


class OrderNotFoundReply(ApiError, OrderNotFound):
    """``not_found`` over the API (``order_id``, ``request_id``)."""

    code = OrderNotFound.code
    fields = ("order_id", "request_id")


class OutOfStockReply(ApiError, OutOfStock):
    """``out_of_stock`` over the API (``product``, ``requested``, ``available``)."""

    code = OutOfStock.code
    fields = ("product", "requested", "available")


class EmptyCartReply(ApiError, EmptyCart):
    """``empty_cart`` over the API."""

    code = EmptyCart.code


class CartFullReply(ApiError, CartFull):
    """``cart_full`` over the API (``limit``)."""

    code = CartFull.code
    fields = ("limit",)


class InvalidValueReply(ApiError, InvalidValue):
    """``invalid_value`` over the API (``field``)."""

    code = InvalidValue.code
    fields = ("field",)


class DuplicateProductReply(ApiError, DuplicateProduct):
    """``product_exists`` over the API (``product``)."""

    code = DuplicateProduct.code
    fields = ("product",)


class RequestConflictReply(ApiError, RequestConflict):
    """``request_conflict`` over the API (``request_id``, ``order_id``)."""

    code = RequestConflict.code
    fields = ("request_id", "order_id")


class StoreUnavailableReply(ApiError, StoreUnavailable):
    """``unavailable`` over the API: nothing was committed; retry (``retryable``)."""

    code = StoreUnavailable.code
    fields = ("retryable",)
    reason = ""  # the server keeps the driver's reason in its log


_BY_CODE: dict[str, type[ApiError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        UnknownOperation,
        BadFrame,
        StoreUnavailableReply,
        StoreBusy,
        UnknownProductReply,
        OrderNotFoundReply,
        OutOfStockReply,
        EmptyCartReply,
        CartFullReply,
        InvalidValueReply,
        DuplicateProductReply,
        RequestConflictReply,
    )
}


def api_error(code: str, message: str, facts: Mapping[str, object]) -> ApiError:
    """Return the exception for an error reply: the class of ``code``, else :class:`ApiError`."""
    return _BY_CODE.get(code, ApiError)(code, message, facts)
