"""``storify simulate``: many customers shopping at once through the API, then the books.

# Strategy:
# - N asyncio tasks, one connection each, check out one random product (1-3 units)
#   after another until the time is up. Every checkout carries a fresh request id
#   and its items, so it does not depend on the connection it is sent on.
# - A network failure (reset, EOF, timeout) drops the connection; the checkout is
#   resent with the *same* request id on a new one. The store answers a checkout it
#   had already committed with ``replayed: true``, so nothing is charged twice.
# - A checkout that fails every attempt is asked about at the end (``order_status``);
#   if it committed after all it counts as bought.
# - Invariant at the end, per product: stock before = stock after + units bought
#   (assumes nobody else shops or restocks meanwhile), and the store's own books
#   (stocked = stock + sold) balance.
# - The first catalog is not retried after a timeout: a store that does not answer
#   within the timeout at the start is reported at once, not ten timeouts later.
#   Nor after an answer that is no API reply (a telnet port, another service).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Literal, TextIO

from sockwork.address import format_address
from sockwork.errors import ConnectionClosed, SockworkError
from storify.client import AsyncStoreClient
from storify.tally import InvariantCheck, Tally, check_invariant, render_progress, summary

__all__ = [
    "NETWORK_ERRORS",
    "Ending",
    "SimulationResult",
    "progress_stream",
    "run_simulation",
    "simulate",
]

# What a broken connection raises: the OS (reset, refused), sockwork (closed, cut
# mid-message, garbage) and our own per-attempt timeout.
NETWORK_ERRORS = (OSError, SockworkError, asyncio.TimeoutError)

# What a broken connection raises, without what a peer that is not the API causes
# (a frame too large, a reply that is not JSON or not an API reply).
_TRANSIENT_ERRORS = (OSError, ConnectionClosed, asyncio.TimeoutError)

Ending = Literal["time", "sold_out", "nothing_in_stock", "no_products"]
"""Why a run stopped: its time was up; the store sold out during it; it had products
but none in stock; it had no products on sale."""

# Tries for the catalog and for order_status at the end: the books must be read even
# through a poor network, whatever --attempts says about checkouts.
_RESOLVE_ATTEMPTS = 10


@dataclass(frozen=True)
class SimulationResult:
    """The outcome of one simulation run."""

    tally: Tally
    seconds: float
    customers: int
    seed: int
    target: str
    invariant: InvariantCheck | None
    ended: Ending = "time"
    products: int = 0  # products on sale when the run started

    @property
    def ok(self) -> bool:
        """True when the invariant holds and no checkout was left unresolved."""
        return self.invariant is not None and self.invariant.ok and not self.tally.unresolved

    @property
    def purchases_per_second(self) -> float:
        """Committed checkouts per second of shopping."""
        return self.tally.purchases / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """Return the report ``storify simulate`` prints."""
        return summary(
            self.tally,
            customers=self.customers,
            seconds=self.seconds,
            target=self.target,
            seed=self.seed,
            invariant=self.invariant,
            note=self.note,
        )

    @property
    def note(self) -> str | None:
        """Say why the run bought less than its time allowed, or None when the time was up."""
        if self.ended == "no_products":
            return (
                "nothing to buy: the store has no products on sale (add some at the manager's "
                "console, or run storify serve --demo)"
            )
        if self.ended == "nothing_in_stock":
            return (
                f"nothing to buy: the store is sold out ({self.products} product(s) on sale, "
                "none in stock); restock at the manager's console (restock mug 100)"
            )
        if self.ended == "sold_out":
            return (
                f"everything sold out (or was taken off sale) after {self.seconds:.1f} s, "
                "which ended the run; restock for a longer run"
            )
        return None


class _Run:
    """The shared state of one simulation: products believed in stock, counts, the clock."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        seed: int,
        duration: float,
        timeout: float,
        attempts: int,
        max_units: int,
        reconnect_every: int | None,
    ) -> None:
        self.reconnect_every = reconnect_every
        self.host = host
        self.port = port
        self.seed = seed
        self.duration = duration
        self.timeout = timeout
        self.attempts = attempts
        self.max_units = max_units
        self.tally = Tally()
        self.in_stock: dict[int, str] = {}
        self.run_id = uuid.uuid4().hex[:12]  # request ids must differ between runs
        self.started = 0.0
        self.deadline = 0.0

    async def connect(self) -> AsyncStoreClient:
        """Open a connection to the API within the attempt timeout."""
        return await asyncio.wait_for(AsyncStoreClient.connect(self.host, self.port), self.timeout)

    async def customer(self, number: int) -> None:
        """Shop as customer ``number`` until the time is up or nothing is left in stock."""
        rng = random.Random(self.seed * 1_000_003 + number)
        client: AsyncStoreClient | None = None
        checkout = 0
        try:
            while self.in_stock and time.monotonic() < self.deadline:
                product_id = rng.choice(sorted(self.in_stock))
                units = rng.randint(1, self.max_units)
                checkout += 1
                request_id = f"sim-{self.run_id}-{number}-{checkout}"
                client = await self.checkout(client, product_id, units, request_id)
                if (
                    client is not None
                    and self.reconnect_every
                    and checkout % self.reconnect_every == 0
                ):
                    client.abort()  # this customer leaves; the next checkout comes on a new visit
                    client = None
        finally:
            if client is not None:
                client.abort()

    async def checkout(
        self, client: AsyncStoreClient | None, product_id: int, units: int, request_id: str
    ) -> AsyncStoreClient | None:
        """Check out ``units`` of one product, retrying on network errors; returns the client."""
        tally = self.tally
        items = {str(product_id): units}
        started = time.perf_counter()
        reply: dict[str, object] | None = None
        for attempt in range(self.attempts):
            if attempt:
                tally.retried += 1
                await asyncio.sleep(min(0.01 * 2**attempt, 0.5))
            try:
                if client is None:
                    client = await self.connect()
                reply = await asyncio.wait_for(
                    client.send_request("checkout", items=items, request_id=request_id),
                    self.timeout,
                )
                break
            except NETWORK_ERRORS:
                if client is not None:
                    client.abort()
                client = None
        if reply is None:
            tally.failed += 1
            tally.unresolved.append((request_id, {product_id: units}))
            return client
        if reply.get("ok") is True:
            tally.record_purchase({product_id: units}, time.perf_counter() - started)
            result = reply.get("result")
            if isinstance(result, dict) and result.get("replayed") is True:
                tally.replayed += 1
            return client
        error = reply.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        if code in ("out_of_stock", "unknown_product"):
            tally.rejected += 1
            if code == "unknown_product" or (
                isinstance(error, dict) and error.get("available") == 0
            ):
                self.in_stock.pop(product_id, None)
        else:
            # busy, unavailable...: nothing was committed (the store says so), count it failed.
            tally.failed += 1
        return client

    async def progress(self, stream: TextIO) -> None:
        """Redraw the progress line on ``stream`` until cancelled."""
        while True:
            elapsed = time.monotonic() - self.started
            line = render_progress(min(elapsed, self.duration), self.duration, self.tally.purchases)
            stream.write("\r" + line)
            stream.flush()
            await asyncio.sleep(0.2)

    async def catalog(self, *, first: bool = False) -> list[dict[str, object]]:
        """Return the API's catalog products, retrying on network errors.

        ``first``: a timeout is not retried (the store is not answering at all).
        """
        for attempt in range(_RESOLVE_ATTEMPTS):
            if attempt:
                await asyncio.sleep(min(0.01 * 2**attempt, 0.5))
            client: AsyncStoreClient | None = None
            try:
                client = await self.connect()
                result = await asyncio.wait_for(client.request("catalog"), self.timeout)
                break
            except _TRANSIENT_ERRORS as error:
                timed_out = isinstance(error, (TimeoutError, asyncio.TimeoutError))
                if attempt == _RESOLVE_ATTEMPTS - 1 or (first and timed_out):
                    raise
            finally:
                if client is not None:
                    client.abort()
        products = result.get("products")
        if not isinstance(products, list):
            raise ValueError(f"catalog reply without products: {result!r:.200}")
        return [product for product in products if isinstance(product, dict)]

    async def resolve(self) -> None:
        """Ask the store about checkouts that failed every attempt: committed after all?"""
        still: list[tuple[str, dict[int, int]]] = []
        client: AsyncStoreClient | None = None
        try:
            for request_id, items in self.tally.unresolved:
                reply: dict[str, object] | None = None
                for attempt in range(_RESOLVE_ATTEMPTS):
                    try:
                        if client is None:
                            client = await self.connect()
                        reply = await asyncio.wait_for(
                            client.send_request("order_status", request_id=request_id),
                            self.timeout,
                        )
                        break
                    except NETWORK_ERRORS:
                        if client is not None:
                            client.abort()
                        client = None
                        await asyncio.sleep(min(0.01 * 2**attempt, 0.5))
                error = reply.get("error") if reply is not None else None
                if reply is not None and reply.get("ok") is True:
                    self.tally.record_recovered(items)
                elif not (isinstance(error, dict) and error.get("code") == "not_found"):
                    still.append((request_id, items))  # the store could not say: unresolved
        finally:
            if client is not None:
                client.abort()
        self.tally.unresolved = still


async def simulate(
    address: tuple[str, int],
    *,
    customers: int = 10,
    duration: float = 5.0,
    seed: int | None = None,
    timeout: float = 5.0,
    attempts: int = 5,
    max_units: int = 3,
    reconnect_every: int | None = None,
    progress: TextIO | None = None,
) -> SimulationResult:
    """Run ``customers`` simulated customers against the API at ``address`` for ``duration`` s.

    Args:
        address: the API's ``(host, port)``.
        customers: customers shopping at once, each on its own connection.
        duration: seconds of shopping.
        seed: makes the customers' choices reproducible (random when None).
        timeout: seconds one attempt (connect or request) may take.
        attempts: tries per checkout before it counts as failed.
        max_units: the most units of a product one checkout buys.
        reconnect_every: open a new connection after this many checkouts (None: keep one
            connection per customer for the whole run).
        progress: where to draw a progress line (None: nowhere).

    Raises:
        OSError, SockworkError, asyncio.TimeoutError: the store cannot be reached at the
            start or the end (a timeout at the start is raised at once).
        SockworkError, ValueError: the peer does not answer like the store's API.
        storify.client.ApiError: the store refused the catalog (``busy``...).
        ValueError: an argument is out of range.
    """
    if customers < 1:
        raise ValueError(f"customers must be at least 1, not {customers}")
    if not duration > 0:
        raise ValueError(f"duration must be more than 0 seconds, not {duration}")
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    if not timeout > 0:
        raise ValueError(f"timeout must be more than 0 seconds, not {timeout}")
    if max_units < 1:
        raise ValueError(f"max_units must be at least 1, not {max_units}")
    if reconnect_every is not None and reconnect_every < 1:
        raise ValueError(f"reconnect_every must be None or at least 1, not {reconnect_every}")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    host, port = address
    run = _Run(
        host,
        port,
        seed=seed,
        duration=duration,
        timeout=timeout,
        attempts=attempts,
        max_units=max_units,
        reconnect_every=reconnect_every,
    )
    before = await run.catalog(first=True)
    for product in before:
        product_id, stock = product.get("id"), product.get("stock")
        if isinstance(product_id, int) and isinstance(stock, int) and stock > 0:
            run.in_stock[product_id] = str(product.get("name"))
    run.started = time.monotonic()
    run.deadline = run.started + duration
    drawer = asyncio.ensure_future(run.progress(progress)) if progress is not None else None
    try:
        await asyncio.gather(*(run.customer(number) for number in range(customers)))
    finally:
        seconds = time.monotonic() - run.started  # a little over duration, or less if sold out
        if drawer is not None and progress is not None:
            drawer.cancel()
            await asyncio.gather(drawer, return_exceptions=True)
            progress.write("\r" + render_progress(duration, duration, run.tally.purchases) + "\n")
            progress.flush()
    ended: Ending = "time"
    if not before:
        ended = "no_products"
    elif not any(isinstance(p.get("stock"), int) and p.get("stock") for p in before):
        ended = "nothing_in_stock"
    elif not run.in_stock:
        ended = "sold_out"
    await run.resolve()
    after = await run.catalog()
    invariant = check_invariant(before, after, run.tally.bought)
    return SimulationResult(
        run.tally,
        seconds,
        customers,
        seed,
        format_address((host, port)),
        invariant,
        ended=ended,
        products=len(before),
    )


def run_simulation(
    address: tuple[str, int],
    *,
    customers: int = 10,
    duration: float = 5.0,
    seed: int | None = None,
    timeout: float = 5.0,
    attempts: int = 5,
    reconnect_every: int | None = None,
    progress: TextIO | None = None,
) -> SimulationResult:
    """Run :func:`simulate` in a new event loop (for programs that are not asyncio)."""
    return asyncio.run(
        simulate(
            address,
            customers=customers,
            duration=duration,
            seed=seed,
            timeout=timeout,
            attempts=attempts,
            reconnect_every=reconnect_every,
            progress=progress,
        )
    )


def progress_stream() -> TextIO | None:
    """Return stderr when it is a terminal (the progress line is for people), else None."""
    return sys.stderr if sys.stderr.isatty() else None
