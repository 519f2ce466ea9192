"""The proxy's listening address: accepting, refusing, or a tarpit whose connects time out.

# Rules:
# - Three modes. "serve": a listening socket whose clients are accepted. "refuse": no
#   listening socket, so the kernel answers ECONNREFUSED. "tarpit": a listening socket
#   with a full accept queue that is never served, so the kernel drops new SYNs and
#   connects time out (Linux: a SYN is dropped while the accept queue is full; backlog 0
#   holds one connection, which our own never-accepted socket takes).
# - Switching modes is synchronous (one loop step), so a fault change that opens or
#   closes the listener is atomic. The address keeps the port first chosen.
# - Moving to another address binds the new one first; only then is the old one closed,
#   so a failure to bind changes nothing.
# - The accept loop is our own (add_reader + accept + connect_accepted_socket) rather than
#   loop.create_server(): an asyncio Server drops (and leaks) sockets it accepted but had
#   not wrapped yet when it is closed, and closing it is not synchronous.
# - Names are looked up with the loop's getaddrinfo (in an executor), so a slow resolver
#   does not block the loop; rebinding the address in use needs no look-up (numeric).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from typing import Literal

from sockwork.address import bind_listener

__all__ = ["Listener", "Mode"]

#: What the listening address does: accept, refuse (ECONNREFUSED), or time connects out.
Mode = Literal["serve", "refuse", "tarpit"]

_Resolved = tuple[int, tuple[object, ...]]  # (family, sockaddr) as getaddrinfo gives them
_AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[object, ...]]
_ACCEPT_BATCH = 64
_ACCEPT_RETRY = 0.1


class Listener:
    """The listening address of one proxy, in one of three modes (see the module rules).

    Args:
        loop: the loop the proxy runs on.
        protocol_factory: makes the protocol of each accepted client socket.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
    ) -> None:
        self._loop = loop
        self._factory = protocol_factory
        self._sock: socket.socket | None = None
        self._tarpit: tuple[socket.socket, socket.socket] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._adopting: set[asyncio.Task[None]] = set()
        self.address: tuple[str, int] | None = None

    @property
    def mode(self) -> Mode:
        """What the address does now."""
        return "serve" if self._sock else "tarpit" if self._tarpit else "refuse"

    async def prepare(self, listen: tuple[str, int]) -> socket.socket | None:
        """Bind ``listen`` (a name is looked up without blocking); None if it is the address
        already in use.

        Raises:
            OSError: the address cannot be bound (in use, not local, unknown name...).
        """
        try:
            infos = _numeric(listen)  # a numeric address needs no look-up
        except socket.gaierror:
            infos = await self._loop.getaddrinfo(
                listen[0], listen[1], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        if self.address is not None and _pick(infos) == _pick(_numeric(self.address)):
            return None
        return bind_listener(*listen, infos=infos)

    def swap(self, sock: socket.socket, mode: Mode) -> None:
        """Make ``sock`` (from :meth:`prepare`) the address, in ``mode``; the old one closes."""
        self.stop()
        host, port = sock.getsockname()[:2]
        self.address = (str(host), int(port))
        if mode == "serve":
            self._serve(sock)
        else:
            sock.close()
            self.set_mode(mode)

    def set_mode(self, mode: Mode) -> None:
        """Serve, refuse or tarpit on the same address from now on.

        Raises:
            OSError: the address could not be bound again (another socket took it);
                the listener is then refusing.
        """
        if mode == self.mode:
            return
        self.stop()
        assert self.address is not None, "swap() first"
        if mode == "serve":
            self._serve(bind_listener(*self.address, infos=_numeric(self.address)))
        elif mode == "tarpit":
            listener = bind_listener(*self.address, backlog=0, infos=_numeric(self.address))
            plug = socket.socket(listener.family, socket.SOCK_STREAM)
            plug.setblocking(False)
            plug.connect_ex(listener.getsockname())  # loopback: queued at once
            self._tarpit = (listener, plug)

    def stop(self) -> None:
        """Close the listening socket: from now on, connects get ECONNREFUSED."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        sock = self._sock
        if sock is not None:
            self._sock = None
            self._loop.remove_reader(sock.fileno())
            sock.close()
        if self._tarpit is not None:
            for held in self._tarpit:
                held.close()
            self._tarpit = None

    async def settle(self, timeout: float) -> None:
        """Wait until every socket accepted so far has its protocol (or ``timeout``)."""
        if self._adopting:
            await asyncio.wait(set(self._adopting), timeout=timeout)

    # --- the accept loop ----------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._acceptable)

    def _acceptable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # Out of descriptors or buffers (EMFILE, ENOBUFS...): the client waits in
                # the kernel backlog; try again shortly instead of spinning.
                self._loop.remove_reader(sock.fileno())
                self._retry = self._loop.call_later(_ACCEPT_RETRY, self._resume)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._adopt(conn))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    def _resume(self) -> None:
        self._retry = None
        if self._sock is not None:
            self._loop.add_reader(self._sock.fileno(), self._acceptable)

    async def _adopt(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, sock=conn)
        except BaseException:
            conn.close()
            raise


def _pick(infos: Sequence[tuple[object, ...]]) -> _Resolved:
    """The (family, sockaddr) bind_listener binds: IPv4 first, as it chooses."""
    family, _, _, _, sockaddr = min(infos, key=lambda info: info[0] != socket.AF_INET)
    assert isinstance(family, int) and isinstance(sockaddr, tuple)
    return family, sockaddr


def _numeric(address: tuple[str, int]) -> Sequence[_AddrInfo]:
    """getaddrinfo's answer for a numeric address (no look-up)."""
    flags = socket.AI_PASSIVE | socket.AI_NUMERICHOST
    return socket.getaddrinfo(*address, type=socket.SOCK_STREAM, flags=flags)
