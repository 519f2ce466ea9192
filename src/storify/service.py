"""Everything ``storify serve`` runs: telnet (and SSH) customers, the API, a poor-network port.

# Rules:
# - Telnet customers are served by ``sockwork.console.ConsoleServer``, one
#   CustomerREPL (and one cart) per session, in the session's own thread. The REPLs
#   write to ``self.stdout`` only, so no process-wide stdio routing is installed
#   (``stdio="none"``): the manager's console keeps the real terminal untouched.
# - With an SSH port, ``sockwork.console.SshConsoleServer`` serves the same customer
#   console over SSH (same factory, same limits, stdio="none"); it needs the
#   sockwork[ssh] extra and a way to log in (authorized keys, a password check, or
#   anonymous access asked for explicitly).
# - The API is a storify.server.ApiServer (asyncio, its own thread); both share one
#   thread-safe Store.
# - With poor network conditions, a ``sockwork.proxy.FaultProxy`` listens on the poor
#   port and forwards to the telnet port through those faults.
# - ``close()`` may be called from any thread, more than once (the manager's ``close``,
#   a signal, the end of a test): it stops the proxy, the telnet server and the API.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from sockwork.console import (
    ConsoleServer,
    Session,
    SshConsoleServer,
    SshSession,
    current_session,
)
from sockwork.console.ssh import DEFAULT_HOST_KEY, PasswordCheck
from sockwork.deprecation import warn_stop_alias
from sockwork.proxy import FaultProxy
from storify.conditions import NetworkConditions
from storify.notice import Notices
from storify.repl import CustomerREPL, Visitor, check_store_name
from storify.server import ApiServer
from storify.shop import CustomerSession
from storify.store import Store

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "DEFAULT_API_PORT",
    "DEFAULT_POOR_PORT",
    "DEFAULT_PORT",
    "DEFAULT_SSH_PORT",
    "SshOptions",
    "StoreService",
]

DEFAULT_PORT = 65432
DEFAULT_API_PORT = 65433
DEFAULT_POOR_PORT = 65434
DEFAULT_SSH_PORT = 65435


@dataclass(frozen=True, kw_only=True)
class SshOptions:
    """How customers log in over SSH (see ``sockwork.console.SshConsoleServer``).

    Attributes:
        port: the SSH port (0 picks a free one).
        host_key: the server's private key file, generated (mode 0600) if missing.
        authorized_keys: an OpenSSH ``authorized_keys`` file of customers' keys.
        check_password: ``check(username, password) -> bool``.
        allow_anonymous: let anyone shop over SSH without logging in.
    """

    port: int = DEFAULT_SSH_PORT
    host_key: str = DEFAULT_HOST_KEY
    authorized_keys: str | None = None
    check_password: PasswordCheck | None = None
    allow_anonymous: bool = False


log = logging.getLogger("storify")


class StoreService:
    """The running store: telnet customers, the API and the rehearsal port around one Store.

    Args:
        store: the store (thread-safe; closed by the caller, not by the service).
        name: the store's name, in the customers' greeting (1 to 40 printable characters).
        host: address to listen on (loopback by default).
        port: telnet port for customers (0 picks a free one).
        api_port: port of the framed JSON API (0 picks a free one).
        poor_network: faults for the rehearsal port (None: no rehearsal port).
        poor_port: the rehearsal port, forwarding to the telnet port through the faults.
        max_clients: telnet sessions at once.
        max_per_address: telnet sessions at once from one address (``"auto"``: a tenth
            of ``max_clients``; None: no limit).
        first_line_timeout: seconds a new telnet customer may take to type a first line.
        idle_timeout: seconds a telnet customer or API program may stay silent.
        ssh: serve customers over SSH too (None: telnet only).
        notices: where ``Customer connected ('127.0.0.1', 33360) [t3]`` and
            ``Customer disconnected ...`` go as telnet and SSH customers (``[s1]``)
            come and go (None: nowhere). API programs are not announced (a simulation
            opens hundreds); :meth:`visitors` lists them.

    Raises:
        ValueError: the name is empty, too long or not printable.
    """

    def __init__(
        self,
        store: Store,
        *,
        name: str = "OPEN",
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        api_port: int = DEFAULT_API_PORT,
        poor_network: NetworkConditions | None = None,
        poor_port: int = DEFAULT_POOR_PORT,
        max_clients: int = 100,
        max_per_address: int | None | Literal["auto"] = "auto",
        first_line_timeout: float | None = 60.0,
        idle_timeout: float = 900.0,
        ssh: SshOptions | None = None,
        notices: Notices | None = None,
    ) -> None:
        name = check_store_name(name)
        self.store = store
        self.notices = notices
        self.name = name
        self.host = host
        self.port = port
        self.api_port = api_port
        self.poor_network = poor_network
        self.poor_port = poor_port
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        self.first_line_timeout = first_line_timeout
        self.idle_timeout = idle_timeout
        self.ssh_options = ssh
        self.telnet: ConsoleServer | None = None
        self.ssh: SshConsoleServer | None = None
        self.api: ApiServer | None = None
        self.proxy: FaultProxy | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind every port and start serving; on failure nothing is left running.

        Raises:
            OSError: a port cannot be bound (``EADDRINUSE``: another store is running?).
        """
        try:
            self.telnet = ConsoleServer(
                self._customer_console,
                self.host,
                self.port,
                max_clients=self.max_clients,
                max_per_address=self.max_per_address,
                first_line_timeout=self.first_line_timeout,
                idle_timeout=self.idle_timeout,
                stdio="none",
            ).start()
            if self.ssh_options is not None:
                options = self.ssh_options
                self.ssh = SshConsoleServer(
                    self._customer_console,
                    self.host,
                    options.port,
                    host_key=options.host_key,
                    authorized_keys=options.authorized_keys,
                    check_password=options.check_password,
                    allow_anonymous=options.allow_anonymous,
                    max_clients=self.max_clients,
                    idle_timeout=self.idle_timeout,
                    stdio="none",
                ).start()
            self.api = ApiServer(
                self.store, host=self.host, port=self.api_port, idle_timeout=self.idle_timeout
            ).start()
            if self.poor_network is not None:
                telnet_host = self.telnet.address[0]
                if telnet_host in ("0.0.0.0", "::", ""):
                    telnet_host = "127.0.0.1"
                proxy = FaultProxy(
                    upstream=(telnet_host, self.telnet.address[1]),
                    listen=(self.host, self.poor_port),
                )
                self.proxy = proxy
                proxy.start()
                for fault, direction in self.poor_network.faults():
                    proxy.add(fault, direction=direction)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Disconnect everyone and stop listening; safe from any thread, idempotent."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        if self.proxy is not None:
            self.proxy.close()
        if self.telnet is not None:
            self.telnet.close(timeout=2.0)
        if self.ssh is not None:
            self.ssh.close(timeout=2.0)
        if self.api is not None:
            self.api.close()

    def stop(self) -> None:
        """Deprecated alias of :meth:`close` (sockwork's servers ``start()`` and ``close()``)."""
        warn_stop_alias(self)
        self.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`close` was called; returns False if ``timeout`` ran out first."""
        return self._stopped.wait(timeout)

    @property
    def stopped(self) -> bool:
        """True once :meth:`close` was called."""
        return self._stopped.is_set()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- addresses --------------------------------------------------------------------------

    @property
    def telnet_address(self) -> tuple[str, int]:
        """Where customers connect with telnet."""
        if self.telnet is None:
            raise RuntimeError("the store is not started")
        return self.telnet.address

    @property
    def ssh_address(self) -> tuple[str, int] | None:
        """Where customers connect with SSH (None without SSH)."""
        return None if self.ssh is None else self.ssh.address

    @property
    def api_address(self) -> tuple[str, int]:
        """Where programs connect to the API."""
        if self.api is None:
            raise RuntimeError("the store is not started")
        return self.api.address

    @property
    def poor_address(self) -> tuple[str, int] | None:
        """Where customers connect through the poor network (None without one)."""
        return None if self.proxy is None else self.proxy.address

    # -- the manager's view (storify.repl.Storefront) ---------------------------------------

    def visitors(self) -> list[Visitor]:
        """Return every telnet and SSH customer and API program connected now."""
        visitors = []
        if self.telnet is not None:
            for session in self.telnet.sessions:
                visitors.append(
                    Visitor(f"t{session.id}", "telnet", session.peer_text, session.started_at)
                )
        if self.ssh is not None:
            for ssh_session in self.ssh.sessions:
                address = f"{ssh_session.username}@{ssh_session.peer_text}"
                visitors.append(
                    Visitor(f"s{ssh_session.id}", "ssh", address, ssh_session.started_at)
                )
        if self.api is not None:
            visitors.extend(self.api.visitors())
        return visitors

    def kick(self, visitor_id: str) -> bool:
        """Disconnect one visitor (``t3``: telnet session 3, ``s1``: SSH session 1, ``api2``)."""
        if visitor_id.startswith("api"):
            return self.api is not None and self.api.kick(visitor_id)
        sessions: list[Session] = []
        if self.telnet is not None and visitor_id.startswith("t"):
            sessions.extend(self.telnet.sessions)
        if self.ssh is not None and visitor_id.startswith("s"):
            sessions.extend(self.ssh.sessions)
        for session in sessions:
            if f"{visitor_id[0]}{session.id}" == visitor_id:
                session.close("*** The manager closed your session. Goodbye.")
                return True
        return False

    def broadcast(self, message: str) -> int:
        """Show ``message`` to every telnet and SSH customer; returns how many got it."""
        text = f"*** {self.name}: {message}"
        servers: list[ConsoleServer | SshConsoleServer | None] = [self.telnet, self.ssh]
        return sum(server.broadcast(text) for server in servers if server is not None)

    # -- one customer -----------------------------------------------------------------------

    def _customer_console(self) -> CustomerREPL:
        """Make the console of one telnet or SSH customer (called in the session's thread)."""
        session = current_session()
        if session is None:  # only when called outside a session, e.g. in a test
            return CustomerREPL(CustomerSession(self.store, "telnet"), name=self.name)
        if isinstance(session, SshSession):
            kind, label = "ssh", f"{session.username}@{session.peer_text}"
        else:
            kind, label = "telnet", session.peer_text
        shopper = CustomerSession(self.store, f"{kind} {label}")
        code = f"{kind[0]}{session.id}"
        log.info("%s customer %s connected (session %s)", kind, label, code)
        notices = self.notices
        who = f"{session.peer!r} [{code}]"  # the lab's ('127.0.0.1', 33360)
        if notices is not None:
            notices.post(f"Customer connected {who}")

        def leave() -> None:
            log.info("%s customer %s left (session %s)", kind, label, code)
            if notices is not None:
                notices.post(f"Customer disconnected {who}")

        return CustomerREPL(
            shopper, name=self.name, stdin=session.stdin, stdout=session.stdout, on_leave=leave
        )
