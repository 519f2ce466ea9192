"""One SSH user's session: :class:`SshSession` and the asyncssh channel that feeds it.

:class:`SshSession` is a :class:`~sockwork.console.Session` whose transport is an SSH
channel served by :class:`~sockwork.console.SshConsoleServer`'s asyncio loop: the
program's thread reads what the loop puts in its inbox and hands its output to the
loop. The channel's callbacks (in the loop) and TAB completion are here too.
"""

# Strategy:
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
# - Clients leaving: a session whose connection is lost (or whose input ends) before
#   the server ends it counts as ending (sockwork.console.stampede) until its thread
#   is done, as a telnet session does.

from __future__ import annotations

import asyncio
import cmd
import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from sockwork.console.session import Session, _Host
from sockwork.errors import ConnectionClosed

__all__ = ["SshSession"]

_log = logging.getLogger("sockwork.console")

_INPUT_LIMIT = 65536  # unread bytes before the channel stops reading
_COMPLETION_WAIT = 0.25  # seconds the loop waits for a program to answer TAB


class _SshHost(_Host, Protocol):
    """What an SSH channel needs of its server (an SshConsoleServer; no import: no cycle)."""

    def _open_session(
        self, channel: Any, connection: _Connection, chan_session: Any
    ) -> SshSession | None: ...


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

    # Rules: Session's transport methods (_recv, _set_echo, _line_shown,
    # _send_text_locked, _reply_locked, _end, _program_ended) are implemented here;
    # reading lines, notices, timeouts, passwords and close() are Session's. _conn is
    # only the input line discipline: chunks and markers from the loop are fed to it as
    # bytes (UTF-8 never holds 0xFF, so it never sees a telnet command and never has a
    # reply to send). _flow is a Condition of the
    # session lock: a writer waiting for room releases it, as the telnet Outbox's do.
    _transport = "SSH"

    def __init__(
        self,
        server: _Host,
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
        super().__init__(
            server, peer, session_id, encoding="utf-8", echo_interrupt=self.line_editing
        )
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

    def _line_entered(self) -> None:
        # The user's Enter moved the prompt and the line typed up (the editor, or the
        # client's terminal, echoed it): a notice must not draw them again.
        self._shown = ""

    def _send_text_locked(self, text: str, *, wait: bool) -> None:
        self._deliver(text, wait=wait)

    def _reply_locked(self, data: bytes) -> None:
        pass  # the line discipline never sees a telnet command here (see the rules)

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

    def _program_ended(self) -> None:
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


def _channel_session(asyncssh: Any, server: _SshHost, connection: _Connection) -> Any:
    """The asyncssh session object of one channel (``asyncssh`` is the imported module)."""

    class ChannelSession(asyncssh.SSHServerSession):  # type: ignore[misc]
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
                # Counted as ending unless the server closed it (stampede.py): thousands
                # of clients may be leaving at once.
                self.session._client_left("disconnected")
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
