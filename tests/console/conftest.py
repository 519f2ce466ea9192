"""The raw client and sample programs of the console tests."""

from __future__ import annotations

import cmd
import functools
import getpass
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sockwork.testing import TelnetClient

TIMEOUT = 10.0


# The console tests assert the exact bytes a server writes, IAC included: the kit's
# telnet client in its nc mode (nothing stripped, nothing answered).
nc = functools.partial(TelnetClient, negotiate=False, timeout=TIMEOUT)


class Shop(cmd.Cmd):
    """A Cmd that uses bare print()/input()/sys.stdout/getpass, like a console program."""

    prompt = "shop> "
    intro = "Welcome to the shop."
    buys = 0

    def do_hello(self, arg: str) -> None:
        """Say hello."""
        print("hello", arg)

    def do_write(self, arg: str) -> None:
        sys.stdout.write(f"written {arg}\n")

    def do_error(self, arg: str) -> None:
        print(f"oops {arg}", file=sys.stderr)

    def do_ask(self, arg: str) -> None:
        name = input("name? ")
        print(f"hi {name}")

    def do_secret(self, arg: str) -> None:
        word = getpass.getpass("secret? ")
        print(f"secret has {len(word)} letters")

    def do_buy(self, arg: str) -> None:
        Shop.buys += 1
        print(f"bought ({Shop.buys})")

    def do_tty(self, arg: str) -> None:
        try:
            fileno: object = sys.stdout.fileno()
        except OSError:
            fileno = "none"
        print(f"isatty={sys.stdout.isatty()} fileno={fileno} encoding={sys.stdout.encoding}")

    def do_crash(self, arg: str) -> None:
        raise RuntimeError("boom")

    def do_slowecho(self, arg: str) -> None:
        # Gives other sessions time to interleave their output with ours.
        for i in range(5):
            print(f"{arg} {i}")
            time.sleep(0.002)

    def do_thread(self, arg: str) -> None:
        from sockwork.console import wrap

        def work() -> None:
            print(f"from thread {arg}")

        target = wrap(work) if arg == "bound" else work
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()


class Busy(cmd.Cmd):
    """A Cmd whose one command keeps its session busy (not reading) for 10 s."""

    prompt = "busy> "

    def do_busy(self, arg: str) -> None:
        print("working")
        time.sleep(10)


def nc_from(source: str, address: tuple[str, int], **options: float) -> TelnetClient:
    """An nc-mode client connecting from another loopback address (127.0.0.2: another host)."""
    sock = socket.create_connection(address, timeout=TIMEOUT, source_address=(source, 0))
    return TelnetClient(sock, negotiate=False, **{"timeout": TIMEOUT, **options})


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    pem = directory / "server.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(pem), "-out", str(pem)],
        check=True, capture_output=True,
    )  # fmt: skip
    return pem
