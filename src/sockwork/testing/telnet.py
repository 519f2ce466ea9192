"""A scripted telnet client for tests: send lines, wait for prompts, see the negotiation.

``TelnetClient`` plays the user's side of a telnet session the way a test script
needs it: :meth:`~TelnetClient.send_line`, then :meth:`~TelnetClient.read_until`
a prompt or :meth:`~TelnetClient.expect` a regular expression, each with a
timeout, and :meth:`~TelnetClient.read_all` until the server closes::

    with TelnetClient(server.address) as client:
        client.read_until("shop> ")
        client.send_line("hello")
        assert client.read_until("shop> ") == b"hello\\r\\nshop> "

With ``negotiate=True`` (the default) it behaves as a polite telnet client: IAC
sequences are removed from what it reads and answered (RFC 1143), accepting only
the server options in ``accept`` (ECHO and SUPPRESS-GO-AHEAD by default). With
``negotiate=False`` it is ``nc``: every byte arrives as sent, IAC included, and
nothing is answered, so a test can assert the exact bytes a server wrote.
"""

# Rules (RFC 854 and RFC 1143):
# - The client never starts a negotiation. It refuses every option on its own side
#   (DO x -> WONT x) and accepts on the server's side only the options in ``accept``
#   (WILL x -> DO x, else DONT x). A request for the state already in effect gets no
#   reply, and WONT/DONT are always honoured, so negotiation cannot loop.
# - Parsing is incremental: a sequence split across receives is handled, SB ... IAC SE
#   payloads are dropped, IAC IAC is a literal 0xFF, CR NUL is a bare CR.
# - Every wait has a deadline (``timeout``), and the unread buffer is bounded
#   (``max_buffer``): a server that floods or stays silent fails the test, never hangs it.

from __future__ import annotations

import re
import socket
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Final

from sockwork.errors import ConnectionClosed, TimedOut

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = [
    "DO",
    "DONT",
    "ECHO",
    "IAC",
    "SB",
    "SE",
    "SUPPRESS_GO_AHEAD",
    "TIMING_MARK",
    "WILL",
    "WONT",
    "TelnetClient",
]

# Command bytes (RFC 854) and option codes, for scripts that send or check negotiation.
IAC: Final = 255
DONT: Final = 254
DO: Final = 253
WONT: Final = 252
WILL: Final = 251
SB: Final = 250
SE: Final = 240
ECHO: Final = 1
SUPPRESS_GO_AHEAD: Final = 3
TIMING_MARK: Final = 6

_CR: Final = 0x0D
_NUL: Final = 0x00
_RECV_SIZE: Final = 65536
_SHOWN: Final = 300  # bytes of received data quoted in an error


class _TelnetReader:
    """Sans-IO client side of RFC 854: bytes in, data and replies out (no socket here)."""

    def __init__(self, accept: Collection[int]) -> None:
        self.accept = frozenset(accept)
        self.server_options: set[int] = set()  # options the server has enabled (WILL ... DO)
        self.commands: list[tuple[int, int | None]] = []
        self._state = "data"  # data, iac, option, sb, sb_iac
        self._verb = 0
        self._after_cr = False

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Parse ``data``; return (the user-visible bytes, the replies to send)."""
        out = bytearray()
        replies = bytearray()
        for byte in data:
            state = self._state
            if state == "data":
                if byte == IAC:
                    self._state = "iac"
                elif byte == _NUL and self._after_cr:
                    self._after_cr = False  # CR NUL is a bare CR
                else:
                    out.append(byte)
                    self._after_cr = byte == _CR
            elif state == "iac":
                self._after_cr = False
                if byte == IAC:
                    out.append(IAC)
                    self._state = "data"
                elif byte in (WILL, WONT, DO, DONT, SB):
                    self._verb = byte
                    self._state = "option"
                else:
                    self.commands.append((byte, None))
                    self._state = "data"
            elif state == "option":
                self.commands.append((self._verb, byte))
                if self._verb == SB:
                    self._state = "sb"
                else:
                    replies += self._answer(self._verb, byte)
                    self._state = "data"
            elif state == "sb":
                if byte == IAC:
                    self._state = "sb_iac"
            else:  # sb_iac
                self._state = "data" if byte == SE else "sb"
        return bytes(out), bytes(replies)

    def _answer(self, verb: int, option: int) -> bytes:
        if verb == WILL:
            if option in self.server_options:
                return b""
            if option in self.accept:
                self.server_options.add(option)
                return bytes((IAC, DO, option))
            return bytes((IAC, DONT, option))
        if verb == WONT:
            if option in self.server_options:
                self.server_options.discard(option)
                return bytes((IAC, DONT, option))
            return b""
        if verb == DO:
            return bytes((IAC, WONT, option))  # we enable nothing on our side
        return b""  # DONT: our options are all off already


class TelnetClient:
    """A scripted telnet client: the user's side of a session, for tests and scripts.

    Args:
        target: ``(host, port)`` to connect to, or a connected stream socket (plain or
            TLS) that the client takes over and closes.
        timeout: default seconds every read waits (also the connect timeout).
        negotiate: answer and strip telnet negotiation (True), or pass every byte
            through untouched and answer nothing, as ``nc`` (False).
        accept: server options the client agrees to (``WILL x`` answered ``DO x``);
            the rest are refused. Ignored without ``negotiate``.
        encoding: how ``str`` lines, markers and patterns become bytes.
        max_buffer: the most received bytes kept unread while waiting for a marker.

    Raises:
        TypeError: ``target`` is neither an address nor a stream socket.
        ValueError: a bad ``timeout`` or ``max_buffer``.
        OSError: the connection failed (``ConnectionRefusedError``...).
        TimedOut: connecting took longer than ``timeout``.
    """

    def __init__(
        self,
        target: tuple[str, int] | socket.socket,
        *,
        timeout: float = 10.0,
        negotiate: bool = True,
        accept: Collection[int] = (ECHO, SUPPRESS_GO_AHEAD),
        encoding: str = "utf-8",
        max_buffer: int = 16 * 1024 * 1024,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1 byte, not {max_buffer!r}")
        if isinstance(target, socket.socket):
            if target.type != socket.SOCK_STREAM:
                raise TypeError(f"target must be a connected stream socket, not {target!r}")
            self._sock = target
        elif isinstance(target, tuple):
            try:
                self._sock = socket.create_connection(target, timeout=timeout)
            except TimeoutError as exc:
                raise TimedOut(
                    f"connecting to {target} timed out after {timeout} s", timeout=timeout
                ) from exc
        else:
            raise TypeError(f"target must be a (host, port) tuple or a socket, not {target!r}")
        self.timeout = timeout
        self.encoding = encoding
        self.max_buffer = max_buffer
        self._reader = _TelnetReader(accept) if negotiate else None
        self._buffer = bytearray()
        self._eof = False
        try:
            self.address: object = self._sock.getpeername()
        except OSError as exc:
            self._sock.close()
            raise ValueError(f"target socket must be connected: {exc}") from exc

    def __repr__(self) -> str:
        state = "closed" if self._sock.fileno() == -1 else "open"
        return f"<TelnetClient {state} peer={self.address!r} unread={len(self._buffer)}>"

    # -- state ---------------------------------------------------------------------------

    @property
    def socket(self) -> socket.socket:
        """The connected socket (for ``getsockname()``, TLS details, or a deliberate reset)."""
        return self._sock

    @property
    def buffered(self) -> bytes:
        """Bytes received and not yet returned by a read."""
        return bytes(self._buffer)

    @property
    def eof(self) -> bool:
        """True once the server has closed its side."""
        return self._eof

    @property
    def commands(self) -> list[tuple[int, int | None]]:
        """Telnet commands received so far: ``(WILL, ECHO)``, ``(SB, 24)``, ``(244, None)``...

        Always empty without ``negotiate`` (the bytes are then in the data).
        """
        return [] if self._reader is None else list(self._reader.commands)

    @property
    def server_options(self) -> frozenset[int]:
        """The server options in effect now (``ECHO in client.server_options``: no local echo)."""
        return frozenset() if self._reader is None else frozenset(self._reader.server_options)

    # -- writing -------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send ``data`` exactly as given (IAC bytes too: a script may negotiate by hand).

        Raises:
            ConnectionClosed: the server is gone (``by_peer=True``), or this client was
                closed (``by_peer=False``).
        """
        self._check_open()
        try:
            self._sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise ConnectionClosed(
                f"send failed, the server is gone: {exc}", address=self.address
            ) from exc

    def send_line(self, text: str = "") -> None:
        """Send ``text`` and CR LF, as a user typing it and pressing Enter.

        With ``negotiate``, a 0xFF byte in the encoded text is doubled (IAC IAC).
        """
        data = text.encode(self.encoding)
        if self._reader is not None:
            data = data.replace(b"\xff", b"\xff\xff")
        self.send(data + b"\r\n")

    def shutdown_write(self) -> None:
        """Close the sending side (the server sees end of input); reading goes on."""
        self._check_open()
        self._sock.shutdown(socket.SHUT_WR)

    def _check_open(self) -> None:
        if self._sock.fileno() == -1:
            raise ConnectionClosed(
                "this TelnetClient was closed", address=self.address, by_peer=False
            )

    # -- reading -------------------------------------------------------------------------

    def read_until(self, marker: bytes | str, *, timeout: float | None = None) -> bytes:
        """Return everything received up to and including ``marker``, and consume it.

        Args:
            marker: the bytes (or text, encoded) to wait for, e.g. a prompt.
            timeout: seconds to wait (default: the client's ``timeout``).

        Raises:
            TimedOut: ``marker`` did not arrive in time; the message quotes what did.
            ConnectionClosed: the server closed (or reset) the connection first.
            AssertionError: more than ``max_buffer`` bytes came without ``marker``.
        """
        wanted = marker.encode(self.encoding) if isinstance(marker, str) else bytes(marker)
        if not wanted:
            raise ValueError("marker must not be empty")
        deadline = self._deadline(timeout)
        start = 0
        while True:
            index = self._buffer.find(wanted, start)
            if index >= 0:
                return self._take(index + len(wanted))
            start = max(0, len(self._buffer) - len(wanted) + 1)
            self._receive(deadline, f"{wanted!r}")

    def expect(
        self, pattern: bytes | str | re.Pattern[bytes], *, timeout: float | None = None
    ) -> re.Match[bytes]:
        """Wait until ``pattern`` (a regular expression) matches; consume up to the match's end.

        Returns:
            The match, on the bytes received so far: ``match.group(1)``, and
            ``match.string[:match.start()]`` for what came before it.

        Raises:
            the same as :meth:`read_until`.
        """
        if isinstance(pattern, str):
            pattern = pattern.encode(self.encoding)
        regex = re.compile(pattern) if isinstance(pattern, bytes) else pattern
        deadline = self._deadline(timeout)
        while True:
            data = bytes(self._buffer)
            found = regex.search(data)
            if found is not None:
                del self._buffer[: found.end()]
                return found
            self._receive(deadline, f"a match of {regex.pattern!r}")

    def read_all(self, *, timeout: float | None = None) -> bytes:
        """Read until the server closes the connection; return everything not read yet.

        Raises:
            TimedOut: the server did not close within the timeout.
            AssertionError: more than ``max_buffer`` bytes came.
        """
        deadline = self._deadline(timeout)
        while not self._eof:
            self._receive(deadline, "the end of the connection", eof_ok=True)
        return self._take(len(self._buffer))

    def _deadline(self, timeout: float | None) -> tuple[float, float]:
        """Return (the monotonic deadline, the seconds it is away) of a read."""
        seconds = self.timeout if timeout is None else timeout
        if not seconds > 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        return time.monotonic() + seconds, seconds

    def _take(self, end: int) -> bytes:
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data

    def _received_so_far(self) -> str:
        tail = bytes(self._buffer[-_SHOWN:])
        cut = "..." if len(self._buffer) > _SHOWN else ""
        return f"received {len(self._buffer)} unread byte(s): {cut}{tail!r}"

    def _receive(
        self, deadline: tuple[float, float], waiting_for: str, *, eof_ok: bool = False
    ) -> None:
        """Receive once (before ``deadline``) into the buffer, answering negotiation."""
        self._check_open()
        if self._eof:
            raise ConnectionClosed(
                f"the server closed the connection before {waiting_for}; {self._received_so_far()}",
                address=self.address,
            )
        if len(self._buffer) >= self.max_buffer:
            raise AssertionError(
                f"{len(self._buffer)} bytes arrived without {waiting_for} "
                f"(max_buffer={self.max_buffer}); {self._received_so_far()}"
            )
        when, seconds = deadline
        remaining = when - time.monotonic()
        if remaining <= 0:
            raise self._timed_out(waiting_for, seconds)
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(min(_RECV_SIZE, self.max_buffer - len(self._buffer)))
        except TimeoutError as exc:
            raise self._timed_out(waiting_for, seconds) from exc
        except (ConnectionResetError, ConnectionAbortedError) as exc:
            self._eof = True
            if eof_ok:
                return
            raise ConnectionClosed(
                f"the connection was reset before {waiting_for}; {self._received_so_far()}",
                address=self.address,
            ) from exc
        if not chunk:
            self._eof = True
            if eof_ok:
                return
            raise ConnectionClosed(
                f"the server closed the connection before {waiting_for}; {self._received_so_far()}",
                address=self.address,
            )
        if self._reader is not None:
            chunk, replies = self._reader.feed(chunk)
            if replies:
                self.send(replies)
        self._buffer += chunk

    def _timed_out(self, waiting_for: str, seconds: float) -> TimedOut:
        return TimedOut(
            f"no {waiting_for} within {seconds} s; {self._received_so_far()}", timeout=seconds
        )

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; idempotent."""
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
