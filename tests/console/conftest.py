"""A scripted telnet client and sample programs for the console tests."""

from __future__ import annotations

import cmd
import getpass
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TIMEOUT = 10.0


class Client:
    """A raw TCP client that reads until a marker, as nc or a script would."""

    def __init__(
        self, address: tuple[str, int], *, timeout: float = TIMEOUT, source: str | None = None
    ) -> None:
        # source: another loopback address (127.0.0.2) to act as a second client host.
        bind = None if source is None else (source, 0)
        self.sock = socket.create_connection(address, timeout=timeout, source_address=bind)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def read_until(self, marker: bytes) -> bytes:
        """Return everything up to and including ``marker`` (AssertionError on EOF)."""
        while marker not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, f"EOF before {marker!r}; got {self.buffer!r}"
            self.buffer += chunk
        end = self.buffer.index(marker) + len(marker)
        got, self.buffer = self.buffer[:end], self.buffer[end:]
        return got

    def read_all(self) -> bytes:
        """Read until the server closes; returns everything not read yet."""
        while True:
            chunk = self.sock.recv(4096)
            if not chunk:
                got, self.buffer = self.buffer, b""
                return got
            self.buffer += chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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
