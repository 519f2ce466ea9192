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
#   session) and SshSession is a console.session.Session (reading lines, notices and
#   the LineDiscipline, the timeouts, passwords, close); only the transport is here.
# - The program's thread reads from a deque that the loop fills (chunks of bytes, plus
#   markers for EOF, Ctrl-C/Ctrl-D and TAB requests) and feeds it to the session's
#   TelnetConnection used as a plain line discipline: UTF-8 never contains 0xFF, so no
#   telnet command is ever seen, but line ends, Ctrl-C/Ctrl-D bytes and the line-length
#   limit work exactly as on telnet. Chunks are fed lazily, as telnet reads its socket.
# - Bounded input: when more than _INPUT_LIMIT bytes wait unread, the channel stops
#   reading (SSH flow control then stops the client); it resumes when they are read.
# - Bounded output: a writer waits while asyncssh's send buffer is above its high
#   water mark (pause_writing) or ``max_output`` characters are on their way to the
#   loop; after ``write_timeout`` seconds of waiting the session is closed. Output
#   handed over before the loop runs is written in one batch (one SSH packet); any
#   other call into the loop (echo, close) starts a new batch, so order is kept.
# - TAB: the line editor calls our key handler in the loop; the request goes to the
#   program's own thread (which is waiting for a line, as readline completes inside
#   input()), and the answer is put back into the editor by the loop.
# - asyncssh's line editor spends ~0.1 s of CPU building a regex for every session;
#   _cache_line_editor_patterns makes that once per process (same result).
# - Limits at connect: connections in all and per address; after auth, the sessions
#   are admitted as on telnet (the same Admission and messages). The login (handshake
#   and auth) must finish within ``login_timeout``; failed passwords are answered after
#   a growing delay (the Admission's count, per address).

from __future__ import annotations

import asyncio
import cmd
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
from sockwork.console.policy import SessionPolicy
from sockwork.console.server import App, Session, _SessionHost
from sockwork.errors import ConnectionClosed, SockworkError

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
_INPUT_LIMIT = 65536  # unread bytes before the channel stops reading
_COMPLETION_WAIT = 0.25  # seconds the loop waits for a program to answer TAB


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


# -- one session -----------------------------------------------------------------------


class _Marker:
    """A key or event from the loop, fed to the line discipline as ``data`` (b"": EOF)."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data

    def __repr__(self) -> str:
        return f"<{self.name}>"


# Fed to the session's TelnetConnection as the bytes a terminal would send for them.
_SOFT_EOF = _Marker("soft EOF", b"\x04")  # Ctrl-D on an empty line: end of input, channel open
_HARD_EOF = _Marker("EOF", b"")  # the client closed its side, or the channel is gone
_INTERRUPT = _Marker("interrupt", b"\x03")  # Ctrl-C (a break) or an INT signal


class _Completion:
    """A TAB press: the line and cursor in, the new line, cursor and a listing out."""

    def __init__(self, line: str, pos: int) -> None:
        self.line = line
        self.pos = pos
        self.result: tuple[str, int, str] | None = None
        self.done = threading.Event()


_Input = bytes | _Marker | _Completion


class SshSession(Session):
    """One SSH user: a :class:`~sockwork.console.Session` with SSH facts added.

    Everything a telnet ``Session`` offers works the same (``send``, ``close``,
    ``read_secret``, ``streams``, ``current_session()`` in the program).

    Attributes:
        username: the name the user logged in with.
        term_type: the terminal type the client asked for (``xterm``...), or None when
            it asked for no terminal (then there is no line editing and no echo).
        terminal_size: the client's window as ``(columns, rows)``; ``(0, 0)`` unknown.
    """

    # Rules: Session's transport methods (_recv, _set_echo, _send_text_locked, _end,
    # _close_socket) are overridden here; reading lines, notices, timeouts, passwords
    # and close() are Session's. _conn is only the input line discipline: chunks and
    # markers from the loop are fed to it as bytes (UTF-8 never holds 0xFF, so it never
    # sees a telnet command and never has a reply to send). _flow is a Condition of the
    # session lock: a writer waiting for room releases it, as the telnet Outbox's do.
    _transport = "SSH"

    def __init__(
        self,
        server: SshConsoleServer,
        channel: Any,
        peer: tuple[str, int],
        session_id: int,
        *,
        username: str,
        term_type: str | None,
        terminal_size: tuple[int, int],
        loop: asyncio.AbstractEventLoop,
        connection: _Connection | None = None,
    ) -> None:
        self.username = username
        self.term_type = term_type
        self.terminal_size = terminal_size
        self._channel = channel
        self._loop = loop
        self._connection = connection
        # The line editor echoes keys, so Ctrl-C shows as ^C; without it nothing echoes.
        self._setup(server, peer, session_id, encoding="utf-8", echo_interrupt=self.line_editing)
        self._flow = threading.Condition(self._lock)  # input deque, output budget
        self._inbox: collections.deque[_Input] = collections.deque()
        self._inbox_bytes = 0
        self._reading_paused = False
        self._waiting = False  # the program waits for a line (TAB may be answered)
        self._writing_paused = False
        self._in_flight = 0
        self._channel_buffered = 0  # (loop) what asyncssh holds for the client, in bytes
        self._batch_lock = threading.Lock()
        self._batch: list[str] | None = None  # output handed to the loop, not written yet
        self._shown = ""  # what the user's current line shows (the prompt), after the last \n
        self._bytes_out = 0
        self._gone = False  # (loop) the channel is closed: queued output is dropped
        self._program: cmd.Cmd | None = None

    @property
    def bytes_sent(self) -> int:
        """Bytes of output handed to the SSH channel so far."""
        return self._bytes_out

    @property
    def output_buffered(self) -> int:
        """Output waiting for the client: handed to the loop or held by asyncssh."""
        with self._flow:
            return self._in_flight + self._channel_buffered

    @property
    def line_editing(self) -> bool:
        """True when asyncssh's line editor serves this session (the client has a terminal)."""
        return self.term_type is not None and hasattr(self._channel, "set_echo")

    def __repr__(self) -> str:
        return (
            f"<SshSession {self.id} {self.username}@{self.peer_text} in={self._bytes_in} "
            f"out={self._bytes_out}{' closed' if self._closed else ''}>"
        )

    # -- the transport ------------------------------------------------------------------

    def _set_echo(self, on: bool) -> None:
        # The line editor's echo (without a terminal nothing is echoed anyway).
        if not on:
            self._flush()
        if self.line_editing and not (on and self._closed):
            self._call_soon(self._channel.set_echo, on)

    @property
    def _line_shown(self) -> str:
        return self._shown

    def _send_text_locked(self, text: str, *, wait: bool) -> None:
        self._deliver(text, wait=wait)

    # -- output ------------------------------------------------------------------------

    def _deliver(self, text: str, *, wait: bool = True) -> None:
        """Hand ``text`` to the loop; the program waits for room, other threads never do.

        The program's writes wait while asyncssh's buffer for this channel is above
        ``max_output`` (pause_writing) or that much is on its way to the loop, at most
        ``write_timeout`` s. A message from another thread (``send``, ``broadcast``)
        goes at once and may use as much again; beyond that the client is too far
        behind and the session is disconnected.
        """
        if not text:
            return
        if self._closed:
            raise ConnectionClosed("the SSH session is closed", address=self.peer, by_peer=False)
        limit = self._server.policy.max_output
        timeout = self._server.policy.write_timeout
        deadline = time.monotonic() + timeout
        behind = ""
        with self._flow:
            if wait:
                while not self._closed and (
                    self._writing_paused or self._in_flight + len(text) > limit
                ):
                    if self._in_flight == 0 and not self._writing_paused:
                        break  # one oversized chunk may go when nothing else is on its way
                    left = deadline - time.monotonic()
                    if left <= 0:
                        behind = f"did not read for {timeout:g} s"
                        break
                    self._flow.wait(left)
            elif self._channel_buffered + self._in_flight + len(text) > 2 * limit:
                behind = f"is more than {2 * limit} characters behind"
            closed = self._closed
            if not closed and not behind:
                self._in_flight += len(text)
        if closed:
            raise ConnectionClosed(f"SSH client {self.peer_text} is gone", address=self.peer)
        if behind:
            _log.info("session %d (%s): client %s; closing", self.id, self.peer_text, behind)
            self._mark_closed("send timeout")
            # A graceful close would queue behind the output the client does not take.
            self._schedule(self._abort_connection)
            raise ConnectionClosed(f"SSH client {self.peer_text} {behind}", address=self.peer)
        newline = text.rfind("\n")
        with self._lock:
            self._shown = text[newline + 1 :] if newline >= 0 else (self._shown + text)[-256:]
        # Texts handed over before the loop gets to them go out together: the answer
        # and the prompt after it make one SSH packet, not two.
        with self._batch_lock:
            batch = self._batch
            scheduled = batch is not None
            if batch is None:
                batch = self._batch = []
            batch.append(text)
        if not scheduled:
            self._schedule(self._write_batch, batch)

    def _write_batch(self, batch: list[str]) -> None:
        """Write one batch of output (in the loop): texts handed over since it was scheduled."""
        with self._batch_lock:
            if self._batch is batch:
                self._batch = None
            text = "".join(batch)
        try:
            if not self._gone:
                # The editor turns "\n" into CR LF itself; without a terminal the
                # client gets "\n", as from any program run over `ssh host`.
                self._channel.write(text)
                self._bytes_out += len(text.encode("utf-8", "replace"))
        except Exception as error:  # noqa: BLE001 - the channel closed under us
            _log.debug("session %d: write failed: %s", self.id, error)
            self._mark_closed("send failed")
        finally:
            with self._flow:
                self._in_flight -= len(text)
                self._channel_buffered = self._buffered_in_channel()
                self._flow.notify_all()

    def _buffered_in_channel(self) -> int:
        try:
            return int(self._channel.get_write_buffer_size())
        except Exception:  # noqa: BLE001 - closed: nothing waits any more
            return 0

    def _call_soon(self, function: Callable[..., object], *args: object) -> None:
        """Run ``function`` in the loop after the output handed over so far."""
        with self._batch_lock:
            self._batch = None  # later output goes after it, in a batch of its own
        self._schedule(function, *args)

    def _schedule(self, function: Callable[..., object], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop is closed: the server stopped
            self._mark_closed("server stopped")

    # -- input -------------------------------------------------------------------------

    def _recv(self) -> bytes:
        """Return the next bytes typed (b"" at the end), answering TAB requests meanwhile."""
        while True:
            item = self._next_input()
            if not isinstance(item, _Completion):
                return item.data if isinstance(item, _Marker) else item
            self._complete(item)

    def _next_input(self) -> _Input:
        """Wait for the next chunk or marker from the loop.

        Raises:
            _Silent: nothing came within the first-line or idle timeout.
        """
        timeout, silence = self._silence_timeout()
        with self._flow:
            self._waiting = True
            try:
                if not self._inbox and not self._closed:
                    self._flow.wait_for(lambda: self._inbox or self._closed, timeout)
                if self._inbox:
                    item = self._inbox.popleft()
                    if isinstance(item, bytes):
                        self._inbox_bytes -= len(item)
                        if self._reading_paused and self._inbox_bytes < _INPUT_LIMIT // 2:
                            self._reading_paused = False
                            self._schedule(self._resume_reading)
                    return item
                if self._closed or silence is None:
                    return _HARD_EOF
            finally:
                self._waiting = False
        raise silence

    def _resume_reading(self) -> None:
        if not self._gone:
            self._channel.resume_reading()

    # -- called by the loop ------------------------------------------------------------

    def _put(self, item: _Input) -> None:
        with self._flow:
            if isinstance(item, _Marker) and self._inbox and self._inbox[-1] is item:
                return  # repeated Ctrl-C or EOF while the program is busy: one is enough
            self._inbox.append(item)
            if isinstance(item, bytes):
                self._bytes_in += len(item)
                self._inbox_bytes += len(item)
                if not self._reading_paused and self._inbox_bytes >= _INPUT_LIMIT:
                    self._reading_paused = True
                    self._channel.pause_reading()
            self._flow.notify_all()

    def _key_tab(self, line: str, pos: int) -> tuple[str, int] | bool:
        """The line editor's TAB handler (in the loop): the program's thread answers.

        The editor goes on with the next key as soon as this returns, so the answer is
        awaited here, briefly: keys typed (or pasted) after TAB must see its result.
        """
        with self._flow:
            if self._program is None or not self._waiting or self._inbox:
                return False  # rings the bell: nothing can complete now
            request = _Completion(line, pos)
            self._inbox.append(request)
            self._flow.notify_all()
        if not request.done.wait(_COMPLETION_WAIT) or request.result is None:
            return False  # too slow (or failed): the bell, and the line stays
        new_line, new_pos, listing = request.result
        if listing:
            self._loop.call_soon(self._show_listing, listing)
        return new_line, new_pos

    def _show_listing(self, listing: str) -> None:
        if not self._gone:
            self._channel.write(listing)

    def _set_writing_paused(self, paused: bool) -> None:
        with self._flow:
            self._writing_paused = paused
            self._channel_buffered = self._buffered_in_channel()
            self._flow.notify_all()

    # -- TAB completion (in the session's thread) -------------------------------------

    def _program_started(self, program: cmd.Cmd) -> None:
        self._program = program
        if self.line_editing:
            self._call_soon(self._register_tab)

    def _register_tab(self) -> None:
        if not self._gone:
            self._channel.register_key("\t", self._key_tab)

    def _complete(self, request: _Completion) -> None:
        program = self._program
        try:
            if program is None:
                return
            try:
                begin, matches = _completions(program, request.line, request.pos)
            except Exception:  # a complete_* method failed: no completion, the session goes on
                _log.exception("session %d: completion failed", self.id)
                return
            line, pos = request.line, request.pos
            text = line[begin:pos]
            if len(matches) == 1:
                insert = matches[0] + ("" if matches[0].endswith(" ") else " ")
            else:
                insert = os.path.commonprefix(matches)
            if len(insert) > len(text):
                request.result = (line[:begin] + insert + line[pos:], begin + len(insert), "")
            elif len(matches) > 1:
                listing = "\n" + "  ".join(matches) + "\n" + self._shown
                request.result = (line, pos, listing)
            # No candidate: no result, and the editor rings the bell.
        finally:
            request.done.set()

    # -- closing -----------------------------------------------------------------------

    def _mark_closed(self, reason: str) -> None:
        with self._flow:
            super()._mark_closed(reason)
            self._flow.notify_all()  # wakes the reader and a writer waiting for room

    def _end(self, reason: str) -> None:
        """Disconnect after the output handed over so far (any thread); the program sees EOF."""
        self._mark_closed(reason)
        self._call_soon(self._close_channel)

    def _abort_connection(self) -> None:
        self._gone = True
        if self._connection is not None:
            self._connection.conn.abort()
        else:
            self._channel.close()

    def _close_socket(self) -> None:
        # The program ended: send its exit status and close the channel.
        self._end("program ended")

    def _close_channel(self) -> None:
        if self._gone:
            return
        self._gone = True
        try:
            self._channel.exit(0)
        except Exception:  # noqa: BLE001 - closed already
            self._channel.close()


def _completions(program: cmd.Cmd, line: str, pos: int) -> tuple[int, list[str]]:
    """Return where the word being completed starts and its candidates, as ``cmd.Cmd.complete``.

    The first word completes with ``completenames``; later words with the command's
    ``complete_<command>`` method, or ``completedefault``.
    """
    origline = line[:pos]
    stripped_line = origline.lstrip()
    offset = len(origline) - len(stripped_line)
    # The word under the cursor starts after the last delimiter (readline's default set).
    begin = len(origline)
    while begin > 0 and origline[begin - 1] not in " \t\n\"\\'`@$><=;|&{(":
        begin -= 1
    text = origline[begin:]
    end = pos
    if begin > offset:
        command, _, _ = program.parseline(stripped_line)
        if not command:
            compfunc: Callable[..., list[str]] = program.completedefault
        else:
            compfunc = getattr(program, "complete_" + command, program.completedefault)
    else:
        compfunc = program.completenames
    matches = compfunc(text, stripped_line, begin - offset, end - offset)
    return begin, sorted(dict.fromkeys(str(match) for match in matches or []))


# -- the asyncssh side -----------------------------------------------------------------


def _make_channel_session(server: SshConsoleServer, connection: _Connection) -> Any:
    asyncssh = _asyncssh()

    class ChannelSession(asyncssh.SSHServerSession):  # type: ignore[misc,name-defined]
        """One session channel: hands data and events to its SshSession."""

        def __init__(self) -> None:
            self.channel: Any = None
            self.session: SshSession | None = None
            self.term_type: str | None = None
            self.size = (0, 0)

        def connection_made(self, chan: Any) -> None:
            self.channel = chan
            # pause_writing above max_output: the program's writes then wait for room.
            chan.set_write_buffer_limits(high=server.policy.max_output)

        def pty_requested(self, term_type: str, term_size: Any, term_modes: Any) -> bool:
            self.term_type = term_type or None
            self.size = (int(term_size[0]), int(term_size[1]))
            return True

        def shell_requested(self) -> bool:
            return True

        def exec_requested(self, command: str) -> bool:
            return False  # one program is served; there are no commands to run

        def subsystem_requested(self, subsystem: str) -> bool:
            return False

        def session_started(self) -> None:
            self.session = server._open_session(self.channel, connection, self)

        def data_received(self, data: str, datatype: object) -> None:
            if self.session is not None:
                self.session._put(data.encode("utf-8", "replace"))

        def eof_received(self) -> bool:
            if self.session is not None:
                self.session._put(_HARD_EOF)
            return True  # answers to the last lines may still go out

        def soft_eof_received(self) -> None:
            if self.session is not None:
                self.session._put(_SOFT_EOF)

        def break_received(self, msec: int) -> bool:
            if self.session is not None:
                if self.session.line_editing:
                    self.channel.clear_input()
                self.session._put(_INTERRUPT)
            return True

        def signal_received(self, signal: str) -> None:
            if signal == "INT" and self.session is not None:
                self.session._put(_INTERRUPT)

        def terminal_size_changed(self, width: int, height: int, pw: int, ph: int) -> None:
            self.size = (width, height)
            if self.session is not None:
                self.session.terminal_size = (width, height)

        def pause_writing(self) -> None:
            if self.session is not None:
                self.session._set_writing_paused(True)

        def resume_writing(self) -> None:
            if self.session is not None:
                self.session._set_writing_paused(False)

        def connection_lost(self, exc: BaseException | None) -> None:
            # The channel is closed on both sides: the client has its exit status.
            if self.session is not None:
                connection.session_ended()
                self.session._gone = True
                self.session._mark_closed("disconnected")
                self.session._put(_HARD_EOF)
                self.session._set_writing_paused(False)

    return ChannelSession()


class _Connection:
    """What the server tracks of one SSH connection (in the loop thread)."""

    def __init__(self, conn: Any, peer: tuple[str, int]) -> None:
        self.conn = conn
        self.peer = peer
        self.username = ""
        self.sessions = 0  # open now (changed in the loop only)
        self.had_session = False

    def session_ended(self) -> None:
        """One session ended (in the loop): a connection left without any is closed."""
        self.sessions -= 1
        if self.sessions <= 0:
            self.conn.close()

    def close_if_unused(self) -> None:
        """Close a logged-in connection that opened no session (in the loop)."""
        if not self.had_session:
            _log.info("SSH connection from %s opened no session; closed", self.peer[0])
            self.conn.close()


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
            return _make_channel_session(server, self.connection)

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
        super().__init__(
            app,
            policy,
            intro=intro,
            prompt=prompt,
            stdio=stdio,
            session_stack_size=session_stack_size,
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
        # The limits stay readable here too (they are the policy's).
        self.max_per_address = policy.address_limit
        self.first_line_timeout = first_line_timeout
        self.write_timeout = write_timeout
        self.max_output = max_output
        self.login_delay = login_delay
        self.max_login_delay = max_login_delay
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
