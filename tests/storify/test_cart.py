from __future__ import annotations

import pytest

from storify.cart import Cart, check_quantity
from storify.errors import CartFull, InvalidValue


def test_cart_add_accumulates_in_insertion_order() -> None:
    cart = Cart()
    assert cart.add(7, 2) == 2
    assert cart.add(3) == 1
    assert cart.add(7, 1) == 3
    assert cart.items() == {7: 3, 3: 1}
    assert list(cart) == [7, 3]
    assert cart.units == 4
    assert len(cart) == 2


def test_cart_remove_some_all_and_absent() -> None:
    cart = Cart()
    cart.add(1, 5)
    assert cart.remove(1, 2) == 3
    assert cart.remove(1, 10) == 0
    assert 1 not in cart
    assert cart.remove(2) == 0
    cart.add(4, 2)
    assert cart.remove(4) == 0
    assert cart.items() == {}


@pytest.mark.parametrize("quantity", [0, -1, 1001, True, 2.0, "3"])
def test_check_quantity_rejects(quantity: object) -> None:
    with pytest.raises(InvalidValue) as info:
        check_quantity(quantity)
    assert info.value.field == "quantity"


def test_cart_is_bounded() -> None:
    cart = Cart(max_lines=2, max_quantity=10)
    cart.add(1, 10)
    with pytest.raises(InvalidValue):
        cart.add(1)
    cart.add(2)
    with pytest.raises(CartFull) as info:
        cart.add(3)
    assert info.value.facts() == {"limit": 2}
    assert cart.items() == {1: 10, 2: 1}


def test_cart_limits_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="max_lines"):
        Cart(max_lines=0)
    with pytest.raises(ValueError, match="max_quantity"):
        Cart(max_quantity=0)


def test_cart_clear_and_repr() -> None:
    cart = Cart()
    cart.add(1)
    assert repr(cart) == "Cart({1: 1})"
    cart.clear()
    assert cart.units == 0
