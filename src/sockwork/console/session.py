"""A user's session, whatever the transport: lines in, text out, timeouts and controls.

:class:`Session` is what every console server creates per client: reading lines
through the line discipline, output buffering and notices, the first-line and idle
timeouts, passwords, ``send`` and ``close``, and the session's standard streams. A
transport subclasses it with how bytes come and go:
:class:`~sockwork.console.telnet_session.TelnetSession` (a socket, plain or TLS) and
:class:`~sockwork.console.ssh_session.SshSession` (an SSH channel). :func:`current_session`
tells a program which user it serves.
"""

# Strategy:
# - The session thread alone reads its input, through the one line discipline both
#   transports share (a TelnetConnection: line ends, Ctrl-C/Ctrl-D, the length limit;
#   over SSH it never sees a telnet command). It waits outside every lock, bounded by
#   the first-line timeout until a line arrives, then by the idle timeout. (One
#   dispatcher thread waking session threads instead was measured and rejected:
#   docs/console.md, "Sessions and threads".)
# - The session lock guards the line discipline, the transport and the output; it is
#   only held around non-blocking calls (a writer waiting for room releases it), so
#   kick, broadcast and stop never wait on a client.
# - What the user sees besides the program's output (buffering, notices, prompt redraw)
#   is worded by the sans-IO sockwork.console.terminal; a gone client is handled in
#   one place, _ClientGone.
# - A session whose client left counts as ending (sockwork.console.stampede) until its
#   thread is done; the transport says when its client left.

from __future__ import annotations

import cmd
import io
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TextIO, TypeVar, cast

from sockwork.console import routing
from sockwork.console.stampede import ENDING
from sockwork.console.telnet import (
    NEED_DATA,
    EndOfInput,
    Interrupt,
    Line,
    LineTooLong,
    TelnetConnection,
)
from sockwork.console.terminal import LineDiscipline
from sockwork.errors import ConnectionClosed

if TYPE_CHECKING:
    from sockwork.console.policy import SessionPolicy

__all__ = ["Session", "current_session"]

_log = logging.getLogger("sockwork.console")

_S = TypeVar("_S")
_MIN_STACK = 256 * 1024  # below this, plain Python code in a session overflows its stack
_PAGE = 4096
_stack_lock = threading.Lock()  # threading.stack_size() is process-wide: one setter at a time


class _Host(Protocol):
    """What a session needs of its server, whatever the transport (no import: no cycle)."""

    max_line: int
    policy: SessionPolicy


class _SessionStream:
    """What the session's standard input and output have in common: a text stream, no tty."""

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
        return f"<{self._session._transport.lower()} {self._session.peer_text}>"

    @property
    def closed(self) -> bool:
        return False

    def isatty(self) -> bool:
        # False on purpose: pydoc would start a pager on the server's terminal.
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation(f"the session {self.name} has no file descriptor")

    def close(self) -> None:
        pass  # the session owns the connection


class _SessionInput(_SessionStream):
    """The session's standard input: lines typed by the user."""

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def __iter__(self) -> Iterator[str]:
        return iter(self._session._read_line, "")

    def readlines(self, hint: int = -1) -> list[str]:
        return list(self)

    def readline(self, size: int | None = -1) -> str:
        return self._session._read_line()

    def read(self, size: int | None = -1) -> str:
        if size is not None and size >= 0:
            return self._session._read_line()
        return "".join(iter(self._session._read_line, ""))


class _SessionOutput(_SessionStream):
    """The session's standard output and error: line-buffered text to the user."""

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._session._write(text)
        return len(text)

    def flush(self) -> None:
        self._session._flush()


class Session:
    """One connected user: who, since when, how many bytes; close or message them.

    The server creates it (telnet: a :class:`~sockwork.console.TelnetSession`, SSH: a
    :class:`~sockwork.console.SshSession`); ``server.sessions`` lists them.

    Attributes:
        id: a number unique within the server, counting from 1.
        peer: the client's address as ``(host, port)``.
        started_at: when the client connected (``time.time()``).
        streams: the session's standard streams (bind a thread to them with
            :func:`sockwork.console.routing.bind`).
    """

    # Rules: a transport implements the methods that raise NotImplementedError here
    # (bytes in: _recv; bytes out: _send_text_locked, _reply_locked, _set_echo,
    # _line_shown; the end: _end, _program_ended; and the byte counts); the rest
    # (reading lines, notices, timeouts, passwords, close, the stampede count) is
    # every transport's and stays here.
    _transport = "console"  # how names and messages call the connection

    def __init__(
        self,
        server: _Host,
        peer: tuple[str, int],
        session_id: int,
        *,
        encoding: str,
        echo_interrupt: bool = False,
    ) -> None:
        self.id = session_id
        self.peer = peer
        self.started_at = time.time()
        self._server = server
        # Input line discipline (line ends, Ctrl-C/Ctrl-D, the length limit) and, over
        # telnet, the protocol itself.
        self._conn = TelnetConnection(max_line=server.max_line, encoding=encoding)
        # Guards the TelnetConnection, the connection and the output; only ever held
        # around non-blocking calls (waiting writers release it), so any thread may take it.
        self._lock = threading.RLock()
        self._read_lock = threading.Lock()
        # Output buffering, notices, prompt redraw.
        self._term = LineDiscipline(echo_interrupt=echo_interrupt)
        self._bytes_in = 0
        self._closed = False  # no more input: the program sees end of input
        self._ended = threading.Event()  # set with _closed: wakes a password delay
        self._thread_done = False  # the session's thread has ended (stampede count)
        self._eof_delivered = False
        self._close_reason: str | None = None
        self._thread: threading.Thread | None = None
        first_line = server.policy.first_line_timeout
        self._first_line_deadline = None if first_line is None else time.monotonic() + first_line
        self.stdin: TextIO = cast(TextIO, _SessionInput(self))
        self.stdout: TextIO = cast(TextIO, _SessionOutput(self))
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
        """Bytes received from the client so far (over telnet, its commands included)."""
        return self._bytes_in

    @property
    def bytes_sent(self) -> int:
        """Bytes the client's connection has taken so far."""
        raise NotImplementedError

    @property
    def output_buffered(self) -> int:
        """Bytes of output waiting for the client (bounded: see ``max_output``)."""
        raise NotImplementedError

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
            f"<{type(self).__name__} {self.id} {self.peer_text} in={self._bytes_in} "
            f"out={self.bytes_sent}{' closed' if self._closed else ''}>"
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
            # Whatever was on the line (the prompt, a progress line) is shown again
            # below the message, whether or not the program is reading yet.
            shown = self._line_shown
            self._send_text_locked(self._term.notice(text, shown, redraw=redraw), wait=False)

    def close(self, message: str | None = None) -> None:
        """End the session: optionally tell the user why, then disconnect (any thread).

        Returns at once: the message goes out as soon as the client takes it (at most
        ``write_timeout`` s), the program sees end of input at its next read.
        """
        with self._lock:
            if message is not None and not self._closed:
                with _ClientGone():
                    self._notify(message, redraw=False)
            self._end("closed by the server")

    def read_secret(self, prompt: str = "Password: ") -> str:
        """Ask for a line without showing it (telnet ``WILL ECHO``, SSH: the editor's echo off).

        ``getpass.getpass()`` in a session comes here.

        Raises:
            EOFError: the user ended input instead of answering.
        """
        self._set_echo(False)
        try:
            self._write(prompt)
            line = self._read_line()
        finally:
            self._set_echo(True)
        if not line:
            raise EOFError
        return line.rstrip("\n")

    def _set_echo(self, on: bool) -> None:
        """Show what the user types again, or stop (after flushing the output before it)."""
        raise NotImplementedError

    @property
    def _line_shown(self) -> str:
        """What the user's current line shows (the prompt), as the notices redraw it."""
        raise NotImplementedError

    def _line_entered(self) -> None:
        """The user ended a line (Enter): the line shown moved up and is not redrawn."""

    def _program_started(self, program: cmd.Cmd) -> None:
        """Called in the session's thread before a Cmd program's loop starts (a hook)."""

    # -- I/O used by the streams ---------------------------------------------------

    def _write(self, text: str) -> None:
        with self._lock:
            ready = self._term.write(text)
            if ready is not None:
                self._send_text_locked(ready, wait=True)

    def _flush(self) -> None:
        with self._lock:
            self._flush_locked(wait=True)

    def _flush_locked(self, *, wait: bool) -> None:
        text = self._term.flush()
        if text is not None:
            self._send_text_locked(text, wait=wait)

    def _send_text_locked(self, text: str, *, wait: bool) -> None:
        """Send ``text`` to the user (lock held); ``wait``: the program's own output."""
        raise NotImplementedError

    def _reply_locked(self, data: bytes) -> None:
        """Send the line discipline's protocol replies (telnet negotiation; lock held)."""
        raise NotImplementedError

    def _read_line(self) -> str:
        """Return the next line with its newline, or "" at end of input."""
        with self._read_lock:
            if self._eof_delivered:
                # The program already saw end of input and asks again: stop it here
                # rather than let a loop without do_EOF spin forever.
                raise ConnectionClosed(
                    f"{self._transport} client {self.peer_text} is gone", address=self.peer
                )
            self._flush()
            while True:
                with self._lock:
                    prompt = self._line_shown
                    event = self._conn.next_event()
                    if isinstance(event, (Line, LineTooLong)):
                        self._line_entered()
                    reply = self._conn.data_to_send()
                    if reply:
                        self._reply_locked(reply)
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
                        self._send_text_locked(self._term.interrupted(prompt), wait=True)
                    elif isinstance(event, LineTooLong):
                        message = self._term.line_too_long(event.size, event.limit, prompt)
                        self._send_text_locked(message, wait=True)

    def _receive(self) -> None:
        """Wait for bytes from the client and feed them (or EOF) to the line discipline."""
        data = b""  # reset, or TLS broken: nothing more either way
        try:
            with _ClientGone(self, "receive failed"):
                data = self._recv()
        except _Silent as silence:
            self._silenced(silence.notice, silence.reason)
            return
        with self._lock:
            if data:
                self._conn.receive_data(data)
            else:
                # The client may only have closed its sending side (nc -N, a script):
                # answers to its last lines can still go out.
                self._conn.receive_eof()
                if not self._closed:  # the client left: thousands may be leaving together
                    self._begin_ending()

    def _recv(self) -> bytes:
        """Return the next bytes from the client (b"" at its end), waiting without the lock.

        Raises:
            _Silent: the client sent nothing within the first-line or idle timeout.
        """
        raise NotImplementedError

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

    def _silenced(self, notice: str, reason: str) -> None:
        _log_unbound(
            logging.INFO, "session %d (%s) disconnected: %s", self.id, self.peer_text, reason
        )
        with self._lock:
            with _ClientGone():
                self._flush_locked(wait=False)
                self._send_text_locked(f"\n{notice}\n", wait=False)
            self._end(reason)

    def _mark_closed(self, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self._close_reason = reason
            self._ended.set()

    def _begin_ending(self) -> None:
        """Count the session as ending until its thread is done (sockwork.console.stampede).

        Thousands of sessions ending together make their threads stampede on the GIL;
        the count lets the process see it coming. Any thread; idempotent.
        """
        with self._lock:
            if not self._thread_done:
                ENDING.begin(self)

    def _client_left(self, reason: str) -> None:
        """The client is gone (any thread): no more input, and the session counts as ending.

        Not counted when the server ended the session first (it paces those itself).
        """
        with self._lock:
            if not self._closed:
                self._begin_ending()
            self._mark_closed(reason)

    def _end_thread(self) -> None:
        """The session's thread is done (called last in it): no longer counted as ending."""
        with self._lock:
            self._thread_done = True
            ENDING.end(self)

    def _end(self, reason: str) -> None:
        """No more input; what is queued still goes out, then disconnect (any thread)."""
        raise NotImplementedError

    def _program_ended(self) -> None:
        """The program ended (its thread): close the connection once the output is sent."""
        raise NotImplementedError


def _check_stack_size(size: int | None) -> None:
    """Refuse a session stack size that is not None or whole pages of at least 256 KiB."""
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"session_stack_size must be None or an int, got {size!r}")
    if size < _MIN_STACK or size % _PAGE:
        raise ValueError(
            f"session_stack_size must be None or a multiple of {_PAGE} bytes, at least "
            f"{_MIN_STACK} (256 KiB), got {size!r}"
        )


def _session_thread(
    target: Callable[[_S], None], session: _S, *, name: str, stack_size: int | None
) -> threading.Thread:
    """A daemon thread that runs ``target(session)``; start it with _start_session_thread."""

    def run() -> None:
        if stack_size is not None:
            # The starter holds the lock until the process-wide size is put back: a
            # thread this session's program starts gets the usual size.
            with _stack_lock:
                pass
        target(session)

    return threading.Thread(target=run, name=name, daemon=True)


def _start_session_thread(thread: threading.Thread, stack_size: int | None) -> None:
    """Start a session's thread, with ``stack_size`` bytes of stack when given.

    Python only sets a thread's stack size through the process-wide
    ``threading.stack_size()``: it is set, the thread started and the previous value
    put back, under one lock. A thread started at that moment by other code without
    going through here may get the session size too.
    """
    if stack_size is None:
        thread.start()
        return
    with _stack_lock:
        previous = threading.stack_size(stack_size)
        try:
            thread.start()
        finally:
            threading.stack_size(previous)


def _log_unbound(level: int, message: str, *args: object) -> None:
    # Unbound: a handler writing to the routed sys.stderr must reach the operator, not
    # the session the record is about (which may be the one that cannot take output).
    with routing.bind(None):
        _log.log(level, message, *args)


class _ClientGone:
    """Context manager for a session's socket calls: a client that is gone is not an error.

    A reset, a broken pipe, a failed TLS record or ``ConnectionClosed`` (all ``OSError``)
    end the session either way, so they are swallowed here, in one place, instead of
    at each call; with ``session`` and ``reason`` the session is marked closed (its
    program sees end of input), and with ``eof`` an ``EOFError`` counts too (the user
    ended input). Anything else propagates.
    """

    __slots__ = ("_eof", "_reason", "_session")

    def __init__(
        self, session: Session | None = None, reason: str | None = None, *, eof: bool = False
    ) -> None:
        self._session = session
        self._reason = reason
        self._eof = eof

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if not isinstance(exc, OSError) and not (self._eof and isinstance(exc, EOFError)):
            return False
        if self._session is not None and self._reason is not None:
            self._session._mark_closed(self._reason)
        return True


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
