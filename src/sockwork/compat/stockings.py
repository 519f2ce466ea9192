"""The API of the Stockings package (1.2.3), running on sockwork's background Endpoint.

Replace ``import Stockings`` with ``from sockwork.compat import stockings as Stockings``:
``Stocking``, ``PollStocking``, ``SelectStocking`` and ``NotReady`` behave as Stockings
documents them, speak its exact wire format (so old and new ends interoperate), and
share one I/O thread instead of a thread and four pipe descriptors per connection.

Where Stockings is wrong, this layer is not (see docs/compat.md):

- after the peer closes, ``read()`` returns the messages already received, then raises
  :class:`StockingClosed`, which is both sockwork's ``ConnectionClosed`` and the
  ``EOFError`` Stockings raised, so old ``except EOFError`` loops keep working. After your
  own ``close()`` it raises it too, instead of returning None forever;
- ``write()`` after the connection ended raises ``ConnectionClosed`` instead of dropping
  the message; when the send queue stays full it raises ``TimedOut`` after
  ``write_timeout`` (30 s) instead of blocking forever;
- ``close()`` sends what was queued (up to 5 s, then ``TimedOut``) instead of dropping it;
- a failed handshake makes ``read``/``write`` raise ``ConnectionClosed``, not ``NotReady``
  forever; the handshake starts only after the whole constructor (a subclass's too) ran;
- ``write("")`` sends an empty message (Stockings sends nothing); a real Stockings
  peer delivers it as ``""``/``b""``;
  ``bytearray`` and ``memoryview`` are sent as bytes instead of raising AttributeError;
- a header declaring more than ``max_size`` (16 MiB) bytes raises ``MessageTooLarge``
  from ``read()`` instead of exhausting memory; bad UTF-8 raises ``ProtocolError``.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import TYPE_CHECKING, Any, Final

from sockwork.errors import ConnectionClosed, NotReady
from sockwork.frames.codec import DEFAULT_MAX_SIZE, Format
from sockwork.frames.codecs import BYTES_OR_TEXT
from sockwork.frames.endpoint import Endpoint, _StartAfterInit

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = [
    "STOCKING_SELECT_SEND_INTERVAL",
    "NotReady",
    "PollStocking",
    "SelectStocking",
    "Stocking",
    "StockingClosed",
]


def _send_interval() -> float:
    try:
        return float(os.environ.get("STOCKING_SELECT_SEND_INTERVAL", "0.5"))
    except ValueError:
        return 0.5


STOCKING_SELECT_SEND_INTERVAL: Final = _send_interval()
"""The environment variable's value at import (default 0.5), as Stockings reads it.

Kept for compatibility only: no stocking here polls. ``SelectStocking`` waits on
readiness like ``PollStocking``, so it adds no latency and burns no CPU at any value.
"""


class StockingClosed(ConnectionClosed, EOFError):
    """The connection has ended: sockwork's ``ConnectionClosed`` and Stockings' ``EOFError``."""


class _Call:
    """The arguments of one ``write(*args, **kwargs)``, carried to ``preWrite``."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args = args
        self.kwargs = kwargs


class _Engine(Endpoint[Any]):
    """The Endpoint under a stocking: routes the hooks to the stocking's camelCase ones."""

    def __init__(
        self, owner: _Stocking, sock: socket.socket, max_size: int, write_timeout: float | None
    ) -> None:
        super().__init__(
            sock,
            format=Format.STOCKINGS,
            codec=BYTES_OR_TEXT,
            max_size=max_size,
            write_timeout=write_timeout,
        )
        self._owner = owner
        owner._engine = self  # before the handshake thread starts and uses it

    def _has_handshake(self) -> bool:
        return type(self._owner).handshake is not _Stocking.handshake

    def handshake(self) -> object:
        result = self._owner.handshake()
        self._owner.handshakeComplete = result
        return result

    def pre_write(self, message: Any) -> Any:
        call: _Call = message
        return self._owner.preWrite(*call.args, **call.kwargs)

    def post_read(self, message: Any) -> Any:
        return self._owner.postRead(message)


def _eof(error: ConnectionClosed) -> StockingClosed:
    closed = StockingClosed(str(error), address=error.address, by_peer=error.by_peer)
    closed.__cause__ = error
    return closed


class _Stocking(metaclass=_StartAfterInit):
    """A connected socket that sends and receives whole messages in the background.

    Args:
        conn: a connected socket; the stocking owns it and makes it non-blocking.
        max_size: largest message accepted or sent, in bytes (Stockings had no limit).
        write_timeout: seconds ``write`` waits for room in a full send queue before
            raising ``TimedOut`` (Stockings blocked forever); None waits forever.
    """

    def __init__(
        self,
        conn: socket.socket,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        write_timeout: float | None = 30.0,
    ) -> None:
        self.sock = conn
        self.addr = conn.getpeername()  # OSError if not connected, as in Stockings
        self.handshakeComplete: object = False
        self._max_size = max_size
        self._write_timeout = write_timeout
        self._engine: _Engine | None = None

    def _start(self) -> None:
        # Called once the most derived __init__ has returned (see _StartAfterInit).
        engine = _Engine(self, self.sock, self._max_size, self._write_timeout)
        if engine.ready:  # handshake() not overridden: ready at once, no thread
            self.handshakeComplete = True

    @property
    def _endpoint(self) -> _Engine:
        assert self._engine is not None
        return self._engine

    def __repr__(self) -> str:
        return f"<Stocking ({type(self).__name__}) [{self.addr}]>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._endpoint.__exit__(exc_type, exc, tb)

    @property
    def active(self) -> bool:
        """True until the connection is torn down by either side."""
        return self._engine is None or self._engine.active

    def read(self) -> Any:
        """Return the next message passed through ``postRead``, or None if none is waiting.

        Raises:
            NotReady: the handshake has not completed.
            StockingClosed: every message received before the connection ended was read.
        """
        try:
            return self._endpoint.read()
        except ConnectionClosed as exc:
            raise _eof(exc) from exc

    def write(self, *args: Any, **kwargs: Any) -> None:
        """Queue ``preWrite(*args, **kwargs)`` (a str or bytes-like message) to be sent.

        Raises:
            NotReady: the handshake has not completed.
            ConnectionClosed: the connection has ended.
            TimedOut: the send queue stayed full for 30 s (the peer is not reading).
        """
        self._endpoint.write(_Call(args, kwargs))

    def _read(self) -> Any:
        """Like :meth:`read` without ``postRead`` or the handshake check: for ``handshake``."""
        try:
            return self._endpoint.read_raw()
        except ConnectionClosed as exc:
            raise _eof(exc) from exc

    def _write(self, msg: Any) -> None:
        """Like :meth:`write` without ``preWrite`` or the handshake check: for ``handshake``."""
        self._endpoint.write_raw(msg)

    def preWrite(self, *args: Any, **kwargs: Any) -> Any:
        """Hook: build the message from ``write``'s arguments (default: the first one)."""
        return args[0]

    def postRead(self, message: Any) -> Any:
        """Hook: transform each received message before ``read`` returns it (default: as is)."""
        return message

    def handshake(self) -> object:
        """Hook: run once in its own thread, talking through ``_read``/``_write``; return truthy.

        Loops should watch ``self.active``. A falsy result or an exception closes the
        connection. The default returns True at once (and needs no thread).
        """
        return True

    def writeDataQueued(self) -> bool:
        """Return True while written messages are not yet all handed to the kernel."""
        return self._endpoint.pending_writes() > 0

    def fileno(self) -> int:
        """Return a descriptor that is readable while ``read`` has something to return."""
        return self._endpoint.fileno()

    def close(self) -> None:
        """Send what was queued (up to 5 s), then close the connection; idempotent.

        Raises:
            TimedOut: the peer stopped reading and queued messages were not sent.
        """
        self._endpoint.close()


class PollStocking(_Stocking):
    """A stocking (Stockings waited with ``select.poll``; this one shares sockwork's selector)."""


class SelectStocking(_Stocking):
    """A stocking (Stockings polled ``select.select`` every interval; this one never polls)."""


# As in Stockings: PollStocking where select.poll exists (everywhere but Windows).
if sys.platform == "win32":
    Stocking = SelectStocking
else:
    Stocking = PollStocking
