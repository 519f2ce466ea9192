"""What one customer can do: browse, fill a cart and check out. Shared by telnet and the API.

# Rules:
# - A session only ever calls the store's customer operations (read the catalog,
#   check out); nothing here can change a product.
# - Adding checks the shelf so a customer learns early that 3 are left, but takes
#   nothing: stock is taken only by a committed checkout.
# - A failed checkout leaves the cart as it was; a committed one empties it.
# - A cart checkout carries a request id kept by the session for that cart (the
#   attempt id): a retry after ``unavailable`` replays an order that did commit.
# - A checkout is prepared (names looked up), committed by the store (alone or in a
#   batch with other sessions' checkouts) and settled (the cart emptied), so that
#   the API server can commit many sessions' checkouts in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from storify.cart import Cart, check_quantity
from storify.errors import EmptyCart, OutOfStock, UnknownProduct
from storify.records import CheckoutRequest, Product, Receipt, product_number
from storify.store import Store

__all__ = ["ATTEMPT_PREFIX", "CartLine", "CartView", "CustomerSession", "PendingCheckout"]

# The request ids a session gives its cart checkouts start with this.
ATTEMPT_PREFIX = "cart-"


@dataclass(frozen=True)
class CartLine:
    """A cart line at the product's current name and price (``product`` None if off sale)."""

    product_id: int
    product: Product | None
    quantity: int

    @property
    def subtotal(self) -> int:
        """Current price times quantity, in cents (0 for a product no longer on sale)."""
        return 0 if self.product is None else self.product.price * self.quantity


@dataclass(frozen=True)
class CartView:
    """The cart as the customer sees it now."""

    lines: tuple[CartLine, ...]

    @property
    def total(self) -> int:
        """What the cart would cost at current prices, in cents."""
        return sum(line.subtotal for line in self.lines)

    @property
    def units(self) -> int:
        """The number of units in the cart."""
        return sum(line.quantity for line in self.lines)


@dataclass(frozen=True)
class PendingCheckout:
    """A checkout a session prepared: commit ``request``, then hand the receipt to settle()."""

    request: CheckoutRequest
    from_cart: bool


class CustomerSession:
    """One customer's visit: a cart, and the customer operations on ``store``.

    Args:
        store: the store to shop in.
        customer: who is shopping, recorded on orders (``telnet 127.0.0.1:50412``).
        cart: the cart to use (a new, empty one by default).
    """

    def __init__(self, store: Store, customer: str, *, cart: Cart | None = None) -> None:
        self.store = store
        self.customer = customer
        self.cart = Cart() if cart is None else cart
        # The cart's items at the last checkout attempt and that attempt's request id.
        self._attempt: tuple[dict[int, int], str] | None = None

    def list(self) -> list[Product]:
        """Return the products on sale."""
        return self.store.products()

    def show(self, ref: str | int) -> Product:
        """Return one product on sale, by name or number."""
        return self.store.product(ref)

    def add(self, ref: str | int, quantity: int = 1) -> tuple[Product, int]:
        """Put ``quantity`` units in the cart; returns the product and how many the cart holds.

        Raises:
            UnknownProduct: no such product on sale.
            OutOfStock: the cart would hold more than is on the shelf now.
            InvalidValue, CartFull: bad quantity, full cart.
        """
        check_quantity(quantity, limit=self.cart.max_quantity)
        product = self.store.product(ref)
        wanted = self.cart.quantity(product.id) + quantity
        if wanted > product.stock:
            raise OutOfStock(product.name, requested=wanted, available=product.stock)
        return product, self.cart.add(product.id, quantity)

    def remove(self, ref: str | int, quantity: int | None = None) -> tuple[str, int]:
        """Take units (all when None) out of the cart; returns the product name and what is left.

        Raises:
            UnknownProduct: the product is not in the cart.
        """
        product_id = self._cart_product_id(ref)
        try:
            name = self.store.product(product_id).name
        except UnknownProduct:
            name = str(ref)
        return name, self.cart.remove(product_id, quantity)

    def _cart_product_id(self, ref: str | int) -> int:
        try:
            product_id = self.store.product(ref).id
        except UnknownProduct:
            # A product taken off sale can still be removed from the cart by number.
            number = product_number(ref)
            if number is None:
                raise
            product_id = number
        if product_id not in self.cart:
            raise UnknownProduct(str(ref)) from None
        return product_id

    def view(self) -> CartView:
        """Return the cart at current names and prices."""
        products = {product.id: product for product in self.store.products()}
        return CartView(
            tuple(
                CartLine(product_id, products.get(product_id), quantity)
                for product_id, quantity in self.cart.items().items()
            )
        )

    def prepare_checkout(
        self,
        *,
        request_id: str | None = None,
        items: Mapping[str | int, int] | None = None,
    ) -> PendingCheckout:
        """Make the checkout of the cart (or of ``items``), to commit and then :meth:`settle`.

        A cart checkout without ``request_id`` gets the session's attempt id: the same
        one while the cart stays unchanged, so that checking out again after
        ``unavailable`` (the connection to the database broke, perhaps after the order
        committed) replays that order instead of buying twice; a new one after a
        success or a change of the cart.

        Raises:
            EmptyCart, UnknownProduct, InvalidValue (names are looked up here).
        """
        from_cart = items is None
        if items is None:
            wanted = self.cart.items()
        else:
            wanted = {}
            for ref, quantity in items.items():
                # A product number needs no look-up: the checkout itself refuses an unknown one.
                number = product_number(ref)
                product_id = self.store.product(ref).id if number is None else number
                wanted[product_id] = wanted.get(product_id, 0) + check_quantity(quantity)
        if not wanted:
            raise EmptyCart()
        if from_cart and request_id is None:
            if self._attempt is None or self._attempt[0] != wanted:
                self._attempt = (dict(wanted), f"{ATTEMPT_PREFIX}{uuid.uuid4().hex}")
            request_id = self._attempt[1]
        return PendingCheckout(CheckoutRequest(wanted, self.customer, request_id), from_cart)

    def settle(self, pending: PendingCheckout, receipt: Receipt) -> Receipt:
        """Record that ``pending`` committed (``receipt``): a bought cart is emptied."""
        if pending.from_cart:
            self.cart.clear()
            self._attempt = None
        return receipt

    def checkout(
        self,
        *,
        request_id: str | None = None,
        items: Mapping[str | int, int] | None = None,
    ) -> Receipt:
        """Buy the cart (or ``items``, ``{product: quantity}``, leaving the cart alone).

        With ``request_id`` a retried checkout returns the first one's order,
        ``replayed``, and charges nothing (a cart checkout without one gets the
        session's attempt id, see :meth:`prepare_checkout`). The cart is emptied only
        when it was bought.

        Raises:
            EmptyCart, OutOfStock, UnknownProduct, RequestConflict, InvalidValue,
            StoreUnavailable.
        """
        pending = self.prepare_checkout(request_id=request_id, items=items)
        request = pending.request
        receipt = self.store.checkout(
            request.items, customer=request.customer, request_id=request.request_id
        )
        return self.settle(pending, receipt)
