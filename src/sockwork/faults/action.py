"""The actions a plan hands to an executor, and how the actions of stacked plans combine.

An action is a frozen dataclass naming one thing to do: wait, read, deliver or discard
bytes, stall, close (FIN, RST or half-close), or end an attempt (proceed, refuse, hang,
fail). :mod:`sockwork.faults.plan` says when each is returned and what the executor
must do with it (its ``# Rules:``); socket patching and the proxy only execute them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Action",
    "Close",
    "Deliver",
    "Discard",
    "Fail",
    "Hang",
    "Proceed",
    "Read",
    "Refused",
    "Stalled",
    "Wait",
    "combine",
]


@dataclass(frozen=True)
class Proceed:
    """Go on normally (terminal action of connect, accept and resolve)."""


@dataclass(frozen=True)
class Wait:
    """Do nothing before ``until`` (the executor's clock), then ask again."""

    until: float


@dataclass(frozen=True)
class Read:
    """Nothing is pending: fetch at most ``max_bytes`` (None: any), come back by ``until``."""

    max_bytes: int | None = None
    until: float | None = None


@dataclass(frozen=True)
class Deliver:
    """Pass the next ``n`` pending bytes."""

    n: int


@dataclass(frozen=True)
class Discard:
    """Drop the next ``n`` pending bytes as if they had passed."""

    n: int


@dataclass(frozen=True)
class Stalled:
    """Pass nothing and read nothing, with no deadline of the plan's own."""


@dataclass(frozen=True)
class Close:
    """End the connection: FIN, or RST when ``reset`` is True.

    ``half``: end only this direction with a FIN (``shutdown(SHUT_WR)`` by its
    writer); the other direction keeps working.
    """

    reset: bool = False
    half: bool = False


@dataclass(frozen=True)
class Refused:
    """Refuse the connection attempt (ECONNREFUSED)."""


@dataclass(frozen=True)
class Hang:
    """The attempt never completes; the kernel would give up at ``until`` (ETIMEDOUT)."""

    until: float


@dataclass(frozen=True)
class Fail:
    """Fail the name look-up with ``socket.gaierror`` of this kind."""

    kind: Literal["noname", "again"]


Action = Proceed | Wait | Read | Deliver | Discard | Stalled | Close | Refused | Hang | Fail


def combine(actions: Sequence[Action]) -> Action:
    """Combine the actions of stacked plans (layers on one socket) for one stream.

    The rule is the one :meth:`sockwork.faults.plan.Stream.next` applies to the
    faults of one plan (see that module's ``# Rules:``): any Close wins (RST first,
    then a full FIN, then a half-close), then Stalled, then the latest Wait, then Read
    (smallest cap, earliest deadline), then Discard; otherwise Deliver the smallest
    amount. No action at all means nothing acts: ``Read(None, None)``.
    """
    if len(actions) == 1:
        return actions[0]
    if not actions:
        return Read(None, None)
    closes = [a for a in actions if isinstance(a, Close)]
    if closes:
        return min(closes, key=lambda c: (not c.reset, c.half))
    if any(isinstance(a, Stalled) for a in actions):
        return Stalled()
    waits = [a.until for a in actions if isinstance(a, Wait)]
    if waits:
        return Wait(max(waits))
    reads = [a for a in actions if isinstance(a, Read)]
    if reads:
        caps = [r.max_bytes for r in reads if r.max_bytes is not None]
        untils = [r.until for r in reads if r.until is not None]
        return Read(min(caps) if caps else None, min(untils) if untils else None)
    sizes = [a.n for a in actions if isinstance(a, (Deliver, Discard))]
    if any(isinstance(a, Discard) for a in actions):
        return Discard(min(sizes))
    return Deliver(min(sizes))
