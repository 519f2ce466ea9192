"""The report: what the faults of a plan did, as events, and the seed that replays it.

A plan records an :class:`Event` each time a fault first acts on a connection and
direction, and at every close, reset, refusal, delay or failure; :class:`Report` is a
snapshot of the latest ones (see ``Plan(max_events=)``). Events have a JSON form so
that a run's record can be stored and read back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from sockwork.faults.vocabulary import Fault, fault_from_dict, fault_to_dict

__all__ = ["Event", "Report"]


@dataclass(frozen=True)
class Event:
    """One thing a fault did: which fault, on which connection, where and when.

    Attributes:
        fault: the fault that acted.
        what: ``"fired"`` (first action on this connection and direction),
            ``"close"``, ``"reset"``, ``"half-close"``, ``"refuse"``, ``"delay"``,
            ``"timeout"``, ``"fail"``.
        kind: ``"stream"``, ``"connect"``, ``"accept"`` or ``"resolve"``.
        connection: index of the connection (per kind, from 1).
        direction: ``"send"``/``"recv"`` for streams, None otherwise.
        offset: bytes that had passed in that direction (0 outside streams).
        at: seconds since the plan started.
        label: what the executor said about the connection (address, role).
    """

    fault: Fault
    what: str
    kind: str
    connection: int
    direction: str | None
    offset: int
    at: float
    label: str = ""

    def to_json(self) -> dict[str, object]:
        """Return the event as JSON-ready data (the fault in ``fault_to_dict`` form)."""
        return {
            "fault": fault_to_dict(self.fault),
            "what": self.what,
            "kind": self.kind,
            "connection": self.connection,
            "direction": self.direction,
            "offset": self.offset,
            "at": round(self.at, 6),
            "label": self.label,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Event:
        """Build an event from :meth:`to_json`'s form; raises ValueError when malformed."""
        try:
            raw = data["fault"]
            if not isinstance(raw, Mapping):
                raise TypeError("'fault' must be an object")
            direction = data.get("direction")
            return cls(
                fault_from_dict(raw),
                str(data["what"]),
                str(data["kind"]),
                int(cast(int, data["connection"])),
                None if direction is None else str(direction),
                int(cast(int, data.get("offset", 0))),
                float(cast(float, data.get("at", 0.0))),
                str(data.get("label", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed fault event {dict(data)!r}: {exc}") from exc

    def __str__(self) -> str:
        where = f"{self.kind} #{self.connection}"
        if self.label:
            where += f" ({self.label})"
        if self.direction is not None:
            where += f" {self.direction} at byte {self.offset}"
        return f"+{self.at:.3f}s {self.what}: {self.fault!r} on {where}"


@dataclass(frozen=True)
class Report:
    """What the faults of one plan did, and the seed that replays it.

    ``events`` are the latest ones the plan kept (see ``Plan(max_events=)``);
    ``dropped`` counts the earlier ones it let go.
    """

    seed: int | None
    events: tuple[Event, ...] = field(default=())
    dropped: int = 0

    def fired(self, fault_type: type[Fault] | None = None) -> list[Event]:
        """Return the events, only those of ``fault_type`` when given."""
        if fault_type is None:
            return list(self.events)
        return [e for e in self.events if isinstance(e.fault, fault_type)]

    def __str__(self) -> str:
        lines = [f"sockwork faults report (seed={self.seed}): {len(self.events)} event(s)"]
        if self.dropped:
            lines[0] += f" (and {self.dropped} earlier event(s) dropped)"
        lines.extend(f"  {event}" for event in self.events)
        return "\n".join(lines)
