"""Hypothesis: any sequence of manager and customer operations keeps the books balanced."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from storify.errors import StoreError
from storify.store import Store

PRODUCTS = ["Mug", "Pen", "Cap"]

operation = st.one_of(
    st.tuples(st.just("restock"), st.sampled_from(PRODUCTS), st.integers(1, 5)),
    st.tuples(st.just("remove"), st.sampled_from(PRODUCTS), st.just(0)),
    st.tuples(st.just("readd"), st.sampled_from(PRODUCTS), st.integers(0, 5)),
    st.tuples(st.just("price"), st.sampled_from(PRODUCTS), st.integers(0, 2000)),
    st.tuples(
        st.just("checkout"),
        st.dictionaries(st.sampled_from(PRODUCTS), st.integers(1, 4), min_size=1, max_size=3),
        st.sampled_from([None, "r1", "r2", "r3"]),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=25))
def test_store_books_balance_after_any_operations(operations: list[tuple[object, ...]]) -> None:
    with Store() as store:
        ids = {name: store.add_product(name, 100, 3).id for name in PRODUCTS}
        model = {name: 3 for name in PRODUCTS}  # units on the shelf, removed or not
        on_sale = set(PRODUCTS)
        orders = 0
        for kind, target, amount in operations:
            try:
                if kind == "restock":
                    assert isinstance(target, str) and isinstance(amount, int)
                    store.restock(target, amount)
                    model[target] += amount
                elif kind == "remove":
                    assert isinstance(target, str)
                    store.remove_product(target)
                    on_sale.discard(target)
                elif kind == "readd":
                    assert isinstance(target, str) and isinstance(amount, int)
                    store.add_product(target, 100, amount)
                    model[target] += amount
                    on_sale.add(target)
                elif kind == "price":
                    assert isinstance(target, str) and isinstance(amount, int)
                    store.set_price(target, amount)
                else:
                    assert isinstance(target, dict)
                    items = {ids[name]: quantity for name, quantity in target.items()}
                    request_id = amount if isinstance(amount, str) else None
                    receipt = store.checkout(items, customer="c", request_id=request_id)
                    if not receipt.replayed:
                        for name, quantity in target.items():
                            model[name] -= quantity
                        orders += 1
            except StoreError:
                pass  # refused: nothing may have changed (checked below)
            books = {line.name: line for line in store.audit()}
            assert {name: books[name].stock for name in PRODUCTS} == model
            assert all(line.balanced and line.stock >= 0 for line in books.values())
            assert {p.name for p in store.products()} == on_sale
            assert store.totals()[0] == orders
