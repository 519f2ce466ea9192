"""The two consoles of the store: the manager's (local) and the customers' (telnet).

# Rules:
# - CustomerREPL has only customer commands. cmd.Cmd dispatches a line to
#   ``do_<word>`` (or ``default``), so the set of ``do_`` methods *is* the remote
#   surface; a test pins it. No ``do_shell`` (``!``), nothing that evaluates text.
# - Everything goes through ``self.stdout``/``self.stdin`` (never bare print/input),
#   so the REPLs run the same on a terminal, on a telnet connection or on StringIO.
# - Customer text echoed back is cleaned of control characters, so nobody can send
#   terminal escape sequences to themselves or to the manager's console.
# - An empty line does nothing (cmd.Cmd would repeat the last command: a stray
#   newline must not buy twice).
# - Command words are case-insensitive (``LIST`` is ``list``, ``help ADD`` is
#   ``help add``); only ``EOF``, which cmd.Cmd itself passes at end of input, keeps
#   its case. Hints name the commands of the console they appear on.
"""

from __future__ import annotations

import cmd
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

from storify.errors import StoreError, UnknownProduct
from storify.money import format_price, parse_price
from storify.notice import Notices
from storify.shop import CustomerSession
from storify.store import Store

__all__ = [
    "MAX_STORE_NAME",
    "CustomerREPL",
    "StoreREPL",
    "Storefront",
    "Visitor",
    "check_store_name",
    "greeting",
]

MAX_STORE_NAME = 40


def check_store_name(name: str) -> str:
    """Return the store's name without outer spaces, or raise ValueError saying what is accepted.

    The name is in every customer's greeting and broadcast: 1 to 40 printable characters.
    """
    text = name.strip()
    if not 1 <= len(text) <= MAX_STORE_NAME or not text.isprintable():
        raise ValueError(
            f"the store's name is 1 to {MAX_STORE_NAME} printable characters, not {name!r}"
        )
    return text


def greeting(name: str) -> str:
    """Return the line a customer sees on connecting: ``Welcome to OPEN store. ...``."""
    shop = name if name.lower().endswith("store") else f"{name} store"
    return f"Welcome to {shop}. Type help or ? to list commands."


def _clean(text: str, limit: int = 40) -> str:
    """Return ``text`` without control characters, cut to ``limit`` characters."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in text)
    return printable if len(printable) <= limit else printable[: limit - 3] + "..."


def _words(arg: str) -> list[str]:
    """Split a command's argument like a shell would (quotes group).

    Unbalanced quotes (``show Bob's mug``, ``add "lamp``) fall back to splitting on
    spaces, keeping apostrophes and dropping stray double quotes.
    """
    try:
        return shlex.split(arg)
    except ValueError:
        return [word for word in (part.strip('"') for part in arg.split()) if word]


# A whole number typed by a person: ASCII digits only. str.isdigit() is also true
# for "²" or "①" (int() refuses them) and for "٣" (int() reads 3): neither may pass.
_WHOLE = re.compile(r"[+-]?[0-9]{1,11}", re.ASCII)


def _is_number(word: str) -> bool:
    return _WHOLE.fullmatch(word) is not None


def _product_and_quantity(arg: str) -> tuple[str, int | None]:
    """Parse ``<product> [quantity]``: a trailing whole number is the quantity."""
    words = _words(arg)
    if len(words) >= 2 and _is_number(words[-1]):
        return " ".join(words[:-1]), int(words[-1])
    return " ".join(words), None


class _Console(cmd.Cmd):
    """What both REPLs share: errors shown as sentences, no repeat on empty lines."""

    catalog_command = "list"  # the command that lists the products, named in hints

    def __init__(self, stdin: IO[str] | None, stdout: IO[str] | None) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        if stdin is not None:
            self.use_rawinput = False  # cmd.Cmd would otherwise read sys.stdin via input()

    def say(self, text: str = "") -> None:
        """Write one line (or several) to this console's output."""
        self.stdout.write(text + "\n")

    def emptyline(self) -> bool:
        """Do nothing on an empty line (cmd.Cmd would repeat the previous command)."""
        return False

    def parseline(self, line: str) -> tuple[str | None, str | None, str]:
        """Split a line into command, argument and line; the command in lower case."""
        command, arg, line = super().parseline(line)
        if command is not None and command != "EOF":
            command = command.lower()
        return command, arg, line

    def do_help(self, arg: str) -> bool | None:
        """help [command]: list the commands, or explain one (``help add``)."""
        return super().do_help(arg.strip().lower())

    def default(self, line: str) -> None:
        """Answer a line that is no command."""
        word = line.split()[0] if line.split() else line
        self.say(f"Unknown command {_clean(word)!r}. Type help or ? to list commands.")

    def onecmd(self, line: str) -> bool:
        """Run one command line; a domain error is shown as ``Sorry, ...`` and the loop goes on."""
        try:
            return bool(super().onecmd(line))
        except UnknownProduct as error:
            self.say(
                f"Sorry, no product {_clean(error.product)!r}; "
                f"type {self.catalog_command!r} to see what is on sale."
            )
            return False
        except StoreError as error:
            self.say(f"Sorry, {error}.")
            return False


class CustomerREPL(_Console):
    """The console a customer gets over telnet: browse, fill a cart, check out.

    Args:
        session: the customer's session (cart and store).
        name: the store's name, for the greeting.
        stdin, stdout: the customer's connection (``sys.stdin``/``sys.stdout`` when None).
        on_leave: called once when the console stops, however it stops (exit, end of
            input, a broken connection), e.g. to tell the manager.
    """

    prompt = "Store> "
    doc_header = "Commands (type help <command> for details):"

    def __init__(
        self,
        session: CustomerSession,
        *,
        name: str = "OPEN",
        stdin: IO[str] | None = None,
        stdout: IO[str] | None = None,
        on_leave: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(stdin, stdout)
        self.session = session
        self.name = name
        self.intro = greeting(name)
        self.on_leave = on_leave

    def cmdloop(self, intro: object | None = None) -> None:
        """Serve the customer until they leave; then call ``on_leave`` (even on errors)."""
        try:
            super().cmdloop(intro)
        finally:
            if self.on_leave is not None:
                self.on_leave()

    def do_list(self, arg: str) -> None:
        """list: show the products on sale, their prices and how many are left."""
        products = self.session.list()
        if not products:
            self.say("Nothing on sale right now, come back soon.")
            return
        width = max(len(product.name) for product in products)
        self.say(f"{'#':>3}  {'Product':<{width}}  {'Price':>9}  Stock")
        for product in products:
            stock = str(product.stock) if product.stock else "sold out"
            price = format_price(product.price)
            self.say(f"{product.id:>3}  {product.name:<{width}}  {price:>9}  {stock}")

    def do_show(self, arg: str) -> None:
        """show <product>: show one product (by name or number)."""
        if not arg.strip():
            self.say("Usage: show <product>")
            return
        product = self.session.show(" ".join(_words(arg)))
        left = f"{product.stock} in stock" if product.stock else "sold out"
        self.say(f"#{product.id} {product.name}: {format_price(product.price)}, {left}.")

    def do_add(self, arg: str) -> None:
        """add <product> [quantity]: put a product in your cart (1 unless you say)."""
        ref, quantity = _product_and_quantity(arg)
        if not ref:
            self.say("Usage: add <product> [quantity]")
            return
        product, held = self.session.add(ref, 1 if quantity is None else quantity)
        self.say(f"Added {1 if quantity is None else quantity} x {product.name} ({held} in cart).")

    def do_remove(self, arg: str) -> None:
        """remove <product> [quantity]: take a product (or that many) out of your cart."""
        ref, quantity = _product_and_quantity(arg)
        if not ref:
            self.say("Usage: remove <product> [quantity]")
            return
        name, left = self.session.remove(ref, quantity)
        if left:
            self.say(f"{left} x {name} left in your cart.")
        else:
            self.say(f"Removed {name} from your cart.")

    def do_cart(self, arg: str) -> None:
        """cart: show what is in your cart and what it costs."""
        view = self.session.view()
        if not view.lines:
            self.say("Your cart is empty.")
            return
        for line in view.lines:
            if line.product is None:
                self.say(f"  {line.quantity} x #{line.product_id} (no longer on sale)")
            else:
                self.say(
                    f"  {line.quantity} x {line.product.name} at "
                    f"{format_price(line.product.price)} = {format_price(line.subtotal)}"
                )
        self.say(f"Total: {format_price(view.total)} for {view.units} item(s).")

    def do_checkout(self, arg: str) -> None:
        """checkout: buy everything in your cart."""
        order = self.session.checkout().order
        self.say(
            f"Order #{order.id} confirmed: {order.units} item(s), {format_price(order.total)}. "
            "Thank you!"
        )

    def do_exit(self, arg: str) -> bool:
        """exit: leave the store."""
        self.say("Goodbye.")
        return True

    def do_EOF(self, arg: str) -> bool:  # noqa: N802 - cmd.Cmd's name for end of input
        """Leave the store when the connection's input ends (Ctrl-D)."""
        return self.do_exit(arg)

    def get_names(self) -> list[str]:
        """Return the attribute names help lists, without ``EOF`` (not a command to type)."""
        return [name for name in super().get_names() if name != "do_EOF"]


@dataclass(frozen=True)
class Visitor:
    """Someone connected to the store: a telnet customer or an API program."""

    id: str
    kind: str
    address: str
    since: float


class Storefront(Protocol):
    """The running server, as the manager's console drives it (``storify serve`` provides it)."""

    def visitors(self) -> list[Visitor]:
        """Return who is connected now."""
        ...

    def kick(self, visitor_id: str) -> bool:
        """Disconnect one visitor; returns False if there is no such visitor."""
        ...

    def broadcast(self, message: str) -> int:
        """Send a message line to every telnet customer; returns how many received it."""
        ...

    def close(self) -> None:
        """Stop serving: close every connection and the listening sockets."""
        ...


class StoreREPL(_Console):
    """The manager's console: products, orders, customers, and closing the store.

    Args:
        store: the store to manage.
        front: the running server (None when there is none, e.g. in tests of products).
        name: the store's name.
        notices: the customers' comings and goings, shown here (``quiet`` silences them).
        stdin, stdout: the manager's terminal (``sys.stdin``/``sys.stdout`` when None).
    """

    prompt = "Manager> "
    doc_header = "Manager commands (type help <command> for details):"
    catalog_command = "products"

    def __init__(
        self,
        store: Store,
        *,
        front: Storefront | None = None,
        name: str = "OPEN",
        notices: Notices | None = None,
        stdin: IO[str] | None = None,
        stdout: IO[str] | None = None,
    ) -> None:
        super().__init__(stdin, stdout)
        self.store = store
        self.front = front
        self.name = name
        self.notices = notices
        self.intro = f"Managing {name}. Type help or ? to list commands; close to stop the store."
        self._waiting = False  # at the prompt, waiting for the manager to type a command
        if notices is not None:
            notices.attach(self.pending_line)

    # -- the prompt, for notices ------------------------------------------------------------

    def pending_line(self) -> str | None:
        """Return the prompt and what the manager typed so far, or None when not at the prompt.

        Called from the notices' thread to redraw the line a notice interrupted.
        """
        if not self._waiting:
            return None
        typed = ""
        readline = sys.modules.get("readline")  # imported by cmdloop when it reads a terminal
        if self.use_rawinput and readline is not None:
            typed = readline.get_line_buffer()
        return self.prompt + typed

    def preloop(self) -> None:
        """Mark the console as waiting at its prompt."""
        self._waiting = True

    def precmd(self, line: str) -> str:
        """Mark the console as busy with a command."""
        self._waiting = False
        return line

    def postcmd(self, stop: bool, line: str) -> bool:
        """Mark the console as waiting at its prompt again, unless it stops."""
        self._waiting = not stop
        return stop

    def postloop(self) -> None:
        """Mark the console as no longer reading commands."""
        self._waiting = False

    # -- products ---------------------------------------------------------------------------

    def do_products(self, arg: str) -> None:
        """products: list the products on sale with price, stock and units sold."""
        sold = {line.product_id: line.sold for line in self.store.audit()}
        products = self.store.products()
        if not products:
            self.say("No products on sale. Add one: add <name> <price> [stock]")
            return
        width = max(len(product.name) for product in products)
        self.say(f"{'#':>3}  {'Product':<{width}}  {'Price':>9}  {'Stock':>6}  Sold")
        for p in products:
            self.say(
                f"{p.id:>3}  {p.name:<{width}}  {format_price(p.price):>9}  {p.stock:>6}  "
                f"{sold.get(p.id, 0)}"
            )

    def do_add(self, arg: str) -> None:
        """add <name> <price> [stock]: put a new product on sale (quote names with spaces)."""
        words = _words(arg)
        if len(words) >= 3 and _is_number(words[-1]) and _looks_like_price(words[-2]):
            name, price, stock = " ".join(words[:-2]), words[-2], int(words[-1])
        elif len(words) >= 2:
            name, price, stock = " ".join(words[:-1]), words[-1], 0
        else:
            self.say('Usage: add <name> <price> [stock]   e.g. add "Blue mug" 8.50 20')
            return
        product = self.store.add_product(name, parse_price(price), stock)
        self.say(
            f"#{product.id} {product.name} on sale at {format_price(product.price)}, "
            f"{product.stock} in stock."
        )

    def do_rename(self, arg: str) -> None:
        """rename <product> <new name>: rename a product (quote names with spaces)."""
        words = _words(arg)
        if len(words) != 2:
            self.say('Usage: rename <product> <new name>   e.g. rename mug "Blue mug"')
            return
        product = self.store.rename_product(words[0], words[1])
        self.say(f"#{product.id} is now called {product.name}.")

    def do_price(self, arg: str) -> None:
        """price <product> <price>: change a product's price for checkouts from now on."""
        words = _words(arg)
        if len(words) < 2:
            self.say("Usage: price <product> <price>   e.g. price mug 9.25")
            return
        product = self.store.set_price(" ".join(words[:-1]), parse_price(words[-1]))
        self.say(f"{product.name} now costs {format_price(product.price)}.")

    def do_restock(self, arg: str) -> None:
        """restock <product> <quantity>: put more units on the shelf."""
        ref, quantity = _product_and_quantity(arg)
        if not ref or quantity is None:
            self.say("Usage: restock <product> <quantity>   e.g. restock mug 10")
            return
        product = self.store.restock(ref, quantity)
        self.say(f"{product.name}: {product.stock} in stock.")

    def do_remove(self, arg: str) -> None:
        """remove <product>: take a product off sale (its past orders stay)."""
        if not arg.strip():
            self.say("Usage: remove <product>")
            return
        product = self.store.remove_product(" ".join(_words(arg)))
        self.say(f"{product.name} is no longer on sale.")

    # -- orders -----------------------------------------------------------------------------

    def do_orders(self, arg: str) -> None:
        """orders [N]: show the last N orders (10 by default) and the store's totals."""
        text = arg.strip()
        if text and not (_is_number(text) and int(text) >= 0):
            self.say("Usage: orders [N]")
            return
        orders = self.store.orders(limit=int(text) if text else 10)
        for order in reversed(orders):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(order.created))
            items = ", ".join(f"{line.quantity} x {line.name}" for line in order.lines)
            self.say(
                f"#{order.id:<5} {when}  {_clean(order.customer, 28):<28} "
                f"{format_price(order.total):>10}  {items}"
            )
        count, revenue = self.store.totals()
        self.say(f"{count} order(s), {format_price(revenue)} in total.")

    def do_audit(self, arg: str) -> None:
        """audit: check every product's books (stocked = in stock + sold)."""
        lines = self.store.audit()
        for line in lines:
            mark = "ok" if line.balanced else "MISMATCH"
            self.say(
                f"#{line.product_id:<3} {line.name}: stocked {line.stocked} = "
                f"{line.stock} in stock + {line.sold} sold  {mark}"
            )
        broken = sum(not line.balanced for line in lines)
        self.say("All books balance." if not broken else f"{broken} product(s) do NOT balance.")

    # -- people -----------------------------------------------------------------------------

    def _front(self) -> Storefront | None:
        if self.front is None:
            self.say("The store is not serving anyone (no server is running).")
        return self.front

    def do_customers(self, arg: str) -> None:
        """customers: list who is connected to this server (telnet customers and API programs)."""
        front = self._front()
        if front is None:
            return
        visitors = front.visitors()
        if not visitors:
            self.say("Nobody is connected.")
        now = time.time()
        for visitor in visitors:
            minutes, seconds = divmod(int(now - visitor.since), 60)
            self.say(
                f"{visitor.id:<8} {visitor.kind:<7} {visitor.address:<22} "
                f"connected {minutes}m{seconds:02d}s"
            )
        if self.store.kind == "postgresql":
            # Orders are shared through the database; sessions live in each server's process.
            self.say("(this server only: each store server on the database lists its own)")

    def do_kick(self, arg: str) -> None:
        """kick <id>: disconnect a customer (ids are in customers)."""
        front = self._front()
        if front is None:
            return
        if not arg.strip():
            self.say("Usage: kick <id>")
            return
        if front.kick(arg.strip()):
            self.say(f"Disconnected {arg.strip()}.")
        else:
            self.say(f"Nobody connected as {_clean(arg.strip())!r}; see customers.")

    def do_broadcast(self, arg: str) -> None:
        """broadcast <message>: send a message to every telnet customer."""
        front = self._front()
        if front is None:
            return
        if not arg.strip():
            self.say("Usage: broadcast <message>")
            return
        reached = front.broadcast(arg.strip())
        self.say(f"Sent to {reached} customer(s).")

    def do_quiet(self, arg: str) -> None:
        """quiet [on|off]: stop (or resume) showing customers as they connect and leave."""
        if self.notices is None:
            self.say("There are no connection notices here (no server is running).")
            return
        choice = arg.strip().lower() or "on"
        if choice not in ("on", "off"):
            self.say("Usage: quiet [on|off]   (quiet alone means on)")
            return
        self.notices.quiet = choice == "on"
        if self.notices.quiet:
            self.say("Quiet: customers coming and going are no longer shown (quiet off resumes).")
        else:
            self.say("Customers coming and going are shown again.")

    def do_close(self, arg: str) -> bool:
        """close: disconnect everyone, stop the server and leave."""
        if self.front is not None:
            self.front.close()
        self.say(f"Closing {self.name}...")
        return True

    def do_EOF(self, arg: str) -> bool:  # noqa: N802 - cmd.Cmd's name for end of input
        """Close the store when the console's input ends (Ctrl-D)."""
        self.say()
        return self.do_close(arg)

    def get_names(self) -> list[str]:
        """Return the attribute names help lists, without ``EOF`` (not a command to type)."""
        return [name for name in super().get_names() if name != "do_EOF"]


def _looks_like_price(word: str) -> bool:
    try:
        parse_price(word)
    except StoreError:
        return False
    return True
