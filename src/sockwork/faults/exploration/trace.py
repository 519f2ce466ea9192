"""What a test did on the network: a :class:`Trace` of :class:`TraceEvent` values.

A trace is recorded once, without faults (:mod:`~sockwork.faults.exploration.recorder`),
and read by :mod:`~sockwork.faults.exploration.candidates` to place faults where they
matter. It is plain data with a JSON form, so a child process can hand it back.

# Rules:
- Stream events (``open``, ``send``, ``recv``, ``shutdown``, ``eof``, ``close``) carry
  the connection ``index`` the plan gave (``Plan.open`` counts stream connections per
  scope, from 1) and the ``role`` (``"client"`` connected, ``"server"`` accepted).
  Attempt events (``resolve``, ``connect``, ``accept``) carry the attempt number,
  counted per kind from 1, as the plan counts them for ``connections=``.
- ``send``/``recv``: ``offset`` is the bytes that had passed in that direction before
  the call, ``size`` the bytes this call moved, ``timeout`` the socket's timeout then
  (None: blocking without a limit, 0: non-blocking).
- ``time`` is seconds since the recording started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

__all__ = ["ConnectionTrace", "EventKind", "Trace", "TraceEvent"]

EventKind = Literal[
    "resolve", "connect", "accept", "open", "send", "recv", "shutdown", "eof", "close"
]
_KINDS = ("resolve", "connect", "accept", "open", "send", "recv", "shutdown", "eof", "close")
_ATTEMPTS = ("resolve", "connect", "accept")
_FORMAT = 1


@dataclass(frozen=True, kw_only=True)
class TraceEvent:
    """One thing the recorded run did on the network (see the module's ``# Rules:``).

    Attributes:
        kind: what happened.
        time: seconds since the recording started.
        index: the connection's index (stream events) or the attempt number (attempts).
        role: ``"client"`` or ``"server"`` (None for a look-up).
        host, port: the remote address (client), the name looked up (resolve), or the
            peer's address (an accepted connection), when known.
        outcome: attempts only: ``"ok"``, ``"refused"``, ``"timeout"``, ``"closed"``,
            ``"failed"``.
        offset: send/recv: bytes passed in that direction before this call.
        size: send/recv: bytes this call moved.
        timeout: send/recv: the socket's timeout at the call (None: none, 0: non-blocking).
    """

    kind: EventKind
    time: float
    index: int
    role: str | None = None
    host: str | None = None
    port: int | None = None
    outcome: str | None = None
    offset: int = 0
    size: int = 0
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(
                f"TraceEvent: kind must be one of {', '.join(_KINDS)}, got {self.kind!r}"
            )
        if self.index < 1:
            raise ValueError(f"TraceEvent: index must be >= 1, got {self.index}")

    def to_json(self) -> dict[str, object]:
        """Return the event as JSON-ready data (fields at their default are left out)."""
        data: dict[str, object] = {
            "kind": self.kind,
            "time": round(self.time, 6),
            "index": self.index,
        }
        for name in ("role", "host", "port", "outcome", "timeout"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.kind in ("send", "recv"):
            data["offset"] = self.offset
            data["size"] = self.size
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> TraceEvent:
        """Build an event from :meth:`to_json`'s form; raises ValueError when malformed."""
        try:
            kind = data["kind"]
            if kind not in _KINDS:
                raise ValueError(f"unknown trace event kind {kind!r}")
            return cls(
                kind=cast(EventKind, kind),
                time=float(cast(float, data["time"])),
                index=int(cast(int, data["index"])),
                role=cast("str | None", data.get("role")),
                host=cast("str | None", data.get("host")),
                port=cast("int | None", data.get("port")),
                outcome=cast("str | None", data.get("outcome")),
                offset=int(cast(int, data.get("offset", 0))),
                size=int(cast(int, data.get("size", 0))),
                timeout=cast("float | None", data.get("timeout")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed trace event {dict(data)!r}: {exc}") from exc

    def __str__(self) -> str:
        where = f"#{self.index}"
        if self.role:
            where += f" {self.role}"
        if self.host is not None:
            where += f" {self.host}" + (f":{self.port}" if self.port is not None else "")
        text = f"+{self.time:.3f}s {self.kind} {where}"
        if self.kind in ("send", "recv"):
            text += f" bytes {self.offset}..{self.offset + self.size}"
        if self.outcome is not None:
            text += f" -> {self.outcome}"
        return text


@dataclass(frozen=True)
class ConnectionTrace:
    """One stream connection of a trace, summed up for placing faults.

    Attributes:
        index: the plan's index (all roles counted together).
        role: ``"client"`` or ``"server"``.
        role_index: its number among the connections of the same role, from 1.
        sends, recvs: ``(offset, size)`` of each send and receive call, in order.
        sent, received: total bytes in each direction.
        fin_sent, eof_seen: the owner sent its FIN; the peer's EOF was read.
        timeouts: the socket timeouts seen on its calls.
    """

    index: int
    role: str
    role_index: int
    host: str | None = None
    port: int | None = None
    sends: tuple[tuple[int, int], ...] = ()
    recvs: tuple[tuple[int, int], ...] = ()
    fin_sent: bool = False
    eof_seen: bool = False
    timeouts: frozenset[float | None] = field(default_factory=frozenset)

    @property
    def sent(self) -> int:
        """Total bytes sent."""
        return sum(size for _, size in self.sends)

    @property
    def received(self) -> int:
        """Total bytes received."""
        return sum(size for _, size in self.recvs)

    def boundaries(self, direction: Literal["send", "recv"]) -> tuple[int, ...]:
        """Offsets where a call of ``direction`` ended, strictly inside the stream, sorted."""
        calls = self.sends if direction == "send" else self.recvs
        total = self.sent if direction == "send" else self.received
        ends = {offset + size for offset, size in calls}
        return tuple(sorted(b for b in ends if 0 < b < total))


@dataclass(frozen=True)
class Trace:
    """Everything a recorded run did on the network, in order; JSON round trip.

    Attributes:
        events: the events, in the order they happened.
        duration: how long the recorded run took, in seconds.
        dropped: events left out because the recording reached its bound.
    """

    events: tuple[TraceEvent, ...] = ()
    duration: float = 0.0
    dropped: int = 0

    @property
    def empty(self) -> bool:
        """True when the run did no network I/O (no look-up, attempt or connection)."""
        return not self.events

    def attempts(self, kind: Literal["resolve", "connect", "accept"]) -> tuple[TraceEvent, ...]:
        """The attempts of ``kind``, in order (their ``index`` counts them from 1)."""
        return tuple(e for e in self.events if e.kind == kind)

    def connections(self) -> tuple[ConnectionTrace, ...]:
        """Each stream connection, in the order the plan opened them."""
        opened: dict[int, TraceEvent] = {}
        sends: dict[int, list[tuple[int, int]]] = {}
        recvs: dict[int, list[tuple[int, int]]] = {}
        fins: set[int] = set()
        eofs: set[int] = set()
        timeouts: dict[int, set[float | None]] = {}
        for e in self.events:
            if e.kind == "open":
                opened.setdefault(e.index, e)
            elif e.kind == "send":
                sends.setdefault(e.index, []).append((e.offset, e.size))
                timeouts.setdefault(e.index, set()).add(e.timeout)
            elif e.kind == "recv":
                recvs.setdefault(e.index, []).append((e.offset, e.size))
                timeouts.setdefault(e.index, set()).add(e.timeout)
            elif e.kind == "shutdown":
                fins.add(e.index)
            elif e.kind == "eof":
                eofs.add(e.index)
        counts: dict[str, int] = {}
        result = []
        for index in sorted(opened):
            e = opened[index]
            role = e.role or "client"
            counts[role] = counts.get(role, 0) + 1
            result.append(
                ConnectionTrace(
                    index=index,
                    role=role,
                    role_index=counts[role],
                    host=e.host,
                    port=e.port,
                    sends=tuple(sends.get(index, ())),
                    recvs=tuple(recvs.get(index, ())),
                    fin_sent=index in fins,
                    eof_seen=index in eofs,
                    timeouts=frozenset(timeouts.get(index, ())),
                )
            )
        return tuple(result)

    @property
    def roles(self) -> frozenset[str]:
        """The roles of the stream connections and attempts (``client``, ``server``)."""
        return frozenset(e.role for e in self.events if e.role is not None)

    @property
    def longest_timeout(self) -> float | None:
        """The longest finite, non-zero socket timeout seen on a send or receive."""
        finite = [
            e.timeout
            for e in self.events
            if e.kind in ("send", "recv") and e.timeout is not None and e.timeout > 0
        ]
        return max(finite) if finite else None

    def to_json(self) -> dict[str, object]:
        """Return the trace as JSON-ready data: ``{"format": 1, "events": [...], ...}``."""
        return {
            "format": _FORMAT,
            "duration": round(self.duration, 6),
            "dropped": self.dropped,
            "events": [e.to_json() for e in self.events],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Trace:
        """Build a trace from :meth:`to_json`'s form; raises ValueError when malformed."""
        if data.get("format") != _FORMAT:
            raise ValueError(
                f"unsupported trace format {data.get('format')!r} (expected {_FORMAT})"
            )
        raw = data.get("events", [])
        if not isinstance(raw, list):
            raise ValueError("trace: 'events' must be a list")
        events = tuple(
            TraceEvent.from_json(item) for item in cast(Iterable[Mapping[str, object]], raw)
        )
        duration = data.get("duration", 0.0)
        dropped = data.get("dropped", 0)
        if not isinstance(duration, (int, float)) or not isinstance(dropped, int):
            raise ValueError("trace: 'duration' must be a number and 'dropped' an int")
        return cls(events, float(duration), dropped)

    def excerpt(self, *, index: int | None = None, around: int = 0, limit: int = 12) -> str:
        """Return up to ``limit`` lines of the trace, those of stream connection ``index`` if given.

        ``around`` is a byte offset: the lines nearest to it come first in the window.
        """
        chosen = [
            e
            for e in self.events
            if index is None or (e.index == index and e.kind not in _ATTEMPTS)
        ]
        if not chosen:
            return "(no events)"
        start = 0
        for i, e in enumerate(chosen):
            if e.kind in ("send", "recv") and e.offset + e.size >= around:
                start = i
                break
        lo = max(0, min(start - limit // 2, len(chosen) - limit))
        lines = [str(e) for e in chosen[lo : lo + limit]]
        if lo > 0:
            lines.insert(0, f"... {lo} earlier event(s)")
        if lo + limit < len(chosen):
            lines.append(f"... {len(chosen) - lo - limit} later event(s)")
        return "\n".join(lines)

    def __str__(self) -> str:
        head = f"trace: {len(self.events)} event(s) in {self.duration:.3f}s"
        if self.dropped:
            head += f" ({self.dropped} dropped)"
        return "\n".join([head, *(f"  {e}" for e in self.events)])
