"""A telnet user's session: the :class:`~sockwork.console.Session` over a socket (plain or TLS).

:class:`TelnetSession` is what :class:`~sockwork.console.ConsoleServer` creates per
client. Reading lines, notices, timeouts and passwords are the base ``Session``'s;
this module moves the bytes: a non-blocking socket waited on with ``poll()``, the
telnet echo negotiation, and output through the session's ``Outbox``.
"""

# Strategy:
# - The session thread alone reads the socket, which is non-blocking: it waits with
#   poll() outside every lock (sockwork.console.session's strategy).
# - Output from any thread goes through the session's Outbox (sockwork.console.output):
#   bounded, sent without blocking, the rest drained by the server's OutputPump
#   thread. A client that takes no output for write_timeout s is disconnected.
# - close() and Session.close() wake a reader by shutting the socket down (it becomes
#   readable, recv() returns EOF at once, the socketserver "hang" fix); the fd is
#   closed once, when the session ends, by its thread or by the pump if output is
#   still queued.
# - TLS: OpenSSL objects must not be read and written at once from two threads: every
#   SSL call is made under the session lock, never a blocking one.
# - Clients leaving together: a thread whose poll() reports a hang-up reads its end
#   holding the stampede gate (sockwork.console.stampede).

from __future__ import annotations

import contextlib
import logging
import math
import select
import socket
import ssl as _ssl
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, cast

from sockwork.console.output import Outbox
from sockwork.console.session import Session, _ClientGone, _Host, _log_unbound, _Silent
from sockwork.console.stampede import ENDING
from sockwork.errors import ConnectionClosed

if TYPE_CHECKING:
    from sockwork.console.output import OutputPump

__all__ = ["TelnetSession"]

_RECV_SIZE = 4096
_CLOSE_GRACE = 2.0  # seconds a closed session's last words may wait for its client
_TLS_CHUNK = 16384  # one TLS record: a non-blocking write is retried with this length
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)  # Linux: the peer shut its side down
_HUNG_UP = _POLLRDHUP | select.POLLHUP | select.POLLERR
_NO_GATE = contextlib.nullcontext()


class _TelnetHost(_Host, Protocol):
    """What a telnet session needs of its server (a ConsoleServer)."""

    encoding: str
    _pump: OutputPump


class TelnetSession(Session):
    """One telnet user: a :class:`~sockwork.console.Session` over a TCP (or TLS) socket.

    Everything is the base ``Session``'s (``send``, ``close``, ``read_secret``,
    ``streams``, ``bytes_received``...); ``bytes_sent`` and ``output_buffered`` count
    the bytes on the wire, telnet commands included.
    """

    # Rules: the transport is in the methods that touch the socket (_recv, _set_echo,
    # _send_text_locked, _reply_locked, _end, _program_ended, the outbox's channel).
    # _line_shown is the TelnetConnection's pending output line, which it clears
    # itself when the user ends a line (so _line_entered has nothing to do here).
    _transport = "telnet"

    def __init__(
        self,
        server: _TelnetHost,
        sock: socket.socket,
        peer: tuple[str, int],
        session_id: int,
    ) -> None:
        super().__init__(server, peer, session_id, encoding=server.encoding)
        self._sock = sock
        self._tls = isinstance(sock, _ssl.SSLSocket)
        self._sock_closed = False
        self._tls_retry = 0
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        policy = server.policy
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

    @property
    def bytes_sent(self) -> int:
        """Bytes the client's connection has taken so far."""
        return self._outbox.bytes_sent

    @property
    def output_buffered(self) -> int:
        """Bytes of output waiting for the client (bounded: see ``max_output``)."""
        return self._outbox.buffered

    def _set_echo(self, on: bool) -> None:
        """Show what the user types again, or stop (after flushing the output before it)."""
        with self._lock:
            if not on:
                self._flush_locked(wait=True)
                self._send_raw_locked(self._conn.echo_off(), wait=True)
            elif self._outbox.open:
                restore = self._conn.echo_on()
                # The client did not echo the Enter key either: end the line for it.
                if self._conn.peer_speaks_telnet:
                    self._send_text_locked("\n", wait=True)
                self._send_raw_locked(restore, wait=True)

    @property
    def _line_shown(self) -> str:
        """What the user's current line shows (the prompt), as the notices redraw it."""
        return self._conn.pending_output_line

    def _reply_locked(self, data: bytes) -> None:
        if self._outbox.open:
            self._send_raw_locked(data, wait=True)

    def _send_text_locked(self, text: str, *, wait: bool) -> None:
        self._send_raw_locked(self._conn.send(text), wait=wait)

    def _send_raw_locked(self, data: bytes, *, wait: bool) -> None:
        # wait=True is the program's own output: it waits for room (releasing the lock);
        # others never wait (see sockwork.console.output).
        self._outbox.put(data, wait=wait)

    def _recv(self) -> bytes:
        """Return the next bytes from the client (b"" at its end), waiting without the lock.

        Raises:
            _Silent: the client sent nothing within the first-line or idle timeout.
        """
        gate: AbstractContextManager[object] = _NO_GATE
        while True:
            with gate, self._lock:
                if self._closed or self._sock_closed:
                    return b""
                try:
                    data = self._sock.recv(_RECV_SIZE)
                except (BlockingIOError, _ssl.SSLWantReadError, _ssl.SSLWantWriteError):
                    pass  # nothing yet, or a partial TLS record: wait for more
                else:
                    self._bytes_in += len(data)
                    return data
            if self._wait(select.POLLIN | _POLLRDHUP):
                # The client hung up (maybe thousands at once), or the server shut the
                # socket down: one ending thread at a time reads its end (stampede.py).
                # Only clients leaving are counted: a server ending sessions wakes them
                # one after the other and is paced by them.
                if not self._closed:
                    self._begin_ending()
                gate = ENDING.gate

    def _wait(self, events: int) -> bool:
        """Wait until the socket is ready for ``events`` or a read timeout runs out.

        Returns True when the peer hung up (or the socket was shut down).
        """
        timeout, silence = self._silence_timeout()
        self._poll.modify(self._sock.fileno(), events)
        ready = self._poll.poll(None if timeout is None else math.ceil(timeout * 1000))
        if not ready and silence is not None:
            raise silence
        return any(revents & _HUNG_UP for _, revents in ready)

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
            with _ClientGone():  # already disconnected
                # The base method: SSLSocket.shutdown would drop its SSL object under a
                # reader that may be using it.
                socket.socket.shutdown(self._sock, how)

    def _program_ended(self) -> None:
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

    def __init__(self, session: TelnetSession) -> None:
        self._session = session

    def send_now(self, data: memoryview) -> int:
        return self._session._send_now(data)

    def output_failed(self, reason: str, *, log: bool) -> None:
        self._session._output_failed(reason, log=log)

    def output_drained(self) -> None:
        self._session._output_drained()

    def close_transport(self) -> None:
        self._session._close_transport()
