"""The store's API as plain data: one request (a decoded JSON object) in, one reply out.

No sockets here: the server (``storify.server``) decodes frames into objects, hands
them to :meth:`ApiSession.handle` and encodes what it returns.

Request: ``{"id": 7, "op": "add", "product": "mug", "quantity": 2}``. ``id`` is any
JSON string, number or null; it is echoed so a client can match replies.

Reply: ``{"id": 7, "ok": true, "result": {...}}`` or
``{"id": 7, "ok": false, "error": {"code": "out_of_stock", "message": "...", ...facts}}``.

Operations (``op``) and their fields:

==============  ==============================================  ================================
op              fields                                          result
==============  ==============================================  ================================
list            (none)                                          ``products``: id, name, price, stock
catalog         (none)                                          ``products`` with ``stocked`` and
                                                                ``sold``; ``orders``, ``revenue``
show            ``product`` (name or number)                    ``product``
add             ``product``, ``quantity`` (default 1)           ``product``, ``in_cart``, ``cart``
remove          ``product``, ``quantity`` (default: all)        ``product``, ``in_cart``, ``cart``
cart            (none)                                          ``lines``, ``total``, ``units``
checkout        ``request_id`` (optional, makes it idempotent), ``order``, ``replayed``
                ``items`` (optional ``{product: quantity}``,
                bought instead of the session's cart)
order_status    ``order_id`` or ``request_id``                  ``status`` ("committed"), ``order``
==============  ==============================================  ================================

Every reply can be sent as strict JSON in UTF-8. A request holding text UTF-8 cannot
carry (a lone surrogate, ``"\\ud800"`` in JSON) anywhere, or an ``id`` that is not a
string, a finite number or null (``NaN``, ``Infinity``), is answered ``bad_request``
(with ``field``) and nothing else is done; when the ``id`` itself is at fault the
reply's ``id`` is null.

Prices are whole cents. A checkout retried with the same ``request_id`` (after a
lost reply or a reset) returns the first order with ``replayed: true`` and charges
nothing; ``order_status`` with that request id answers ``not_found`` when the
checkout did not commit, so it is safe to retry.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from storify.errors import InvalidValue, StoreError
from storify.records import Order, Product, Receipt
from storify.shop import CartView, CustomerSession, PendingCheckout
from storify.store import Store

__all__ = ["OPERATIONS", "ApiSession", "CheckoutStep", "Reply", "encode_reply", "error_reply"]

Reply = dict[str, object]

OPERATIONS = ("list", "catalog", "show", "add", "remove", "cart", "checkout", "order_status")


def error_reply(reply_to: object, code: str, message: str, /, **facts: object) -> Reply:
    """Return an error reply: ``{"id", "ok": false, "error": {"code", "message", ...facts}}``."""
    return {"id": reply_to, "ok": False, "error": {"code": code, "message": message, **facts}}


def encode_reply(reply: Reply) -> bytes:
    """Return ``reply`` as the API sends it: compact JSON in UTF-8 (the frames' JSON codec)."""
    return json.dumps(reply, separators=(",", ":"), ensure_ascii=False).encode()


# What json.dumps(..., ensure_ascii=False) writes for a str: the C encoder it uses itself.
_text: Callable[[str], str] = json.encoder.encode_basestring


def _scalar(value: object) -> str:
    """``value`` (str, int, float or None, from JSON or the database) as json.dumps writes it."""
    if type(value) is str:
        return _text(value)
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return json.dumps(value, ensure_ascii=False)


def _encode_receipt(reply_to: object, receipt: Receipt) -> bytes:
    """The reply to a committed checkout, encoded without building it as dicts first.

    Byte for byte ``encode_reply({"id": reply_to, "ok": True, "result": {"order":
    _order(receipt.order), "replayed": receipt.replayed}})`` (a test pins it): the same
    keys in the same order, each value written as json.dumps writes it.
    """
    order = receipt.order
    lines = ",".join(
        f'{{"product_id":{_scalar(line.product_id)},"name":{_text(line.name)},'
        f'"price":{_scalar(line.price)},"quantity":{_scalar(line.quantity)}}}'
        for line in order.lines
    )
    return (
        f'{{"id":{_scalar(reply_to)},"ok":true,"result":{{"order":{{"id":{_scalar(order.id)},'
        f'"request_id":{_scalar(order.request_id)},"customer":{_text(order.customer)},'
        f'"total":{_scalar(order.total)},"units":{_scalar(order.units)},'
        f'"created":{_scalar(order.created)},"lines":[{lines}]}},'
        f'"replayed":{"true" if receipt.replayed else "false"}}}}}'
    ).encode()


# UTF-16 surrogates: JSON's "\ud800" decodes to one, and no UTF-8 encoder takes it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _unsendable_field(request: Mapping[str, object]) -> str | None:
    """Return the top-level field holding a lone surrogate (in a value or a key), or None.

    ``""`` when a top-level field name itself holds one. Iterative, so that a deeply
    nested request cannot exhaust the stack.
    """
    for field, value in request.items():
        if _SURROGATE.search(field):
            return ""
        stack: list[object] = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if _SURROGATE.search(item):
                    return field
            elif isinstance(item, dict):
                for key, inner in item.items():
                    if isinstance(key, str) and _SURROGATE.search(key):
                        return field
                    stack.append(inner)
            elif isinstance(item, list):
                stack.extend(item)
    return None


def _bad_id(request_id: object) -> bool:
    """True unless ``request_id`` can be echoed as JSON: a string, a finite number or null."""
    if request_id is None:
        return False
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int, float)):
        return True
    if isinstance(request_id, float):
        return not math.isfinite(request_id)
    return isinstance(request_id, str) and _SURROGATE.search(request_id) is not None


class _BadRequest(Exception):
    """The request is malformed; answered as ``bad_request`` without touching the store."""


def _product(product: Product) -> Reply:
    return {"id": product.id, "name": product.name, "price": product.price, "stock": product.stock}


def _order(order: Order) -> Reply:
    return {
        "id": order.id,
        "request_id": order.request_id,
        "customer": order.customer,
        "total": order.total,
        "units": order.units,
        "created": order.created,
        "lines": [
            {
                "product_id": line.product_id,
                "name": line.name,
                "price": line.price,
                "quantity": line.quantity,
            }
            for line in order.lines
        ],
    }


def _cart(view: CartView) -> Reply:
    return {
        "lines": [
            {
                "id": line.product_id,
                "name": None if line.product is None else line.product.name,
                "price": None if line.product is None else line.product.price,
                "quantity": line.quantity,
                "subtotal": line.subtotal,
            }
            for line in view.lines
        ],
        "total": view.total,
        "units": view.units,
    }


def _ref(request: Mapping[str, object], field: str = "product") -> str | int:
    value = request.get(field)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _BadRequest(f"{field!r} is required: a product name or number")
    return value


def _quantity(request: Mapping[str, object], *, default: int | None) -> int | None:
    value = request.get("quantity", default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadRequest("'quantity' is a whole number")
    return value


@dataclass(frozen=True)
class _Checkout:
    """A checkout request's fields, read and checked."""

    request_id: str | None
    items: dict[str | int, int] | None


@dataclass(frozen=True)
class CheckoutStep:
    """A checkout request waiting for its commit; ``reply(outcome)`` answers it."""

    session: ApiSession
    reply_to: object
    pending: PendingCheckout

    def reply(self, outcome: Receipt | StoreError) -> Reply:
        """Return the reply to the checkout, given what committing it gave."""
        if isinstance(outcome, StoreError):
            return error_reply(self.reply_to, outcome.code, str(outcome), **outcome.facts())
        receipt = self.session.shop.settle(self.pending, outcome)
        result = {"order": _order(receipt.order), "replayed": receipt.replayed}
        return {"id": self.reply_to, "ok": True, "result": result}

    def encode(self, outcome: Receipt | StoreError) -> bytes:
        """Return the reply to the checkout encoded (as :func:`encode_reply` of :meth:`reply`)."""
        if isinstance(outcome, StoreError):
            return encode_reply(self.reply(outcome))
        return _encode_receipt(self.reply_to, self.session.shop.settle(self.pending, outcome))


class ApiSession:
    """The API side of one connection: a customer session answering requests.

    Args:
        store: the store.
        customer: recorded on this connection's orders (``api 127.0.0.1:50412``).
    """

    def __init__(self, store: Store, customer: str) -> None:
        self.shop = CustomerSession(store, customer)
        self._handlers: dict[str, Callable[[Mapping[str, object]], Reply | _Checkout]] = {
            "list": self._list,
            "catalog": self._catalog,
            "show": self._show,
            "add": self._add,
            "remove": self._remove,
            "cart": self._cart,
            "checkout": self._checkout,
            "order_status": self._order_status,
        }

    def handle(self, request: object) -> Reply:
        """Answer one request; never raises for anything a client can send.

        A checkout is committed here, alone (or with other threads' checkouts of the
        same Store, see :meth:`Store.checkout`); a server batching checkouts calls
        :meth:`begin` instead.

        Domain errors become structured replies with the error's ``code`` and facts;
        a malformed request becomes ``bad_request`` (or ``unknown_op``); a database
        that cannot answer (stopped, unreachable, locked beyond its busy timeout) is
        StoreUnavailable: ``unavailable`` with ``retryable: true``. The reply is always
        encodable as strict JSON in UTF-8: a request with a lone surrogate in any text,
        or a ``NaN``/``Infinity`` id, is refused as ``bad_request`` before anything is
        looked up.
        """
        step = self.begin(request)
        if isinstance(step, CheckoutStep):
            wanted = step.pending.request
            try:
                outcome: Receipt | StoreError = self.shop.store.checkout(
                    wanted.items, customer=wanted.customer, request_id=wanted.request_id
                )
            except StoreError as error:
                outcome = error
            return step.reply(outcome)
        return step

    def begin(self, request: object, *, raw: bytes | None = None) -> Reply | CheckoutStep:
        """Answer one request, except a checkout: that is returned to be committed.

        Same as :meth:`handle`, but a well-formed checkout comes back as a
        :class:`CheckoutStep`: commit ``step.pending.request`` (``Store.checkout_batch``
        commits many in one transaction) and answer with ``step.reply(outcome)``.

        ``raw``: the JSON text ``request`` was decoded from, if at hand. JSON gives a
        lone surrogate only from a ``\\u`` escape (UTF-8 cannot carry one), so a request
        whose text has none is not searched for them.
        """
        if not isinstance(request, dict):
            return error_reply(None, "bad_request", "a request is a JSON object with an 'op'")
        request_id = request.get("id")
        if _bad_id(request_id):
            return error_reply(
                None,
                "bad_request",
                "'id' is a string of valid Unicode, a finite number or null",
                field="id",
            )
        field = None if raw is not None and b"\\u" not in raw else _unsendable_field(request)
        if field is not None:
            where = f"{field!r} holds" if field else "a field name is"
            return error_reply(
                request_id,
                "bad_request",
                f"{where} text that is not valid Unicode (a lone surrogate such as \\ud800)",
                field=field,
            )
        op = request.get("op")
        handler = self._handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            return error_reply(
                request_id,
                "unknown_op",
                f"unknown op {op!r}; one of {', '.join(OPERATIONS)}",
                operations=list(OPERATIONS),
            )
        try:
            result = handler(request)
            if isinstance(result, _Checkout):
                pending = self.shop.prepare_checkout(
                    request_id=result.request_id, items=result.items
                )
                return CheckoutStep(self, request_id, pending)
        except _BadRequest as error:
            return error_reply(request_id, "bad_request", str(error))
        except StoreError as error:
            return error_reply(request_id, error.code, str(error), **error.facts())
        return {"id": request_id, "ok": True, "result": result}

    def _list(self, request: Mapping[str, object]) -> Reply:
        return {"products": [_product(product) for product in self.shop.list()]}

    def _catalog(self, request: Mapping[str, object]) -> Reply:
        store = self.shop.store
        books = {line.product_id: line for line in store.audit()}
        products = []
        for product in store.products():
            line = books[product.id]
            products.append({**_product(product), "stocked": line.stocked, "sold": line.sold})
        orders, revenue = store.totals()
        return {"products": products, "orders": orders, "revenue": revenue}

    def _show(self, request: Mapping[str, object]) -> Reply:
        return {"product": _product(self.shop.show(_ref(request)))}

    def _add(self, request: Mapping[str, object]) -> Reply:
        quantity = _quantity(request, default=1)
        product, held = self.shop.add(_ref(request), 1 if quantity is None else quantity)
        return {"product": _product(product), "in_cart": held, "cart": _cart(self.shop.view())}

    def _remove(self, request: Mapping[str, object]) -> Reply:
        name, left = self.shop.remove(_ref(request), _quantity(request, default=None))
        return {"product": name, "in_cart": left, "cart": _cart(self.shop.view())}

    def _cart(self, request: Mapping[str, object]) -> Reply:
        return _cart(self.shop.view())

    def _checkout(self, request: Mapping[str, object]) -> _Checkout:
        request_id = request.get("request_id")
        if request_id is not None and not isinstance(request_id, str):
            raise _BadRequest("'request_id' is a string (a fresh one per checkout)")
        raw_items = request.get("items")
        items: dict[str | int, int] | None = None
        if raw_items is not None:
            if not isinstance(raw_items, dict):
                raise _BadRequest("'items' is an object {product: quantity}")
            items = {}
            for ref, quantity in raw_items.items():
                if isinstance(quantity, bool) or not isinstance(quantity, int):
                    raise InvalidValue("quantity", "a quantity is a whole number")
                items[ref] = quantity
        return _Checkout(request_id, items)

    def _order_status(self, request: Mapping[str, object]) -> Reply:
        order_id = request.get("order_id")
        request_id = request.get("request_id")
        store = self.shop.store
        if isinstance(order_id, int) and not isinstance(order_id, bool):
            order = store.order(order_id)
        elif isinstance(request_id, str):
            order = store.order_for_request(request_id)
        else:
            raise _BadRequest("'order_id' (a number) or 'request_id' (a string) is required")
        return {"status": "committed", "order": _order(order)}
