"""End to end with the real clients: inetutils telnet driven through a pty, and nc."""

from __future__ import annotations

import subprocess

import pexpect
import pytest

from sockwork.console import ConsoleServer
from tests.conftest import require_binary
from tests.console.conftest import Shop

TIMEOUT = 10


def spawn_telnet(address: tuple[str, int]) -> pexpect.spawn:
    telnet = require_binary("telnet")
    child = pexpect.spawn(telnet, [address[0], str(address[1])], timeout=TIMEOUT, encoding="utf-8")
    return child


def test_telnet_client_prompt_commands_ctrl_c_and_exit() -> None:
    with ConsoleServer(Shop, idle_timeout=30) as server:
        child = spawn_telnet(server.address)
        try:
            child.expect_exact("Welcome to the shop.")
            child.expect_exact("shop> ")
            child.sendline("hello from telnet")
            child.expect_exact("hello from telnet\r\n")
            child.expect_exact("shop> ")
            child.sendline("ask")
            child.expect_exact("name? ")
            child.sendline("Dee")
            child.expect_exact("hi Dee\r\n")
            child.expect_exact("shop> ")
            # Ctrl-C: telnet sends IAC IP IAC DO TIMING-MARK and hides output until the
            # answer; the typed line is dropped and a fresh prompt appears.
            child.send("buy")
            child.sendintr()
            child.expect_exact("shop> ")
            child.sendline("hello again")
            child.expect_exact("hello again\r\n")
            child.expect_exact("shop> ")
            assert "bought" not in child.before
            child.sendline("exit")
            child.expect_exact("Connection closed by foreign host.")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)


def test_telnet_client_password_is_not_echoed() -> None:
    with ConsoleServer(Shop, password="open sesame", idle_timeout=30) as server:
        child = spawn_telnet(server.address)
        try:
            child.expect_exact("Password: ")
            child.sendline("open sesame")
            child.expect_exact("shop> ")
            # With echo on, the pty would show the typed password before the prompt.
            assert "open sesame" not in child.before
            child.sendline("hello")  # echo is back for ordinary lines
            child.expect_exact("hello\r\n")
            child.expect_exact("hello \r\n")
            child.expect_exact("shop> ")
            child.sendline("exit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)


def test_nc_client_script_gets_answers_without_negotiation() -> None:
    nc = require_binary("nc")
    with ConsoleServer(Shop, idle_timeout=30) as server:
        host, port = server.address
        result = subprocess.run(
            [nc, "-N", host, str(port)],
            input=b"hello nc\nask\nEve\nexit\n",
            capture_output=True,
            timeout=TIMEOUT,
        )
    assert result.returncode == 0
    # Not a single IAC byte: nc users see plain text.
    assert result.stdout == (
        b"Welcome to the shop.\r\nshop> hello nc\r\nshop> name? hi Eve\r\nshop> "
    )


def test_nc_client_end_of_input_ends_the_session() -> None:
    nc = require_binary("nc")
    with ConsoleServer(Shop, idle_timeout=30) as server:
        host, port = server.address
        result = subprocess.run(
            [nc, "-N", host, str(port)],
            input=b"write it",  # no newline: the partial line still runs, then EOF ends
            capture_output=True,
            timeout=TIMEOUT,
        )
    assert result.stdout == b"Welcome to the shop.\r\nshop> written it\r\nshop> "


@pytest.mark.parametrize("lines", [1, 50])
def test_nc_client_many_lines_at_once(lines: int) -> None:
    nc = require_binary("nc")
    with ConsoleServer(Shop, idle_timeout=30) as server:
        host, port = server.address
        script = "".join(f"hello {i}\r\n" for i in range(lines)).encode()
        result = subprocess.run(
            [nc, "-N", host, str(port)], input=script, capture_output=True, timeout=TIMEOUT
        )
    expected = "".join(f"shop> hello {i}\r\n" for i in range(lines))
    assert result.stdout.decode() == "Welcome to the shop.\r\n" + expected + "shop> "


def test_telnet_client_ctrl_d_ends_the_session() -> None:
    with ConsoleServer(Shop, idle_timeout=30) as server:
        child = spawn_telnet(server.address)
        try:
            child.expect_exact("shop> ")
            child.sendeof()  # inetutils telnet sends the EOF character (0x04)
            child.expect_exact("Connection closed by foreign host.")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
