from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storify.api import OPERATIONS, ApiSession, CheckoutStep, encode_reply
from storify.errors import OutOfStock
from storify.records import CheckoutRequest, Order, OrderLine, Receipt
from storify.shop import PendingCheckout
from storify.store import Store


@pytest.fixture
def store() -> Iterator[Store]:
    with Store(clock=lambda: 5.0) as store:
        store.seed_demo()
        yield store


@pytest.fixture
def api(store: Store) -> ApiSession:
    return ApiSession(store, "api test")


def strict_json(reply: object) -> bytes:
    """Encode ``reply`` as the wire does, but strictly: no NaN, valid UTF-8 (or raise)."""
    return json.dumps(reply, allow_nan=False, ensure_ascii=False).encode("utf-8")


def ok(api: ApiSession, **request: object) -> dict[str, object]:
    reply = api.handle(request)
    assert reply["ok"] is True, reply
    strict_json(reply)  # every reply is plain JSON
    result = reply["result"]
    assert isinstance(result, dict)
    return result


def error(api: ApiSession, request: object) -> dict[str, object]:
    reply = api.handle(request)
    assert reply["ok"] is False, reply
    strict_json(reply)
    detail = reply["error"]
    assert isinstance(detail, dict)
    return detail


def test_api_echoes_request_ids(api: ApiSession) -> None:
    assert api.handle({"id": 7, "op": "cart"})["id"] == 7
    assert api.handle({"id": "a", "op": "cart"})["id"] == "a"
    assert api.handle({"op": "cart"})["id"] is None
    assert api.handle({"id": 3, "op": "nope"})["id"] == 3


def test_api_list_show_catalog(api: ApiSession) -> None:
    products = ok(api, op="list")["products"]
    assert isinstance(products, list) and len(products) == 5
    assert products[0] == {"id": 1, "name": "Mug", "price": 850, "stock": 20}
    assert ok(api, op="show", product="lamp")["product"] == {
        "id": 5,
        "name": "Lamp",
        "price": 4200,
        "stock": 1,
    }
    assert ok(api, op="show", product=2)["product"]["name"] == "T-shirt"  # type: ignore[index]
    catalog = ok(api, op="catalog")
    assert catalog["products"][0] == {  # type: ignore[index]
        "id": 1,
        "name": "Mug",
        "price": 850,
        "stock": 20,
        "stocked": 20,
        "sold": 0,
    }
    assert (catalog["orders"], catalog["revenue"]) == (0, 0)


def test_api_cart_and_checkout(api: ApiSession, store: Store) -> None:
    added = ok(api, op="add", product="mug", quantity=2)
    assert added["in_cart"] == 2
    assert ok(api, op="add", product="stickers")["in_cart"] == 1
    removed = ok(api, op="remove", product="stickers")
    assert removed == {
        "product": "Stickers",
        "in_cart": 0,
        "cart": {
            "lines": [{"id": 1, "name": "Mug", "price": 850, "quantity": 2, "subtotal": 1700}],
            "total": 1700,
            "units": 2,
        },
    }
    result = ok(api, op="checkout", request_id="r1")
    assert result["replayed"] is False
    assert result["order"] == {
        "id": 1,
        "request_id": "r1",
        "customer": "api test",
        "total": 1700,
        "units": 2,
        "created": 5.0,
        "lines": [{"product_id": 1, "name": "Mug", "price": 850, "quantity": 2}],
    }
    assert ok(api, op="cart") == {"lines": [], "total": 0, "units": 0}
    # The reply was lost; the client retries the same request id on a new connection.
    retry = ApiSession(store, "api test 2")
    again = ok(retry, op="checkout", request_id="r1", items={"mug": 2})
    assert again["replayed"] is True and again["order"] == result["order"]
    assert store.product("mug").stock == 18
    status = ok(retry, op="order_status", request_id="r1")
    assert status == {"status": "committed", "order": result["order"]}
    assert ok(retry, op="order_status", order_id=1)["order"] == result["order"]


def test_api_checkout_items_without_cart(api: ApiSession, store: Store) -> None:
    result = ok(api, op="checkout", items={"lamp": 1, "2": 1})
    assert result["order"]["total"] == 5700  # type: ignore[index]
    detail = error(api, {"op": "checkout", "items": {"lamp": 1}, "id": 9})
    assert detail == {
        "code": "out_of_stock",
        "message": "Lamp is sold out (1 requested)",
        "product": "Lamp",
        "requested": 1,
        "available": 0,
    }
    assert store.totals() == (1, 5700)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ([], "bad_request"),
        ("list", "bad_request"),
        ({"id": [1], "op": "list"}, "bad_request"),
        ({"id": True, "op": "list"}, "bad_request"),
        ({}, "unknown_op"),
        ({"op": "restock", "product": "mug", "quantity": 5}, "unknown_op"),
        ({"op": "__init__"}, "unknown_op"),
        ({"op": "show"}, "bad_request"),
        ({"op": "show", "product": True}, "bad_request"),
        ({"op": "show", "product": "ghost"}, "unknown_product"),
        ({"op": "show", "product": 2**70}, "unknown_product"),
        ({"op": "add", "product": "mug", "quantity": "2"}, "bad_request"),
        ({"op": "add", "product": "mug", "quantity": 0}, "invalid_value"),
        ({"op": "add", "product": "lamp", "quantity": 2}, "out_of_stock"),
        ({"op": "remove", "product": "mug"}, "unknown_product"),
        ({"op": "checkout"}, "empty_cart"),
        ({"op": "checkout", "items": {}}, "empty_cart"),
        ({"op": "checkout", "items": [1]}, "bad_request"),
        ({"op": "checkout", "items": {"mug": "1"}}, "invalid_value"),
        ({"op": "checkout", "items": {"0": 1}}, "unknown_product"),
        ({"op": "checkout", "items": {"9" * 25: 1}}, "unknown_product"),
        ({"op": "checkout", "items": {"77": 1}}, "unknown_product"),
        ({"op": "checkout", "items": {"mug": 1}, "request_id": 5}, "bad_request"),
        ({"op": "checkout", "items": {"mug": 1}, "request_id": ""}, "invalid_value"),
        ({"op": "order_status"}, "bad_request"),
        ({"op": "order_status", "order_id": 99}, "not_found"),
        ({"op": "order_status", "order_id": -1}, "not_found"),
        ({"op": "order_status", "order_id": 2**80}, "not_found"),
        ({"op": "order_status", "request_id": "never"}, "not_found"),
        # Unicode digits are not product numbers: "²".isdigit() is true, int() refuses it.
        ({"op": "show", "product": "²"}, "unknown_product"),
        ({"op": "show", "product": "#①"}, "unknown_product"),
        ({"op": "show", "product": "٣"}, "unknown_product"),  # not product #3
        ({"op": "add", "product": "²"}, "unknown_product"),
        ({"op": "remove", "product": "²"}, "unknown_product"),
        ({"op": "checkout", "items": {"²": 1}}, "unknown_product"),
        # Text UTF-8 cannot carry, and ids JSON cannot carry.
        ({"op": "list", "id": "\ud800"}, "bad_request"),
        ({"op": "list", "id": float("nan")}, "bad_request"),
        ({"op": "list", "id": float("inf")}, "bad_request"),
        ({"op": "show", "product": "mug\udfff"}, "bad_request"),
        ({"op": "checkout", "items": {"\ud800": 1}}, "bad_request"),
        ({"op": "checkout", "items": {"mug": 1}, "request_id": "r\ud800"}, "bad_request"),
        ({"op": "order_status", "request_id": "\udc80"}, "bad_request"),
        ({"op": "\ud800"}, "bad_request"),
        ({"op": "list", "extra": [{"deep": ["\ud800"]}]}, "bad_request"),
        ({"op": "list", "\ud800": 1}, "bad_request"),
    ],
)
def test_api_errors_are_structured(api: ApiSession, request_: object, code: str) -> None:
    detail = error(api, request_)
    assert detail["code"] == code
    assert isinstance(detail["message"], str) and detail["message"]


@pytest.mark.parametrize(
    ("request_", "reply_id", "field"),
    [
        ({"id": "\ud800", "op": "list"}, None, "id"),
        ({"id": float("nan"), "op": "list"}, None, "id"),
        ({"id": float("-inf"), "op": "list"}, None, "id"),
        ({"id": 4, "op": "show", "product": "\ud800"}, 4, "product"),
        ({"id": "x", "op": "checkout", "items": {"mug\udc00": 1}}, "x", "items"),
        ({"id": 1.5, "op": "list", "\ud800": 0}, 1.5, ""),
    ],
)
def test_api_refuses_what_cannot_be_echoed_as_json(
    api: ApiSession, store: Store, request_: dict[str, object], reply_id: object, field: str
) -> None:
    reply = api.handle(request_)
    strict_json(reply)
    assert reply["id"] == reply_id
    detail = reply["error"]
    assert isinstance(detail, dict)
    assert (detail["code"], detail["field"]) == ("bad_request", field)
    assert store.totals() == (0, 0)


def test_api_unicode_digit_is_not_product_number(api: ApiSession) -> None:
    assert error(api, {"op": "show", "product": "٣"})["product"] == "٣"
    assert ok(api, op="show", product="3")["product"] == {  # ASCII still works
        "id": 3,
        "name": "Stickers",
        "price": 300,
        "stock": 50,
    }


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from([*OPERATIONS, "nope"]),
    fields=st.dictionaries(
        st.sampled_from(["id", "product", "quantity", "items", "request_id", "order_id", "x"]),
        _json_values | st.sampled_from(["mug", "2", "²", "٣", "#1", "\ud800"]),
        max_size=4,
    ),
)
def test_api_every_reply_is_strict_json(op: str, fields: dict[str, object]) -> None:
    with Store() as store:
        store.seed_demo()
        reply = ApiSession(store, "api property").handle({"op": op, **fields})
    strict_json(reply)  # raises on NaN/Infinity or a lone surrogate anywhere in the reply
    assert isinstance(reply["ok"], bool)


def test_api_unknown_op_lists_operations(api: ApiSession) -> None:
    assert error(api, {"op": "x"})["operations"] == list(OPERATIONS)


def test_api_request_conflict(api: ApiSession) -> None:
    ok(api, op="checkout", items={"mug": 1}, request_id="k")
    detail = error(api, {"op": "checkout", "items": {"mug": 2}, "request_id": "k"})
    assert (detail["code"], detail["order_id"]) == ("request_conflict", 1)


def test_result_of_rejects_what_is_no_reply() -> None:
    from sockwork.errors import ProtocolError
    from storify.client import ApiError, result_of

    for bad in ([], {"ok": "yes"}, {"ok": True}, {"ok": False}):
        with pytest.raises(ProtocolError):
            result_of(bad)
    with pytest.raises(ApiError) as info:
        result_of({"ok": False, "error": {"code": "x", "message": "m", "extra": 1}})
    assert (info.value.code, str(info.value), info.value.facts()) == ("x", "m", {"extra": 1})


@pytest.mark.parametrize(
    ("code", "facts", "kinds"),
    [
        ("bad_request", {"field": "id"}, ("BadRequest", ValueError)),
        ("unknown_op", {"operations": ["list"]}, ("UnknownOperation", ValueError)),
        ("bad_frame", {}, ("BadFrame", ValueError)),
        ("unavailable", {"retryable": True}, ("StoreUnavailableReply", "StoreUnavailable")),
        ("busy", {}, ("StoreBusy", ConnectionError)),
        ("unknown_product", {"product": "²"}, ("UnknownProductReply", "UnknownProduct")),
        ("not_found", {"order_id": 9, "request_id": None}, ("OrderNotFoundReply", LookupError)),
        (
            "out_of_stock",
            {"product": "Lamp", "requested": 5, "available": 1},
            ("OutOfStockReply", "OutOfStock"),
        ),
        ("empty_cart", {}, ("EmptyCartReply", "EmptyCart")),
        ("cart_full", {"limit": 100}, ("CartFullReply", "CartFull")),
        ("invalid_value", {"field": "quantity"}, ("InvalidValueReply", "InvalidValue")),
        ("product_exists", {"product": "Mug"}, ("DuplicateProductReply", "DuplicateProduct")),
        (
            "request_conflict",
            {"request_id": "k", "order_id": 1},
            ("RequestConflictReply", "RequestConflict"),
        ),
    ],
)
def test_result_of_raises_one_class_per_error_code(
    code: str, facts: dict[str, object], kinds: tuple[object, ...]
) -> None:
    import storify
    from sockwork.errors import Busy, SockworkError
    from storify.client import result_of

    with pytest.raises(storify.ApiError) as info:
        result_of({"id": 1, "ok": False, "error": {"code": code, "message": "m", **facts}})
    error = info.value
    for kind in kinds:
        assert isinstance(error, getattr(storify, kind) if isinstance(kind, str) else kind)
    assert isinstance(error, storify.StoreError)
    assert (error.code, str(error), error.facts()) == (code, "m", facts)
    for name, value in facts.items():  # the domain error's attributes, as sent
        assert getattr(error, name) == value
    assert isinstance(error, (Busy, SockworkError)) == (code == "busy")


def test_api_errors_are_caught_as_the_domain_error_over_the_api() -> None:
    from storify import OutOfStock
    from storify.client import result_of

    reply = {
        "code": "out_of_stock",
        "message": "only 1 Lamp left",
        "product": "Lamp",
        "requested": 5,
        "available": 1,
    }
    with pytest.raises(OutOfStock) as info:
        result_of({"id": 1, "ok": False, "error": reply})
    assert (info.value.product, info.value.requested, info.value.available) == ("Lamp", 5, 1)


_texts = st.text(
    st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12
)  # what a database can hold: any Unicode but lone surrogates


@settings(max_examples=300, deadline=None)
@given(
    reply_to=st.none()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _texts,
    order_id=st.integers(1, 2**63 - 1),
    request_id=st.none() | _texts,
    customer=_texts,
    created=st.floats(0, 2e9) | st.integers(0, 2**40),
    lines=st.lists(
        st.tuples(st.integers(1, 2**63 - 1), _texts, st.integers(0, 10**9), st.integers(1, 1000)),
        min_size=1,
        max_size=4,
    ),
    replayed=st.booleans(),
)
def test_checkout_reply_is_encoded_as_json_dumps_would(
    reply_to: object,
    order_id: int,
    request_id: str | None,
    customer: str,
    created: float,
    lines: list[tuple[int, str, int, int]],
    replayed: bool,
) -> None:
    order_lines = tuple(OrderLine(*line) for line in lines)
    total = sum(line.subtotal for line in order_lines)
    order = Order(order_id, request_id, customer, order_lines, total, created)
    with Store() as store:
        step = CheckoutStep(
            ApiSession(store, customer),
            reply_to,
            PendingCheckout(CheckoutRequest({1: 1}, customer, request_id), from_cart=False),
        )
        receipt = Receipt(order, replayed=replayed)
        encoded = step.encode(receipt)
        assert encoded == encode_reply(step.reply(receipt))
    assert encoded == json.dumps(
        json.loads(encoded), separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def test_checkout_error_reply_is_encoded_like_any_reply(api: ApiSession) -> None:
    step = api.begin({"id": "x", "op": "checkout", "items": {"1": 99}})
    assert isinstance(step, CheckoutStep)
    refusal = OutOfStock("Mug", requested=99, available=20)
    assert step.encode(refusal) == encode_reply(step.reply(refusal))
    assert json.loads(step.encode(refusal))["error"]["code"] == "out_of_stock"


@pytest.mark.parametrize(
    "text",
    [
        '{"id": 1, "op": "show", "product": "\\ud800"}',
        '{"id": 1, "op": "show", "product": "mug", "x": ["\\udfff"]}',
        '{"id": 1, "op": "checkout", "items": {"\\ud800": 1}}',
        '{"id": 1, "op": "show", "product": "\\u004dug"}',  # an escape, not a surrogate
        '{"id": 1, "op": "show", "product": "mug"}',
        '{"id": 1, "op": "show", "product": "m\\\\ug"}',  # an escaped backslash
    ],
)
def test_api_begin_with_the_raw_text_answers_as_without(api: ApiSession, text: str) -> None:
    request = json.loads(text)
    assert api.begin(request, raw=text.encode()) == api.begin(request)
