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
import threading
from typing import TYPE_CHECKING, Any, Final

from sockwork.errors import ConnectionClosed, NotReady, TimedOut
from sockwork.frames._ending import closed_error
from sockwork.frames.codec import DEFAULT_MAX_SIZE, Format
from sockwork.frames.endpoint import Endpoint
from sockwork.frames.payload import BYTES_OR_TEXT

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


def _eof(error: ConnectionClosed) -> StockingClosed:
    closed = StockingClosed(str(error), address=error.address, by_peer=error.by_peer)
    closed.__cause__ = error
    return closed


class _StartAfterInit(type):
    """Metaclass: start a stocking only once the most derived ``__init__`` has returned.

    A subclass's ``handshake()`` may use attributes its ``__init__`` sets after calling
    ``super().__init__()``; Stockings starts its thread inside the base ``__init__`` and
    races them (defect 12).
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        stocking = super().__call__(*args, **kwargs)
        stocking._start()
        return stocking


class _Stocking(metaclass=_StartAfterInit):
    """A connected socket that sends and receives whole messages in the background.

    Args:
        conn: a connected socket; the stocking owns it and makes it non-blocking.
        max_size: largest message accepted or sent, in bytes (Stockings had no limit).
        write_timeout: seconds ``write`` waits for room in a full send queue before
            raising ``TimedOut`` (Stockings blocked forever); None waits forever.
    """

    # Rules:
    # - The Endpoint (``_engine``) moves the bytes; this class adds what Stockings has and
    #   the Endpoint has not: the preWrite/postRead hooks, the handshake gate, None from
    #   an empty read(), EOFError.
    # - The handshake runs in its own thread, started after the whole constructor. Until
    #   it returns a true value read()/write() raise NotReady; if it fails, the endpoint
    #   is aborted and read()/write() raise ConnectionClosed from the failure (``_failure``).

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
        self._engine: Endpoint[Any] | None = None
        self._ready = False
        self._failure: ConnectionClosed | None = None  # why the handshake failed
        self._handshake_thread: threading.Thread | None = None

    def _start(self) -> None:
        # Called once the most derived __init__ has returned (see _StartAfterInit).
        self._engine = Endpoint(
            self.sock,
            format=Format.STOCKINGS,
            codec=BYTES_OR_TEXT,
            max_size=self._max_size,
            send_timeout=self._write_timeout,
        )
        if type(self).handshake is _Stocking.handshake:
            self._ready = True  # nothing to wait for: ready before the caller gets it
            self.handshakeComplete = True
            return
        self._handshake_thread = threading.Thread(
            target=self._run_handshake,
            name=f"sockwork-handshake-{self.sock.fileno()}",
            daemon=True,
        )
        self._handshake_thread.start()

    def _run_handshake(self) -> None:
        try:
            result = self.handshake()
        except Exception as exc:  # noqa: BLE001 - the failure becomes the connection's end
            self._handshake_failed(f"handshake() raised {exc!r}", exc)
            return
        self.handshakeComplete = result
        if not result:
            self._handshake_failed(f"handshake() returned {result!r}", None)
            return
        self._ready = True

    def _handshake_failed(self, why: str, cause: BaseException | None) -> None:
        error = ConnectionClosed(
            f"the handshake failed ({why}); the connection was closed",
            address=self.addr,
            by_peer=False,
        )
        error.__cause__ = cause
        self._failure = error
        self._endpoint.abort()

    @property
    def _endpoint(self) -> Endpoint[Any]:
        assert self._engine is not None
        return self._engine

    def _check_ready(self) -> None:
        """Raise why read()/write() cannot go on yet: NotReady, or how the connection ended."""
        if self._failure is not None:
            raise self._failure
        if self._endpoint.closed:
            raise closed_error("endpoint", self.addr)
        raise NotReady("the handshake has not completed yet: wait for handshakeComplete")

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
        try:
            self._endpoint.__exit__(exc_type, exc, tb)
        finally:
            self._join_handshake()

    @property
    def active(self) -> bool:
        """True until the connection is torn down by either side."""
        return self._engine is None or (self._engine.active and self._failure is None)

    def read(self) -> Any:
        """Return the next message passed through ``postRead``, or None if none is waiting.

        Raises:
            NotReady: the handshake has not completed.
            StockingClosed: every message received before the connection ended was read.
        """
        if not self._ready:
            try:
                self._check_ready()
            except ConnectionClosed as exc:
                raise _eof(exc) from exc
        message = self._read()
        return None if message is None else self.postRead(message)

    def write(self, *args: Any, **kwargs: Any) -> None:
        """Queue ``preWrite(*args, **kwargs)`` (a str or bytes-like message) to be sent.

        Raises:
            NotReady: the handshake has not completed.
            ConnectionClosed: the connection has ended.
            TimedOut: the send queue stayed full for 30 s (the peer is not reading).
        """
        if not self._ready:
            self._check_ready()
        self._write(self.preWrite(*args, **kwargs))

    def _read(self) -> Any:
        """Like :meth:`read` without ``postRead`` or the handshake check: for ``handshake``."""
        try:
            return self._endpoint.recv(timeout=0.0)
        except TimedOut:
            return None
        except ConnectionClosed as exc:
            failure = self._failure or exc  # after a failed handshake, say why
            raise _eof(failure) from failure

    def _write(self, msg: Any) -> None:
        """Like :meth:`write` without ``preWrite`` or the handshake check: for ``handshake``."""
        if self._failure is not None:
            raise self._failure
        self._endpoint.send(msg)

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
        return self._endpoint.pending_sends() > 0

    def fileno(self) -> int:
        """Return a descriptor that is readable while ``read`` has something to return."""
        return self._endpoint.fileno()

    def close(self) -> None:
        """Send what was queued (up to 5 s), then close the connection; idempotent.

        Raises:
            TimedOut: the peer stopped reading and queued messages were not sent.
        """
        try:
            self._endpoint.close()
        finally:
            self._join_handshake()

    def _join_handshake(self) -> None:
        thread = self._handshake_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)


class PollStocking(_Stocking):
    """A stocking (Stockings waited with ``select.poll``; this one shares sockwork's selector)."""


class SelectStocking(_Stocking):
    """A stocking (Stockings polled ``select.select`` every interval; this one never polls)."""


# As in Stockings: PollStocking where select.poll exists (everywhere but Windows).
if sys.platform == "win32":
    Stocking = SelectStocking
else:
    Stocking = PollStocking
