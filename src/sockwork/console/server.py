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
# - Session thread: password (throttled per address), then the program; it alone
#   reads the socket, which is non-blocking: it waits with poll() outside every lock,
#   bounded by the first-line timeout until a line arrives, then by the idle timeout.
# - Output from any thread goes through the session's Outbox (sockwork.console.output):
#   bounded, sent without blocking, the rest drained by the server's OutputPump
#   thread. The session lock (the TelnetConnection, the socket, the outbox) is only
#   held around non-blocking calls, so kick, broadcast and stop never wait on a
#   client; a client that takes no output for write_timeout s is disconnected.
# - close() and Session.close() wake a reader by shutting the socket down (recv() then
#   returns EOF at once, the socketserver "hang" fix); the fd is closed once, when the
#   session ends, by its thread or by the pump if output is still queued.
# - TLS: OpenSSL objects must not be read and written at once from two threads: every
#   SSL call is made under the session lock, never a blocking one.

from __future__ import annotations

import cmd
import hmac
import io
import itertools
import logging
import math
import select
import selectors
import socket
import ssl as _ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TextIO, cast

from sockwork.address import bind_listener
from sockwork.console import routing
from sockwork.console.output import Outbox, OutputPump
from sockwork.console.policy import Admission, SessionPolicy
from sockwork.console.telnet import (
    NEED_DATA,
    EndOfInput,
    Interrupt,
    Line,
    LineTooLong,
    TelnetConnection,
)
from sockwork.errors import ConnectionClosed

if TYPE_CHECKING:
    from typing import Self

__all__ = ["App", "ConsoleServer", "Session", "adapt_cmd", "current_session"]

_log = logging.getLogger("sockwork.console")

App = Callable[[], object]
"""What a server runs per session: a Cmd subclass, a factory returning a Cmd, or a function."""

_RECV_SIZE = 4096
_OUTPUT_FLUSH_AT = 8192  # characters buffered before a write goes out without a newline
_CLOSE_GRACE = 2.0  # seconds a closed session's last words may wait for its client
_TLS_CHUNK = 16384  # one TLS record: a non-blocking write is retried with this length


class _SessionInput:
    """The session's standard input: lines typed by the telnet user."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @property
    def encoding(self) -> str:
        return self._session._conn.encoding

    @property
    def name(self) -> str:
        return f"<telnet {self._session.peer_text}>"

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    @property
    def errors(self) -> str:
        return "replace"

    @property
    def closed(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def __iter__(self) -> Iterator[str]:
        return iter(self._session._read_line, "")

    def readlines(self, hint: int = -1) -> list[str]:
        return list(self)

    def isatty(self) -> bool:
        # False on purpose: pydoc would start a pager on the server's terminal.
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a telnet session has no file descriptor")

    def readline(self, size: int | None = -1) -> str:
        return self._session._read_line()

    def read(self, size: int | None = -1) -> str:
        if size is not None and size >= 0:
            return self._session._read_line()
        return "".join(iter(self._session._read_line, ""))

    def close(self) -> None:
        pass  # the session owns the socket


class _SessionOutput:
    """The session's standard output and error: line-buffered text to the telnet user."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @property
    def encoding(self) -> str:
        return self._session._conn.encoding

    @property
    def errors(self) -> str:
        return "replace"

    @property
    def name(self) -> str:
        return f"<telnet {self._session.peer_text}>"

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return False

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a telnet session has no file descriptor")

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._session._write(text)
        return len(text)

    def flush(self) -> None:
        self._session._flush()

    def close(self) -> None:
        pass  # the session owns the socket


class Session:
    """One connected telnet user: who, since when, how many bytes; close or message them.

    Attributes:
        id: a number unique within the server, counting from 1.
        peer: the client's address as ``(host, port)``.
        started_at: when the client connected (``time.time()``).
        streams: the session's standard streams (bind a thread to them with
            :func:`sockwork.console.routing.bind`).
    """

    def __init__(
        self,
        server: ConsoleServer,
        sock: socket.socket,
        peer: tuple[str, int],
        session_id: int,
    ) -> None:
        self.id = session_id
        self.peer = peer
        self.started_at = time.time()
        self._server = server
        self._sock = sock
        self._tls = isinstance(sock, _ssl.SSLSocket)
        self._conn = TelnetConnection(max_line=server.max_line, encoding=server.encoding)
        # Guards the TelnetConnection, the socket and the outbox; only ever held around
        # non-blocking calls (waiting writers release it), so any thread may take it.
        self._lock = threading.RLock()
        self._read_lock = threading.Lock()
        self._pending: list[str] = []
        self._pending_size = 0
        self._bytes_in = 0
        self._closed = False  # no more input: the program sees end of input
        self._sock_closed = False
        self._ended = threading.Event()  # set with _closed: wakes a password delay
        self._eof_delivered = False
        self._close_reason: str | None = None
        self._thread: threading.Thread | None = None
        self._tls_retry = 0
        policy = server.policy
        now = time.monotonic()
        self._first_line_deadline = (
            None if policy.first_line_timeout is None else now + policy.first_line_timeout
        )
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self._outbox = Outbox(
            _SessionChannel(self),
            sock.fileno(),
            lock=self._lock,
            pump=server._pump,
            limit=policy.max_output,
            write_timeout=policy.write_timeout,
            name=f"telnet session {session_id} ({self.peer_text})",
            address=peer,
        )
        output = _SessionOutput(self)
        self.stdin: TextIO = cast(TextIO, _SessionInput(self))
        self.stdout: TextIO = cast(TextIO, output)
        self.streams = routing.Streams(
            stdin=self.stdin,
            stdout=self.stdout,
            stderr=self.stdout,
            getpass=self.read_secret,
            session=self,
        )

    # -- facts ---------------------------------------------------------------------

    @property
    def bytes_received(self) -> int:
        """Bytes received from the client so far (telnet commands included)."""
        return self._bytes_in

    @property
    def bytes_sent(self) -> int:
        """Bytes the client's connection has taken so far."""
        return self._outbox.bytes_sent

    @property
    def output_buffered(self) -> int:
        """Bytes of output waiting for the client (bounded: see ``max_output``)."""
        return self._outbox.buffered

    @property
    def peer_text(self) -> str:
        """The peer as ``host:port``."""
        return f"{self.peer[0]}:{self.peer[1]}"

    @property
    def closed(self) -> bool:
        """True once the session is ending (the program may still be finishing)."""
        return self._closed

    def __repr__(self) -> str:
        return (
            f"<Session {self.id} {self.peer_text} in={self._bytes_in} out={self.bytes_sent}"
            f"{' closed' if self._closed else ''}>"
        )

    # -- control from any thread ---------------------------------------------------

    def send(self, text: str) -> None:
        """Show ``text`` to this user on its own line(s), then redraw the unfinished line (prompt).

        Safe from any thread and never waits: a client too far behind to take it is
        disconnected instead (``ConnectionClosed``, as when the session is gone).
        """
        self._notify(text, redraw=True)

    def _notify(self, text: str, *, redraw: bool) -> None:
        with self._lock:
            self._flush_locked(wait=False)
            shown = self._conn.pending_output_line
            message = text if text.endswith("\n") else text + "\n"
            if shown:
                message = "\n" + message
            # Whatever was on the line (the prompt, a progress line) is shown again
            # below the message, whether or not the program is reading yet.
            if redraw:
                message += shown
            self._send_text_locked(message, wait=False)

    def close(self, message: str | None = None) -> None:
        """End the session: optionally tell the user why, then disconnect (any thread).

        Returns at once: the message goes out as soon as the client takes it (at most
        ``write_timeout`` s), the program sees end of input at its next read.
        """
        with self._lock:
            if message is not None and self._outbox.open:
                try:
                    self._notify(message, redraw=False)
                except ConnectionClosed:
                    pass
            self._end("closed by the server")

    def read_secret(self, prompt: str = "Password: ") -> str:
        """Ask for a line without showing it (telnet ``WILL ECHO``); used by getpass.

        Raises:
            EOFError: the user ended input instead of answering.
        """
        with self._lock:
            self._flush_locked(wait=True)
            self._send_raw_locked(self._conn.echo_off(), wait=True)
        try:
            self._write(prompt)
            line = self._read_line()
        finally:
            with self._lock:
                if self._outbox.open:
                    restore = self._conn.echo_on()
                    # The client did not echo the Enter key either: end the line for it.
                    if self._conn.peer_speaks_telnet:
                        self._send_text_locked("\n", wait=True)
                    self._send_raw_locked(restore, wait=True)
        if not line:
            raise EOFError
        return line.rstrip("\n")

    def _program_started(self, program: cmd.Cmd) -> None:
        """Called in the session's thread before a Cmd program's loop starts (a hook)."""

    # -- I/O used by the streams ---------------------------------------------------

    def _write(self, text: str) -> None:
        with self._lock:
            self._pending.append(text)
            self._pending_size += len(text)
            if "\n" in text or self._pending_size > _OUTPUT_FLUSH_AT:
                self._flush_locked(wait=True)

    def _flush(self) -> None:
        with self._lock:
            self._flush_locked(wait=True)

    def _flush_locked(self, *, wait: bool) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        self._send_text_locked(text, wait=wait)

    def _send_text_locked(self, text: str, *, wait: bool) -> None:
        self._send_raw_locked(self._conn.send(text), wait=wait)

    def _send_raw_locked(self, data: bytes, *, wait: bool) -> None:
        # wait=True is the program's own output: it waits for room (releasing the lock);
        # others never wait (see sockwork.console.output).
        self._outbox.put(data, wait=wait)

    def _read_line(self) -> str:
        """Return the next line with its newline, or "" at end of input."""
        with self._read_lock:
            if self._eof_delivered:
                # The program already saw end of input and asks again: stop it here
                # rather than let a loop without do_EOF spin forever.
                raise ConnectionClosed(f"telnet client {self.peer_text} is gone", address=self.peer)
            self._flush()
            while True:
                with self._lock:
                    prompt = self._conn.pending_output_line
                    event = self._conn.next_event()
                    reply = self._conn.data_to_send()
                    if reply and self._outbox.open:
                        self._send_raw_locked(reply, wait=True)
                if event is NEED_DATA:
                    self._receive()
                    continue
                if isinstance(event, Line):
                    self._first_line_deadline = None
                    return event.text + "\n"
                if isinstance(event, EndOfInput):
                    self._eof_delivered = event.closed
                    return ""
                with self._lock:
                    if isinstance(event, Interrupt):
                        self._send_text_locked("\n" + prompt, wait=True)
                    elif isinstance(event, LineTooLong):
                        self._send_text_locked(
                            f"*** line too long ({event.size} bytes; the limit is "
                            f"{event.limit}); it was ignored\n{prompt}",
                            wait=True,
                        )

    def _receive(self) -> None:
        """Wait for bytes from the client and feed them (or EOF) to the telnet layer."""
        try:
            data = self._recv()
        except _Silent as silence:
            self._silenced(silence.notice, silence.reason)
            return
        except OSError:  # reset, or TLS broken: nothing more either way
            self._mark_closed("receive failed")
            data = b""
        with self._lock:
            if data:
                self._bytes_in += len(data)
                self._conn.receive_data(data)
            else:
                # The client may only have closed its sending side (nc -N, a script):
                # answers to its last lines can still go out.
                self._conn.receive_eof()

    def _recv(self) -> bytes:
        """Return the next bytes from the client (b"" at its end), waiting without the lock.

        Raises:
            _Silent: the client sent nothing within the first-line or idle timeout.
        """
        while True:
            with self._lock:
                if self._closed or self._sock_closed:
                    return b""
                try:
                    return self._sock.recv(_RECV_SIZE)
                except (BlockingIOError, _ssl.SSLWantReadError, _ssl.SSLWantWriteError):
                    pass  # nothing yet, or a partial TLS record: wait for more
            self._wait(select.POLLIN)

    def _wait(self, events: int) -> None:
        """Wait until the socket is ready for ``events`` or a read timeout runs out."""
        timeout, silence = self._silence_timeout()
        self._poll.modify(self._sock.fileno(), events)
        ready = self._poll.poll(None if timeout is None else math.ceil(timeout * 1000))
        if not ready and silence is not None:
            raise silence

    def _silence_timeout(self) -> tuple[float | None, _Silent | None]:
        policy = self._server.policy
        timeout = policy.idle_timeout
        silence = None
        if timeout is not None:
            silence = _Silent(f"*** idle for {timeout:g} s; disconnecting", "idle timeout")
        if self._first_line_deadline is not None:
            left = self._first_line_deadline - time.monotonic()
            if timeout is None or left < timeout:
                timeout = max(0.0, left)
                silence = _Silent(
                    f"*** nothing typed within {policy.first_line_timeout:g} s; disconnecting",
                    "first-line timeout",
                )
        return timeout, silence

    def _handshake(self) -> None:
        """Complete the TLS handshake within the first-line timeout."""
        sock = cast(_ssl.SSLSocket, self._sock)
        while True:
            with self._lock:
                try:
                    sock.do_handshake()
                    return
                except _ssl.SSLWantReadError:
                    events = select.POLLIN
                except _ssl.SSLWantWriteError:
                    events = select.POLLOUT
            try:
                self._wait(events)
            except _Silent as silence:
                self._mark_closed(silence.reason)
                raise ConnectionClosed(
                    f"telnet client {self.peer_text}: no TLS handshake in time",
                    address=self.peer,
                    by_peer=False,
                ) from None

    def _silenced(self, notice: str, reason: str) -> None:
        _log_unbound(
            logging.INFO, "session %d (%s) disconnected: %s", self.id, self.peer_text, reason
        )
        with self._lock:
            try:
                self._flush_locked(wait=False)
                self._send_text_locked(f"\n{notice}\n", wait=False)
            except ConnectionClosed:
                pass
            self._end(reason)

    def _mark_closed(self, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self._close_reason = reason
            self._ended.set()

    def _end(self, reason: str) -> None:
        """No more input or output; what is queued still goes out (lock held)."""
        self._mark_closed(reason)
        self._outbox.finish(grace=_CLOSE_GRACE)
        self._shutdown_socket(socket.SHUT_RD)  # wakes the reader: the program sees end of input

    def _abort(self, reason: str) -> None:
        """Disconnect now, dropping queued output (from any thread)."""
        self._outbox.fail(reason)

    def _shutdown_socket(self, how: int) -> None:
        """Shut the socket down (from any thread): a waiting poll() or recv() returns."""
        with self._lock:
            if self._sock_closed:
                return
            try:
                # The base method: SSLSocket.shutdown would drop its SSL object under a
                # reader that may be using it.
                socket.socket.shutdown(self._sock, how)
            except OSError:
                pass  # already disconnected

    def _close_socket(self) -> None:
        """Close once the queued output is sent (the pump closes it if it still has bytes)."""
        self._mark_closed("session ended")
        self._outbox.retire()

    # -- the outbox's channel (called with the lock held) ----------------------------

    def _send_now(self, data: memoryview) -> int:
        """Send what the socket takes without blocking; 0 when it takes nothing."""
        if self._sock_closed:
            raise ConnectionClosed("the telnet session is closed", address=self.peer, by_peer=False)
        if self._tls:
            # OpenSSL wants a write that could not finish retried with the same length.
            size = self._tls_retry or min(len(data), _TLS_CHUNK)
            try:
                sent = self._sock.send(data[:size])
            except (_ssl.SSLWantWriteError, _ssl.SSLWantReadError):
                self._tls_retry = size
                return 0
            self._tls_retry = 0
            return sent
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0

    def _output_failed(self, reason: str, *, log: bool) -> None:
        """Disconnect a session whose output cannot be delivered."""
        if log:
            _log_unbound(
                logging.WARNING, "session %d (%s) disconnected: %s", self.id, self.peer_text, reason
            )
        self._mark_closed(reason)
        self._shutdown_socket(socket.SHUT_RDWR)

    def _output_drained(self) -> None:
        """Everything queued before the end was sent: disconnect."""
        self._shutdown_socket(socket.SHUT_RDWR)

    def _close_transport(self) -> None:
        """Close the socket (once)."""
        if not self._sock_closed:
            self._sock_closed = True
            self._sock.close()


class _SessionChannel:
    """The session as its outbox sees it (sockwork.console.output.Channel)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def send_now(self, data: memoryview) -> int:
        return self._session._send_now(data)

    def output_failed(self, reason: str, *, log: bool) -> None:
        self._session._output_failed(reason, log=log)

    def output_drained(self) -> None:
        self._session._output_drained()

    def close_transport(self) -> None:
        self._session._close_transport()


def _log_unbound(level: int, message: str, *args: object) -> None:
    # Unbound: a handler writing to the routed sys.stderr must reach the operator, not
    # the session the record is about (which may be the one that cannot take output).
    with routing.bind(None):
        _log.log(level, message, *args)


class _Silent(Exception):
    """The client sent nothing within a read timeout."""

    def __init__(self, notice: str, reason: str) -> None:
        super().__init__(reason)
        self.notice = notice
        self.reason = reason


def current_session() -> Session | None:
    """Return the session the calling thread serves (or is bound to), or None on the console."""
    streams = routing.current_streams()
    if streams is not None and isinstance(streams.session, Session):
        return streams.session
    return None


class ConsoleServer:
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
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a cmd.Cmd subclass or a callable, got {app!r}")
        self.policy = SessionPolicy(
            max_clients=max_clients,
            max_per_address=max_per_address,
            first_line_timeout=first_line_timeout,
            idle_timeout=idle_timeout,
            write_timeout=write_timeout,
            max_output=max_output,
            login_delay=login_delay,
            max_login_delay=max_login_delay,
        )  # the limits, in a form other transports share (sockwork.console.policy)
        if max_line < 1:
            raise ValueError(f"max_line must be >= 1 byte, got {max_line!r}")
        if password is not None and not password:
            raise ValueError("password must be None or a non-empty string")
        if password_tries < 1:
            raise ValueError(f"password_tries must be >= 1, got {password_tries!r}")
        if stdio not in ("streams", "builtins", "none"):
            raise ValueError(f"stdio must be 'streams', 'builtins' or 'none', got {stdio!r}")
        "".encode(encoding)
        self.app = app
        self.intro = intro
        self.prompt = prompt
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.max_line = max_line
        self.encoding = encoding
        self._password = password.encode("utf-8") if password is not None else None
        self._password_tries = password_tries
        self._ssl = ssl
        self._stdio = stdio
        self._lock = threading.Lock()
        self._admission = Admission(self.policy)
        self._stop_deadline: float | None = None
        self._sessions: dict[int, Session] = {}
        self._threads: set[threading.Thread] = set()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._loop_done = threading.Event()
        self._loop_done.set()
        self._loop_thread: threading.Thread | None = None
        self._loop_ident: int | None = None
        self._routing_installed = False
        # "" means every interface, as for socket.bind(); IPv4 first when both exist.
        self._listener = bind_listener(host, port, backlog=backlog)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._pump = OutputPump(name=f"sockwork-console-output-{self._listener.getsockname()[1]}")
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
        self._loop_thread.start()
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
        except OSError:
            pass  # already woken or closed
        for session in self.sessions:  # _admit() admits nobody once _stopping is set
            session._abort("the server is stopping")
        me = threading.current_thread()
        if threading.get_ident() != self._loop_ident:
            self._loop_done.wait(max(0.0, deadline - time.monotonic()))
            if self._loop_thread is not None and self._loop_thread is not me:
                self._loop_thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not me and thread.ident is not None:  # started
                thread.join(max(0.0, deadline - time.monotonic()))
        # After the sessions: the pump closes the sockets of those that ended with
        # output still queued (dropped now).
        self._pump.stop(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._loop_done.is_set():  # else the loop closes it when it ends
                self._close_listener()
            self._uninstall_routing()

    def stop(self, timeout: float = 1.0) -> None:
        """Deprecated alias of :meth:`close` (sockwork's servers ``start()`` and ``close()``)."""
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
    def sessions(self) -> list[Session]:
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
            try:
                session.send(text)
                sent += 1
            except (ConnectionClosed, OSError):
                pass
        return sent

    @property
    def running(self) -> bool:
        """True while the server accepts clients."""
        return not self._loop_done.is_set() and not self._stopping.is_set()

    # -- internals -----------------------------------------------------------------

    def _install_routing(self) -> None:
        if self._stdio != "none" and not self._routing_installed:
            routing.install(self._stdio)
            self._routing_installed = True

    def _uninstall_routing(self) -> None:
        if self._routing_installed and self._stdio != "none":
            self._routing_installed = False
            routing.uninstall(self._stdio)

    def _close_listener(self) -> None:
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _serve(self) -> None:
        self._loop_ident = threading.get_ident()
        try:
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
            except OSError as error:
                # EMFILE and friends: the pending client stays queued and the listener
                # stays readable; pause instead of spinning, keep serving the others.
                _log.warning("accept failed (%s); retrying in 0.1 s", error)
                self._stopping.wait(0.1)
                return
            try:
                self._admit(sock, (str(peer[0]), int(peer[1])))
            except (OSError, RuntimeError) as error:  # reset already, or no thread left
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
                session = Session(self, sock, peer, next(self._ids))
                thread = threading.Thread(
                    target=self._run_session,
                    args=(session,),
                    name=f"sockwork-console-session-{session.id}",
                    daemon=True,
                )
                session._thread = thread
                # Registered before it starts: a KeyboardInterrupt (SIGTERM) raised in
                # start() must not leave a running session that close() does not know.
                self._admission.enter(peer[0])
                self._sessions[session.id] = session
                self._threads.add(thread)
                try:
                    thread.start()
                except BaseException:
                    if thread.ident is None:  # it never ran: nobody else will clean up
                        self._sessions.pop(session.id, None)
                        self._threads.discard(thread)
                        self._admission.leave(peer[0])
                    raise
        if refusal is not None:
            _log.info("refused %s:%d: %s", peer[0], peer[1], refusal)
            self._refuse(sock, refusal)

    @staticmethod
    def _refuse(sock: socket.socket, refusal: str) -> None:
        # One non-blocking send: the line fits in any socket buffer, and a flood of
        # refused clients must not slow the accept loop down.
        with sock:
            try:
                sock.send(f"{refusal}\r\n".encode())
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _run_session(self, session: Session) -> None:
        failure: BaseException | None = None
        try:
            with routing.bind(session.streams):
                try:
                    self._session_body(session)
                except (ConnectionClosed, EOFError, OSError):
                    pass  # the client left or the server stops: nothing to report
                except BaseException as error:  # the program crashed: log it, not the client
                    failure = error
                    try:
                        session._notify("*** internal error; the session ends", redraw=False)
                    except (ConnectionClosed, OSError):
                        pass
                try:
                    session._flush()
                except (ConnectionClosed, OSError):
                    pass
            if failure is not None:  # logged unbound: the traceback is for the operator
                _log.error(
                    "session %d (%s) crashed", session.id, session.peer_text, exc_info=failure
                )
        finally:
            session._close_socket()
            with self._lock:
                if self._sessions.pop(session.id, None) is not None:
                    self._admission.leave(session.peer[0])
                self._threads.discard(threading.current_thread())

    def _session_body(self, session: Session) -> None:
        if session._tls:
            session._handshake()
        if self._password is not None and not self._authenticate(session):
            return
        _run_program(self.app, session, intro=self.intro, prompt=self.prompt)

    def _authenticate(self, session: Session) -> bool:
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
