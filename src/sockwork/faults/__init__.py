"""Poor network conditions on demand: the fault vocabulary and in-process socket patching."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sockwork.faults.inject import Injection, Match, Target, fired, inject
from sockwork.faults.patch import Handle, PatchableSocket, apply, make_socket_patchable
from sockwork.faults.plan import Plan
from sockwork.faults.report import Event, Report
from sockwork.faults.vocabulary import (
    AcceptDelay,
    Bandwidth,
    Blackhole,
    CloseAfter,
    CloseOnAccept,
    Coalesce,
    ConnectDelay,
    ConnectTimeout,
    DnsFailure,
    Fault,
    HalfClose,
    Latency,
    Refuse,
    ResetPeer,
    Slice,
    SlowClose,
    Stall,
    StreamFault,
    Timeout,
)

__all__ = [
    "AcceptDelay",
    "Bandwidth",
    "Blackhole",
    "CloseAfter",
    "CloseOnAccept",
    "Coalesce",
    "ConnectDelay",
    "ConnectTimeout",
    "DnsFailure",
    "Event",
    "ExploreResult",
    "Fault",
    "HalfClose",
    "Handle",
    "Injection",
    "Latency",
    "Match",
    "PatchableSocket",
    "Plan",
    "Refuse",
    "Report",
    "ResetPeer",
    "Slice",
    "SlowClose",
    "Stall",
    "StreamFault",
    "Target",
    "Timeout",
    "apply",
    "explore",
    "fired",
    "inject",
    "make_socket_patchable",
]

if TYPE_CHECKING:
    from sockwork.faults.exploration import ExploreResult, explore


def __getattr__(name: str) -> object:
    # Exploration is imported on first use: every process that ``sockwork run`` or
    # ``sockwork explore`` starts imports this package at start-up, and needs none of it.
    if name in ("ExploreResult", "explore"):
        from sockwork.faults import exploration

        return getattr(exploration, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
