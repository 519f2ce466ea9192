"""A checkout cut by a reset is all or nothing, with faults injected into the client's socket."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from sockwork.faults import CloseAfter, Match, inject
from storify.client import ApiError, StoreClient
from storify.server import ApiServer
from storify.store import Store

CHECKOUT: dict[str, object] = {"items": {"mug": 2}, "request_id": "reset-1"}
# The request's frame: 4-byte length, then compact JSON as StoreClient writes it.
REQUEST_SIZE = 4 + len(
    json.dumps({"id": 1, "op": "checkout", **CHECKOUT}, separators=(",", ":")).encode()
)


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    with Store(database) as store:
        store.seed_demo()
        yield store


@pytest.fixture
def server(store: Store) -> Iterator[ApiServer]:
    with ApiServer(store, port=0) as server:
        yield server


def _checkout_under(server: ApiServer, fault: CloseAfter) -> BaseException:
    """Send the checkout with ``fault`` injected into the client's connection."""
    match = Match(role="client", port=server.address[1])
    with inject(fault, match=match, seed=1):
        with StoreClient.connect(server.address, timeout=10) as shop:
            with pytest.raises((ConnectionError, OSError)) as info:
                shop.request("checkout", **CHECKOUT)
    # The client may give up before the server has answered (cut at 0 bytes of the
    # reply): on PostgreSQL the checkout then still runs in the server's store thread.
    # Wait until the server has finished with that connection (polled: no event).
    deadline = time.monotonic() + 10
    while len(server) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server) == 0, "the server never finished the cut connection"
    return info.value


def _status(server: ApiServer) -> str:
    with StoreClient.connect(server.address) as shop:
        try:
            shop.request("order_status", request_id="reset-1")
        except ApiError as error:
            return error.code
        return "committed"


@pytest.mark.parametrize("cut", [0, 1, 3, 4, 5, 20, REQUEST_SIZE - 1])
def test_checkout_reset_inside_the_request_commits_nothing(
    server: ApiServer, store: Store, cut: int
) -> None:
    _checkout_under(server, CloseAfter(cut, reset=True, direction="send"))
    assert _status(server) == "not_found"
    assert store.product("mug").stock == 20
    assert store.totals() == (0, 0)


@pytest.mark.parametrize("cut", [0, 1, 4, 10, 50])
def test_checkout_reset_inside_the_reply_commits_once(
    server: ApiServer, store: Store, cut: int
) -> None:
    error = _checkout_under(server, CloseAfter(cut, reset=True, direction="recv"))
    assert isinstance(error, ConnectionError)
    # The store commits before replying; the client only lost the reply. On PostgreSQL
    # the store thread may still be committing after the connection is gone, and
    # "not_found" then means "not yet": wait for the commit (polled: no event to await).
    deadline = time.monotonic() + 10
    while (status := _status(server)) == "not_found" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert status == "committed"
    with StoreClient.connect(server.address) as shop:
        retry = shop.request("checkout", **CHECKOUT)
    assert retry["replayed"] is True
    assert store.product("mug").stock == 18
    assert store.totals() == (1, 1700)
