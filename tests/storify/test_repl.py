from __future__ import annotations

import io
import re
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storify.repl import CustomerREPL, StoreREPL, Visitor, greeting
from storify.shop import CustomerSession
from storify.store import Store


@pytest.fixture
def store() -> Iterator[Store]:
    with Store(clock=lambda: 0.0) as store:
        store.seed_demo()
        yield store


def shop(store: Store, script: str, *, name: str = "OPEN") -> str:
    """Run a customer console over ``script`` and return everything it wrote."""
    out = io.StringIO()
    repl = CustomerREPL(
        CustomerSession(store, "tester"), name=name, stdin=io.StringIO(script), stdout=out
    )
    repl.cmdloop()
    return out.getvalue()


def manage(store: Store, script: str, front: FakeFront | None = None) -> str:
    out = io.StringIO()
    StoreREPL(store, front=front, stdin=io.StringIO(script), stdout=out).cmdloop()
    return out.getvalue()


def test_greeting_does_not_say_store_twice() -> None:
    assert greeting("OPEN") == "Welcome to OPEN store. Type help or ? to list commands."
    assert greeting("OPEN store") == "Welcome to OPEN store. Type help or ? to list commands."


def test_customer_repl_shopping_session(store: Store) -> None:
    text = shop(store, "list\nshow mug\nadd mug 2\nadd 3\ncart\ncheckout\ncart\nexit\n")
    assert text.startswith("Welcome to OPEN store. Type help or ? to list commands.\nStore> ")
    assert "  1  Mug           $8.50  20\n" in text
    assert "  5  Lamp         $42.00  sold out\n" not in text
    assert "  5  Lamp         $42.00  1\n" in text
    assert "#1 Mug: $8.50, 20 in stock.\n" in text
    assert "Added 2 x Mug (2 in cart).\n" in text
    assert "Added 1 x Stickers (1 in cart).\n" in text
    assert "  2 x Mug at $8.50 = $17.00\n  1 x Stickers at $3.00 = $3.00\n" in text
    assert "Total: $20.00 for 3 item(s).\n" in text
    assert "Order #1 confirmed: 3 item(s), $20.00. Thank you!\n" in text
    assert "Your cart is empty.\n" in text
    assert text.endswith("Store> Goodbye.\n")
    assert store.product("mug").stock == 18


def test_customer_repl_errors_are_sentences(store: Store) -> None:
    text = shop(store, "add lamp 2\nadd ghost\ncheckout\nadd mug 0\nshow\nadd\nremove mug\n")
    assert "Sorry, only 1 Lamp left (2 requested).\n" in text
    assert "Sorry, no product 'ghost'; type 'list' to see what is on sale.\n" in text
    assert "Sorry, your cart is empty; add something first.\n" in text
    assert "Sorry, a quantity is a whole number from 1 to 1000.\n" in text
    assert "Usage: show <product>\n" in text
    assert "Usage: add <product> [quantity]\n" in text
    assert "Sorry, no product 'mug'" in text  # not in the cart
    assert text.endswith("Store> Goodbye.\n")  # end of input leaves like exit


def test_customer_repl_remove_and_names_with_spaces(store: Store) -> None:
    store.add_product("Blue mug", 900, 4)
    text = shop(store, 'add Blue mug 3\nadd "blue mug"\nremove blue mug 2\nremove 6\ncart\n')
    assert "Added 3 x Blue mug (3 in cart).\n" in text
    assert "Added 1 x Blue mug (4 in cart).\n" in text
    assert "2 x Blue mug left in your cart.\n" in text
    assert "Removed Blue mug from your cart.\n" in text
    assert "Your cart is empty.\n" in text


def test_customer_repl_unknown_input_and_empty_line(store: Store) -> None:
    text = shop(store, "add stickers\n\n\nbuy\n!ls\nproducts\n\x1b[31mred\nexit\n")
    assert text.count("Added 1 x Stickers") == 1  # an empty line does not repeat the add
    assert "Unknown command 'buy'. Type help or ? to list commands.\n" in text
    assert "Unknown command '!ls'. Type help or ? to list commands.\n" in text
    assert "Unknown command 'products'. Type help or ? to list commands.\n" in text
    assert "Unknown command '?[31mred'." in text  # the escape character is not echoed
    assert "\x1b" not in text


def test_customer_repl_surface_is_customer_commands_only() -> None:
    commands = sorted(name[3:] for name in dir(CustomerREPL) if name.startswith("do_"))
    assert commands == ["EOF", "add", "cart", "checkout", "exit", "help", "list", "remove", "show"]


def test_customer_repl_help_lists_commands(store: Store) -> None:
    text = shop(store, "help\n?\nhelp add\n")
    assert text.count("Commands (type help <command> for details):") == 2
    for command in ("add", "cart", "checkout", "exit", "help", "list", "remove", "show"):
        assert command in text
    assert "EOF" not in text
    assert "add <product> [quantity]: put a product in your cart" in text


def test_customer_repl_manager_commands_are_unknown(store: Store) -> None:
    text = shop(store, "restock lamp 100\nprice mug 0\nclose\nkick x\nEOF\n")
    assert text.count("Unknown command") == 4
    assert store.product("lamp").stock == 1
    assert store.product("mug").price == 850


class FakeFront:
    def __init__(self) -> None:
        self.kicked: list[str] = []
        self.sent: list[str] = []
        self.stopped = False

    def visitors(self) -> list[Visitor]:
        return [Visitor("t1", "telnet", "127.0.0.1:5000", 0.0)]

    def kick(self, visitor_id: str) -> bool:
        self.kicked.append(visitor_id)
        return visitor_id == "t1"

    def broadcast(self, message: str) -> int:
        self.sent.append(message)
        return 1

    def close(self) -> None:
        self.stopped = True


def test_store_repl_manages_products(store: Store) -> None:
    text = manage(
        store,
        'add "Blue mug" 9.25 4\nadd Pen 1\nrename pen Quill\nprice quill 2.5\nrestock quill 3\n'
        "remove lamp\nproducts\nadd mug 1\nprice mug lots\nrestock mug\n",
    )
    assert "#6 Blue mug on sale at $9.25, 4 in stock.\n" in text
    assert "#7 Pen on sale at $1.00, 0 in stock.\n" in text
    assert "#7 is now called Quill.\n" in text
    assert "Quill now costs $2.50.\n" in text
    assert "Quill: 3 in stock.\n" in text
    assert "Lamp is no longer on sale.\n" in text
    assert "  7  Quill         $2.50       3  0\n" in text
    assert "Lamp  " not in text.split("Lamp is no longer on sale.")[1]
    assert "Sorry, a product called 'mug' is already on sale.\n" in text
    assert "Sorry, price 'lots' is not an amount like 12, 12.5 or 12.50 (dollars).\n" in text
    assert "Usage: restock <product> <quantity>" in text


def test_store_repl_orders_and_audit(store: Store) -> None:
    shop(store, "add mug 2\ncheckout\nadd lamp\ncheckout\n")
    text = manage(store, "orders\norders 1\norders x\naudit\n")
    assert "2 x Mug" in text and "1 x Lamp" in text
    assert text.count("2 order(s), $59.00 in total.\n") == 2
    assert "Usage: orders [N]\n" in text
    assert "#1   Mug: stocked 20 = 18 in stock + 2 sold  ok\n" in text
    assert "All books balance.\n" in text


def test_store_repl_people_and_close(store: Store) -> None:
    front = FakeFront()
    text = manage(
        store, "customers\nkick t1\nkick zz\nbroadcast Closing soon!\nclose\nproducts\n", front
    )
    assert "t1       telnet  127.0.0.1:5000" in text
    assert "Disconnected t1.\n" in text
    assert "Nobody connected as 'zz'; see customers.\n" in text
    assert "Sent to 1 customer(s).\n" in text
    assert front.sent == ["Closing soon!"] and front.stopped
    assert text.endswith("Closing OPEN...\n")  # nothing after close ran


def test_store_repl_without_server_and_eof(store: Store) -> None:
    text = manage(store, "customers\nkick a\nbroadcast hi\n")
    assert text.count("The store is not serving anyone") == 3
    assert text.endswith("\nClosing OPEN...\n")


def test_store_repl_eof_stops_the_server(store: Store) -> None:
    front = FakeFront()
    manage(store, "", front)
    assert front.stopped


def test_store_repl_usage_lines(store: Store) -> None:
    text = manage(
        store, "add\nadd x\nrename mug\nprice mug\nremove\nkick\nbroadcast\n", FakeFront()
    )
    for usage in (
        "Usage: add <name> <price> [stock]",
        "Usage: rename <product> <new name>",
        "Usage: price <product> <price>",
        "Usage: remove <product>",
        "Usage: kick <id>",
        "Usage: broadcast <message>",
    ):
        assert usage in text
    assert text.count("Usage: add") == 2


def test_repls_with_an_empty_store() -> None:
    with Store() as empty:
        assert "Nothing on sale right now, come back soon." in shop(empty, "list\n")
        assert "No products on sale. Add one" in manage(empty, "products\n")


def test_customer_repl_unbalanced_quotes_and_sold_out(store: Store) -> None:
    store.add_product("Bob's mug", 700, 3)
    text = shop(store, "add \"lamp\ncheckout\nlist\nshow lamp\nshow Bob's mug\n")
    assert "Added 1 x Lamp" in text
    assert "#6 Bob's mug: $7.00, 3 in stock.\n" in text
    assert re.search(r"  5  Lamp +\$42.00  sold out\n", text)
    assert "#5 Lamp: $42.00, sold out.\n" in text


def test_store_repl_customers_when_nobody_is_there(store: Store) -> None:
    class Empty(FakeFront):
        def visitors(self) -> list[Visitor]:
            return []

    assert "Nobody is connected.\n" in manage(store, "customers\n", Empty())


def test_customer_repl_busy_database_is_a_sentence(tmp_path: Path) -> None:
    path = str(tmp_path / "busy.db")
    with Store(path) as store, Store(path, busy_timeout=0.05) as impatient:
        store.add_product("Mug", 850, 5)
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            text = shop(impatient, "add mug\ncheckout\n")
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        assert "Sorry, the store is unavailable, try again.\n" in text
        assert store.product("mug").stock == 5


def test_customer_repl_unicode_digits_are_not_numbers(store: Store) -> None:
    # "²" and "①" pass str.isdigit() but not int(); "٣" would be read as 3.
    text = shop(store, "show ²\nadd mug ²\nadd ① 1\nshow ٣\nremove ²\nadd mug +-5\ncart\n")
    assert "Sorry, no product '²'; " in text
    assert "Sorry, no product 'mug ²'; " in text
    assert "Sorry, no product '①'; " in text
    assert "Sorry, no product '٣'; " in text
    assert "Stickers" not in text  # product #3 was not shown
    assert "Sorry, no product 'mug +-5'; " in text
    assert "Your cart is empty.\n" in text
    assert text.endswith("Store> Goodbye.\n")  # the session went on to the end


def test_store_repl_unicode_digits_are_not_numbers(store: Store) -> None:
    text = manage(
        store,
        "orders ²\norders ٣\norders 99999999999999999999999\nprice mug ٣\n"
        "restock mug ²\nadd Cup 1 ³\nproducts\n",
    )
    assert text.count("Usage: orders [N]") == 3
    assert "Sorry, price '٣' is not an amount like 12, 12.5 or 12.50 (dollars).\n" in text
    assert "Usage: restock <product> <quantity>" in text
    assert "Sorry, price '³' is not an amount" in text
    assert store.product("mug") == store.product(1) and store.product(1).price == 850
    assert store.product(1).stock == 20
    assert text.endswith("Manager> \nClosing OPEN...\n")


def test_customer_repl_commands_are_case_insensitive(store: Store) -> None:
    text = shop(store, "LIST\nShow MUG\nADD mug 2\nCart\nHELP ADD\nCHECKOUT\nExit\nlist\n")
    assert "  1  Mug           $8.50  20\n" in text
    assert "#1 Mug: $8.50, 20 in stock.\n" in text
    assert "Added 2 x Mug (2 in cart).\n" in text
    assert "Total: $17.00 for 2 item(s).\n" in text
    assert "add <product> [quantity]: put a product in your cart" in text
    assert "Order #1 confirmed: 2 item(s), $17.00. Thank you!\n" in text
    assert "Unknown command" not in text
    assert text.endswith("Store> Goodbye.\n")  # Exit left: the last list never ran
    assert text.count("Stickers") == 1


def test_store_repl_commands_are_case_insensitive(store: Store) -> None:
    front = FakeFront()
    text = manage(store, "PRODUCTS\nRestock Mug 5\nAUDIT\nOrders\nKICK t1\nCLOSE\n", front)
    assert "Mug: 25 in stock.\n" in text
    assert "All books balance.\n" in text
    assert "0 order(s), $0.00 in total.\n" in text
    assert front.kicked == ["t1"] and front.stopped
    assert "Unknown command" not in text


def test_hints_name_the_commands_of_their_console(store: Store) -> None:
    managed = manage(store, "price ghost 5\nrestock ghost 1\nremove ghost\nrename ghost x\n")
    assert managed.count("; type 'products' to see what is on sale.\n") == 4
    assert "'list'" not in managed
    shopped = shop(store, "show ghost\nadd ghost\n")
    assert shopped.count("Sorry, no product 'ghost'; type 'list' to see what is on sale.\n") == 2


@pytest.mark.postgres
def test_customer_checkout_retried_after_a_commit_cut_off_buys_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store reaches PostgreSQL through a fault proxy. The first COMMIT reaches the
    # server, which commits, but its reply is lost and the connection reset (a real
    # connection break; before the session kept an attempt id this test bought twice):
    # the customer is told "unavailable" though the order went through. Typing
    # checkout again must replay that order, not buy the cart a second time.
    import psycopg

    from sockwork.faults import Timeout
    from sockwork.proxy import FaultProxy

    parts = urllib.parse.urlsplit(postgres_url)
    upstream = (str(parts.hostname), int(parts.port or 5432))
    with FaultProxy(upstream=upstream) as proxy:
        host, port = proxy.address
        url = urllib.parse.urlunsplit(parts._replace(netloc=f"postgres@{host}:{port}"))
        with Store(url, pool_size=1) as store:
            store.seed_demo()
            real_execute = psycopg.Connection.execute
            cuts: list[str] = []

            def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                if query == "COMMIT" and not cuts:
                    cuts.append("armed")
                    # The reply to COMMIT is swallowed, then the connection is reset.
                    proxy.add(Timeout(1.0, reset=True), direction="downstream", name="cut")
                    try:
                        return real_execute(self, query, *args, **kwargs)
                    finally:
                        proxy.remove("cut")
                return real_execute(self, query, *args, **kwargs)

            monkeypatch.setattr(psycopg.Connection, "execute", execute)
            out = shop(store, "add mug 2\ncheckout\ncheckout\ncart\n")
            assert cuts == ["armed"]
            assert "Sorry, the store is unavailable, try again." in out
            assert "Order #1 confirmed: 2 item(s), $17.00. Thank you!" in out
            assert "Your cart is empty." in out
            assert store.totals() == (1, 1700)
            assert store.product("mug").stock == 18
            (order,) = store.orders()
            assert order.request_id is not None and order.request_id.startswith("cart-")


def test_customer_session_keeps_one_attempt_id_per_cart(store: Store) -> None:
    session = CustomerSession(store, "tester")
    session.add("mug", 1)
    first = session.prepare_checkout().request.request_id
    assert first is not None and first.startswith("cart-")
    assert session.prepare_checkout().request.request_id == first  # a retry: same id
    session.add("mug", 1)
    changed = session.prepare_checkout().request.request_id
    assert changed not in (None, first)  # the cart changed: a new attempt
    receipt = session.checkout()
    assert receipt.order.request_id == changed and not receipt.replayed
    session.add("mug", 2)  # the same items as the bought cart, but a new purchase
    again = session.checkout()
    assert again.order.request_id not in (None, changed) and not again.replayed
    assert store.product("mug").stock == 16
    # An explicit request id or items (the API's) are left as given.
    assert session.prepare_checkout(items={"mug": 1}).request.request_id is None
    session.add("mug", 1)
    assert session.prepare_checkout(request_id="mine").request.request_id == "mine"
