from __future__ import annotations

import contextlib
import ipaddress
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pexpect
import pytest

from sockwork.testing import TelnetClient
from storify.cli import announcement, exposure_warning, lan_address, listen_host, main
from storify.client import StoreClient
from storify.conditions import NetworkConditions
from storify.server import ApiServer
from storify.service import StoreService
from storify.store import Store
from tests.conftest import require_binary

TIMEOUT = 15
SERVE = [sys.executable, "-m", "storify", "serve"]


def spawn_store(tmp_path: Path, *args: str) -> tuple[pexpect.spawn, int, int]:
    """Start ``storify serve`` on free ports; return it, the telnet port and the API port."""
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "storify",
            "serve",
            "--db",
            str(tmp_path / "store.db"),
            "--port",
            "0",
            "--api-port",
            "0",
            *args,
        ],
        cwd=str(tmp_path),
        timeout=TIMEOUT,
        encoding="utf-8",
    )
    child.expect(r"customers: telnet 127\.0\.0\.1 (\d+)")
    telnet_port = int(child.match.group(1))
    child.expect(r"--api 127\.0\.0\.1:(\d+)")
    api_port = int(child.match.group(1))
    return child, telnet_port, api_port


def spawn_telnet(port: int) -> pexpect.spawn:
    telnet = require_binary("telnet")
    return pexpect.spawn(telnet, ["127.0.0.1", str(port)], timeout=TIMEOUT, encoding="utf-8")


def test_serve_with_real_telnet_customer_and_manager_console(tmp_path: Path) -> None:
    manager, telnet_port, _ = spawn_store(tmp_path, "--demo")
    manager.expect_exact("Manager> ")
    customer = spawn_telnet(telnet_port)
    try:
        customer.expect_exact("Welcome to OPEN store. Type help or ? to list commands.")
        # The manager sees the customer come in; the prompt is redrawn under the notice.
        manager.expect(r"\r\x1b\[KCustomer connected \('127\.0\.0\.1', \d+\) \[t1\]\r\n")
        manager.expect_exact("Manager> ")
        customer.expect_exact("Store> ")
        customer.sendline("list")
        customer.expect(r"1  Mug\s+\$8\.50  20")
        customer.expect_exact("Store> ")
        customer.sendline("add mug 2")
        customer.expect_exact("Added 2 x Mug (2 in cart).")
        customer.sendline("cart")
        customer.expect_exact("Total: $17.00 for 2 item(s).")
        customer.sendline("restock mug 100")  # a manager command, typed by a customer
        customer.expect_exact("Unknown command 'restock'. Type help or ? to list commands.")
        customer.sendline("checkout")
        customer.expect_exact("Order #1 confirmed: 2 item(s), $17.00. Thank you!")
        customer.expect_exact("Store> ")
        # The manager sees the customer, talks to everyone, and sees the order.
        manager.sendline("customers")
        manager.expect(r"t1\s+telnet\s+127\.0\.0\.1:\d+")
        manager.expect_exact("Manager> ")
        manager.sendline("broadcast Closing in 5 minutes")
        manager.expect_exact("Sent to 1 customer(s).")
        customer.expect_exact("*** OPEN: Closing in 5 minutes")
        customer.expect_exact("Store> ")  # the prompt is redrawn below the message
        manager.sendline("orders")
        manager.expect(r"#1 .* telnet 127\.0\.0\.1:\d+ .*\$17\.00  2 x Mug")
        manager.expect_exact("1 order(s), $17.00 in total.")
        manager.expect_exact("Manager> ")
        manager.send("CUSTO")  # half a command, when the customer leaves
        manager.expect_exact("CUSTO")
        customer.sendline("exit")
        customer.expect_exact("Goodbye.")
        customer.expect_exact("Connection closed by foreign host.")
        customer.expect(pexpect.EOF)
        manager.expect(r"Customer disconnected \('127\.0\.0\.1', \d+\) \[t1\]\r\n")
        manager.expect_exact("Manager> CUSTO")  # what was typed is redrawn, and kept
        manager.sendline("MERS")
        manager.expect_exact("Nobody is connected.")
        manager.sendline("close")
        manager.expect_exact("OPEN is closed: 1 order(s), $17.00 in total.")
        manager.expect(pexpect.EOF)
        manager.close()
        assert manager.exitstatus == 0
    finally:
        customer.close(force=True)
        manager.close(force=True)


def test_serve_manager_kicks_a_customer(tmp_path: Path) -> None:
    manager, telnet_port, _ = spawn_store(tmp_path, "--demo")
    customer = spawn_telnet(telnet_port)
    try:
        customer.expect_exact("Store> ")
        manager.expect_exact("Manager> ")
        manager.sendline("kick t1")
        manager.expect_exact("Disconnected t1.")
        customer.expect_exact("*** The manager closed your session. Goodbye.")
        customer.expect(pexpect.EOF)
        manager.sendline("customers")
        manager.expect_exact("Nobody is connected.")
        manager.sendeof()  # Ctrl-D at the manager's console closes the store too
        manager.expect_exact("OPEN is closed")
        manager.expect(pexpect.EOF)
    finally:
        customer.close(force=True)
        manager.close(force=True)


def _serve_headless(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int, int]:
    process = subprocess.Popen(
        [
            *SERVE,
            "--db",
            str(tmp_path / "store.db"),
            "--port",
            "0",
            "--api-port",
            "0",
            "--no-console",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    text = ""
    while "--api" not in text:
        line = process.stdout.readline()
        assert line, f"storify serve ended early: {process.stderr.read() if process.stderr else ''}"
        text += line
    telnet = re.search(r"customers: telnet 127\.0\.0\.1 (\d+)", text)
    api = re.search(r"--api 127\.0\.0\.1:(\d+)", text)
    assert telnet and api
    return process, int(telnet.group(1)), int(api.group(1))


def _finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = process.communicate(timeout=TIMEOUT)
    return out, err


def test_serve_killed_and_restarted_keeps_exactly_the_committed_orders(tmp_path: Path) -> None:
    process, _, api_port = _serve_headless(tmp_path, "--demo")
    try:
        with StoreClient.connect(("127.0.0.1", api_port)) as shop:
            for number in range(5):
                shop.request("checkout", items={"stickers": 2}, request_id=f"k{number}")
        process.kill()  # SIGKILL: no clean-up of any kind
        _finish(process)
    finally:
        if process.poll() is None:
            process.kill()
            _finish(process)
    with Store(str(tmp_path / "store.db")) as store:
        assert [order.request_id for order in store.orders()] == [f"k{n}" for n in range(4, -1, -1)]
        assert store.product("stickers").stock == 40
        assert all(line.balanced for line in store.audit())
    # Serving again: the retried checkouts are recognised, the demo is not seeded twice.
    process, _, api_port = _serve_headless(tmp_path, "--demo")
    try:
        with StoreClient.connect(("127.0.0.1", api_port)) as shop:
            replay = shop.request("checkout", items={"stickers": 2}, request_id="k3")
            assert replay["replayed"] is True
            assert shop.request("show", product="stickers")["product"]["stock"] == 40  # type: ignore[index]
        process.send_signal(signal.SIGTERM)
        out, _ = _finish(process)
        assert process.returncode == 0
        assert "OPEN is closed: 5 order(s), $30.00 in total." in out
        assert "demo catalog" not in out
    finally:
        if process.poll() is None:
            process.kill()
            _finish(process)


def test_serve_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                *SERVE,
                "--db",
                str(tmp_path / "s.db"),
                "--port",
                str(port),
                "--api-port",
                "0",
                "--no-console",
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    assert result.returncode == 1
    assert "already in use" in result.stderr and "--port" in result.stderr


def _round_trip(port: int) -> float:
    """Seconds from sending a command to the prompt that follows its answer."""
    with TelnetClient(("127.0.0.1", port), timeout=TIMEOUT) as customer:
        customer.read_until("Store> ")
        started = time.monotonic()
        customer.send_line("cart")
        answer = customer.read_until("Store> ")
        elapsed = time.monotonic() - started
        assert b"Your cart is empty." in answer
        return elapsed


def test_serve_poor_network_rehearsal_port(tmp_path: Path) -> None:
    process, telnet_port, _ = _serve_headless(
        tmp_path, "--poor-network", "latency=300ms", "--poor-port", "0"
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"poor link: telnet 127\.0\.0\.1 (\d+)  \(latency 300ms\)", line)
        assert found, line
        assert _round_trip(int(found.group(1))) >= 0.28
        assert _round_trip(telnet_port) < 5.0  # the direct port works alongside
        process.send_signal(signal.SIGTERM)
        _finish(process)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            _finish(process)


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[ApiServer]:
    with Store(str(tmp_path / "api.db")) as store:
        store.add_product("Mug", 850, 100_000)
        store.add_product("Pen", 120, 100_000)
        with ApiServer(store, port=0) as server:
            yield server


def test_simulate_command_reports_and_checks(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    host, port = api_server.address
    status = main(
        [
            "simulate",
            "--api",
            f"{host}:{port}",
            "--customers",
            "3",
            "--duration",
            "1",
            "--seed",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "3 customers for" in out and "(seed 4)" in out
    assert re.search(r"purchases   [1-9]\d* \(\d+\.\d/s\)", out)
    assert "invariant   ok: initial stock 200000 = stock" in out


def test_simulate_command_through_a_poor_network(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    host, port = api_server.address
    status = main(
        [
            "simulate",
            "--api",
            f"{host}:{port}",
            "--customers",
            "2",
            "--duration",
            "1",
            "--seed",
            "2",
            "--poor-network",
            "latency=5ms,reset=20%",
            "--reconnect-every",
            "1",
            "--attempts",
            "20",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "Shopping through a proxy: latency 5ms, 20% of connections reset." in out
    assert "invariant   ok" in out
    retried = re.search(r"retried     (\d+)", out)
    assert retried and int(retried.group(1)) > 0


def test_simulate_command_without_a_store(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    status = main(["simulate", "--api", f"127.0.0.1:{port}", "--duration", "1", "--attempts", "1"])
    assert status == 1
    assert "cannot reach the store's API" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--api", "nowhere"],
        ["simulate", "--api", "127.0.0.1:0"],
        ["simulate", "--duration", "0"],
        ["simulate", "--duration", "inf"],
        ["simulate", "--duration", "nan"],
        ["simulate", "--timeout", "٣"],
        ["simulate", "--customers", "٣"],
        ["simulate", "--customers", "²"],
        ["simulate", "--seed", "1_000"],
        ["simulate", "--api", "127.0.0.1:６５４３３"],
        ["serve", "--port", "²"],
        ["serve", "--port", "70000"],
        ["serve", "--poor-network", "loss=5%"],
        ["serve", "--db-pool", "0"],
        ["serve", "--db-pool", "٣"],
        [],
    ],
)
def test_cli_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: storify" in capsys.readouterr().err


def test_simulate_command_against_a_port_that_never_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as silent:  # accepts (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        status = main(["simulate", "--api", f"127.0.0.1:{port}", "--timeout", "0.2"])
    err = capsys.readouterr().err
    assert status == 1
    assert err == (
        f"storify simulate: no reply from the store's API at 127.0.0.1:{port} within 0.2 s; "
        "is it the API port (storify serve prints it after --api)? --timeout waits longer\n"
    )


def test_simulate_command_against_a_port_that_is_not_the_api(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as telnet_like:
        telnet_like.bind(("127.0.0.1", 0))
        telnet_like.listen()
        port = telnet_like.getsockname()[1]

        def greet() -> None:
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = telnet_like.accept()
                    with conn:  # telnet negotiation, then a greeting
                        conn.sendall(b"\xff\xfb\x01\xff\xfb\x03Welcome\r\n")
                        conn.recv(1024)

        threading.Thread(target=greet, daemon=True).start()
        status = main(["simulate", "--api", f"127.0.0.1:{port}", "--timeout", "5"])
        telnet_like.shutdown(socket.SHUT_RDWR)
    err = capsys.readouterr().err
    assert status == 1
    assert err == (
        f"storify simulate: 127.0.0.1:{port} does not answer like the store's API (its reply "
        f"announced a message of {0xFFFB01FF} bytes); give the API port (storify serve prints "
        "it after --api), not the telnet port\n"
    )


@pytest.mark.parametrize("name", ["", "   ", "\x1b[2J", "x" * 41])
def test_serve_rejects_a_bad_store_name(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store.db"
    argv = [
        "serve",
        "--name",
        name,
        "--db",
        str(db),
        "--no-console",
        "--port",
        "0",
        "--api-port",
        "0",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    rule = "the store's name is 1 to 40 printable characters"
    assert err == f"storify serve: --name: {rule}, not {name!r}\n"
    assert not db.exists()  # refused before anything was opened
    with Store() as store, pytest.raises(ValueError, match="store's name"):
        StoreService(store, name=name)


class _FakeSsh:
    def __init__(self, host: str) -> None:
        self.address = (host, 65435)
        self.host_key_fingerprint = "SHA256:abc"


class _FakeService:
    def __init__(self, host: str, *, poor: bool = False, ssh: bool = False) -> None:
        self.telnet_address = (host, 65432)
        self.api_address = (host, 65433)
        self.poor_address = (host, 65434) if poor else None
        self.poor_network = NetworkConditions.parse("latency=200ms") if poor else None
        self.ssh = _FakeSsh(host) if ssh else None


def fake_service(host: str, *, poor: bool = False, ssh: bool = False) -> StoreService:
    """A started service's addresses, as announcement() reads them."""
    return cast(StoreService, _FakeService(host, poor=poor, ssh=ssh))


def test_announcement_names_the_ssh_port_and_host_key() -> None:
    service = fake_service("0.0.0.0", ssh=True)
    lines = announcement(service, "OPEN", "s.db", program="x", lan=lambda: "192.0.2.7")
    assert lines[2] == "  customers: ssh -p 65435 192.0.2.7  (host key SHA256:abc)"


def test_announcement_on_loopback() -> None:
    service = fake_service("127.0.0.1")
    assert announcement(service, "OPEN", "s.db", lan=lambda: "192.0.2.7") == [
        "OPEN store is open (s.db). From another terminal:",
        "  customers: telnet 127.0.0.1 65432",
        "  programs:  storify simulate --api 127.0.0.1:65433  (framed JSON API)",
    ]


def test_announcement_on_every_interface_names_an_address_a_friend_can_use() -> None:
    service = fake_service("0.0.0.0", poor=True)
    lines = announcement(service, "OPEN", "s.db", program="x", lan=lambda: "192.0.2.7")
    assert lines[1:] == [
        "  customers: telnet 192.0.2.7 65432",
        "  programs:  x simulate --api 192.0.2.7:65433  (framed JSON API)",
        "  poor link: telnet 192.0.2.7 65434  (latency 200ms)",
        "  (listening on every interface; on this machine: telnet 127.0.0.1 65432)",
    ]
    assert "0.0.0.0" not in "\n".join(lines)
    v6 = announcement(fake_service("::"), "OPEN", "s.db", lan=lambda: "2001:db8::7")
    assert "  programs:  storify simulate --api [2001:db8::7]:65433  (framed JSON API)" in v6
    # No route to anywhere: the host name is the best a friend can be told.
    named = announcement(fake_service("0.0.0.0"), "OPEN", "s.db", lan=lambda: None)
    assert f"  customers: telnet {socket.gethostname()} 65432" in named


def test_lan_address_is_not_loopback() -> None:
    address = lan_address()
    if address is not None:  # None is right on a machine without a default route
        assert not ipaddress.ip_address(address).is_loopback
        assert not ipaddress.ip_address(address).is_unspecified


def test_exposure_warning() -> None:
    assert exposure_warning("127.0.0.1") is None
    assert exposure_warning("localhost") is None
    warning = exposure_warning("")
    assert warning is not None and "every interface" in warning and "cleartext" in warning
    assert "192.168.1.5" in (exposure_warning("192.168.1.5") or "")


def test_listen_host_empty_means_every_interface() -> None:
    assert listen_host("") == "0.0.0.0"
    assert listen_host("127.0.0.1") == "127.0.0.1"


def test_serve_reports_a_database_it_cannot_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no such directory" / "store.db"
    assert main(["serve", "--db", str(missing), "--no-console", "--port", "0"]) == 1
    assert "cannot open the database" in capsys.readouterr().err


def test_serve_ctrl_c_at_the_manager_console_closes_cleanly(tmp_path: Path) -> None:
    manager, _, api_port = spawn_store(tmp_path, "--demo")
    try:
        manager.expect_exact("Manager> ")
        with StoreClient.connect(("127.0.0.1", api_port)) as shop:
            shop.request("checkout", items={"mug": 1}, request_id="before-ctrl-c")
        manager.sendintr()
        manager.expect_exact("OPEN is closed: 1 order(s), $8.50 in total.")
        manager.expect(pexpect.EOF)
        manager.close()
        assert manager.exitstatus == 0
    finally:
        manager.close(force=True)


def test_serve_killed_during_concurrent_checkouts_loses_no_acknowledged_order(
    tmp_path: Path,
) -> None:
    with Store(str(tmp_path / "store.db")) as store:
        store.add_product("Mug", 850, 1_000_000)
    process, _, api_port = _serve_headless(tmp_path)
    acknowledged: list[str] = []
    guard = threading.Lock()
    enough = threading.Event()

    def buyer(number: int) -> None:
        try:
            with StoreClient.connect(("127.0.0.1", api_port)) as shop:
                for count in range(100_000):
                    request_id = f"b{number}-{count}"
                    shop.request("checkout", items={"1": 1 + count % 3}, request_id=request_id)
                    with guard:
                        acknowledged.append(request_id)
                        if len(acknowledged) >= 200:
                            enough.set()
        except (ConnectionError, OSError):
            pass  # the server was killed under our feet

    buyers = [threading.Thread(target=buyer, args=(n,)) for n in range(4)]
    try:
        for thread in buyers:
            thread.start()
        assert enough.wait(TIMEOUT)
        process.kill()  # SIGKILL with four checkouts in flight
        _finish(process)
        for thread in buyers:
            thread.join(TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            _finish(process)
    with Store(str(tmp_path / "store.db")) as store:
        orders = {order.request_id: order for order in store.orders()}
        [books] = store.audit()
    assert set(acknowledged) <= set(orders)  # every acknowledged checkout survived
    assert len(orders) <= len(acknowledged) + 4  # at most the ones in flight, unacknowledged
    assert books.balanced
    assert books.sold == sum(order.units for order in orders.values())
    for order in orders.values():
        assert order.lines and order.total == sum(line.subtotal for line in order.lines)
