"""A customer's cart: product numbers and quantities, bounded, with no I/O.

# Rules:
# - A cart holds product ids, not names or prices: a product renamed or repriced
#   after it was added shows its current name and price, and the price charged is
#   the one in force when the checkout commits.
# - Nothing is reserved: stock is taken only by a committed checkout, so two
#   customers may hold the last unit in their carts and only one can buy it.
# - Every quantity is 1..max_quantity and a cart has at most max_lines products, so
#   a session cannot grow without bound.
"""

from __future__ import annotations

from collections.abc import Iterator

from storify.errors import CartFull, InvalidValue

__all__ = ["Cart", "check_quantity"]

MAX_QUANTITY = 1000
MAX_LINES = 50


def check_quantity(quantity: object, *, limit: int = MAX_QUANTITY) -> int:
    """Return ``quantity`` if it is a whole number in 1..limit, else raise :class:`InvalidValue`."""
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= limit:
        raise InvalidValue("quantity", f"a quantity is a whole number from 1 to {limit}")
    return quantity


class Cart:
    """Products a customer intends to buy: ``{product_id: quantity}`` in the order added."""

    def __init__(self, *, max_lines: int = MAX_LINES, max_quantity: int = MAX_QUANTITY) -> None:
        if max_lines < 1:
            raise ValueError(f"max_lines must be at least 1, not {max_lines}")
        if max_quantity < 1:
            raise ValueError(f"max_quantity must be at least 1, not {max_quantity}")
        self.max_lines = max_lines
        self.max_quantity = max_quantity
        self._lines: dict[int, int] = {}

    def add(self, product_id: int, quantity: int = 1) -> int:
        """Add ``quantity`` units of a product; returns how many of it the cart now holds.

        Raises:
            InvalidValue: ``quantity`` is not 1..max_quantity, or the total would exceed it.
            CartFull: the product is new and the cart already has ``max_lines`` products.
        """
        check_quantity(quantity, limit=self.max_quantity)
        if product_id not in self._lines and len(self._lines) >= self.max_lines:
            raise CartFull(self.max_lines)
        total = self._lines.get(product_id, 0) + quantity
        check_quantity(total, limit=self.max_quantity)
        self._lines[product_id] = total
        return total

    def remove(self, product_id: int, quantity: int | None = None) -> int:
        """Take ``quantity`` units (all when None) of a product out; returns how many remain.

        Removing more than the cart holds removes them all; a product not in the
        cart leaves it unchanged and returns 0.
        """
        if quantity is not None:
            check_quantity(quantity, limit=self.max_quantity)
        held = self._lines.get(product_id, 0)
        left = 0 if quantity is None else max(held - quantity, 0)
        if left:
            self._lines[product_id] = left
        else:
            self._lines.pop(product_id, None)
        return left

    def quantity(self, product_id: int) -> int:
        """Return how many units of a product the cart holds (0 when none)."""
        return self._lines.get(product_id, 0)

    def items(self) -> dict[int, int]:
        """Return a copy of ``{product_id: quantity}``, in the order products were added."""
        return dict(self._lines)

    def clear(self) -> None:
        """Empty the cart."""
        self._lines.clear()

    @property
    def units(self) -> int:
        """The number of units in the cart, all products together."""
        return sum(self._lines.values())

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self) -> Iterator[int]:
        return iter(self._lines)

    def __repr__(self) -> str:
        return f"Cart({self._lines!r})"
