"""What one customer can do: browse, fill a cart and check out. Shared by telnet and the API.

# Rules:
# - A session only ever calls the store's customer operations (read the catalog,
#   check out); nothing here can change a product.
# - Adding checks the shelf so a customer learns early that 3 are left, but takes
#   nothing: stock is taken only by a committed checkout.
# - A failed checkout leaves the cart as it was; a committed one empties it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from storify.cart import Cart, check_quantity
from storify.errors import EmptyCart, OutOfStock, UnknownProduct
from storify.store import Product, Receipt, Store, product_number

__all__ = ["CartLine", "CartView", "CustomerSession"]


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

    def checkout(
        self,
        *,
        request_id: str | None = None,
        items: Mapping[str | int, int] | None = None,
    ) -> Receipt:
        """Buy the cart (or ``items``, ``{product: quantity}``, leaving the cart alone).

        With ``request_id`` a retried checkout returns the first one's order,
        ``replayed``, and charges nothing. The cart is emptied only when it was
        bought.

        Raises:
            EmptyCart, OutOfStock, UnknownProduct, RequestConflict, InvalidValue.
        """
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
        receipt = self.store.checkout(wanted, customer=self.customer, request_id=request_id)
        if items is None:
            self.cart.clear()
        return receipt
