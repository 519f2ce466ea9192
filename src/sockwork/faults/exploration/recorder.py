"""Record what a run does on the network, through the fault engine itself.

A :class:`Recorder` is an ``inject`` scope with no faults and an observer on its
plan (:class:`sockwork.faults.plan.Observer`): the same class-level dispatch, the same
connection numbering, no second socket patch. Its streams are never idle, so every
send and receive goes through the plan and is seen.

# Rules:
- The plan calls the observer under the scope's lock: the observer only appends.
- At most ``max_events`` events are kept; later ones are counted in ``Trace.dropped``.
"""

from __future__ import annotations

import threading
from types import TracebackType

from sockwork.address import parse_address
from sockwork.faults.action import Action, Close, Fail, Hang, Proceed, Refused
from sockwork.faults.budget import now
from sockwork.faults.exploration.trace import EventKind, Trace, TraceEvent
from sockwork.faults.inject import Injection, MatchSpec
from sockwork.faults.plan import Connection, Stream
from sockwork.faults.state import lookup

__all__ = ["Recorder"]

_OUTCOMES: dict[type, str] = {
    Proceed: "ok",
    Refused: "refused",
    Hang: "timeout",
    Close: "closed",
    Fail: "failed",
}


def _split_label(label: str) -> tuple[str | None, str | None, int | None]:
    """``"client 127.0.0.1:80"`` -> ("client", "127.0.0.1", 80)."""
    role, _, rest = label.partition(" ")
    if role not in ("client", "server", "socket"):
        return None, label or None, None
    try:
        host, port = parse_address(rest)
    except ValueError:
        return role, rest or None, None
    return role, host, port


class _Observer:
    """Turns what the plan is told into trace events."""

    def __init__(self, recorder: Recorder) -> None:
        self._r = recorder

    def attempt(self, kind: str, index: int, at: float, label: str, outcome: Action) -> None:
        role, host, port = _split_label(label)
        if kind == "resolve":
            role, host = None, label
        elif kind == "accept":
            role = "server"
        self._r._add(
            kind,  # type: ignore[arg-type]
            at,
            index,
            role=role,
            host=host,
            port=port,
            outcome=_OUTCOMES.get(type(outcome), "ok"),
        )

    def opened(self, conn: Connection, at: float) -> None:
        role, host, port = _split_label(conn.label)
        self._r._roles[conn.index] = role or "client"
        self._r._add("open", at, conn.index, role=role or "client", host=host, port=port)

    def passed(self, stream: Stream, n: int, at: float) -> None:
        index = stream.conn.index
        self._r._add(
            stream.direction,
            at,
            index,
            role=self._r._roles.get(index),
            offset=stream.offset - n,
            size=n,
            timeout=self._r._timeout_of(stream.conn),
        )

    def ended(self, stream: Stream, at: float) -> None:
        index = stream.conn.index
        kind: EventKind = "shutdown" if stream.direction == "send" else "eof"
        self._r._add(kind, at, index, role=self._r._roles.get(index))

    def closed(self, conn: Connection, at: float | None) -> None:
        self._r._add(
            "close", now() if at is None else at, conn.index, role=self._r._roles.get(conn.index)
        )


class Recorder:
    """Record a :class:`Trace` of what the code in a ``with`` block does on the network.

    Use it as ``with Recorder() as recorder: ...``, then read ``recorder.trace``.

    Args:
        match: which connections and look-ups to record (as ``inject``'s ``match``).
        max_events: the bound on the events kept.
    """

    def __init__(self, *, match: MatchSpec = None, max_events: int = 100_000) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self._max = max_events
        self._lock = threading.Lock()
        self._events: list[TraceEvent] = []
        self._dropped = 0
        self._roles: dict[int, str] = {}
        self._start = now()
        self._end: float | None = None
        self._scope = Injection((), match=match, seed=0, observer=_Observer(self))

    def _add(self, kind: EventKind, at: float, index: int, **fields: object) -> None:
        with self._lock:
            if len(self._events) >= self._max:
                self._dropped += 1
                return
            self._events.append(
                TraceEvent(kind=kind, time=max(0.0, at - self._start), index=index, **fields)  # type: ignore[arg-type]
            )

    def _timeout_of(self, conn: Connection) -> float | None:
        # Called under the scope's lock: find the socket carrying this connection.
        try:
            socks = list(self._scope._scope.sockets)
        except RuntimeError:  # another thread attached a socket meanwhile
            return None
        for sock in socks:
            state = lookup(sock)
            if state is None:
                continue
            for layer in state.layers:
                if layer.conn is conn:
                    return sock.gettimeout()
        return None

    @property
    def trace(self) -> Trace:
        """What was recorded so far (the duration runs to the end of the block)."""
        end = self._end if self._end is not None else now()
        with self._lock:
            return Trace(tuple(self._events), end - self._start, self._dropped)

    def __enter__(self) -> Recorder:
        self._start = now()
        self._scope.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end = now()
        self._scope.remove()
