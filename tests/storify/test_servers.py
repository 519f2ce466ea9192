"""Several ``storify serve`` processes on one database; the database failing under them.

The multi-server tests run on both back ends (three servers on one SQLite file on this
machine, or on one PostgreSQL database as on several machines); the outage and the
start-up error tests are PostgreSQL's.
"""

from __future__ import annotations

import concurrent.futures
import io
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import psycopg
import pytest

from sockwork.testing import TelnetClient
from storify.cli import main
from storify.client import ApiError, StoreClient
from storify.errors import RequestConflict, StoreError, StoreUnavailable
from storify.records import CheckoutRequest, Receipt
from storify.repl import StoreREPL
from storify.server import ApiServer
from storify.service import StoreService
from storify.store import Store
from storify.testing import TemporaryPostgres
from tests.storify.conftest import start_postgres
from tests.storify.test_service import ask

TIMEOUT = 30
SERVE = [sys.executable, "-m", "storify", "serve", "--port", "0", "--api-port", "0"]


def _addresses(text: str) -> tuple[int, int]:
    telnet = re.search(r"customers: telnet 127\.0\.0\.1 (\d+)", text)
    api = re.search(r"--api 127\.0\.0\.1:(\d+)", text)
    assert telnet and api, text
    return int(telnet.group(1)), int(api.group(1))


class Server:
    """One ``storify serve --no-console`` process and its telnet and API ports."""

    def __init__(self, database: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [*SERVE, "--db", database, "--no-console", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        text = ""
        while "--api" not in text:
            line = self.process.stdout.readline()
            assert line, f"storify serve ended: {self.process.communicate()[1]}"
            text += line
        self.telnet_port, self.api_port = _addresses(text)

    @property
    def api(self) -> tuple[str, int]:
        return ("127.0.0.1", self.api_port)

    def stop(self) -> str:
        """SIGTERM, as a service manager would; returns what it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=TIMEOUT)
        return out

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=TIMEOUT)


@pytest.fixture
def lamps(database: str) -> str:
    """The database with the demo catalog and 10 lamps."""
    with Store(database) as store:
        store.seed_demo()
        store.restock("lamp", 9)
    return database


def test_three_servers_fifty_racers_sell_exactly_ten_lamps(lamps: str) -> None:
    # The manager's console runs on the first server; two more serve without one.
    manager = pexpect.spawn(
        SERVE[0], [*SERVE[1:], "--db", lamps], timeout=TIMEOUT, encoding="utf-8"
    )
    servers: list[Server] = []
    try:
        manager.expect(r"--api 127\.0\.0\.1:\d+")
        telnet_port, api_port = _addresses(str(manager.before) + str(manager.after))
        servers = [Server(lamps), Server(lamps)]
        ports = [(telnet_port, api_port)] + [(s.telnet_port, s.api_port) for s in servers]
        outcomes: list[str] = []
        guard = threading.Lock()
        start = threading.Barrier(50)

        def racer(number: int) -> None:
            telnet, api = ports[number % 3]
            if number % 2:
                with StoreClient.connect(("127.0.0.1", api), timeout=TIMEOUT) as client:
                    start.wait()
                    try:
                        client.request("checkout", items={"lamp": 1}, request_id=f"r{number}")
                        outcome = "bought"
                    except ApiError as error:
                        outcome = error.code
            else:
                customer = TelnetClient(("127.0.0.1", telnet), timeout=TIMEOUT)
                try:
                    customer.read_until(b"Store> ")
                    ask(customer, "add lamp")  # all see 10 on the shelf: nothing is reserved
                    start.wait()
                    answer = ask(customer, "checkout")
                finally:
                    customer.close()
                outcome = "bought" if b"confirmed" in answer else answer.decode()
            with guard:
                outcomes.append(outcome)

        threads = [threading.Thread(target=racer, args=(n,)) for n in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert outcomes.count("bought") == 10
        refusals = [o for o in outcomes if o != "bought"]
        assert len(refusals) == 40
        assert all(o == "out_of_stock" or "Sorry, Lamp is sold out" in o for o in refusals)

        # The console of the first server sees every server's orders and balanced books.
        manager.sendline("orders 50")
        manager.expect(r"(\d+) order\(s\), \$([\d.,]+) in total\.")
        assert manager.match.group(1) == "10" and manager.match.group(2) == "420.00"
        manager.sendline("audit")
        manager.expect("All books balance.")
        manager.sendline("customers")
        manager.expect("Nobody is connected.")
        if lamps.startswith("postgresql:"):
            manager.expect(r"\(this server only: each store server on the database lists its own\)")
        manager.sendline("close")
        manager.expect(r"OPEN is closed: 10 order\(s\), \$420\.00 in total\.")
        manager.expect(pexpect.EOF)
    finally:
        manager.close(force=True)
        for server in servers:
            server.kill()
    with Store(lamps) as store:
        assert store.product("lamp").stock == 0
        assert store.totals() == (10, 42000)
        assert all(line.balanced for line in store.audit())


@pytest.mark.slow
def test_server_killed_mid_load_loses_nothing_acknowledged(database: str) -> None:
    with Store(database) as store:
        store.add_product("Mug", 850, 1_000_000)
    servers = [Server(database) for _ in range(3)]
    acknowledged: list[str] = []
    replayed: list[str] = []
    guard = threading.Lock()
    before_kill = threading.Event()
    after_kill = threading.Event()
    finish = threading.Event()
    killed_at: list[int] = []
    errors: list[BaseException] = []

    def buyer(number: int) -> None:
        # Shops at one server; when it dies, retries the same request id at the next one.
        choice = number % 3
        client: StoreClient | None = None
        count = 0
        try:
            while not finish.is_set():
                request_id = f"b{number}-{count}"
                items = {"mug": 1 + count % 3}
                for _ in range(3):
                    try:
                        if client is None:
                            client = StoreClient.connect(servers[choice].api, timeout=TIMEOUT)
                        result = client.request("checkout", items=items, request_id=request_id)
                        break
                    except (ConnectionError, OSError):
                        if client is not None:
                            client.close()
                        client = None
                        choice = (choice + 1) % 3
                else:
                    raise AssertionError(f"{request_id} failed on every server")
                with guard:
                    acknowledged.append(request_id)
                    if result["replayed"]:
                        replayed.append(request_id)
                    if len(acknowledged) >= 150:
                        before_kill.set()
                    if killed_at and len(acknowledged) >= killed_at[0] + 150:
                        after_kill.set()
                count += 1
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            if client is not None:
                client.close()

    buyers = [threading.Thread(target=buyer, args=(n,)) for n in range(6)]
    try:
        for thread in buyers:
            thread.start()
        assert before_kill.wait(TIMEOUT)
        with guard:
            killed_at.append(len(acknowledged))
        servers[1].process.kill()  # SIGKILL with checkouts in flight on it
        assert after_kill.wait(TIMEOUT), errors  # the others go on serving
        finish.set()
        for thread in buyers:
            thread.join(TIMEOUT)
    finally:
        finish.set()
        for server in servers:
            server.kill()
    assert not errors
    with Store(database) as store:
        orders = {order.request_id: order for order in store.orders()}
        [books] = store.audit()
    # Every checkout was acknowledged (some only after a retry elsewhere) and is there once.
    assert set(orders) == set(acknowledged)
    assert len(acknowledged) == len(set(acknowledged))
    assert books.balanced
    assert books.sold == sum(order.units for order in orders.values())
    assert set(replayed) <= set(orders)


# -- the database failing -------------------------------------------------------------------


@pytest.fixture(scope="module")
def outage_postgres() -> Iterator[TemporaryPostgres]:
    """A PostgreSQL server of the module's own, to be stopped and restarted."""
    server = start_postgres(TemporaryPostgres(settings={"fsync": "off"}))
    try:
        yield server
    finally:
        server.close()


@pytest.mark.postgres
def test_postgres_stopped_while_customers_shop(outage_postgres: TemporaryPostgres) -> None:
    url = outage_postgres.create_database()
    with Store(url, busy_timeout=2) as store:
        store.seed_demo()
        with StoreService(store, port=0, api_port=0) as service:
            customer = TelnetClient(service.telnet_address, timeout=TIMEOUT)
            program = StoreClient.connect(service.api_address, timeout=TIMEOUT)
            try:
                customer.read_until(b"Store> ")
                assert b"Added 1 x Mug" in ask(customer, "add mug")
                outage_postgres.pause()
                try:
                    answer = ask(customer, "checkout")
                    assert b"Sorry, the store is unavailable, try again.\r\n" in answer
                    assert b"Traceback" not in answer
                    with pytest.raises(ApiError) as info:
                        program.request("checkout", items={"mug": 2}, request_id="during")
                    assert info.value.code == "unavailable"
                    assert info.value.facts()["retryable"] is True
                    # The server keeps running: a new customer is still greeted.
                    late = TelnetClient(service.telnet_address, timeout=TIMEOUT)
                    try:
                        assert b"Welcome to OPEN store." in late.read_until(b"Store> ")
                        assert b"the store is unavailable, try again" in ask(late, "list")
                    finally:
                        late.close()
                    manager = StoreREPL(store, front=service)
                    assert _console(manager, "orders") == (
                        "Sorry, the store is unavailable, try again.\n"
                    )
                finally:
                    outage_postgres.resume()
                # The database is back: the same session and connection carry on.
                assert b"Order #1 confirmed" in ask(customer, "checkout")
                again = program.request("checkout", items={"mug": 2}, request_id="during")
                assert again["replayed"] is False
            finally:
                customer.close()
                program.close()
        assert [order.units for order in store.orders()] == [2, 1]
        assert all(line.balanced for line in store.audit())


@pytest.mark.postgres
def test_serve_closes_cleanly_while_postgres_is_down(outage_postgres: TemporaryPostgres) -> None:
    server = Server(outage_postgres.create_database(), "--demo")
    try:
        outage_postgres.pause()
        try:
            with StoreClient.connect(server.api, timeout=TIMEOUT) as client:
                with pytest.raises(ApiError) as info:
                    client.request("list")
                assert info.value.code == "unavailable"
            out = server.stop()
        finally:
            outage_postgres.resume()
    finally:
        server.kill()
    assert server.process.returncode == 0
    assert "OPEN is closed (the database is unavailable: no totals).\n" in out


@pytest.mark.postgres
def test_store_recovers_when_postgres_returns(outage_postgres: TemporaryPostgres) -> None:
    url = outage_postgres.create_database()
    with Store(url, pool_size=4) as store:
        mug = store.add_product("Mug", 850, 100)
        _fill_pool(store, 4)  # four pooled connections, all cut by the restart below
        outage_postgres.pause()
        outage_postgres.resume()
        # Nobody saw the outage: each dead connection is replaced before anything is sent.
        assert store.checkout({mug.id: 1}, customer="c", request_id="after").order.id == 1
        assert [p.stock for p in store.products()] == [99]
        with pytest.raises(StoreUnavailable):  # down again: told at once, not hung
            outage_postgres.pause()
            try:
                store.checkout({mug.id: 1}, customer="c", request_id="down")
            finally:
                outage_postgres.resume()
        assert store.checkout({mug.id: 1}, customer="c", request_id="down").replayed is False


@pytest.mark.postgres
def test_store_pool_bounds_the_connections(postgres_url: str, postgres: TemporaryPostgres) -> None:
    dbname = postgres_url.rsplit("/", 1)[1]
    with Store(postgres_url, pool_size=3) as store:
        mug = store.add_product("Mug", 850, 1000)
        peak = _fill_pool(store, 20, work=lambda: store.product(mug.id))
        connected = postgres.execute(
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{dbname}'"
        )[0][0]
        assert connected == 3
        assert peak == 3
        # Checkouts from 20 threads at once: the group commit takes them in batches,
        # one transaction at a time, so they never need more than the pool either.
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            list(pool.map(lambda n: store.checkout({mug.id: 1}, customer=f"c{n}"), range(20)))
        assert store.totals()[0] == 20
        assert store.product(mug.id).stock == 980


def _fill_pool(store: Store, threads: int, work: Callable[[], object] | None = None) -> int:
    """Run ``work`` (by default a product list) in ``threads`` threads at once, holding each
    connection until all threads are in; returns how many held a connection at the peak."""
    inside = threading.Semaphore(0)
    held = [0]
    peak = [0]
    guard = threading.Lock()
    original = store._db.run

    def slow_run(body: Callable[[Any], Any], **options: bool) -> Any:
        def held_body(db: Any) -> Any:
            with guard:
                held[0] += 1
                peak[0] = max(peak[0], held[0])
            inside.release()
            start.wait()
            with guard:
                held[0] -= 1
            return body(db)

        return original(held_body, **options)

    start = threading.Event()
    store._db.run = slow_run  # type: ignore[method-assign]
    try:
        runners = [threading.Thread(target=work or store.products) for _ in range(threads)]
        for runner in runners:
            runner.start()
        for _ in range(min(threads, store._db.pool_size)):  # type: ignore[attr-defined]
            assert inside.acquire(timeout=TIMEOUT)
        start.set()
        for runner in runners:
            runner.join(TIMEOUT)
    finally:
        store._db.run = original  # type: ignore[method-assign]
    return peak[0]


@pytest.mark.postgres
def test_api_checkout_waiting_on_a_row_lock_blocks_no_other_program(
    postgres_url: str, postgres: TemporaryPostgres
) -> None:
    with Store(postgres_url, busy_timeout=20) as store, ApiServer(store, port=0) as server:
        mug = store.add_product("Mug", 850, 5)
        # Another store server's checkout holds the mug's row (as if its process hung).
        with psycopg.connect(postgres_url, autocommit=True) as other:
            other.execute("BEGIN")
            other.execute("UPDATE products SET stock = stock WHERE id = %s", (mug.id,))
            waiting = StoreClient.connect(server.address, timeout=TIMEOUT)
            replies: list[object] = []
            buyer = threading.Thread(
                target=lambda: replies.append(
                    waiting.request("checkout", items={"mug": 1}, request_id="w")
                )
            )
            buyer.start()
            try:
                _wait_for_lock_wait(postgres, postgres_url.rsplit("/", 1)[1])
                # The checkout waits for the row; another program is answered meanwhile.
                with StoreClient.connect(server.address, timeout=5) as browser:
                    assert browser.request("list")["products"][0]["stock"] == 5  # type: ignore[index]
                assert buyer.is_alive() and not replies
            finally:
                other.execute("ROLLBACK")
                buyer.join(TIMEOUT)
                waiting.close()
        assert replies and replies[0]["replayed"] is False  # type: ignore[index]
        assert store.product("mug").stock == 4


def _wait_for_lock_wait(postgres: TemporaryPostgres, dbname: str) -> None:
    """Return once a session of ``dbname`` waits for a lock (polled: no event to await)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        rows = postgres.execute(
            "SELECT count(*) FROM pg_stat_activity"
            f" WHERE datname = '{dbname}' AND wait_event_type = 'Lock'"
        )
        if rows[0][0]:
            return
        time.sleep(0.02)
    raise AssertionError("no checkout ever waited for the row lock")


def _console(repl: StoreREPL, line: str) -> str:
    output = io.StringIO()
    repl.stdout = output
    repl.onecmd(line)
    return output.getvalue()


@pytest.mark.postgres
def test_serve_start_errors_are_one_line(
    outage_postgres: TemporaryPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    outage_postgres.execute("CREATE ROLE clerk LOGIN PASSWORD 'right'")
    url = outage_postgres.create_database()
    dbname = url.rsplit("/", 1)[1]
    wrong_password = outage_postgres.url(dbname, user="clerk", password="wrong")
    no_database = outage_postgres.url("nosuchdb")
    refused = f"postgresql://postgres@127.0.0.1:{_closed_port()}/{dbname}"
    cases = [
        (wrong_password, 'password authentication failed for user "clerk"'),
        (no_database, 'database "nosuchdb" does not exist'),
        (refused, "Connection refused"),
        ("mysql://clerk@db/store", "unsupported database URL scheme 'mysql'"),
        ("postgresql://clerk@db:port/store", "bad PostgreSQL URL"),
    ]
    errors = []
    for database, reason in cases:
        assert main(["serve", "--db", database, "--no-console", "--port", "0"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("storify: cannot open the database "), err
        assert reason in err
        errors.append(err)
    # The password is not printed.
    assert f"'postgresql://clerk:***@127.0.0.1:{outage_postgres.port}/{dbname}'" in errors[0]
    assert "wrong" not in errors[0]


def test_serve_postgres_url_without_psycopg(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "psycopg.conninfo", None)
    assert main(["serve", "--db", "postgresql://clerk:pw@db/shop", "--port", "0"]) == 1
    assert capsys.readouterr().err == (
        "storify: cannot open the database 'postgresql://clerk:***@db/shop': PostgreSQL "
        "needs psycopg 3: pip install 'sockwork[postgres]'\n"
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_refuses_a_newer_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "store.db")
    with Store(path) as store:
        store._db.run(lambda db: db.execute("UPDATE storify_schema SET version = 99"), write=True)
    assert main(["serve", "--db", path, "--no-console", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"storify: cannot open the database {path!r}: {path} has storify schema version 99, "
        "newer than version 1 that this storify knows; upgrade storify (or use another "
        "database)\n"
    )


@pytest.mark.postgres
def test_batch_racing_another_server_for_a_request_id_runs_again(
    postgres_url: str, postgres: TemporaryPostgres
) -> None:
    with Store(postgres_url, busy_timeout=20) as store:
        mug = store.add_product("Mug", 850, 5)
        # Another server is committing request id "race" (for other items) right now.
        with psycopg.connect(postgres_url, autocommit=True) as other:
            other.execute("BEGIN")
            other.execute(
                "INSERT INTO orders (request_id, customer, total, created)"
                " VALUES ('race', 'other server', 0, 1.0)"
            )
            outcomes: list[Receipt | StoreError] = []
            batch = threading.Thread(
                target=lambda: outcomes.extend(
                    store.checkout_batch(
                        [
                            CheckoutRequest({mug.id: 1}, "a", "race"),
                            CheckoutRequest({mug.id: 2}, "b", "fresh"),
                        ]
                    )
                )
            )
            batch.start()
            try:
                # Our insert of "race" waits for the other transaction...
                _wait_for_lock_wait(postgres, postgres_url.rsplit("/", 1)[1])
                other.execute("COMMIT")  # ...which commits it: our insert does nothing
            finally:
                if other.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    other.execute("ROLLBACK")
                batch.join(TIMEOUT)
    # The batch ran again: "race" is the other server's order (other items: a conflict),
    # and "fresh" committed once.
    raced, fresh = outcomes
    assert isinstance(raced, RequestConflict) and raced.facts()["request_id"] == "race"
    assert isinstance(fresh, Receipt) and fresh.order.units == 2 and not fresh.replayed
    with Store(postgres_url) as store:
        assert store.product("mug").stock == 3
        assert [order.request_id for order in store.orders()] == ["fresh", "race"]
        assert all(line.balanced for line in store.audit())
