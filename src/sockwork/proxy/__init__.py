"""A TCP proxy that applies sockwork faults, with a Toxiproxy-compatible control API."""

from __future__ import annotations

from sockwork.proxy.proxy import (
    DIRECTIONS,
    ConnectionEvent,
    Direction,
    FaultProxy,
    InstalledFault,
    ProxyCounters,
    Scope,
)
from sockwork.proxy.server import ToxiproxyServer

__all__ = [
    "DIRECTIONS",
    "ConnectionEvent",
    "Direction",
    "FaultProxy",
    "InstalledFault",
    "ProxyCounters",
    "Scope",
    "ToxiproxyServer",
]
