"""Fault schedules placed where a recorded trace says they matter.

:func:`candidates` reads a :class:`~sockwork.faults.exploration.trace.Trace` and
yields :class:`~sockwork.faults.exploration.schedule.Schedule` values: one-fault
schedules first, then pairs, then seeded random combinations (as PCT picks a few
change points at random), each schedule once.

# Strategy:
- Cheap before slow. Faults that only cut or split bytes (Slice, CloseAfter,
  HalfClose, Refuse, DnsFailure, CloseOnAccept) cost no waiting and come first;
  endless waits (Stall, ConnectTimeout) next: a socket with a timeout times out at
  once in an exploration run; real delays (Latency, ConnectDelay, AcceptDelay,
  Coalesce) last, above the test's own timeouts (``timeout`` below), and never in
  a combination.
- Broad before narrow. A fault on every connection of a role comes before the same
  fault on one connection at one offset: one run covers what many would, and
  shrinking narrows it down afterwards.
- Placed at boundaries: the offsets where the traced send and receive calls ended
  (header/payload boundaries), just after them and in the middle of each message.
- When one process holds both ends (the trace has client and server connections),
  every schedule selects one role (``Schedule.role``) and counts connections among
  that role only, so thread timing cannot change which connection a fault hits.
- Sans-IO: no sockets, no clock; the only randomness is ``random.Random(seed)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from sockwork.faults.exploration.schedule import Schedule
from sockwork.faults.exploration.trace import ConnectionTrace, Trace
from sockwork.faults.vocabulary import (
    FAULT_TYPES,
    AcceptDelay,
    CloseAfter,
    CloseOnAccept,
    Coalesce,
    ConnectDelay,
    ConnectTimeout,
    DnsFailure,
    Fault,
    Latency,
    Refuse,
    Slice,
    Stall,
)

__all__ = ["EXPLORED_KINDS", "candidates", "explored_kinds", "singles"]

# The fault kinds exploration places (HalfClose joins when the vocabulary has it).
EXPLORED_KINDS: tuple[str, ...] = tuple(
    k
    for k in (
        "Slice",
        "CloseAfter",
        "HalfClose",
        "Stall",
        "Coalesce",
        "Latency",
        "Refuse",
        "ConnectTimeout",
        "ConnectDelay",
        "DnsFailure",
        "CloseOnAccept",
        "AcceptDelay",
    )
    if k in FAULT_TYPES
)

# At most this many offsets per connection and direction (spread over the stream).
_MAX_OFFSETS = 8
# Connections beyond this many per role get only the broad faults.
_MAX_CONNECTIONS = 6
# Slicing to 1 byte beyond this many bytes per stream would only make a run slow
# (every piece is one call through the engine): longer streams get ~1024 pieces.
_SLICE_ONE_LIMIT = 4096
# Pairs tried before the singles that wait out a real delay.
_PAIRS_BEFORE_DELAYS = 100
# Random combinations: stop after this many draws in a row gave nothing new.
_MAX_REPEATS = 500

_DIRECTIONS: tuple[Literal["recv", "send"], ...] = ("recv", "send")


# What a single costs a run: nothing; an endless wait (a stall, a connect never
# answered: with a socket timeout, exploration runs skip it, see budget.py); a real
# delay (latency, connect and accept delays: waited out). Delays are never combined.
_FREE, _ENDLESS, _DELAY = 0, 1, 2


@dataclass(frozen=True)
class _Single:
    schedule: Schedule
    cost: int
    group: str  # faults of one group are not paired (same connection or attempt)


def explored_kinds(kinds: Collection[str] | None = None) -> tuple[str, ...]:
    """The fault kinds exploration will try, ``kinds`` checked against the vocabulary.

    Raises:
        ValueError: a name is not a fault class of the vocabulary, or not one
            exploration can place (the message lists those it can).
    """
    if kinds is None:
        return EXPLORED_KINDS
    unknown = sorted(set(kinds) - set(EXPLORED_KINDS))
    if unknown:
        raise ValueError(
            f"unknown or unexplorable fault kind(s) {', '.join(unknown)}; "
            f"choose among {', '.join(EXPLORED_KINDS)}"
        )
    return tuple(k for k in EXPLORED_KINDS if k in set(kinds))


def _spread(values: Iterable[int], limit: int) -> list[int]:
    ordered = sorted(set(values))
    if len(ordered) <= limit:
        return ordered
    step = (len(ordered) - 1) / (limit - 1)
    return sorted({ordered[round(i * step)] for i in range(limit)})


def _cut_offsets(conn: ConnectionTrace, direction: Literal["send", "recv"]) -> list[int]:
    """Offsets where cutting the stream matters: 0, boundaries, just after, mid-message."""
    total = conn.sent if direction == "send" else conn.received
    if total <= 0:
        return []
    bounds = [0, *conn.boundaries(direction), total]
    offsets = set(bounds[:-1])
    for lo, hi in pairwise(bounds):
        if hi - lo > 1:
            offsets.add(lo + 1)
            offsets.add((lo + hi) // 2)
    return _spread(offsets, _MAX_OFFSETS * 2)


def singles(
    trace: Trace, *, kinds: Collection[str] | None = None, timeout: float | None = None
) -> list[Schedule]:
    """The one-fault schedules for ``trace``, cheapest and broadest first.

    ``timeout`` is the longest delay worth trying (above the test's own timeouts);
    None leaves out latency and delays.
    """
    return [s.schedule for s in _singles(trace, explored_kinds(kinds), timeout)]


def _piece(total: int) -> int:
    """The slice size for a stream of ``total`` bytes: 1, or ~1024 pieces for long streams."""
    return 1 if total <= _SLICE_ONE_LIMIT else -(-total // 1024)


def _singles(trace: Trace, kinds: Collection[str], timeout: float | None) -> list[_Single]:
    conns = trace.connections()
    roles = {c.role for c in conns}
    connects = trace.attempts("connect")
    accepts = trace.attempts("accept")
    resolves = trace.attempts("resolve")
    both_ends = len(roles) > 1 or (bool(connects) and bool(accepts))
    out: list[_Single] = []
    # HalfClose (issue 15) is placed as soon as the vocabulary has it.
    half_close: Callable[..., Fault] | None = FAULT_TYPES.get("HalfClose")

    def add(fault: Fault, role: str, cost: int, group: str) -> None:
        if type(fault).__name__ in kinds:
            out.append(_Single(Schedule((fault,), role if both_ends else None), cost, group))

    def index_of(conn: ConnectionTrace) -> int:
        return conn.role_index if both_ends else conn.index

    # 1. Broad: one fault on every connection of a role (no connections=), then on
    #    every attempt. One run covers many connections; shrinking narrows it down.
    for role in ("client", "server"):
        mine = [c for c in conns if c.role == role]
        if not mine:
            continue
        received = max(c.received for c in mine)
        sent = max(c.sent for c in mine)
        if received:
            add(Slice(_piece(received), direction="recv"), role, _FREE, f"{role}/recv")
        if sent:
            add(Slice(_piece(sent), direction="send"), role, _FREE, f"{role}/send")
        if received:
            add(CloseAfter(0, direction="recv", reset=True), role, _FREE, f"{role}/recv")
            add(CloseAfter(0, direction="recv"), role, _FREE, f"{role}/recv")
    if connects:
        add(Refuse(), "client", 0, "connect")  # every attempt: retries must give up
    if accepts:
        add(CloseOnAccept(reset=True), "server", 0, "accept")
    if resolves:
        add(DnsFailure("again"), "resolve", 0, "resolve")

    # 2. Each numbered attempt: connect, look-up, accept.
    for e in connects[:_MAX_CONNECTIONS]:
        add(Refuse(connections={e.index}), "client", _FREE, f"connect{e.index}")
    for e in resolves[:_MAX_CONNECTIONS]:
        add(DnsFailure("noname", connections={e.index}), "resolve", _FREE, f"resolve{e.index}")
        add(DnsFailure("again", connections={e.index}), "resolve", _FREE, f"resolve{e.index}")
    for e in accepts[:_MAX_CONNECTIONS]:
        add(CloseOnAccept(connections={e.index}), "server", _FREE, f"accept{e.index}")
        add(CloseOnAccept(reset=True, connections={e.index}), "server", _FREE, f"accept{e.index}")

    # 3. Each connection: splits, short writes, cuts (FIN and RST) and half-closes at
    #    the boundaries of its traced calls and in the middle of its messages.
    for conn in conns:
        if conn.role_index > _MAX_CONNECTIONS:
            continue
        k = {index_of(conn)}
        role = conn.role
        for direction in _DIRECTIONS:
            group = f"{role}{conn.role_index}/{direction}"
            total = conn.received if direction == "recv" else conn.sent
            if not total:
                continue
            add(Slice(_piece(total), direction=direction, connections=k), role, _FREE, group)
            for b in _spread(conn.boundaries(direction), _MAX_OFFSETS):
                # A fault active from byte b caps the call before it at b: a split
                # exactly at the boundary, then whole reads or writes again.
                add(
                    Slice(total, direction=direction, after_bytes=b, connections=k),
                    role,
                    _FREE,
                    group,
                )
            for b in _cut_offsets(conn, direction):
                add(CloseAfter(b, direction=direction, connections=k), role, _FREE, group)
                add(
                    CloseAfter(b, direction=direction, reset=True, connections=k),
                    role,
                    _FREE,
                    group,
                )
            if half_close is not None:
                # A FIN right after a request or reply (the whole of it, or up to a
                # boundary) while the other direction keeps working: "send" is the
                # owner's own FIN, "recv" the peer's (a peer outside the process).
                for b in _spread([*conn.boundaries(direction), total], _MAX_OFFSETS):
                    add(half_close(b, direction=direction, connections=k), role, _FREE, group)

    # 4. Faults that wait: stalls at each boundary (a peer that stops), connect
    #    attempts never answered, then delays above the test's own timeouts.
    for conn in conns:
        if conn.role_index > _MAX_CONNECTIONS:
            continue
        k = {index_of(conn)}
        role = conn.role
        for direction in _DIRECTIONS:
            total = conn.received if direction == "recv" else conn.sent
            group = f"{role}{conn.role_index}/{direction}"
            if direction == "recv" or total:
                offsets = [0, *conn.boundaries(direction)] if total else [0]
                for b in _spread(offsets, _MAX_OFFSETS):
                    add(
                        Stall(direction=direction, after_bytes=b, connections=k),
                        role,
                        _ENDLESS,
                        group,
                    )
    for e in connects[:_MAX_CONNECTIONS]:
        add(ConnectTimeout(connections={e.index}), "client", _ENDLESS, f"connect{e.index}")
    for role in ("client", "server"):
        if any(c.role == role and c.received for c in conns):
            # Back-to-back messages arriving in one read.
            add(Coalesce(window=0.02, direction="recv"), role, _DELAY, f"{role}/recv")
    if timeout is not None and timeout > 0:
        for role in ("client", "server"):
            if role in roles:
                add(Latency(timeout, direction="recv"), role, _DELAY, f"{role}/recv")
        for e in connects[:_MAX_CONNECTIONS]:
            # A slow connect that still succeeds (ConnectTimeout is the one that never does).
            slow = round(timeout / 2.5, 3)
            add(ConnectDelay(slow, connections={e.index}), "client", _DELAY, f"connect{e.index}")
        for e in accepts[:_MAX_CONNECTIONS]:
            add(AcceptDelay(timeout, connections={e.index}), "server", _DELAY, f"accept{e.index}")

    seen: set[tuple[object, ...]] = set()
    unique: list[_Single] = []
    for single in sorted(out, key=lambda s: s.cost):  # stable: broad first within a cost
        key = single.schedule.key()
        if key not in seen:
            seen.add(key)
            unique.append(single)
    return unique


def _pair(a: _Single, b: _Single) -> Schedule | None:
    if a.group == b.group or a.schedule.role != b.schedule.role:
        return None
    if a.cost + b.cost > _ENDLESS:
        return None  # a real delay, or two waits: slow, and each alone already waits
    return a.schedule.with_faults(a.schedule.faults + b.schedule.faults)


def candidates(
    trace: Trace,
    *,
    seed: int,
    kinds: Collection[str] | None = None,
    timeout: float | None = None,
) -> Iterator[Schedule]:
    """Yield fault schedules for ``trace``: singles, then pairs, then random combinations.

    The singles that wait out a real delay (latency, connect and accept delays) come
    after the first 100 pairs, as each costs the test's own timeout.

    Args:
        trace: the run recorded without faults.
        seed: the seed of the random combinations (same seed, same sequence).
        kinds: fault class names to use (default: every kind exploration places).
        timeout: delays to try, in seconds, above the test's own timeouts (None:
            no latency or delay faults).

    Raises:
        ValueError: ``kinds`` names an unknown fault kind.
    """
    pool = _singles(trace, explored_kinds(kinds), timeout)
    seen: set[tuple[object, ...]] = set()

    def fresh(schedule: Schedule) -> bool:
        key = schedule.key()
        if key in seen:
            return False
        seen.add(key)
        return True

    delays = [s for s in pool if s.cost == _DELAY]
    pool = [s for s in pool if s.cost != _DELAY]
    for s in pool:
        if fresh(s.schedule):
            yield s.schedule
    # Pairs, ordered by the sum of their ranks: cheap and broad combinations first.
    # The singles that really wait come after the first pairs: each costs a timeout.
    made = 0
    n = len(pool)
    for total in range(1, 2 * n - 2):
        for i in range(max(0, total - n + 1), (total + 1) // 2):
            pair = _pair(pool[i], pool[total - i])
            if pair is not None and fresh(pair):
                made += 1
                yield pair
                if made == _PAIRS_BEFORE_DELAYS:
                    yield from (d.schedule for d in delays if fresh(d.schedule))
    yield from (d.schedule for d in delays if fresh(d.schedule))
    # Random combinations of two or three singles of one role (seeded).
    rng = random.Random(seed)
    by_role: dict[str | None, list[_Single]] = {}
    for s in pool:
        by_role.setdefault(s.schedule.role, []).append(s)
    groups = [members for _, members in sorted(by_role.items(), key=lambda kv: str(kv[0]))]
    groups = [members for members in groups if len(members) >= 2]
    weights = [len(members) for members in groups]
    repeats = 0
    while groups and repeats < _MAX_REPEATS:
        members = rng.choices(groups, weights)[0]
        size = 3 if len(members) >= 3 and rng.random() < 0.5 else 2
        picked = rng.sample(members, size)
        if len({p.group for p in picked}) != size or sum(p.cost for p in picked) > _ENDLESS:
            repeats += 1
            continue
        schedule = picked[0].schedule.with_faults([f for p in picked for f in p.schedule.faults])
        if fresh(schedule):
            repeats = 0
            yield schedule
        else:
            repeats += 1
