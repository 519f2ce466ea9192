"""``sockwork serve --ssh-port``: SSH beside telnet, or alone, from the command line."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sockwork.cli import main
from tests.console.conftest import nc
from tests.console.ssh_kit import Keys, Terminal, connect, make_keys, run

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests.console.conftest:Shop"


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path)


def test_ssh_port_without_a_way_to_log_in_is_a_usage_error(
    keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", TARGET, "--ssh-port", "0", "--host-key", str(keys.host_key)]) == 2
    assert "no way to log in" in capsys.readouterr().err
    assert not keys.host_key.exists()


def test_no_telnet_needs_ssh(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", TARGET, "--no-telnet"]) == 2
    assert "--no-telnet needs --ssh-port" in capsys.readouterr().err


def test_missing_authorized_keys_file_is_a_usage_error(
    keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = keys.directory / "nope"
    args = ["serve", TARGET, "--ssh-port", "0", "--authorized-keys", str(missing)]
    assert main([*args, "--host-key", str(keys.host_key)]) == 2
    assert "nope" in capsys.readouterr().err


def test_serve_telnet_and_ssh_at_once_until_sigterm(keys: Keys) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sockwork", "serve", TARGET, "--no-console",
         "--ssh-port", "0", "--authorized-keys", str(keys.authorized_keys),
         "--host-key", str(keys.host_key)],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        telnet_line = process.stderr.readline()
        ssh_line = process.stderr.readline()
        telnet_port = int(re.search(r"port (\d+)", telnet_line).group(1))  # type: ignore[union-attr]
        match = re.search(
            r"over SSH on 127.0.0.1 port (\d+) .*new host key .*: (SHA256:\S+)", ssh_line
        )
        assert match, ssh_line
        ssh_port = int(match.group(1))
        assert keys.host_key.stat().st_mode & 0o777 == 0o600

        async def scenario() -> None:
            async with connect(("127.0.0.1", ssh_port), client_keys=[str(keys.client_key)]) as conn:
                terminal = await Terminal.open(conn)
                await terminal.expect("shop> ")
                terminal.send("hello over ssh\r")
                assert "hello over ssh\r\n" in await terminal.expect("shop> ")
                fingerprint = conn.get_server_host_key().get_fingerprint("sha256")
                assert fingerprint == match.group(2)

        run(scenario)
        with nc(("127.0.0.1", telnet_port)) as client:
            client.read_until(b"shop> ")
            client.send_line("hello over telnet")
            assert client.read_until(b"shop> ") == b"hello over telnet\r\nshop> "
            process.send_signal(signal.SIGTERM)
            assert client.read_all() == b""
        assert process.wait(10) == 0
    finally:
        process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_serve_ssh_only_with_a_password_from_the_environment(keys: Keys) -> None:
    import os

    env = dict(os.environ, SOCKWORK_TEST_SSH_PW="sesame")
    process = subprocess.Popen(
        [sys.executable, "-m", "sockwork", "serve", TARGET, "--no-console", "--no-telnet",
         "--ssh-port", "0", "--password-env", "SOCKWORK_TEST_SSH_PW",
         "--host-key", str(keys.host_key)],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "over SSH" in line and "telnet" not in line
        port = int(re.search(r"port (\d+)", line).group(1))  # type: ignore[union-attr]

        async def scenario() -> None:
            async with connect(("127.0.0.1", port), password="sesame") as conn:
                terminal = await Terminal.open(conn)
                await terminal.expect("shop> ")

        run(scenario)
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()
