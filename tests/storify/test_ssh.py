"""Customers shopping over SSH: the store service with asyncssh's client, the CLI with OpenSSH."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pexpect
import pytest

from storify.cli import main
from storify.service import SshOptions, StoreService
from storify.store import Store
from tests.conftest import require_binary
from tests.console.ssh_kit import Keys, Terminal, connect, make_keys, run
from tests.console.test_ssh_clients import ssh_command

TIMEOUT = 15


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(str(tmp_path / "store.db"))
    store.seed_demo()
    yield store  # type: ignore[misc]
    store.close()


def test_customer_flow_over_ssh_and_the_manager_sees_kicks_and_broadcasts(
    keys: Keys, store: Store
) -> None:
    options = SshOptions(
        port=0, host_key=str(keys.host_key), authorized_keys=str(keys.authorized_keys)
    )
    service = StoreService(store, port=0, api_port=0, ssh=options)

    async def scenario() -> None:
        async with connect(
            service.ssh_address, username="carol", client_keys=[str(keys.client_key)]
        ) as conn:
            customer = await Terminal.open(conn)
            greeting = await customer.expect("Store> ")
            assert "Welcome to OPEN store. Type help or ? to list commands." in greeting
            customer.send("list\r")
            assert "Mug" in await customer.expect("Store> ")
            customer.send("add mug 2\r")
            assert "Added 2 x Mug (2 in cart)." in await customer.expect("Store> ")
            customer.send("cart\r")
            assert "Total: $17.00 for 2 item(s)." in await customer.expect("Store> ")
            customer.send("checkout\r")
            got = await customer.expect("Store> ")
            assert "Order #1 confirmed: 2 item(s), $17.00. Thank you!" in got
            [visitor] = [v for v in service.visitors() if v.kind == "ssh"]
            assert visitor.id == "s1" and visitor.address.startswith("carol@127.0.0.1:")
            assert await asyncio.to_thread(service.broadcast, "Closing soon") == 1
            assert "*** OPEN: Closing soon" in await customer.expect("Store> ")
            assert await asyncio.to_thread(service.kick, "s1")
            assert "The manager closed your session. Goodbye." in await customer.rest()

    with service:
        run(scenario)
        assert service.kick("s1") is False
    count, revenue = store.totals()
    assert (count, revenue) == (1, 1700)
    [order] = store.orders()
    assert order.customer.startswith("ssh carol@127.0.0.1:")


def test_ssh_port_needs_a_way_to_log_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "store.db")
    assert main(["serve", "--db", db, "--ssh-port", "0", "--no-console"]) == 2
    assert "--ssh-port needs a way to log in" in capsys.readouterr().err
    assert main(["serve", "--db", db, "--ssh-anonymous", "--no-console"]) == 2
    assert "need --ssh-port" in capsys.readouterr().err


def test_serve_customer_shops_with_openssh_while_the_manager_works(keys: Keys) -> None:
    ssh = require_binary("ssh")
    directory = keys.directory
    manager = pexpect.spawn(
        sys.executable,
        ["-m", "storify", "serve", "--db", str(directory / "store.db"), "--demo",
         "--port", "0", "--api-port", "0", "--ssh-port", "0",
         "--authorized-keys", str(keys.authorized_keys), "--host-key", str(keys.host_key)],
        cwd=str(directory), timeout=TIMEOUT, encoding="utf-8",
    )  # fmt: skip
    customer = None
    try:
        manager.expect(r"customers: ssh -p (\d+) 127\.0\.0\.1  \(host key SHA256:\S+\)")
        port = int(manager.match.group(1))
        manager.expect_exact("Manager> ")
        options = ssh_command(("127.0.0.1", port), "dan", "-i", str(keys.client_key))
        customer = pexpect.spawn(ssh, options, timeout=TIMEOUT, encoding="utf-8")
        customer.expect_exact("Store> ")
        customer.sendline("list")
        customer.expect(r"1  Mug\s+\$8\.50  20")
        customer.expect_exact("Store> ")
        customer.sendline("add mug 2")
        customer.expect_exact("Added 2 x Mug (2 in cart).")
        customer.sendline("cart")
        customer.expect_exact("Total: $17.00 for 2 item(s).")
        customer.sendline("checkout")
        customer.expect_exact("Order #1 confirmed: 2 item(s), $17.00. Thank you!")
        customer.expect_exact("Store> ")
        manager.sendline("customers")
        manager.expect(r"s1\s+ssh\s+dan@127\.0\.0\.1:\d+")
        manager.expect_exact("Manager> ")
        manager.sendline("orders")
        manager.expect(r"#1 .* ssh dan@127\.0\.0\.1:\d+ .*\$17\.00  2 x Mug")
        customer.sendline("exit")
        customer.expect(pexpect.EOF)
        manager.sendline("close")
        manager.expect_exact("OPEN is closed: 1 order(s), $17.00 in total.")
        manager.expect(pexpect.EOF)
    finally:
        if customer is not None:
            customer.close(force=True)
        manager.close(force=True)
    assert manager.exitstatus == 0
    assert keys.host_key.stat().st_mode & 0o777 == 0o600
