"""Poor network conditions on demand: the fault vocabulary and in-process socket patching."""

from __future__ import annotations

from sockwork.faults.exploration import ExploreResult, explore
from sockwork.faults.inject import Injection, Match, Target, fired, inject
from sockwork.faults.patch import Handle, PatchableSocket, apply, make_socket_patchable
from sockwork.faults.plan import Event, Plan, Report
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
