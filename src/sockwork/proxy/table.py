"""The faults installed on a proxy, by name, and what its plan gets (sans-IO).

# Rules:
# - An entry is what the user installed (name, fault as given, proxy direction) and the
#   faults the plan gets for it ("planned"): the direction set in the fault vocabulary's
#   terms, and ``connections`` narrowed by the scope.
# - Connections are numbered from 1 per proxy, accepted clients and opened streams each
#   on their own count (as the plan numbers them). The table is told of each
#   (``accepted()``, ``opened()``), so ``scope="new"`` knows which numbers are still to come.
# - ``scope="new"`` on add: the planned fault selects only numbers still to come.
#   On update: the new values select only numbers to come, and the old values stay, narrowed
#   to the numbers already given, so open connections keep the old version. A fault that
#   can no longer select any connection is not planned at all.
# - Listener faults (Refuse, ConnectTimeout) act on the listening socket, hence on every
#   new client: no probability, connections or after_seconds, and no scope to narrow.
# - Report events name the fault object the plan holds; ``name_of`` maps it back to the
#   entry's name, also after the entry was replaced (retired objects stay referenced, so
#   their ids are never reused).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from sockwork.faults.vocabulary import (
    AcceptFault,
    ConnectFault,
    ConnectTimeout,
    DnsFault,
    Fault,
    Refuse,
    StreamFault,
)
from sockwork.proxy.fault import FAULT_DIRECTION, PROXY_DIRECTION

__all__ = ["FaultTable", "InstalledFault", "Scope"]

#: ``"all"``: open connections and new ones; ``"new"``: connections accepted from now on.
Scope = Literal["all", "new"]

_Connections = int | Collection[int] | None


@dataclass(frozen=True)
class InstalledFault:
    """A fault installed on a proxy: its name, the fault as given, and its direction."""

    name: str
    fault: Fault
    direction: str


@dataclass(frozen=True)
class _Entry:
    name: str
    fault: Fault  # as given
    direction: str  # upstream | downstream | both | "" (not a stream fault)
    planned: tuple[Fault, ...]  # what the plan gets for it (direction and scope applied)


class FaultTable:
    """The named faults of one proxy, turned into the faults its plan gets.

    ``add``, ``update``, ``remove`` and ``clear`` change the table; ``planned`` is then
    the tuple to hand to ``Plan.update``. Nothing here does I/O or reads a clock.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._names: dict[int, str] = {}  # id(planned fault) -> entry name
        self._retired: list[Fault] = []  # keeps ids of replaced planned faults valid
        self._accepts = 0
        self._streams = 0

    # --- what the proxy reads ---------------------------------------------------------

    @property
    def installed(self) -> tuple[InstalledFault, ...]:
        """The installed faults, in the order they were added."""
        return tuple(InstalledFault(e.name, e.fault, e.direction) for e in self._entries.values())

    @property
    def planned(self) -> tuple[Fault, ...]:
        """The faults the plan must hold now."""
        return tuple(f for e in self._entries.values() for f in e.planned)

    @property
    def refuses(self) -> bool:
        """True while a Refuse fault is installed (the listener must be closed)."""
        return any(isinstance(e.fault, Refuse) for e in self._entries.values())

    @property
    def tarpits(self) -> bool:
        """True while a ConnectTimeout fault is installed (connects must time out)."""
        return any(isinstance(e.fault, ConnectTimeout) for e in self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def name_of(self, fault: Fault) -> str:
        """The name of the entry a planned fault belongs (or belonged) to."""
        return self._names.get(id(fault), type(fault).__name__)

    # --- connection numbering -----------------------------------------------------------

    def accepted(self) -> None:
        """A client was accepted (accept faults count these)."""
        self._accepts += 1

    def opened(self) -> None:
        """A connection reached the upstream (stream faults count these)."""
        self._streams += 1

    # --- changes --------------------------------------------------------------------------

    def add(
        self,
        fault: Fault,
        *,
        direction: str | None = None,
        name: str | None = None,
        scope: Scope = "all",
    ) -> str:
        """Install ``fault``; return its name (default ``<type>_<direction>``).

        Raises:
            ValueError: a name in use, a bad direction or scope, or a fault a proxy
                cannot produce.
            TypeError: ``fault`` is not a sockwork fault.
        """
        entry_direction = _entry_direction(fault, direction)
        _check_scope(scope)
        if name is None:
            kind = type(fault).__name__.lower()
            name = f"{kind}_{entry_direction}" if entry_direction else kind
        if name in self._entries:
            raise ValueError(f"a fault named {name!r} exists; remove it or pick another name")
        planned = self._narrowed(_directed(fault, entry_direction), first=scope == "new")
        self._install(_Entry(name, fault, entry_direction, planned))
        return name

    def update(self, name: str, fault: Fault, *, scope: Scope = "all") -> None:
        """Replace the fault called ``name`` by ``fault``, in the same direction.

        ``scope="all"``: every connection gets the new values (open ones restart the
        fault). ``scope="new"``: connections from now on get the new values, open ones
        keep the old.

        Raises:
            KeyError: no fault has that name.
        """
        _check_scope(scope)
        old = self._entries.get(name)
        if old is None:
            raise KeyError(f"no fault named {name!r}")
        direction = _entry_direction(fault, old.direction or None)
        planned = self._narrowed(_directed(fault, direction), first=scope == "new")
        if scope == "new":
            kept = tuple(g for f in old.planned for g in self._narrowed(f, last=True))
            planned = kept + planned
        self._retire(old)
        self._install(_Entry(name, fault, direction, planned))

    def remove(self, name: str) -> None:
        """Remove the fault called ``name``.

        Raises:
            KeyError: no fault has that name.
        """
        entry = self._entries.pop(name, None)
        if entry is None:
            raise KeyError(f"no fault named {name!r}")
        self._retire(entry)

    def clear(self) -> None:
        """Remove every fault."""
        for entry in self._entries.values():
            self._retire(entry)
        self._entries.clear()

    # --- internals ------------------------------------------------------------------------

    def _install(self, entry: _Entry) -> None:
        self._entries[entry.name] = entry
        for planned in entry.planned:
            self._names[id(planned)] = entry.name

    def _retire(self, entry: _Entry) -> None:
        self._retired.extend(entry.planned)

    def _narrowed(
        self, fault: Fault, *, first: bool = False, last: bool = False
    ) -> tuple[Fault, ...]:
        """``fault`` limited to connections still to come (first) or already given (last)."""
        if not (first or last):
            return (fault,)
        if isinstance(fault, AcceptFault):
            given = self._accepts
        elif isinstance(fault, StreamFault):
            given = self._streams
        else:
            return (fault,)  # listener faults act on the listener, not on connections
        chosen = (
            _from_index(fault.connections, given + 1)
            if first
            else _until_index(fault.connections, given)
        )
        if chosen is None:
            return ()  # no connection it could select is left
        return (dataclasses.replace(fault, connections=chosen),)


def _directed(fault: Fault, direction: str) -> Fault:
    """The fault with the vocabulary's direction for a proxy direction."""
    if isinstance(fault, StreamFault) and direction:
        return dataclasses.replace(fault, direction=FAULT_DIRECTION[direction])
    return fault


def _from_index(connections: _Connections, first: int) -> int | range | frozenset[int] | None:
    """Intersect a ``connections`` trigger with "index ``first`` and later"."""
    if connections is None:
        return range(first, sys.maxsize)  # the vocabulary's open-ended form
    if isinstance(connections, int):
        return range(first, connections + 1) if connections >= first else None
    if isinstance(connections, range):
        # In O(1): the range may be open-ended. Keep its step, from its first index >= first.
        r = connections if connections.step > 0 else connections[::-1]
        skip = max(0, -((r.start - first) // r.step))  # ceil((first - start) / step)
        return r[skip:] or None
    chosen = frozenset(i for i in connections if i >= first)
    return chosen or None


def _until_index(connections: _Connections, last: int) -> int | range | frozenset[int] | None:
    """Intersect a ``connections`` trigger with "index ``last`` and earlier"."""
    if last < 1:
        return None
    if connections is None:
        return last  # an int N selects the first N
    if isinstance(connections, int):
        return min(connections, last)
    if isinstance(connections, range):
        r = connections if connections.step > 0 else connections[::-1]
        kept = range(r.start, min(r.stop, last + 1), r.step)
        return kept or None
    chosen = frozenset(i for i in connections if i <= last)
    return chosen or None


def _entry_direction(fault: object, direction: str | None) -> str:
    """The proxy direction a fault is installed in ('' for accept faults and Refuse)."""
    if not isinstance(fault, Fault):
        raise TypeError(f"not a fault: {fault!r} (use the classes of sockwork.faults)")
    if isinstance(fault, DnsFault) or (
        isinstance(fault, ConnectFault) and not isinstance(fault, (Refuse, ConnectTimeout))
    ):
        raise ValueError(
            f"a proxy cannot produce {type(fault).__name__}: the kernel completes the "
            "client's connect before the proxy sees it; use sockwork.faults.inject "
            "in-process, or AcceptDelay/CloseOnAccept/Refuse/ConnectTimeout on the proxy"
        )
    if isinstance(fault, (Refuse, ConnectTimeout)) and (
        fault.probability != 1.0 or fault.connections is not None or fault.after_seconds
    ):
        raise ValueError(
            f"a proxy applies {type(fault).__name__} to its listening socket, hence to every "
            "new client: it takes no probability, connections or after_seconds "
            "(use CloseOnAccept to pick connections)"
        )
    if not isinstance(fault, StreamFault):
        return ""
    if direction is None:
        return PROXY_DIRECTION[fault.direction]
    if direction not in FAULT_DIRECTION:
        raise ValueError(
            "direction must be 'upstream' (client -> server), 'downstream' "
            f"(server -> client) or 'both', got {direction!r}"
        )
    return direction


def _check_scope(scope: str) -> None:
    if scope not in ("all", "new"):
        raise ValueError(f"scope must be 'all' or 'new', got {scope!r}")
