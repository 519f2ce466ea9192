"""The plan: the sans-IO decisions that turn faults into actions.

A :class:`Plan` belongs to one scope (one ``inject``, one ``apply``, one proxy). It
is fed events ("this connection attempt", "these n bytes became available", "the
source ended") with the time ``now`` and hands back actions ("wait until t",
"deliver n bytes", "close with RST"). It never touches a socket or a clock, so
socket patching and the asyncio proxy execute the same decisions.

This module holds the machine: :class:`Plan`, its :class:`Connection` and
:class:`Stream` objects. What they hand out and record has modules of its own:
the actions (:mod:`sockwork.faults.action`, re-exported here), the report
(:mod:`sockwork.faults.report`, re-exported too) and each stream fault's state
(:mod:`sockwork.faults.effect`).

# Rules:
- Time is whatever clock the executor passes as ``now`` (``time.monotonic()`` in
  practice), always the same clock for one plan; every ``Wait.until`` is on it.
- All randomness comes from the one ``random.Random`` given to the plan (seed it;
  report ``plan.seed`` on failure). Probability 0 never draws.
- The plan is not thread-safe: an executor calls it under one lock per plan. It
  never blocks, so the lock is held only for a call; executors wait outside it.
- Connect phase. Call :meth:`Plan.connect` once per attempt, :meth:`Plan.accept`
  once per incoming connection (``now`` = when it arrived), :meth:`Plan.resolve`
  once per look-up. Each returns a tuple of actions: zero or one :class:`Wait`,
  then exactly one terminal action: :class:`Proceed`, :class:`Refused` (raise
  ECONNREFUSED), :class:`Hang` (the attempt never completes: time out at the
  socket's timeout, or at ``Hang.until`` with ETIMEDOUT), :class:`Close` (accept:
  close the new connection, FIN or RST, and do not hand it out) or :class:`Fail`
  (DNS: raise ``socket.gaierror`` of that kind). A Wait comes first: do it, then
  the terminal action (a timeout during the wait wins).
- Streams. :meth:`Plan.open` returns a :class:`Connection` with two
  :class:`Stream` objects, ``send`` and ``recv`` (see vocabulary for what the
  directions mean). When the connection ends (its socket closed, the proxied pair
  ended) the executor calls :meth:`Connection.close`: the plan drops it at once, so
  its per-connection state never outlives the connection. An executor drives each
  stream with this loop::

      stream.feed(n, now)          # n more bytes are waiting to pass, since now
      stream.feed_eof(now)         # the source ended (EOF); nothing more to feed
      action = stream.next(now)    # decision about the head of what was fed
      stream.passed(k, now)        # after Deliver(n)/Discard(n): k <= n bytes went
      stream.unfeed()              # take back what was fed and not passed (a short send)

  ``next`` returns one of:
    * ``Read(max_bytes, until)``: nothing is pending; fetch at most ``max_bytes``
      (None: any amount) from the source and feed it; if nothing comes by
      ``until`` (None: no deadline), call ``next`` again.
    * ``Wait(until)``: pass nothing and read nothing before ``until``, then call
      ``next`` again (feeding whatever arrived meanwhile is allowed).
    * ``Deliver(n)``: pass the next ``n`` pending bytes (``n >= 1``), then call
      ``passed`` with what really went.
    * ``Discard(n)``: drop the next ``n`` pending bytes; the writer believes they
      went. Call ``passed(n)``.
    * ``Stalled()``: neither pass nor read, with no deadline: block until the
      caller's own timeout, or until :meth:`Plan.update` changes the faults.
    * ``Close(reset)``: end the connection now: FIN (``reset=False``: the reader sees
      EOF, the writer EPIPE) or RST (``reset=True``: ECONNRESET). Once a stream
      returns Close it returns it forever. After ``feed_eof`` and once every byte
      has passed, ``Close(False)`` means "forward the EOF".
    * ``Close(half=True)`` (``HalfClose``): end only this direction, with a FIN, as
      if its writer called ``shutdown(SHUT_WR)``; the other direction goes on.
      Bytes fed to this direction later never pass (a sender in-process gets
      EPIPE, as after a real shutdown; a receiver reads EOF; a proxy discards them).
  After ``passed``, call ``next`` again even with nothing pending: a Close may be
  due at once (``CloseAfter`` cuts the connection right after its last byte).
  A half-close may even be due before any byte (``HalfClose(0)``: the peer that
  only waits must still see the FIN): :meth:`Stream.close_due` says so without
  drawing or recording anything, so an executor that only calls ``next`` when the
  application moves bytes asks it when the connection opens. (``CloseAfter(0)``
  keeps cutting at the first call that moves bytes: a connection cut at its
  opening would not even report its peer's address.)
- Stream faults combine: any Close wins (an RST over a FIN over a half-close), then
  Stalled, then the latest Wait, then Discard; otherwise Deliver the smallest cap. A
  fault with ``after_bytes`` caps delivery at its activation offset, so it starts
  exactly at that byte.
  :func:`combine` applies the same rule to the actions of stacked plans (an
  executor layering several scopes on one socket).
- The report (:attr:`Plan.report`) lists each fault the first time it acts on a
  connection and direction, and every close or reset, with the byte offset. It keeps
  the latest ``max_events`` events (10,000 by default) and counts the older ones it
  dropped, so a long-lived plan stays bounded. Each :class:`Connection` also keeps its
  own stream events (``conn.events``, freed with it), and ``on_event`` sees every
  event as it is recorded (it must not call the plan).
- An ``observer`` (:class:`Observer`) sees everything the executor tells the plan,
  faults or not: each attempt and its outcome, each connection opened and closed,
  bytes passed and ends of stream. While a plan has one, its streams are never idle
  (the executor's fast path would bypass it): this is how a run is recorded
  (:mod:`sockwork.faults.exploration.recorder`) through the same engine.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Literal, Protocol

from sockwork.faults.action import (
    Action,
    Close,
    Deliver,
    Discard,
    Fail,
    Hang,
    Proceed,
    Read,
    Refused,
    Stalled,
    Wait,
    combine,
)
from sockwork.faults.effect import Bucket, Effect, effect_for
from sockwork.faults.report import Event, Report
from sockwork.faults.vocabulary import (
    AcceptDelay,
    AcceptFault,
    CloseOnAccept,
    ConnectDelay,
    ConnectFault,
    ConnectTimeout,
    DnsFailure,
    DnsFault,
    Fault,
    Refuse,
    StreamFault,
)

__all__ = [
    "Action",
    "Close",
    "Connection",
    "Deliver",
    "Discard",
    "Event",
    "Fail",
    "Hang",
    "Observer",
    "Plan",
    "Proceed",
    "Read",
    "Refused",
    "Report",
    "Stalled",
    "Stream",
    "Wait",
    "combine",
]


class Observer(Protocol):
    """Sees everything an executor tells a plan (see ``# Rules:``); must not call the plan."""

    def attempt(self, kind: str, index: int, now: float, label: str, outcome: Action) -> None:
        """A connect, accept or resolve attempt (numbered per kind) was decided."""

    def opened(self, conn: Connection, now: float) -> None:
        """A connection was opened (``conn.index`` counts streams of this plan)."""

    def passed(self, stream: Stream, n: int, now: float) -> None:
        """``n`` bytes passed ``stream`` (``stream.offset`` is the offset after them)."""

    def ended(self, stream: Stream, now: float) -> None:
        """``stream`` reached its end: the peer's EOF (recv) or the owner's FIN (send)."""

    def closed(self, conn: Connection, now: float | None) -> None:
        """``conn`` ended (its socket closed); ``now`` is None when unknown."""


# --- the plan -----------------------------------------------------------------------


class Plan:
    """The decisions of one scope: fed attempts, bytes and time; hands back actions.

    Args:
        faults: the faults in force (any mix of kinds; the order breaks ties).
        rng: the only source of randomness. Seed it and pass the seed as ``seed``.
        now: the scope's start on the executor's clock.
        seed: the seed of ``rng``, reported so that a run can be replayed.
        max_events: how many of the latest events the report keeps (older ones are
            counted in ``Report.dropped``); bounds a long-lived plan's memory.
        on_event: called with each event as it is recorded (an incremental reader);
            it must not call back into the plan.
        observer: sees every attempt, connection and byte (see :class:`Observer`).
    """

    def __init__(
        self,
        faults: Iterable[Fault] = (),
        *,
        rng: random.Random,
        now: float,
        seed: int | None = None,
        max_events: int = 10_000,
        on_event: Callable[[Event], None] | None = None,
        observer: Observer | None = None,
    ) -> None:
        if isinstance(max_events, bool) or not isinstance(max_events, int):
            raise TypeError(f"max_events must be an int, got {type(max_events).__name__}")
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self._faults: tuple[Fault, ...] = ()
        self._rng = rng
        self._start = now
        self.seed = seed
        self._events: deque[Event] = deque(maxlen=max_events)
        self._dropped = 0
        self._on_event = on_event
        self.observer = observer
        self._counts = {"connect": 0, "accept": 0, "resolve": 0, "stream": 0}
        self._buckets: dict[str, Bucket] = {}  # Bandwidth groups
        self._connections: dict[int, Connection] = {}  # open ones, by index
        self.update(faults, now=now)

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The faults in force."""
        return self._faults

    @property
    def report(self) -> Report:
        """A snapshot of what the faults did so far."""
        return Report(self.seed, tuple(self._events), self._dropped)

    @property
    def connections_open(self) -> int:
        """How many connections were opened and not yet closed (the plan holds their state)."""
        return len(self._connections)

    @property
    def has_stream_faults(self) -> bool:
        """True when some fault in force can act on the bytes of a connection."""
        if self.observer is not None:
            return True  # the observer sees every byte
        return any(isinstance(f, StreamFault) and f.probability > 0 for f in self._faults)

    def update(self, faults: Iterable[Fault], *, now: float) -> None:
        """Replace the faults in force; open connections keep the state of unchanged ones."""
        new = tuple(faults)
        for f in new:
            if not isinstance(f, Fault):
                raise TypeError(f"not a fault: {f!r} (use the classes of sockwork.faults)")
        self._faults = new
        for conn in self._connections.values():
            conn._refresh(now)

    # -- connect phase --

    def _draw(self, fault: Fault) -> bool:
        if fault.probability >= 1.0:
            return True
        if fault.probability <= 0.0:
            return False
        return self._rng.random() < fault.probability

    def _selected(self, kind: str, cls: type[Fault], now: float) -> tuple[int, list[Fault]]:
        self._counts[kind] += 1
        index = self._counts[kind]
        chosen = [
            f
            for f in self._faults
            if isinstance(f, cls)
            and f.probability > 0
            and f.applies_to(index)
            and now >= self._start + f.after_seconds
            and self._draw(f)
        ]
        return index, chosen

    def _record(
        self,
        fault: Fault,
        what: str,
        kind: str,
        index: int,
        now: float,
        label: str,
        direction: str | None = None,
        offset: int = 0,
        conn: Connection | None = None,
    ) -> None:
        event = Event(fault, what, kind, index, direction, offset, now - self._start, label)
        if len(self._events) == self._events.maxlen:
            self._dropped += 1
        self._events.append(event)
        if conn is not None:
            conn.events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def connect(self, *, now: float, label: str = "") -> tuple[Action, ...]:
        """Decide one outgoing connection attempt: ``(Wait?, Proceed|Refused|Hang)``."""
        index, chosen = self._selected("connect", ConnectFault, now)
        delay = 0.0
        terminal: Action = Proceed()
        for f in chosen:
            if isinstance(f, ConnectDelay):
                delay += f.seconds
                self._record(f, "delay", "connect", index, now, label)
            elif isinstance(f, Refuse) and isinstance(terminal, Proceed):
                terminal = Refused()
                self._record(f, "refuse", "connect", index, now, label)
            elif isinstance(f, ConnectTimeout) and isinstance(terminal, Proceed):
                terminal = Hang(now + f.kernel_timeout)
                self._record(f, "timeout", "connect", index, now, label)
        return self._decided("connect", index, now, label, delay, terminal)

    def accept(self, *, now: float, label: str = "") -> tuple[Action, ...]:
        """Decide one incoming connection that arrived at ``now``: ``(Wait?, Proceed|Close)``."""
        index, chosen = self._selected("accept", AcceptFault, now)
        delay = 0.0
        terminal: Action = Proceed()
        for f in chosen:
            if isinstance(f, AcceptDelay):
                delay += f.seconds
                self._record(f, "delay", "accept", index, now, label)
            elif isinstance(f, CloseOnAccept) and isinstance(terminal, Proceed):
                terminal = Close(f.reset)
                self._record(f, "reset" if f.reset else "close", "accept", index, now, label)
        return self._decided("accept", index, now, label, delay, terminal)

    def resolve(self, *, now: float, label: str = "") -> tuple[Action, ...]:
        """Decide one name look-up: ``(Wait?, Proceed|Fail)``."""
        index, chosen = self._selected("resolve", DnsFault, now)
        delay = 0.0
        terminal: Action = Proceed()
        for f in chosen:
            if isinstance(f, DnsFailure) and isinstance(terminal, Proceed):
                delay += f.delay
                terminal = Fail(f.kind)
                self._record(f, "fail", "resolve", index, now, label)
        return self._decided("resolve", index, now, label, delay, terminal)

    def _decided(
        self, kind: str, index: int, now: float, label: str, delay: float, terminal: Action
    ) -> tuple[Action, ...]:
        if self.observer is not None:
            self.observer.attempt(kind, index, now, label, terminal)
        return (Wait(now + delay), terminal) if delay > 0 else (terminal,)

    # -- streams --

    def open(self, *, now: float, label: str = "") -> Connection:
        """Start the two streams of a new connection (numbered from 1 per plan)."""
        self._counts["stream"] += 1
        conn = Connection(self, self._counts["stream"], now, label)
        self._connections[conn.index] = conn
        if self.observer is not None:
            self.observer.opened(conn, now)
        return conn


class Connection:
    """The two streams of one connection; made by :meth:`Plan.open`.

    ``events`` lists what the faults did on this connection's streams, in order
    (all of them, whatever the plan's ``max_events``).
    """

    def __init__(self, plan: Plan, index: int, now: float, label: str) -> None:
        self._plan = plan
        self.index = index
        self.label = label
        self.opened = now
        self.closed = False
        self.events: list[Event] = []
        self.send = Stream(plan, self, "send")
        self.recv = Stream(plan, self, "recv")
        self._refresh(now)

    def stream(self, direction: Literal["send", "recv"]) -> Stream:
        """Return the stream of that direction."""
        return self.send if direction == "send" else self.recv

    def close(self) -> None:
        """The connection ended: the plan forgets it at once (idempotent)."""
        if not self.closed:
            self.closed = True
            self._plan._connections.pop(self.index, None)
            if self._plan.observer is not None:
                self._plan.observer.closed(self, None)

    def _refresh(self, now: float) -> None:
        self.send._refresh(now)
        self.recv._refresh(now)


class Stream:
    """One direction of a connection: fed bytes and time, hands back the next action.

    See the module's ``# Rules:`` for the loop an executor runs.
    """

    def __init__(self, plan: Plan, conn: Connection, direction: Literal["send", "recv"]) -> None:
        self.plan = plan
        self.conn = conn
        self.direction = direction
        self.offset = 0  # bytes passed (delivered or discarded)
        self.pending = 0  # bytes fed and not passed
        self.eof_at: float | None = None
        self._arrivals: deque[list[float]] = deque()  # [remaining, arrival time]
        self._decided: list[tuple[Fault, Effect | None]] = []
        self._effects: list[Effect] = []
        self._terminal: Close | None = None

    @property
    def eof(self) -> bool:
        """True once :meth:`feed_eof` was called."""
        return self.eof_at is not None

    @property
    def head_arrival(self) -> float:
        """When the oldest pending byte was fed (``inf`` when nothing is pending)."""
        return self._arrivals[0][1] if self._arrivals else float("inf")

    @property
    def idle(self) -> bool:
        """True when no fault acts on this stream: executors may take a fast path."""
        return not self._effects and self._terminal is None and self.plan.observer is None

    @property
    def closed(self) -> Close | None:
        """The Close this stream returned, if any."""
        return self._terminal

    def _refresh(self, now: float) -> None:
        # Faults kept across an update keep their state and their probability draw;
        # only new faults are drawn.
        previous = list(self._decided)
        decided: list[tuple[Fault, Effect | None]] = []
        for f in self.plan.faults:
            if not isinstance(f, StreamFault) or f.probability <= 0:
                continue
            if not f.acts_on(self.direction) or not f.applies_to(self.conn.index):
                continue
            match = next((i for i, (g, _) in enumerate(previous) if g is f), None)
            if match is None:
                match = next((i for i, (g, _) in enumerate(previous) if g == f), None)
            if match is not None:
                decided.append(previous.pop(match))
            else:
                effect = (
                    effect_for(f, self, self.plan._rng, self.plan._buckets)
                    if self.plan._draw(f)
                    else None
                )
                decided.append((f, effect))
        self._decided = decided
        self._effects = [effect for _, effect in decided if effect is not None]

    def feed(self, n: int, now: float) -> None:
        """Record that ``n`` more bytes are waiting to pass, since ``now``."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            return
        self.pending += n
        self._arrivals.append([float(n), now])
        for s in self._effects:
            if s.active(now):
                s.fed(n, now)

    def feed_eof(self, now: float) -> None:
        """Record that the source ended: nothing more will be fed."""
        if self.eof_at is None:
            self.eof_at = now
            if self.plan.observer is not None:
                self.plan.observer.ended(self, now)

    def unfeed(self) -> int:
        """Take back every pending byte (the executor will not pass them); return how many."""
        n = self.pending
        self.pending = 0
        self._arrivals.clear()
        for s in self._effects:
            s.unfed()
        return n

    def passed(self, n: int, now: float) -> None:
        """Record that ``n`` pending bytes passed (delivered or discarded)."""
        if n < 0 or n > self.pending:
            raise ValueError(f"passed n must be between 0 and pending={self.pending}, got {n}")
        self.pending -= n
        self.offset += n
        left = n
        while left > 0 and self._arrivals:
            head = self._arrivals[0]
            take = min(left, int(head[0]))
            head[0] -= take
            left -= take
            if head[0] <= 0:
                self._arrivals.popleft()
        for s in self._effects:
            if s.start_offset is not None:
                s.passed(n, now)
        if n and self.plan.observer is not None:
            self.plan.observer.passed(self, n, now)

    def close_due(self, now: float) -> bool:
        """True when a half-close is due on this stream now, with no byte to move.

        Pure: no draw, no event. The executor then calls :meth:`next`, which
        returns the Close (and records it).
        """
        if self._terminal is not None:
            return False
        return any(s.closes(now) for s in self._effects)

    def _close(self, action: Close, effect: Effect | None, now: float) -> Close:
        self._terminal = action
        if effect is not None:
            self.plan._record(
                effect.fault,
                "reset" if action.reset else ("half-close" if action.half else "close"),
                "stream",
                self.conn.index,
                now,
                self.conn.label,
                self.direction,
                self.offset,
                self.conn,
            )
        return action

    def next(self, now: float) -> Action:
        """Return what to do now with the head of the pending bytes (see ``# Rules:``)."""
        if self._terminal is not None:
            return self._terminal
        caps: list[int] = []
        waits: list[float] = []
        untils: list[float] = []
        discard: Discard | None = None
        stalled = False
        for s in self._effects:
            if not s.active(now):
                f = s.fault
                if self.offset < f.after_bytes:
                    caps.append(f.after_bytes - self.offset)
                start = self.conn.opened + f.after_seconds
                if now < start:
                    untils.append(start)
                continue
            op = s.opinion(now)
            if op is None:
                continue
            if not s.reported:
                s.reported = True
                self.plan._record(
                    s.fault,
                    "fired",
                    "stream",
                    self.conn.index,
                    now,
                    self.conn.label,
                    self.direction,
                    self.offset,
                    self.conn,
                )
            if isinstance(op, Close):
                return self._close(op, s, now)
            if isinstance(op, int):
                caps.append(op)
            elif isinstance(op, Wait):
                waits.append(op.until)
            elif isinstance(op, Read):
                if op.until is not None:
                    untils.append(op.until)
            elif isinstance(op, Stalled):
                stalled = True
            elif isinstance(op, Discard) and discard is None:
                discard = op
        if stalled:
            return Stalled()
        if waits:
            return Wait(max(waits))
        cap = min(caps) if caps else None
        if self.pending == 0:
            if self.eof_at is not None:
                return self._close(Close(False), None, now)
            return Read(cap, min(untils) if untils else None)
        if discard is not None:
            return Discard(min(self.pending, cap) if cap is not None else self.pending)
        return Deliver(min(self.pending, cap) if cap is not None else self.pending)
