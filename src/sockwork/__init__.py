"""sockwork: complete messages over TCP, poor networks on demand, console programs over telnet."""

from __future__ import annotations

from sockwork.errors import (
    Busy,
    ConnectionClosed,
    ContractBroken,
    IncompleteMessage,
    MessageTooLarge,
    NotReady,
    ProtocolError,
    SockworkError,
    TimedOut,
)

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
    "__version__",
]

__version__ = "0.1.0"
