"""The exceptions sockwork raises.

Every error derives from :class:`SockworkError`; errors about a connection or a
value also derive from the matching built-in, so ``except ConnectionError`` or
``except ValueError`` written before sockwork keep working::

    SockworkError
    ├── ConnectionClosed (ConnectionError)    the connection is closed; nothing more will come
    │   └── IncompleteMessage                 it closed in the middle of a message
    ├── MessageTooLarge (ValueError)          a declared or given message exceeds ``max_size``
    ├── ProtocolError (ValueError)            the peer sent bytes that break the wire format
    ├── NotReady                              the handshake has not completed yet
    ├── Busy (ConnectionError)                a server is at its connection limit
    ├── TimedOut (TimeoutError)               a sockwork operation ran out of time
    └── ContractBroken (AssertionError)       code under test broke its network contract

Injected network faults are not sockwork errors: they raise what a real network
would (``ConnectionResetError``, ``TimeoutError``, ``socket.gaierror``).
"""

from __future__ import annotations

__all__ = [
    "Busy",
    "ConnectionClosed",
    "ContractBroken",
    "IncompleteMessage",
    "MessageTooLarge",
    "NotReady",
    "ProtocolError",
    "SockworkError",
    "TimedOut",
]

_Address = object  # a socket address: tuple, str (AF_UNIX) or None when unknown


class SockworkError(Exception):
    """Base class of every exception sockwork raises on its own behalf."""


class ConnectionClosed(SockworkError, ConnectionError):
    """The connection is closed, by the peer or by this side; nothing more will come.

    Attributes:
        address: the peer's address, when known.
        by_peer: True when the peer closed (EOF or reset), False after our own ``close()``.
    """

    def __init__(
        self, message: str = "connection closed", *, address: _Address = None, by_peer: bool = True
    ) -> None:
        super().__init__(message)
        self.address = address
        self.by_peer = by_peer


class IncompleteMessage(ConnectionClosed):
    """The connection ended inside a message: ``received`` of ``expected`` bytes arrived.

    ``expected`` is None when the header itself was cut short.
    """

    def __init__(
        self,
        received: int,
        expected: int | None,
        *,
        address: _Address = None,
    ) -> None:
        if expected is None:
            what = f"connection closed inside a message header ({received} header bytes received)"
        else:
            what = f"connection closed inside a message: {received} of {expected} bytes received"
        super().__init__(what, address=address, by_peer=True)
        self.received = received
        self.expected = expected


class MessageTooLarge(SockworkError, ValueError):
    """A message of ``size`` bytes exceeds the limit of ``limit`` bytes.

    Raised when a header declaring such a size arrives (before any allocation) or
    when such a message is sent. Raise ``max_size`` on both ends if the size is legitimate.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"message of {size} bytes exceeds max_size={limit}; "
            "raise max_size on both ends if messages this large are expected"
        )
        self.size = size
        self.limit = limit


class ProtocolError(SockworkError, ValueError):
    """The peer sent bytes that do not follow the wire format (a runaway header, bad UTF-8...).

    The connection cannot be resynchronised and is closed.
    """


class NotReady(SockworkError):
    """The connection's handshake has not completed, so messages cannot flow yet."""


class Busy(SockworkError, ConnectionError):
    """A server refused a connection because it is at its limit; retry later."""


class TimedOut(SockworkError, TimeoutError):
    """A sockwork operation did not complete within its timeout.

    Attributes:
        timeout: the timeout in seconds that ran out.
    """

    def __init__(self, message: str, *, timeout: float | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout


class ContractBroken(SockworkError, AssertionError):
    """Code under test broke its contract (see :mod:`sockwork.testing.contract`).

    It gave a wrong answer, raised an error it does not promise (or one that what
    the network did does not excuse), or finished after its deadline. An
    ``AssertionError``, so pytest and ``sockwork explore`` count it as a failed test.

    Attributes:
        reason: ``"wrong answer"``, ``"unexpected error"``, ``"error not excused"``
            or ``"late"``.
        elapsed: seconds the block ran.
        error: the exception the block raised, or None.
    """

    def __init__(
        self, message: str, *, reason: str, elapsed: float, error: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.elapsed = elapsed
        self.error = error
