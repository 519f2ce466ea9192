"""A TCP proxy that applies sockwork faults, with a Toxiproxy-compatible control API."""

from __future__ import annotations

from sockwork.proxy.fault import DIRECTIONS, Direction
from sockwork.proxy.proxy import ConnectionEvent, FaultProxy, ProxyCounters
from sockwork.proxy.server import ToxiproxyServer
from sockwork.proxy.table import InstalledFault, Scope

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
