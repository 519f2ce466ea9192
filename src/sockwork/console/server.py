"""Serve a console program (a ``cmd.Cmd`` class or any function) to telnet users.

One thread per session runs a fresh instance of the program; the telnet layer
(:mod:`sockwork.console.telnet`) sits between it and the socket, and the routing of
standard streams (:mod:`sockwork.console.routing`) makes bare ``print()``/``input()``
reach the right user while unbound threads keep the local console.
"""

# Strategy:
# - Accept loop: one thread (or the caller of serve_forever) waits on the listening
#   socket and a wake-up socketpair with a selector; close() writes to the pair.
#   Admission (max_clients, per-address limit) is the policy's Admission, under the
#   server lock; refusals are one non-blocking send, never a wait.
# - Session thread: password (throttled per address), then the program; how it reads,
#   writes and ends is in sockwork.console.session's strategy comment. One thread per
#   session because a Cmd blocks in input() (the measurements and the decision:
#   docs/console.md, "Sessions and threads").
# - close() shuts the sessions' sockets down one after the other, competing for the GIL
#   with the threads it woke: that paces it (11,000 sessions end in about 3 s). Clients
#   leaving together wake every thread at once instead: sockwork.console.stampede.

from __future__ import annotations

import cmd
import hmac
import itertools
import logging
import selectors
import socket
import ssl as _ssl
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Literal, TypeVar, cast

from sockwork.address import bind_listener
from sockwork.console import routing
from sockwork.console.output import OutputPump
from sockwork.console.policy import Admission, SessionPolicy

# Session and its stream adapters live in sockwork.console.session; they stay importable
# from here, where they were first (tests check it).
from sockwork.console.session import (
    Session,
    _check_stack_size,
    _ClientGone,
    _log_unbound,
    _session_thread,
    _start_session_thread,
    current_session,
)
from sockwork.console.session import _SessionInput as _SessionInput
from sockwork.console.session import _SessionOutput as _SessionOutput
from sockwork.console.telnet_session import TelnetSession
from sockwork.deprecation import warn_stop_alias

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "App",
    "ConsoleServer",
    "Session",
    "adapt_cmd",
    "current_session",
]

_log = logging.getLogger("sockwork.console")

_NO_THREAD = "*** the server cannot start another session now; try again later"
_S = TypeVar("_S", bound=Session)

App = Callable[[], object]
"""What a server runs per session: a Cmd subclass, a factory returning a Cmd, or a function."""


class _SessionHost(Generic[_S]):
    """What every console server does with its sessions, whatever the transport.

    The limits and their bookkeeping (``policy``, an :class:`Admission` under ``_lock``),
    one thread per session running the program (:meth:`_run_session`), the routing of
    standard streams, ``sessions``, ``broadcast`` and the waiting at the end. A
    transport adds how clients arrive (:meth:`start`), what a session does before its
    program (:meth:`_session_body`) and how it all stops (:meth:`close`).
    """

    def __init__(
        self,
        app: App,
        *,
        intro: str | None,
        prompt: str | None,
        stdio: Literal["streams", "builtins", "none"],
        session_stack_size: int | None,
        max_clients: int | None,
        max_per_address: int | None | Literal["auto"],
        first_line_timeout: float | None,
        idle_timeout: float | None,
        write_timeout: float,
        max_output: int,
        login_delay: float,
        max_login_delay: float,
    ) -> None:
        policy = SessionPolicy(
            max_clients=max_clients,
            max_per_address=max_per_address,
            first_line_timeout=first_line_timeout,
            idle_timeout=idle_timeout,
            write_timeout=write_timeout,
            max_output=max_output,
            login_delay=login_delay,
            max_login_delay=max_login_delay,
        )
        if not callable(app):
            raise TypeError(f"app must be a cmd.Cmd subclass or a callable, got {app!r}")
        if stdio not in ("streams", "builtins", "none"):
            raise ValueError(f"stdio must be 'streams', 'builtins' or 'none', got {stdio!r}")
        _check_stack_size(session_stack_size)
        self.app = app
        self.policy = policy  # the limits, in a form every transport shares
        self.intro = intro
        self.prompt = prompt
        self.session_stack_size = session_stack_size
        # The limits stay readable as attributes too (they are the policy's).
        self.max_clients = policy.max_clients
        self.max_per_address = policy.address_limit
        self.first_line_timeout = policy.first_line_timeout
        self.idle_timeout = policy.idle_timeout
        self.write_timeout = policy.write_timeout
        self.max_output = policy.max_output
        self.login_delay = policy.login_delay
        self.max_login_delay = policy.max_login_delay
        self._stdio = stdio
        self._lock = threading.Lock()
        self._admission = Admission(policy)
        self._sessions: dict[int, _S] = {}
        self._threads: set[threading.Thread] = set()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._routing_installed = False

    def start(self) -> Self:
        """Serve in a background thread and return at once (the server itself)."""
        raise NotImplementedError

    def close(self, timeout: float = 1.0) -> None:
        """Stop accepting, end every session and wait up to ``timeout`` s for them."""
        raise NotImplementedError

    def stop(self, timeout: float = 1.0) -> None:
        """Deprecated alias of :meth:`close` (sockwork's servers ``start()`` and ``close()``)."""
        warn_stop_alias(self)
        self.close(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def sessions(self) -> list[_S]:
        """The sessions connected now, oldest first (a snapshot)."""
        with self._lock:
            return list(self._sessions.values())

    def broadcast(self, text: str) -> int:
        """Show ``text`` to every connected user; returns how many got it.

        Never waits for a client: a session too far behind to take the message is
        disconnected instead (and not counted).
        """
        sent = 0
        for session in self.sessions:
            with _ClientGone():
                session.send(text)
                sent += 1
        return sent

    def _install_routing(self) -> None:
        if self._stdio != "none" and not self._routing_installed:
            routing.install(self._stdio)
            self._routing_installed = True

    def _uninstall_routing(self) -> None:
        if self._routing_installed and self._stdio != "none":
            self._routing_installed = False
            routing.uninstall(self._stdio)

    def _start_session(self, session: _S, name: str) -> None:
        """Count ``session`` in and start its thread (lock held); undone if it cannot start."""
        thread = _session_thread(
            self._run_session, session, name=name, stack_size=self.session_stack_size
        )
        session._thread = thread
        # Registered before it starts: a KeyboardInterrupt (SIGTERM) raised in start()
        # must not leave a running session that close() does not know.
        self._admission.enter(session.peer[0])
        self._sessions[session.id] = session
        self._threads.add(thread)
        try:
            _start_session_thread(thread, self.session_stack_size)
        except BaseException:
            if thread.ident is None:  # it never ran: nobody else will clean up
                self._sessions.pop(session.id, None)
                self._threads.discard(thread)
                self._admission.leave(session.peer[0])
            raise

    def _run_session(self, session: _S) -> None:
        try:
            self._serve_session(session)
        finally:
            session._end_thread()  # last: counted as ending until its thread is done

    def _serve_session(self, session: _S) -> None:
        failure: BaseException | None = None
        try:
            with routing.bind(session.streams):
                try:
                    # The client left or the server stops: nothing to report.
                    with _ClientGone(eof=True):
                        self._session_body(session)
                except BaseException as error:  # the program crashed: log it, not the client
                    failure = error
                    with _ClientGone():
                        session._notify("*** internal error; the session ends", redraw=False)
                with _ClientGone():
                    session._flush()
            if failure is not None:  # logged unbound: the traceback is for the operator
                _log.error(
                    "session %d (%s) crashed", session.id, session.peer_text, exc_info=failure
                )
        finally:
            session._program_ended()
            with self._lock:
                if self._sessions.pop(session.id, None) is not None:
                    self._admission.leave(session.peer[0])
                self._threads.discard(threading.current_thread())

    def _session_body(self, session: _S) -> None:
        """Run one session in its thread (routed to it): by default, just its program."""
        _run_program(self.app, session, intro=self.intro, prompt=self.prompt)

    def _join_sessions(self, deadline: float) -> None:
        """Wait until ``deadline`` for the session threads (never the caller's own)."""
        me = threading.current_thread()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not me and thread.ident is not None:  # started
                thread.join(max(0.0, deadline - time.monotonic()))


class ConsoleServer(_SessionHost[TelnetSession]):
    """Serve a console program to telnet clients, one fresh instance per session.

    Args:
        app: a ``cmd.Cmd`` subclass (instantiated without arguments per session), a
            factory returning a ``cmd.Cmd`` instance, or a function run once per
            session that talks with ``print()``/``input()``.
        host: address to listen on; loopback unless told otherwise ("" for all interfaces).
        port: port to listen on; 0 picks a free one (see :attr:`address`).
        intro: greeting shown at the start of each session (default: the Cmd's own).
        prompt: prompt for Cmd programs (default: the Cmd's own).
        max_clients: sessions served at once; the next client is told the server is
            busy and disconnected. None for no limit.
        max_per_address: sessions at once from one client address; ``"auto"`` is a
            tenth of ``max_clients`` (at least 1). None for no limit.
        first_line_timeout: seconds a new client may take to send its first line (a
            password counts) before it is disconnected; None for no limit.
        idle_timeout: seconds a session may wait for its user before it is closed;
            None waits forever.
        write_timeout: seconds a session's output may wait without the client taking
            a byte; then the session is disconnected (and logged).
        max_output: bytes of output that may wait for one client: the program's own
            writes wait for room, ``send``/``broadcast`` never wait (they may use as
            much again, or the session is disconnected).
        max_line: the longest input line in bytes; longer lines get an error message.
        password: when set, each client must type it (echo off, compared in constant
            time) within ``password_tries`` attempts.
        login_delay: seconds a client address waits after a wrong password before the
            answer and before its next attempt is checked, doubled at each failure in a
            row from that address (across connections), at most ``max_login_delay``.
        ssl: a server-side ``ssl.SSLContext`` to speak TLS instead of plain telnet.
        stdio: ``"streams"`` routes ``sys.stdin``/``stdout``/``stderr`` per session
            while the server runs, ``"builtins"`` patches ``print``/``input`` instead,
            ``"none"`` leaves them alone (the program must use ``self.stdout``).
        backlog: the listen queue length.
        encoding: text encoding on the wire.
        session_stack_size: bytes of stack for each session's thread (a multiple of
            4096, at least 256 KiB); None keeps the interpreter's default (on Linux the
            soft ``ulimit -s``, usually 8 MiB, as for the local console). Smaller
            stacks save address space, not resident memory (see docs/console.md).

    Raises:
        ValueError: a limit is out of range.
        OSError: the address cannot be bound.
    """

    def __init__(
        self,
        app: App,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        intro: str | None = None,
        prompt: str | None = None,
        max_clients: int | None = 100,
        max_per_address: int | None | Literal["auto"] = "auto",
        first_line_timeout: float | None = 60.0,
        idle_timeout: float | None = 900.0,
        write_timeout: float = 30.0,
        max_output: int = 65536,
        max_line: int = 4096,
        password: str | None = None,
        password_tries: int = 3,
        login_delay: float = 1.0,
        max_login_delay: float = 30.0,
        ssl: _ssl.SSLContext | None = None,
        stdio: Literal["streams", "builtins", "none"] = "streams",
        backlog: int = 128,
        encoding: str = "utf-8",
        session_stack_size: int | None = None,
    ) -> None:
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
        if max_line < 1:
            raise ValueError(f"max_line must be >= 1 byte, got {max_line!r}")
        if password is not None and not password:
            raise ValueError("password must be None or a non-empty string")
        if password_tries < 1:
            raise ValueError(f"password_tries must be >= 1, got {password_tries!r}")
        "".encode(encoding)
        self.max_line = max_line
        self.encoding = encoding
        self._password = password.encode("utf-8") if password is not None else None
        self._password_tries = password_tries
        self._ssl = ssl
        self._stop_deadline: float | None = None
        self._loop_done = threading.Event()
        self._loop_done.set()
        self._loop_thread: threading.Thread | None = None
        self._loop_ident: int | None = None
        # "" means every interface, as for socket.bind(); IPv4 first when both exist.
        self._listener = bind_listener(host, port, backlog=backlog)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        port = self._listener.getsockname()[1]
        self._pump = OutputPump(name=f"sockwork-console-output-{port}")
        self.address: tuple[str, int] = cast(tuple[str, int], self._listener.getsockname()[:2])

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Accept clients in a background thread and return at once (the server itself)."""
        with self._lock:
            if self._stopping.is_set():
                raise RuntimeError("the server is stopped; create a new one")
            if self._loop_thread is not None or not self._loop_done.is_set():
                raise RuntimeError("the server is already running")
            self._loop_done.clear()
            self._loop_thread = threading.Thread(
                target=self._serve, name=f"sockwork-console-accept-{self.address[1]}", daemon=True
            )
            self._pump.start()
            self._install_routing()
            thread = self._loop_thread
        try:
            thread.start()
        except BaseException:
            # Interrupted (Ctrl-C, or SIGTERM in `sockwork serve`) before the thread ran:
            # nothing would ever set _loop_done, and close() would wait its whole grace
            # for it and leave the listener open.
            if thread.ident is None:
                with self._lock:
                    self._loop_done.set()
            raise
        return self

    def serve_forever(self) -> None:
        """Accept clients in the calling thread until :meth:`close` is called."""
        with self._lock:
            if self._stopping.is_set():
                raise RuntimeError("the server is stopped; create a new one")
            if not self._loop_done.is_set():
                raise RuntimeError("the server is already running")
            self._loop_done.clear()
            self._pump.start()
            self._install_routing()
        try:
            self._serve()
        finally:
            self.close()

    def close(self, timeout: float = 1.0) -> None:
        """Stop accepting, end every session and wait up to ``timeout`` s for them.

        Safe from any thread, including a session's own command or the console; idle
        clients are disconnected at once, queued output is dropped. Calling it again
        waits no longer than the first call's deadline.
        """
        with self._lock:
            if self._stop_deadline is None:
                self._stop_deadline = time.monotonic() + timeout
            deadline = self._stop_deadline
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:  # not a client's socket (so not _ClientGone): the wake-up pair
            pass  # already woken or closed
        for session in self.sessions:  # _admit() admits nobody once _stopping is set
            session._abort("the server is stopping")
        me = threading.current_thread()
        if threading.get_ident() != self._loop_ident:
            self._loop_done.wait(max(0.0, deadline - time.monotonic()))
            thread = self._loop_thread
            # is_alive(): start() may have been interrupted (or be running in another
            # thread) before the thread started, and join() would raise RuntimeError.
            if thread is not None and thread is not me and thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._join_sessions(deadline)
        # After the sessions: the pump closes the sockets of those that ended with
        # output still queued (dropped now).
        self._pump.stop(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._loop_done.is_set():  # else the loop closes it when it ends
                self._close_listener()
            self._uninstall_routing()

    @property
    def running(self) -> bool:
        """True while the server accepts clients."""
        return not self._loop_done.is_set() and not self._stopping.is_set()

    # -- internals -----------------------------------------------------------------

    def _close_listener(self) -> None:
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _serve(self) -> None:
        self._loop_ident = threading.get_ident()
        try:
            if self._stopping.is_set():  # closed while start() was still starting us
                return
            with selectors.DefaultSelector() as selector:
                selector.register(self._listener, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    for key, _ in selector.select():
                        if key.fileobj is self._listener:
                            self._accept_ready()
        finally:
            with self._lock:
                self._loop_done.set()
                if self._stopping.is_set():
                    self._close_listener()

    def _accept_ready(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # the listener, not a client: handled apart
                # EMFILE and friends: the pending client stays queued and the listener
                # stays readable; pause instead of spinning, keep serving the others.
                _log.warning("accept failed (%s); retrying in 0.1 s", error)
                self._stopping.wait(0.1)
                return
            try:
                self._admit(sock, (str(peer[0]), int(peer[1])))
            except RuntimeError as error:
                # No thread left (threads-max, pid_max, a cgroup's pids.max, RLIMIT_NPROC,
                # address space for the stack): say so, as for a full server.
                _log.warning("could not start a session for %s: %s", peer, error)
                self._refuse(sock, _NO_THREAD)
            except OSError as error:  # reset already: logged and closed (not _ClientGone)
                _log.warning("could not start a session for %s: %s", peer, error)
                sock.close()

    def _admit(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._stopping.is_set():  # close() has taken its snapshot of the sessions
                sock.close()
                return
            refusal = self._admission.refusal(peer[0])
            if refusal is None:
                if self._ssl is not None:
                    sock = self._ssl.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                session = TelnetSession(self, sock, peer, next(self._ids))
                try:
                    self._start_session(session, f"sockwork-console-session-{session.id}")
                except BaseException:
                    # A TLS socket owns the descriptor now; no plain-text refusal can
                    # reach a TLS client.
                    if self._ssl is not None and session.id not in self._sessions:
                        sock.close()
                    raise
        if refusal is not None:
            _log.info("refused %s:%d: %s", peer[0], peer[1], refusal)
            self._refuse(sock, refusal)

    @staticmethod
    def _refuse(sock: socket.socket, refusal: str) -> None:
        # One non-blocking send: the line fits in any socket buffer, and a flood of
        # refused clients must not slow the accept loop down.
        with sock, _ClientGone():  # a refused client may be gone already
            sock.send(f"{refusal}\r\n".encode())
            sock.shutdown(socket.SHUT_WR)

    def _session_body(self, session: TelnetSession) -> None:
        if session._tls:
            session._handshake()
        if self._password is not None and not self._authenticate(session):
            return
        _run_program(self.app, session, intro=self.intro, prompt=self.prompt)

    def _authenticate(self, session: TelnetSession) -> bool:
        assert self._password is not None
        address = session.peer[0]
        for _ in range(self._password_tries):
            try:
                typed = session.read_secret("Password: ")
            except EOFError:
                return False
            # Failures are counted per address, across connections: reconnecting
            # does not buy faster guesses. The waits end early if the session does.
            with self._lock:
                wait = self._admission.login_wait(address, time.monotonic())
            if wait > 0 and session._ended.wait(wait):
                return False
            if hmac.compare_digest(typed.encode("utf-8"), self._password):
                with self._lock:
                    self._admission.login_succeeded(address)
                return True
            with self._lock:
                delay = self._admission.login_failed(address, time.monotonic())
            _log_unbound(
                logging.INFO,
                "session %d (%s): wrong password; %s waits %g s",
                session.id,
                session.peer_text,
                address,
                delay,
            )
            if delay > 0 and session._ended.wait(delay):
                return False
            session._write("Wrong password.\n")
        session._write("*** too many wrong passwords; disconnecting\n")
        return False


def _run_program(
    app: App, session: Session, *, intro: str | None = None, prompt: str | None = None
) -> None:
    """Run one session's program in the calling thread until it ends (any transport).

    A fresh instance of a Cmd class (or the Cmd a factory returns) gets the session's
    streams and :func:`adapt_cmd`, and its loop runs; a function is simply called.
    """
    if isinstance(app, type) and issubclass(app, cmd.Cmd):
        program: object = app()
        shown_intro = intro
    else:
        # A function is the program itself: greet before it starts.
        if intro:
            session._write(intro + "\n")
        program = app()
        shown_intro = "" if intro else None
    if isinstance(program, cmd.Cmd):
        # A Cmd reads sys.stdin at construction; give it the session explicitly so that
        # it works without routing too, and keep it off the process-wide readline.
        program.stdin = session.stdin
        program.stdout = session.stdout
        program.use_rawinput = False
        if prompt is not None:
            program.prompt = prompt
        adapt_cmd(program)
        session._program_started(program)
        program.cmdloop(shown_intro)


def adapt_cmd(program: cmd.Cmd) -> cmd.Cmd:
    """Make a Cmd safe to serve: an empty line does nothing, ``exit`` and EOF end it.

    Only what the program does not define itself is added (``exit`` is then listed by
    ``help``); returns the same object.
    """
    # An empty line must not repeat the last command (a stray CR LF would rerun it).
    if type(program).emptyline is cmd.Cmd.emptyline:
        setattr(program, "emptyline", _no_command)  # noqa: B010
    # exit and EOF end a session even if the program forgot them.
    if not hasattr(program, "do_EOF"):
        setattr(program, "do_EOF", _end_session)  # noqa: B010
    if not hasattr(program, "do_exit"):
        setattr(program, "do_exit", _exit)  # noqa: B010
        # Cmd.do_help lists the do_* names of the class only: add the instance's.
        names = program.get_names
        setattr(program, "get_names", lambda: [*names(), "do_exit"])  # noqa: B010
    return program


def _no_command() -> bool:
    return False


def _end_session(arg: str) -> bool:
    return True


def _exit(arg: str) -> bool:
    """End this session (Ctrl-D does too)."""
    return True
