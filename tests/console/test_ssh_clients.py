"""SshConsoleServer with Debian's OpenSSH client: ``ssh -tt`` under pexpect, sshpass."""

from __future__ import annotations

import os
from pathlib import Path

import pexpect
import pytest

from sockwork.console.ssh import SshConsoleServer
from tests.conftest import require_binary
from tests.console.conftest import Shop
from tests.console.ssh_kit import Keys, make_keys
from tests.console.test_ssh import Completing, check_sesame

TIMEOUT = 15


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path)


def ssh_command(address: tuple[str, int], user: str, *options: str) -> list[str]:
    """OpenSSH options for a throw-away server: no config, no known_hosts, no agent."""
    return [
        "-tt", "-F", "/dev/null", "-p", str(address[1]),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "IdentityAgent=none", "-o", "BatchMode=no",
        *options, f"{user}@{address[0]}",
    ]  # fmt: skip


def spawn_with_key(address: tuple[str, int], key: Path, user: str = "kim") -> pexpect.spawn:
    ssh = require_binary("ssh")
    options = ssh_command(
        address, user, "-i", str(key), "-o", "IdentitiesOnly=yes",
        "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
    )  # fmt: skip
    return pexpect.spawn(ssh, options, timeout=TIMEOUT, encoding="utf-8")


def spawn_with_password(address: tuple[str, int], password: str) -> pexpect.spawn:
    sshpass = require_binary("sshpass")
    ssh = require_binary("ssh")
    options = ssh_command(
        address, "lee", "-o", "PubkeyAuthentication=no",
        "-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1",
    )  # fmt: skip
    env = dict(os.environ, SSHPASS=password)
    return pexpect.spawn(sshpass, ["-e", ssh, *options], env=env, timeout=TIMEOUT, encoding="utf-8")


def test_openssh_key_login_editing_history_completion_ctrl_c_and_ctrl_d(keys: Keys) -> None:
    with SshConsoleServer(
        Completing, host_key=keys.host_key, authorized_keys=keys.authorized_keys
    ) as server:
        child = spawn_with_key(server.address, keys.client_key)
        try:
            child.expect_exact("Welcome to the shop.")
            child.expect_exact("shop> ")
            child.sendline("hello from openssh")
            child.expect_exact("hello from openssh\r\n")
            child.expect_exact("shop> ")
            # Left arrow and insert: the line editor is the server's.
            child.send("hello wrld\x1b[D\x1b[D\x1b[Do\r")
            child.expect_exact("hello world\r\n")
            child.expect_exact("shop> ")
            child.send("\x1b[A\x1b[A\r")  # history: "hello from openssh" again
            child.expect_exact("hello from openssh\r\n")
            child.expect_exact("shop> ")
            child.send("pai\tr\t\r")  # paint, then red (one candidate each)
            child.expect_exact("painted red\r\n")
            child.expect_exact("shop> ")
            child.send("buy")
            child.sendintr()  # Ctrl-C: the line is dropped
            child.expect_exact("^C\r\n")
            child.expect_exact("shop> ")
            child.sendline("ask")
            child.expect_exact("name? ")
            child.sendline("Vic")
            child.expect_exact("hi Vic\r\n")
            child.expect_exact("shop> ")
            child.sendeof()  # Ctrl-D on an empty line ends the session
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == 0
        assert "bought" not in (child.before or "")


def test_openssh_refuses_a_key_that_is_not_authorized(keys: Keys) -> None:
    with SshConsoleServer(
        Shop, host_key=keys.host_key, authorized_keys=keys.authorized_keys
    ) as server:
        child = spawn_with_key(server.address, keys.stranger_key)
        try:
            child.expect_exact("Permission denied")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == 255
        assert server.sessions == []


def test_openssh_password_login_with_sshpass_and_wrong_password_refused(keys: Keys) -> None:
    with SshConsoleServer(Shop, host_key=keys.host_key, check_password=check_sesame) as server:
        child = spawn_with_password(server.address, "sesame")
        try:
            child.expect_exact("shop> ")
            child.sendline("secret")
            child.expect_exact("secret? ")
            child.sendline("swordfish")
            child.expect_exact("secret has 9 letters")
            child.expect_exact("shop> ")
            child.sendline("exit")
            child.expect(pexpect.EOF)
            assert "swordfish" not in (child.before or "")
        finally:
            child.close()
        assert child.exitstatus == 0
        wrong = spawn_with_password(server.address, "open sesame")
        try:
            wrong.expect_exact("Permission denied")
            wrong.expect(pexpect.EOF)
        finally:
            wrong.close()
        assert wrong.exitstatus == 255  # ssh gave up: the password was refused
