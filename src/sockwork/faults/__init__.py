"""Poor network conditions on demand: the fault vocabulary and in-process socket patching."""

from __future__ import annotations

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
    "Fault",
    "Latency",
    "Plan",
    "Refuse",
    "Report",
    "ResetPeer",
    "Slice",
    "SlowClose",
    "Stall",
    "StreamFault",
    "Timeout",
]
