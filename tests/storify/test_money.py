from __future__ import annotations

import pytest

from storify.errors import InvalidValue
from storify.money import MAX_PRICE, check_price, format_price, parse_price


@pytest.mark.parametrize(
    ("text", "cents"),
    [("12", 1200), ("12.5", 1250), ("12.50", 1250), ("$0.99", 99), (" 3.05 ", 305), ("0", 0)],
)
def test_parse_price_reads_dollars_as_cents(text: str, cents: int) -> None:
    assert parse_price(text) == cents


@pytest.mark.parametrize(
    "text", ["", "-1", "1.234", "abc", "1e3", "$", "12.", "1,000", "٣", "١٢.٥٠", "²"]
)
def test_parse_price_rejects_what_is_not_an_amount(text: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parse_price(text)
    assert info.value.field == "price"


def test_check_price_bounds() -> None:
    assert check_price(MAX_PRICE) == MAX_PRICE
    for bad in (-1, MAX_PRICE + 1, True, 1.5):
        with pytest.raises(InvalidValue):
            check_price(bad)  # type: ignore[arg-type]


def test_format_price() -> None:
    assert format_price(1250) == "$12.50"
    assert format_price(5) == "$0.05"
    assert format_price(123456789) == "$1,234,567.89"
    assert format_price(-150) == "-$1.50"
