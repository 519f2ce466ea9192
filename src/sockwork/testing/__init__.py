"""Test utilities that work with or without pytest; the pytest plugin builds on them.

- Framed pairs: :func:`message_socket_pair`, :func:`endpoint_pair`,
  :func:`message_stream_pair` (asyncio) and the raw :func:`socket_pair`.
- Conformance checks for message front ends: :func:`check_message_stream` and
  :func:`check_async_message_stream`.
- A scripted telnet client: :class:`TelnetClient`.
- Network contracts: :class:`Contract`, made by
  :func:`sockwork.testing.contract.contract` (the right answer, or a promised error
  in time).
- :mod:`sockwork.testing.netfaults` and :mod:`sockwork.testing.strategies` (Hypothesis).

The names are imported on first use, so loading the pytest plugin (which lives in
this package) does not import the frame front ends into every test run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sockwork.testing.conformance import (
        AsyncMessageEndpoint,
        AsyncPairFactory,
        MessageEndpoint,
        PairFactory,
        check_async_message_stream,
        check_message_stream,
    )
    from sockwork.testing.contract import Contract
    from sockwork.testing.pair import (
        endpoint_pair,
        message_socket_pair,
        message_stream_pair,
        socket_pair,
    )
    from sockwork.testing.telnet import TelnetClient

__all__ = [
    "AsyncMessageEndpoint",
    "AsyncPairFactory",
    "Contract",
    "MessageEndpoint",
    "PairFactory",
    "TelnetClient",
    "check_async_message_stream",
    "check_message_stream",
    "endpoint_pair",
    "message_socket_pair",
    "message_stream_pair",
    "socket_pair",
]

_HOME = {
    "AsyncMessageEndpoint": "conformance",
    "AsyncPairFactory": "conformance",
    "MessageEndpoint": "conformance",
    "PairFactory": "conformance",
    "check_async_message_stream": "conformance",
    "check_message_stream": "conformance",
    "Contract": "contract",
    "endpoint_pair": "pair",
    "message_socket_pair": "pair",
    "message_stream_pair": "pair",
    "socket_pair": "pair",
    "TelnetClient": "telnet",
}


def __getattr__(name: str) -> object:
    """Import a public name from its module on first use (PEP 562)."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'sockwork.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sockwork.testing.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
