"""Proxy directions, and Toxiproxy toxics as sockwork faults (sans-IO).

# Rules:
# - Toxiproxy's ``upstream`` stream (client -> server) is the client's ``"send"``
#   direction in the fault vocabulary; ``downstream`` (server -> client) is ``"recv"``.
#   A proxy is the client's network, so a fault means the same thing in both executors.
#   FAULT_DIRECTION below is the only place that says so.
# - ``toxicity`` is the fault's ``probability``: drawn once per connection and direction,
#   as Toxiproxy draws it when a link starts.
# - Units: Toxiproxy's ms become seconds, KB/s (1000 B/s) become bytes per second, the
#   slicer's delay is in microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from sockwork.faults.vocabulary import (
    AcceptDelay,
    Bandwidth,
    Blackhole,
    CloseAfter,
    ConnectTimeout,
    Fault,
    HalfClose,
    Latency,
    ResetPeer,
    Slice,
    SlowClose,
    Stall,
    Timeout,
)
from sockwork.proxy.toxic import ToxicSpec

__all__ = [
    "DIRECTIONS",
    "FAULT_DIRECTION",
    "PROXY_DIRECTION",
    "Direction",
    "fault_for",
    "other_direction",
]

#: One direction of a proxied connection: Toxiproxy's stream names.
Direction = Literal["upstream", "downstream"]

#: ``upstream`` is client -> server, ``downstream`` server -> client.
DIRECTIONS: tuple[Direction, ...] = ("upstream", "downstream")

#: Proxy direction (or ``"both"``) -> the fault vocabulary's direction, seen from the client.
FAULT_DIRECTION: Mapping[str, Literal["send", "recv", "both"]] = {
    "upstream": "send",
    "downstream": "recv",
    "both": "both",
}

#: The fault vocabulary's direction -> the proxy direction (the inverse of FAULT_DIRECTION).
PROXY_DIRECTION: Mapping[str, str] = {v: k for k, v in FAULT_DIRECTION.items()}


def other_direction(direction: Direction) -> Direction:
    """The opposite direction of the same connection."""
    return "downstream" if direction == "upstream" else "upstream"


def fault_for(spec: ToxicSpec) -> Fault | None:
    """Return the sockwork fault that behaves as the toxic ``spec``; None for ``noop``.

    Raises:
        ValueError: an attribute is out of the fault's range.
    """
    a = spec.attributes
    d = FAULT_DIRECTION[spec.stream]
    p = spec.toxicity
    kind = spec.type
    if kind == "latency":
        return Latency(a["latency"] / 1000, jitter=a["jitter"] / 1000, direction=d, probability=p)
    if kind == "bandwidth":
        if a["rate"] == 0:
            # Toxiproxy's rate 0 never lets data through and keeps back-pressure: a stall.
            return Stall(direction=d, probability=p)
        return Bandwidth(a["rate"] * 1000, direction=d, probability=p)
    if kind == "slow_close":
        return SlowClose(a["delay"] / 1000, direction=d, probability=p)
    if kind == "timeout":
        return Timeout(a["timeout"] / 1000, direction=d, probability=p)
    if kind == "reset_peer":
        return ResetPeer(a["timeout"] / 1000, direction=d, probability=p)
    if kind == "slicer":
        average, variation = a["average_size"], a["size_variation"]
        if average == 0:
            return None  # Toxiproxy cannot slice to nothing either; data passes whole
        low = max(1, average - variation)
        return Slice(
            average + variation,
            min_bytes=min(low, average + variation),
            delay=a["delay"] / 1_000_000,
            direction=d,
            probability=p,
        )
    if kind == "limit_data":
        return CloseAfter(a["bytes"], direction=d, probability=p)
    if kind == "stall":
        return Stall(direction=d, probability=p)
    if kind == "blackhole":
        return Blackhole(direction=d, probability=p)
    if kind == "reset_after":
        return CloseAfter(a["bytes"], reset=True, direction=d, probability=p)
    if kind == "shared_bandwidth":
        if a["rate"] == 0:
            return Stall(direction=d, probability=p)
        # One budget for every connection of the proxy (each proxy has its own plan).
        group = f"toxic:{spec.name}"
        return Bandwidth(a["rate"] * 1000, group=group, direction=d, probability=p)
    if kind == "accept_delay":
        return AcceptDelay(a["delay"] / 1000, probability=p)
    if kind == "connect_timeout":
        return ConnectTimeout(probability=p)
    if kind == "half_close":
        return HalfClose(a["bytes"], direction=d, probability=p)
    return None  # noop
