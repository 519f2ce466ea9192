"""Prices: whole cents in, ``$12.34`` out. Pure functions, no floats."""

from __future__ import annotations

import re

from storify.errors import InvalidValue

__all__ = ["MAX_PRICE", "check_price", "format_price", "parse_price"]

MAX_PRICE = 100_000_000  # cents: one million dollars is the most a product may cost

_PRICE = re.compile(r"\$?([0-9]{1,9})(?:\.([0-9]{1,2}))?", re.ASCII)  # not "٣" or "²"


def parse_price(text: str) -> int:
    """Return the price written as ``12``, ``12.5``, ``12.50`` or ``$12.50``, in cents.

    Raises:
        InvalidValue: not such a number, more than two decimals, or above ``MAX_PRICE``.
    """
    match = _PRICE.fullmatch(text.strip())
    if match is None:
        raise InvalidValue(
            "price", f"price {text!r} is not an amount like 12, 12.5 or 12.50 (dollars)"
        )
    cents = int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))
    return check_price(cents)


def check_price(cents: int) -> int:
    """Return ``cents`` if it is a valid price, else raise :class:`InvalidValue`."""
    if isinstance(cents, bool) or not isinstance(cents, int) or not 0 <= cents <= MAX_PRICE:
        raise InvalidValue("price", f"a price is 0 to {MAX_PRICE} cents, not {cents!r}")
    return cents


def format_price(cents: int) -> str:
    """Return ``cents`` as dollars: ``1250`` gives ``$12.50``."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{part:02d}"
