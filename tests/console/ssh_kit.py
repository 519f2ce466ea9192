"""Keys and an asyncssh client for the SSH console tests (asyncssh is a test dependency)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sockwork.console.ssh import _asyncssh

# Imported through sockwork so that a missing asyncssh fails (MissingExtra), never skips.
asyncssh: Any = _asyncssh()

TIMEOUT = 10.0
_T = TypeVar("_T")


@dataclass
class Keys:
    """A host key path (not created yet), a client key pair, an authorized_keys file."""

    directory: Path
    host_key: Path
    client_key: Path  # private, OpenSSH format, mode 0600
    authorized_keys: Path
    stranger_key: Path  # a key that is not authorized


def make_keys(directory: Path) -> Keys:
    """Generate fresh client keys in ``directory`` (never in the repository)."""

    def private(name: str) -> tuple[Path, Any]:
        key = asyncssh.generate_private_key("ssh-ed25519")
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(key.export_private_key())
        return path, key

    client, client_key = private("id_client")
    stranger, _ = private("id_stranger")
    authorized = directory / "authorized_keys"
    authorized.write_bytes(client_key.export_public_key())
    return Keys(directory, directory / "host_key", client, authorized, stranger)


def run(scenario: Callable[[], Awaitable[_T]], timeout: float = 60.0) -> _T:
    """Run an async client scenario in a fresh loop of the calling thread."""

    async def bounded() -> _T:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(bounded())


def connect(address: tuple[str, int], **options: Any) -> Any:
    """``asyncssh.connect`` to the test server: no known_hosts, no agent, no config."""
    options.setdefault("username", "tester")
    options.setdefault("known_hosts", None)
    options.setdefault("agent_path", None)
    options.setdefault("config", None)
    options.setdefault("gss_host", None)
    options.setdefault("client_keys", None)
    return asyncssh.connect(address[0], address[1], **options)


class Terminal:
    """One interactive session (with a pty unless told otherwise) read up to markers."""

    def __init__(self, conn: Any, process: Any) -> None:
        self.conn = conn
        self.process = process
        self.seen = ""

    @classmethod
    async def open(
        cls, conn: Any, *, term: str | None = "xterm", size: tuple[int, int] = (80, 24)
    ) -> Terminal:
        if term is None:
            process = await conn.create_process()
        else:
            process = await conn.create_process(term_type=term, term_size=size)
        return cls(conn, process)

    async def expect(self, marker: str, timeout: float = TIMEOUT) -> str:
        """Return everything up to and including ``marker``."""
        got = await asyncio.wait_for(self.process.stdout.readuntil(marker), timeout)
        self.seen += got
        return str(got)

    def send(self, text: str) -> None:
        self.process.stdin.write(text)

    async def rest(self, timeout: float = TIMEOUT) -> str:
        """Read until the server closes the channel."""
        got = await asyncio.wait_for(self.process.stdout.read(), timeout)
        self.seen += got
        return str(got)


@contextlib.asynccontextmanager
async def at_prompt(
    address: tuple[str, int], key: Path, prompt: str = "shop> ", **terminal: Any
) -> AsyncIterator[Terminal]:
    """Log in with ``key``, open a terminal (options of ``Terminal.open``), read the prompt."""
    async with connect(address, client_keys=[str(key)]) as conn:
        session = await Terminal.open(conn, **terminal)
        await session.expect(prompt)
        yield session
