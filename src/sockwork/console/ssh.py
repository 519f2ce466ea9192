"""Serve a console program to SSH users (the ``sockwork[ssh]`` extra, built on asyncssh).

:class:`SshConsoleServer` has the verbs of :class:`~sockwork.console.ConsoleServer`
(``start``, ``serve_forever``, ``close``, ``sessions``, ``broadcast``) and runs the
same programs the same way: one thread per session, a fresh ``cmd.Cmd`` instance,
bare ``print()``/``input()`` routed to the session's user. SSH adds encryption,
authentication (authorized keys and/or a password check), asyncssh's line editor
(arrow keys, history), TAB completion through the program's ``complete_*`` methods,
Ctrl-C as a break, and the client's window size.
"""

# Strategy:
# - One asyncio loop in one background thread runs asyncssh: handshakes, auth, the
#   line editor and every channel. Nothing in that thread runs program code or waits
#   for a program: a slow or hostile peer cannot hold the loop.
# - One way with telnet: the server is a server._SessionHost (the SessionPolicy and its
#   Admission, one thread per session running the program, routing, the end of a
#   session) and SshSession (sockwork.console.ssh_session) is a console.session.Session
#   (reading lines, notices and the LineDiscipline, the timeouts, passwords, close).
#   Here: the host key, the connections, authentication and the server's life cycle.
# - asyncssh's line editor spends ~0.1 s of CPU building a regex for every session;
#   _cache_line_editor_patterns makes that once per process (same result).
# - Limits at connect: connections in all and per address; after auth, the sessions
#   are admitted as on telnet (the same Admission and messages). The login (handshake
#   and auth) must finish within ``login_timeout``; failed passwords are answered after
#   a growing delay (the Admission's count, per address).

from __future__ import annotations

import asyncio
import collections
import logging
import os
import stat
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sockwork._loop import LoopThread
from sockwork.address import bind_listener
from sockwork.console.server import App, _SessionHost
from sockwork.console.ssh_session import SshSession, _channel_session, _Connection
from sockwork.errors import SockworkError

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "MissingExtra",
    "PasswordCheck",
    "SshConsoleServer",
    "SshSession",
    "load_host_key",
]

_log = logging.getLogger("sockwork.console")

PasswordCheck = Callable[[str, str], bool]
"""``check(username, password) -> bool``: True lets the user in (run in a worker thread)."""

DEFAULT_HOST_KEY = "ssh_host_ed25519_key"


class MissingExtra(SockworkError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def _asyncssh() -> Any:
    try:
        with warnings.catch_warnings():
            # asyncssh still names DSA keys at import: cryptography's deprecation
            # notice is about them, not about anything the server uses.
            warnings.filterwarnings("ignore", message=".*DSA.*", category=UserWarning)
            import asyncssh
    except ImportError as error:
        raise MissingExtra(
            "serving over SSH needs asyncssh: pip install 'sockwork[ssh]'", name="asyncssh"
        ) from error
    return asyncssh


_editor_lock = threading.Lock()
_editor_patched = False


def _cache_line_editor_patterns(asyncssh: Any) -> None:
    """Make asyncssh's line editor build its pattern of printable keys once per key set.

    ``SSHLineEditor._build_printable`` walks the first 65,536 code points on every
    editor created and every key registered: about 0.1 s of CPU per session (measured),
    during which the loop serves nobody. Its result depends only on the keymap's first
    characters, so it is cached by them; the editor's behaviour is unchanged.
    """
    global _editor_patched
    with _editor_lock:
        if _editor_patched:
            return
        editor_class = asyncssh.editor.SSHLineEditor
        build = editor_class._build_printable
        patterns: dict[frozenset[str], object] = {}

        def build_once(editor: Any) -> None:
            keys = frozenset(editor._keymap)
            pattern = patterns.get(keys)
            if pattern is None:
                build(editor)
                patterns[keys] = editor._printable
            else:
                editor._printable = pattern

        build_once.__doc__ = build.__doc__
        editor_class._build_printable = build_once
        _editor_patched = True


# -- host key --------------------------------------------------------------------------


def load_host_key(path: str | os.PathLike[str], *, create: bool = True) -> tuple[Any, bool]:
    """Read the server's private host key, generating an Ed25519 one if the file is missing.

    A new key is written with mode 0600 (created exclusively: an existing file is
    never overwritten). An existing key readable by group or others is refused, as
    sshd refuses it.

    Returns:
        ``(key, created)``: an ``asyncssh.SSHKey`` and whether it was just generated.

    Raises:
        MissingExtra: asyncssh is not installed.
        PermissionError: the key file is readable by other users.
        ValueError: the file is not a private key.
        FileNotFoundError: the file is missing and ``create`` is False.
    """
    asyncssh = _asyncssh()
    key_path = Path(path)
    try:
        mode = key_path.stat().st_mode
    except FileNotFoundError:
        if not create:
            raise
        key = asyncssh.generate_private_key("ssh-ed25519", comment="sockwork host key")
        data: bytes = key.export_private_key()
        try:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # someone else created it meanwhile: use theirs
            return load_host_key(key_path, create=False)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        return key, True
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(
            f"the host key {str(key_path)!r} is accessible by other users "
            f"(mode {stat.S_IMODE(mode):04o}); run chmod 600 on it"
        )
    try:
        return asyncssh.read_private_key(str(key_path)), False
    except (asyncssh.KeyImportError, ValueError) as error:
        raise ValueError(f"{str(key_path)!r} is not an SSH private key: {error}") from error


def _make_server_factory(server: SshConsoleServer) -> Callable[[], Any]:
    asyncssh = _asyncssh()

    class Server(asyncssh.SSHServer):  # type: ignore[misc,name-defined]
        """asyncssh's per-connection callbacks: limits and authentication."""

        def __init__(self) -> None:
            self.connection: _Connection | None = None

        def connection_made(self, conn: Any) -> None:
            peername = conn.get_extra_info("peername") or ("?", 0)
            peer = (str(peername[0]), int(peername[1]))
            self.connection = _Connection(conn, peer)
            refusal = server._admit_connection(self.connection)
            if refusal is not None:
                _log.warning("SSH connection from %s refused: %s", peer[0], refusal)
                self.connection = None
                conn.abort()

        def connection_lost(self, exc: BaseException | None) -> None:
            if self.connection is not None:
                server._forget_connection(self.connection)

        def auth_completed(self) -> None:
            # A logged-in connection must open its session soon, as it had to log in.
            if self.connection is not None:
                loop = asyncio.get_running_loop()
                loop.call_later(server.login_timeout, self.connection.close_if_unused)

        def begin_auth(self, username: str) -> bool:
            if self.connection is not None:
                self.connection.username = username
            return not server.allow_anonymous

        def password_auth_supported(self) -> bool:
            return server.check_password is not None

        async def validate_password(self, username: str, password: str) -> bool:
            check = server.check_password
            if check is None or self.connection is None:
                return False
            # An address that failed recently waits before any verdict, whatever the
            # connection: reconnecting does not reset the count.
            address = self.connection.peer[0]
            with server._lock:
                wait = server._admission.login_wait(address, time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                # The check may block (a database, PAM): never in the loop.
                ok = bool(await asyncio.to_thread(check, username, password))
            except Exception:
                _log.exception("the password check failed for user %r", username)
                ok = False
            with server._lock:
                if ok:
                    server._admission.login_succeeded(address)
                else:
                    delay = server._admission.login_failed(address, time.monotonic())
            if not ok:
                _log.info("wrong password for %r from %s; answer in %g s", username, address, delay)
                await asyncio.sleep(delay)
            return ok

        def session_requested(self) -> Any:
            if self.connection is None:
                return False
            return _channel_session(asyncssh, server, self.connection)

    return Server


# -- the server ------------------------------------------------------------------------


class SshConsoleServer(_SessionHost[SshSession]):
    """Serve a console program to SSH clients, one fresh instance per session.

    Args:
        app: what :class:`~sockwork.console.ConsoleServer` serves: a ``cmd.Cmd``
            subclass, a factory returning one, or a ``print()``/``input()`` function.
        host: address to listen on; loopback unless told otherwise.
        port: port to listen on; 0 picks a free one (see :attr:`address`).
        host_key: file of the server's private key; generated (Ed25519, mode 0600) if
            missing. Its fingerprint is :attr:`host_key_fingerprint`.
        authorized_keys: an OpenSSH ``authorized_keys`` file: those keys may log in.
        check_password: ``check(username, password) -> bool``, run in a worker thread;
            wrong passwords are answered after a growing delay (``login_delay``).
        allow_anonymous: let anyone in without authentication (logged as a warning).
            Without it, ``authorized_keys`` or ``check_password`` is required.
        intro, prompt: as for ``ConsoleServer``.
        max_clients: sessions at once; the next session is told the server is busy.
            Connections are capped at ``max_clients + 8``. None for no limit.
        max_per_address: sessions at once from one client address (``"auto"``: a tenth
            of ``max_clients``, at least 1; connections: two more); None for no limit.
        first_line_timeout: seconds a new session may take to send its first line.
        idle_timeout: seconds a session may wait for its user; None waits forever.
        write_timeout: seconds the program's output may wait for a client that does
            not read before the session is disconnected.
        max_output: characters of output that may wait for the client; the program's
            writes wait beyond it, messages from other threads never wait but may use
            only as much again, else the session is disconnected.
        login_timeout: seconds a client has to finish the handshake and log in, and a
            logged-in connection to open its session.
        login_delay, max_login_delay: after the n-th wrong password in a row from an
            address (across connections), its next answers wait
            ``login_delay * 2**(n-1)`` seconds, at most ``max_login_delay``.
        max_line: the longest input line (characters in the line editor, bytes without it).
        history: lines of history the line editor keeps per session.
        stdio: ``"streams"``, ``"builtins"`` or ``"none"``, as for ``ConsoleServer``.
        session_stack_size: bytes of stack per session thread, as for ``ConsoleServer``.

    Raises:
        MissingExtra: asyncssh is not installed (``pip install 'sockwork[ssh]'``).
        ValueError: a limit is out of range, or no way to log in was given.
        OSError: the address cannot be bound or a key file cannot be read.
    """

    def __init__(
        self,
        app: App,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        host_key: str | os.PathLike[str] = DEFAULT_HOST_KEY,
        authorized_keys: str | os.PathLike[str] | None = None,
        check_password: PasswordCheck | None = None,
        allow_anonymous: bool = False,
        intro: str | None = None,
        prompt: str | None = None,
        max_clients: int | None = 100,
        max_per_address: int | None | Literal["auto"] = "auto",
        first_line_timeout: float | None = 60.0,
        idle_timeout: float | None = 900.0,
        write_timeout: float = 30.0,
        max_output: int = 65536,
        login_timeout: float = 30.0,
        login_delay: float = 1.0,
        max_login_delay: float = 30.0,
        max_line: int = 4096,
        history: int = 100,
        stdio: Literal["streams", "builtins", "none"] = "streams",
        backlog: int = 128,
        session_stack_size: int | None = None,
    ) -> None:
        asyncssh = _asyncssh()
        super().__init__(
            app,
            intro=intro,
            prompt=prompt,
            stdio=stdio,
            session_stack_size=session_stack_size,
            max_clients=max_clients,
            max_per_address=max_per_address,
            first_line_timeout=first_line_timeout,
            idle_timeout=idle_timeout,
            write_timeout=write_timeout,
            max_output=max_output,
            login_delay=login_delay,
            max_login_delay=max_login_delay,
        )
        if not login_timeout > 0:
            raise ValueError(f"login_timeout must be > 0 seconds, got {login_timeout!r}")
        if max_line < 1:
            raise ValueError(f"max_line must be >= 1, got {max_line!r}")
        if history < 0:
            raise ValueError(f"history must be >= 0 lines, got {history!r}")
        if check_password is not None and not callable(check_password):
            raise TypeError("check_password must be a callable (username, password) -> bool")
        if authorized_keys is None and check_password is None and not allow_anonymous:
            raise ValueError(
                "no way to log in: give authorized_keys=, check_password=, or "
                "allow_anonymous=True to let anyone in"
            )
        self.login_timeout = login_timeout
        self.max_line = max_line
        self.check_password = check_password
        self.allow_anonymous = allow_anonymous
        if allow_anonymous:
            _log.warning(
                "SSH server: anonymous access allowed; anyone who reaches the port gets a session"
            )
        client_keys = None
        if authorized_keys is not None:
            try:
                client_keys = asyncssh.read_authorized_keys(os.fspath(authorized_keys))
            except (asyncssh.KeyImportError, ValueError) as error:
                raise ValueError(
                    f"{os.fspath(authorized_keys)!r} is not an authorized_keys file: {error}"
                ) from error
        _cache_line_editor_patterns(asyncssh)
        key, created = load_host_key(host_key)
        self.host_key_path = Path(host_key)
        self.host_key_created = created
        self.host_key_fingerprint: str = key.get_fingerprint("sha256")
        self._connections: set[_Connection] = set()
        self._per_address: collections.Counter[str] = collections.Counter()  # connections
        self._stopped = threading.Event()
        self._started = False
        self._options: dict[str, object] = dict(
            server_host_keys=[key],
            authorized_client_keys=client_keys,
            line_editor=True,
            line_history=history,
            max_line_length=max_line,
            login_timeout=login_timeout,
            encoding="utf-8",
            errors="replace",
            gss_host=None,
            kbdint_auth=False,
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            keepalive_interval=60,
            keepalive_count_max=3,
        )
        # Bound now (the address is known, clients queue), served from start() on.
        self._sock = bind_listener(host, port, backlog=backlog)
        sockname = self._sock.getsockname()
        self.address: tuple[str, int] = (str(sockname[0]), int(sockname[1]))
        self._loops = LoopThread(f"sockwork-ssh-{self.address[1]}")
        self._listener: Any = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Serve in a background thread and return at once (the server itself)."""
        asyncssh = _asyncssh()
        with self._lock:
            if self._stopping.is_set():
                raise RuntimeError("the server is stopped; create a new one")
            if self._started:
                raise RuntimeError("the server is already running")
            self._started = True
            self._install_routing()
        try:
            self._listener = self._loops.start(
                asyncssh.create_server(_make_server_factory(self), sock=self._sock, **self._options)
            )
        except BaseException:
            with self._lock:
                self._uninstall_routing()
            raise
        self._loop = self._loops.loop
        return self

    def serve_forever(self) -> None:
        """Serve until :meth:`close` is called (from another thread, or by Ctrl-C here)."""
        self.start()
        try:
            self._stopping.wait()
        finally:
            self.close()

    def close(self, timeout: float = 1.0) -> None:
        """Stop accepting, end every session and wait up to ``timeout`` s for them.

        Safe from any thread, including a session's own command; idempotent.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            first = not self._stopping.is_set()
            self._stopping.set()
            sessions = list(self._sessions.values())
        for session in sessions:
            session._end("the server is stopping")
        if first and self._loops.running:
            try:
                self._loops.run(self._close_all(), max(0.05, deadline - time.monotonic()))
            except (TimeoutError, RuntimeError):
                pass  # a stuck close: the loop's stop below ends it anyway
        self._join_sessions(deadline)
        with self._lock:
            in_session = threading.current_thread() in self._threads
        if not first and not in_session and not self._loops.in_loop_thread():
            # Another thread is closing: return when it is done (loop stopped, standard
            # streams restored), as the first caller does. A session's thread (or the
            # loop's) does not wait: the first caller may be waiting for it.
            self._stopped.wait(max(0.0, deadline - time.monotonic()))
        if first:
            self._loops.stop()  # cancels what is left; the listener is closed by then
            self._sock.close()
            with self._lock:
                self._uninstall_routing()
            self._stopped.set()

    @property
    def running(self) -> bool:
        """True while the server accepts clients."""
        return self._loops.running and not self._stopping.is_set()

    # -- internals -----------------------------------------------------------------

    async def _close_all(self) -> None:
        if self._listener is None:
            return
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.conn.close()
        await asyncio.sleep(0)
        try:
            await asyncio.wait_for(self._listener.wait_closed(), 0.5)
        except asyncio.TimeoutError:
            pass

    def _admit_connection(self, connection: _Connection) -> str | None:
        """Count a new connection (in the loop); returns why it is refused, or None."""
        address = connection.peer[0]
        with self._lock:
            if self._stopping.is_set():
                return "the server is stopping"
            # Connections count against max_clients too (with room for the sessions
            # that are ending), so unauthenticated clients cannot pile up.
            max_clients = self.policy.max_clients
            if max_clients is not None and len(self._connections) >= max_clients + 8:
                return f"{len(self._connections)} connections open"
            # Two more connections than sessions per address: the one over the limit
            # is told why (at its session) rather than cut off at connect.
            per_address = self.policy.address_limit
            if per_address is not None and self._per_address[address] >= per_address + 2:
                return f"{self._per_address[address]} connections from this address"
            self._connections.add(connection)
            self._per_address[address] += 1
        return None

    def _forget_connection(self, connection: _Connection) -> None:
        with self._lock:
            if connection in self._connections:
                self._connections.discard(connection)
                self._per_address[connection.peer[0]] -= 1
                if self._per_address[connection.peer[0]] <= 0:
                    del self._per_address[connection.peer[0]]

    def _open_session(
        self, channel: Any, connection: _Connection, chan_session: Any
    ) -> SshSession | None:
        """Start a session's program thread (in the loop), or tell the client we are busy."""
        with self._lock:
            refusal = (
                "*** the server is stopping"
                if self._stopping.is_set()
                else self._admission.refusal(connection.peer[0])
            )
            if refusal is None:
                session = SshSession(
                    self,
                    channel,
                    connection.peer,
                    next(self._ids),
                    username=connection.username,
                    term_type=chan_session.term_type,
                    terminal_size=chan_session.size,
                    loop=self._loop,
                    connection=connection,
                )
                connection.sessions += 1
                connection.had_session = True
                self._start_session(session, f"sockwork-ssh-session-{session.id}")
                return session
        channel.write(refusal + "\n")
        channel.exit(1)  # the client closes the connection, or opens another session
        connection.had_session = True
        return None
