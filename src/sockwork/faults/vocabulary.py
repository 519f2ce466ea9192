"""The fault vocabulary: what a poor network does, as plain frozen values.

A fault says *what* happens to the bytes of a connection or to a connection
attempt, never *how*: :mod:`sockwork.faults.plan` turns faults into actions, and
two executors carry the actions out (socket patching in
:mod:`sockwork.faults.patch`, and the asyncio proxy in :mod:`sockwork.proxy`).

# Rules:
- Every fault is a frozen dataclass. The main argument(s) may be positional; every
  option is keyword-only. Values are checked at construction: a bad one raises
  ``ValueError`` (or ``TypeError``) naming the argument and the accepted range.
- Common options (all faults): ``probability`` (0..1; drawn once per connection and
  direction for stream faults, once per attempt for connect, accept and DNS faults;
  0 means the fault is a true no-op: no draw, no socket option, no report entry),
  ``connections`` (which connections of the scope it applies to: an int N means the
  first N; a range or a collection of 1-based indices means exactly those; None: all;
  "from the Nth on" is ``range(N, sys.maxsize)``: ranges are checked in O(1)),
  ``after_seconds`` (inactive until that many seconds after the connection opened, or
  for connect/accept/DNS faults after the scope started).
- Stream faults also take ``direction`` and ``after_bytes`` (inactive until that many
  bytes have passed in that direction). ``direction`` is seen from the application
  that owns the socket: ``"send"`` is what it writes, ``"recv"`` what it reads,
  ``"both"`` applies the fault to each direction independently. A proxy is the
  client's network: ``"send"`` is upstream (client to server), ``"recv"`` downstream.
- Connections are numbered per kind, from 1, in the order the scope sees them:
  connect attempts, accepted connections, DNS look-ups and opened streams each have
  their own count.
- Sizes are bytes, durations seconds, rates bytes per second (see
  :mod:`sockwork.faults.units` for parsing ``"200ms"``, ``"10KB"``, ``"1MiB/s"``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import KW_ONLY, MISSING, dataclass, fields
from typing import Literal

__all__ = [
    "AcceptDelay",
    "AcceptFault",
    "Bandwidth",
    "Blackhole",
    "CloseAfter",
    "CloseOnAccept",
    "Coalesce",
    "ConnectDelay",
    "ConnectFault",
    "ConnectTimeout",
    "Direction",
    "DnsFailure",
    "DnsFault",
    "FAULT_TYPES",
    "Fault",
    "HalfClose",
    "Latency",
    "Refuse",
    "ResetPeer",
    "Slice",
    "SlowClose",
    "Stall",
    "StreamFault",
    "Timeout",
    "fault_from_dict",
    "fault_to_dict",
]

Direction = Literal["send", "recv", "both"]
_DIRECTIONS = ("send", "recv", "both")


def _fail(owner: object, name: str, accepted: str, value: object) -> ValueError:
    return ValueError(f"{type(owner).__name__}: {name} must be {accepted}, got {value!r}")


def _check_seconds(owner: object, name: str, value: float, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{type(owner).__name__}: {name} must be a number of seconds, "
            f"got {type(value).__name__}"
        )
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        accepted = "a finite number > 0" if positive else "a finite number >= 0"
        raise _fail(owner, name, accepted, value)


def _check_count(owner: object, name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{type(owner).__name__}: {name} must be an int, got {type(value).__name__}"
        )
    if value < minimum:
        raise _fail(owner, name, f"an int >= {minimum}", value)


@dataclass(frozen=True, kw_only=True)
class Fault:
    """Base class of every fault: the options common to all of them.

    Args:
        probability: chance (0..1) that the fault applies to a connection (stream
            faults, drawn per direction) or to an attempt (connect, accept, DNS).
        connections: which connections it applies to: N for the first N, a range or
            collection of 1-based indices for exactly those, None for all;
            ``range(N, sys.maxsize)`` for the Nth and every later one.
        after_seconds: delay before the fault becomes active, from the connection's
            opening (stream faults) or the scope's start (others).
    """

    probability: float = 1.0
    connections: int | Collection[int] | None = None
    after_seconds: float = 0.0

    def __post_init__(self) -> None:
        p = self.probability
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(
                f"{type(self).__name__}: probability must be a number, got {type(p).__name__}"
            )
        if not 0.0 <= p <= 1.0:
            raise _fail(self, "probability", "between 0 and 1", p)
        c = self.connections
        if c is not None:
            if isinstance(c, bool):
                raise TypeError(
                    f"{type(self).__name__}: connections must be an int, a range "
                    "or a collection of ints"
                )
            if isinstance(c, int):
                _check_count(self, "connections", c, minimum=1)
            elif isinstance(c, range):
                # O(1): a range may be open-ended (range(N, sys.maxsize)); never walk it.
                if not c or (c[0] if c.step > 0 else c[-1]) < 1:
                    raise _fail(self, "connections", "a non-empty range of indices >= 1", c)
            else:
                items = frozenset(c)
                if not items or any(
                    isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in items
                ):
                    raise _fail(
                        self, "connections", "a non-empty collection of 1-based int indices", c
                    )
                object.__setattr__(self, "connections", items)
        _check_seconds(self, "after_seconds", self.after_seconds)

    def applies_to(self, index: int) -> bool:
        """Return True when the fault's ``connections`` trigger selects connection ``index``."""
        c = self.connections
        if c is None:
            return True
        if isinstance(c, int):
            return index <= c
        return index in c


@dataclass(frozen=True, kw_only=True)
class StreamFault(Fault):
    """A fault acting on the bytes of a connection, in one or both directions.

    Args:
        direction: ``"send"``, ``"recv"`` or ``"both"``, seen from the socket's owner.
        after_bytes: bytes that pass untouched in that direction before it activates.
    """

    direction: Direction = "both"
    after_bytes: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction not in _DIRECTIONS:
            raise _fail(self, "direction", "'send', 'recv' or 'both'", self.direction)
        _check_count(self, "after_bytes", self.after_bytes, minimum=0)

    def acts_on(self, direction: Literal["send", "recv"]) -> bool:
        """Return True when the fault applies to that direction of a connection."""
        return self.direction == "both" or self.direction == direction


@dataclass(frozen=True, kw_only=True)
class ConnectFault(Fault):
    """A fault acting on an outgoing connection attempt (``connect``)."""


@dataclass(frozen=True, kw_only=True)
class AcceptFault(Fault):
    """A fault acting on an incoming connection (``accept``)."""


@dataclass(frozen=True, kw_only=True)
class DnsFault(Fault):
    """A fault acting on a name look-up (``getaddrinfo``)."""


# --- stream faults ----------------------------------------------------------------


@dataclass(frozen=True)
class Latency(StreamFault):
    """Each chunk arrives ``seconds`` (plus or minus ``jitter``) after it was sent.

    The delay counts from when a chunk became available (sent by the application,
    or received by a proxy); order is kept. Jitter is uniform in
    ``[-jitter, +jitter)`` and never makes a delay negative. Default direction: recv
    (as Toxiproxy's downstream default: what the application reads arrives late;
    with both ends of a connection in one scope, each direction is delayed once).
    """

    seconds: float
    _: KW_ONLY
    jitter: float = 0.0
    direction: Direction = "recv"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_seconds(self, "seconds", self.seconds)
        _check_seconds(self, "jitter", self.jitter)


@dataclass(frozen=True)
class Bandwidth(StreamFault):
    """Bytes pass at most at ``bytes_per_second``, per connection or shared by a ``group``.

    Faults with the same ``group`` name share one budget across every connection and
    direction they act on (a per-proxy limit); ``group=None`` gives each connection
    and direction its own. Data passes in slices of at most 1/20 s worth of bytes.
    """

    bytes_per_second: float
    _: KW_ONLY
    group: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_seconds(self, "bytes_per_second", self.bytes_per_second, positive=True)
        if self.group is not None and not isinstance(self.group, str):
            raise TypeError(f"Bandwidth: group must be a str or None, got {self.group!r}")


@dataclass(frozen=True)
class Slice(StreamFault):
    """Short reads and short writes: data passes in pieces of ``min_bytes..max_bytes``.

    Each piece size is drawn uniformly; ``delay`` seconds pass after each piece.
    """

    max_bytes: int
    _: KW_ONLY
    min_bytes: int = 1
    delay: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_count(self, "max_bytes", self.max_bytes, minimum=1)
        _check_count(self, "min_bytes", self.min_bytes, minimum=1)
        if self.min_bytes > self.max_bytes:
            raise _fail(self, "min_bytes", f"<= max_bytes ({self.max_bytes})", self.min_bytes)
        _check_seconds(self, "delay", self.delay)


@dataclass(frozen=True)
class Coalesce(StreamFault):
    """Writes that follow each other within ``window`` seconds pass as one chunk.

    The first byte waits up to ``window`` for more to join it, up to ``max_bytes``.
    In-process this can only gather what the kernel already holds when the wait
    ends (a ``recv`` returns more at once); a proxy merges its reads. Default
    direction: recv.
    """

    _: KW_ONLY
    window: float = 0.01
    max_bytes: int = 65536
    direction: Direction = "recv"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_seconds(self, "window", self.window)
        _check_count(self, "max_bytes", self.max_bytes, minimum=1)


@dataclass(frozen=True)
class CloseAfter(StreamFault):
    """The connection is cut after ``bytes`` bytes pass in that direction.

    ``reset=False`` closes it with a FIN (the reader sees EOF, the writer later
    ``BrokenPipeError``); ``reset=True`` with an RST (``ConnectionResetError``,
    ECONNRESET). Counted from activation (see ``after_bytes``).
    """

    bytes: int
    _: KW_ONLY
    reset: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_count(self, "bytes", self.bytes, minimum=0)
        if not isinstance(self.reset, bool):
            raise TypeError(f"CloseAfter: reset must be a bool, got {self.reset!r}")


@dataclass(frozen=True)
class HalfClose(StreamFault):
    """One direction ends with a FIN after ``bytes`` bytes; the other keeps working.

    As if the sender of that direction called ``shutdown(SHUT_WR)`` there (RFC 9293
    section 3.6: a half-closed connection still carries data the other way).
    ``"send"`` (the default): the owner's own writing side is shut down after
    ``bytes`` bytes; the peer reads EOF, the owner's later sends raise
    ``BrokenPipeError`` (EPIPE, as after a real ``shutdown``), its receives go on.
    ``"recv"``: the owner sees the peer's FIN after ``bytes`` bytes (``recv``
    returns ``b""`` from then on; what the peer sends later is discarded) while
    the owner's sends go on reaching the peer. Counted from activation (see
    ``after_bytes``).
    """

    bytes: int
    _: KW_ONLY
    direction: Direction = "send"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_count(self, "bytes", self.bytes, minimum=0)


@dataclass(frozen=True)
class Stall(StreamFault):
    """Data stops passing and is not read: the writer gets real back-pressure.

    Reads block (and time out at the socket's timeout); writes fill the buffers and
    then block. Default direction: recv.
    """

    _: KW_ONLY
    direction: Direction = "recv"


@dataclass(frozen=True)
class Blackhole(StreamFault):
    """Data is read and discarded: the writer sees success, the reader sees nothing.

    Unlike :class:`Stall` the writer never feels back-pressure.
    """


@dataclass(frozen=True)
class Timeout(StreamFault):
    """Toxiproxy's ``timeout``: discard data, and close ``seconds`` after the last chunk.

    Every chunk re-arms the timer, so under steady traffic it is an idle timeout.
    ``seconds=0`` never closes (a :class:`Blackhole`). ``reset=True`` closes with RST.
    """

    seconds: float
    _: KW_ONLY
    reset: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_seconds(self, "seconds", self.seconds)


@dataclass(frozen=True)
class ResetPeer(StreamFault):
    """Toxiproxy's ``reset_peer``: on the first chunk, discard it, wait ``seconds``, send RST.

    Idle connections are never reset: it waits for data. ``seconds=0`` resets at once.
    """

    seconds: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_seconds(self, "seconds", self.seconds)


@dataclass(frozen=True)
class SlowClose(StreamFault):
    """Data passes, but the end of the stream (FIN) is held back ``seconds``."""

    seconds: float

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_seconds(self, "seconds", self.seconds)


# --- connect, accept and DNS faults -----------------------------------------------


@dataclass(frozen=True)
class Refuse(ConnectFault):
    """The connection attempt is refused: ``ConnectionRefusedError`` (ECONNREFUSED)."""


@dataclass(frozen=True)
class ConnectDelay(ConnectFault):
    """The connection attempt takes ``seconds`` longer (a slow SYN/ACK).

    A blocking socket whose timeout is shorter raises ``TimeoutError``.
    """

    seconds: float

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_seconds(self, "seconds", self.seconds)


@dataclass(frozen=True)
class ConnectTimeout(ConnectFault):
    """The SYN is never answered: the attempt times out.

    With a socket timeout ``t`` the caller gets ``TimeoutError`` after ``t``; without
    one, ``TimeoutError`` (ETIMEDOUT) after ``kernel_timeout`` seconds (Linux gives up
    after about 127 s with ``tcp_syn_retries=6``).
    """

    _: KW_ONLY
    kernel_timeout: float = 127.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_seconds(self, "kernel_timeout", self.kernel_timeout)


@dataclass(frozen=True)
class AcceptDelay(AcceptFault):
    """An incoming connection is handed to ``accept`` ``seconds`` after it arrived."""

    seconds: float

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_seconds(self, "seconds", self.seconds)


@dataclass(frozen=True)
class CloseOnAccept(AcceptFault):
    """An incoming connection is closed as soon as it is accepted (FIN, or RST with ``reset``).

    The client sees its connect succeed, then EOF (or ``ConnectionResetError``).
    In-process, the server's ``accept`` does not return that connection.
    """

    _: KW_ONLY
    reset: bool = False


DnsKind = Literal["noname", "again"]


@dataclass(frozen=True)
class DnsFailure(DnsFault):
    """A name look-up fails after ``delay`` seconds with ``socket.gaierror``.

    ``kind="noname"`` gives EAI_NONAME ("Name or service not known"),
    ``kind="again"`` EAI_AGAIN ("Temporary failure in name resolution").
    """

    kind: DnsKind = "noname"
    _: KW_ONLY
    delay: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in ("noname", "again"):
            raise _fail(self, "kind", "'noname' or 'again'", self.kind)
        _check_seconds(self, "delay", self.delay)


# --- plain-data form (configuration files, environment, HTTP APIs) ----------------

FAULT_TYPES: dict[str, type[Fault]] = {
    cls.__name__: cls
    for cls in (
        Latency,
        Bandwidth,
        Slice,
        Coalesce,
        CloseAfter,
        HalfClose,
        Stall,
        Blackhole,
        Timeout,
        ResetPeer,
        SlowClose,
        Refuse,
        ConnectDelay,
        ConnectTimeout,
        AcceptDelay,
        CloseOnAccept,
        DnsFailure,
    )
}


# A longer range (e.g. the open-ended range(N, sys.maxsize)) is written as
# {"start", "stop", "step"} rather than listed.
_LISTED_RANGE = 1024


def fault_to_dict(fault: Fault) -> dict[str, object]:
    """Return ``fault`` as JSON-ready data: ``{"type": "Latency", "seconds": 0.2, ...}``.

    Only values that differ from the defaults are included. ``connections`` is a
    sorted list, or ``{"start": N, "stop": M, "step": 1}`` for a range of more than
    1024 indices (such as the open-ended ``range(N, sys.maxsize)``).
    """
    data: dict[str, object] = {"type": type(fault).__name__}
    for f in fields(fault):
        value = getattr(fault, f.name)
        if f.default is not MISSING and value == f.default:
            continue
        if isinstance(value, range) and value[_LISTED_RANGE:]:
            value = {"start": value.start, "stop": value.stop, "step": value.step}
        elif isinstance(value, (frozenset, range)):
            value = sorted(value)
        data[f.name] = value
    return data


def fault_from_dict(data: Mapping[str, object]) -> Fault:
    """Build a fault from :func:`fault_to_dict`'s form; raises ValueError on unknown names."""
    kind = data.get("type")
    cls = FAULT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown fault type {kind!r}; known: {', '.join(sorted(FAULT_TYPES))}")
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in data.items() if k != "type"}
    c = kwargs.get("connections")
    if isinstance(c, Mapping):
        try:
            kwargs["connections"] = range(c["start"], c["stop"], c.get("step", 1))
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"{kind}: connections as a mapping needs int start, stop (and step), got {c!r}"
            ) from exc
    unknown = set(kwargs) - names
    if unknown:
        raise ValueError(f"{kind}: unknown argument(s) {', '.join(sorted(unknown))}")
    return cls(**kwargs)  # type: ignore[arg-type]
