from __future__ import annotations

from collections.abc import Iterator

import pytest

from storify.errors import EmptyCart, OutOfStock, UnknownProduct
from storify.shop import CustomerSession
from storify.store import Store


@pytest.fixture
def store() -> Iterator[Store]:
    with Store() as store:
        store.seed_demo()
        yield store


def test_session_add_checks_the_shelf_but_takes_nothing(store: Store) -> None:
    shop = CustomerSession(store, "alice")
    product, held = shop.add("mug", 2)
    assert (product.name, held) == ("Mug", 2)
    assert shop.add("#1", 3)[1] == 5
    with pytest.raises(OutOfStock) as info:
        shop.add("lamp", 2)
    assert info.value.facts() == {"product": "Lamp", "requested": 2, "available": 1}
    assert store.product("mug").stock == 20
    view = shop.view()
    [line] = view.lines
    assert line.product is not None
    assert (line.product.name, line.quantity) == ("Mug", 5)
    assert (view.total, view.units) == (5 * 850, 5)


def test_session_remove(store: Store) -> None:
    shop = CustomerSession(store, "alice")
    shop.add("mug", 3)
    assert shop.remove("MUG", 1) == ("Mug", 2)
    assert shop.remove("mug") == ("Mug", 0)
    with pytest.raises(UnknownProduct):
        shop.remove("mug")
    with pytest.raises(UnknownProduct):
        shop.remove("no such thing")


def test_session_product_taken_off_sale_while_in_cart(store: Store) -> None:
    shop = CustomerSession(store, "alice")
    shop.add("lamp")
    shop.add("mug")
    store.remove_product("lamp")
    [lamp, mug] = shop.view().lines
    assert lamp.product is None and lamp.subtotal == 0
    assert mug.subtotal == 850
    with pytest.raises(UnknownProduct):
        shop.checkout()
    assert shop.cart.units == 2  # unchanged by a failed checkout
    assert shop.remove("5") == ("5", 0)
    assert shop.checkout().order.total == 850
    assert shop.cart.units == 0


def test_session_checkout_failure_keeps_the_cart(store: Store) -> None:
    alice, bob = CustomerSession(store, "alice"), CustomerSession(store, "bob")
    alice.add("lamp")
    bob.add("lamp")
    assert alice.checkout().order.customer == "alice"
    with pytest.raises(OutOfStock):
        bob.checkout()
    assert bob.cart.items() == {5: 1}
    with pytest.raises(EmptyCart):
        alice.checkout()


def test_session_checkout_items_leaves_the_cart_and_is_idempotent(store: Store) -> None:
    shop = CustomerSession(store, "prog")
    shop.add("stickers")
    first = shop.checkout(items={"mug": 1, "#1": 1, "notebook": 2}, request_id="abc")
    assert [(line.name, line.quantity) for line in first.order.lines] == [
        ("Mug", 2),
        ("Notebook", 2),
    ]
    again = shop.checkout(items={"mug": 2, "notebook": 2}, request_id="abc")
    assert again.replayed and again.order == first.order
    assert store.product("mug").stock == 18
    assert shop.cart.items() == {3: 1}
    with pytest.raises(EmptyCart):
        shop.checkout(items={})
