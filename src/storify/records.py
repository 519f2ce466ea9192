"""The store's records (products, orders, receipts, the books) and the checks on their values.

Plain immutable values: the store returns them, the shop, the API and the REPLs show them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from storify.errors import InvalidValue

__all__ = [
    "MAX_NAME",
    "MAX_REQUEST_ID",
    "AuditLine",
    "CheckoutRequest",
    "Order",
    "OrderLine",
    "Product",
    "Receipt",
    "check_name",
    "check_request_id",
    "product_number",
]

MAX_NAME = 40
MAX_REQUEST_ID = 128
MAX_ID = 2**63  # SQLite integers and PostgreSQL BIGINT are signed 64-bit


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
    return number if 0 < number < MAX_ID else None


@dataclass(frozen=True)
class CheckoutRequest:
    """One checkout to commit: ``items`` (``{product_id: quantity}``), who buys, its request id."""

    items: Mapping[int, int]
    customer: str
    request_id: str | None = None
