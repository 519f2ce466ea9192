"""A fault schedule: the faults of one exploration run, and how to reproduce it.

A :class:`Schedule` is what one run injects: a tuple of faults from the vocabulary
and the connections they select (``role``/``host``/``port``, the fields of
:class:`sockwork.faults.Match`). It prints itself in the three forms a user pastes
back: a ``@pytest.mark.netfaults(...)`` marker, ``sockwork.faults.inject(...)`` code
and a ``sockwork run ...`` command line.

# Rules:
- Sans-IO: plain data, no sockets; the subject turns ``match_fields`` into a Match.
- Two schedules are the same schedule when their faults and match are equal
  (faults are frozen dataclasses; ``connections`` is normalised to a frozenset).
- The sources printed are valid Python that builds equal faults.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import cast

from sockwork.faults.vocabulary import Fault, fault_from_dict, fault_to_dict

__all__ = ["Schedule", "fault_source"]

_ROLES = ("client", "server", "resolve")
_COMMON = frozenset({"probability", "connections", "after_seconds"})


def _literal(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, range):
        if value.step == 1:
            return f"range({value.start}, {value.stop})"
        return f"range({value.start}, {value.stop}, {value.step})"
    if isinstance(value, (frozenset, set)):
        return "{" + ", ".join(repr(v) for v in sorted(value)) + "}"
    return repr(value)


def fault_source(fault: Fault) -> str:
    """Return Python source that builds ``fault``: ``Slice(1, direction="recv")``.

    The main arguments are positional, options keyword; defaults are left out.
    """
    positional = [f for f in fields(fault) if not f.kw_only]
    # The options common to every fault (which connections, when) read best last.
    keywords = sorted((f for f in fields(fault) if f.kw_only), key=lambda f: f.name in _COMMON)
    args: list[str] = []
    needed = [f for f in positional if f.default is MISSING or getattr(fault, f.name) != f.default]
    if needed:
        last = positional.index(needed[-1])
        args += [_literal(getattr(fault, f.name)) for f in positional[: last + 1]]
    for f in keywords:
        value = getattr(fault, f.name)
        if f.default is not MISSING and value == f.default:
            continue
        args.append(f"{f.name}={_literal(value)}")
    return f"{type(fault).__name__}({', '.join(args)})"


@dataclass(frozen=True)
class Schedule:
    """The faults of one run and the connections they select.

    Attributes:
        faults: the faults, in the order they were added.
        role, host, port: the ``Match`` of the scope (None matches anything).
    """

    faults: tuple[Fault, ...] = ()
    role: str | None = None
    host: str | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "faults", tuple(self.faults))
        for f in self.faults:
            if not isinstance(f, Fault):
                raise TypeError(f"Schedule: not a fault: {f!r}")
        if self.role is not None and self.role not in _ROLES:
            raise ValueError(
                f"Schedule: role must be one of {', '.join(_ROLES)} or None, got {self.role!r}"
            )

    @property
    def match_fields(self) -> dict[str, object]:
        """The ``Match`` keyword arguments that are set: ``{"role": "client"}``."""
        return {
            k: v
            for k, v in (("role", self.role), ("host", self.host), ("port", self.port))
            if v is not None
        }

    @property
    def kinds(self) -> tuple[str, ...]:
        """The fault class names, in order: ``("Slice", "CloseAfter")``."""
        return tuple(type(f).__name__ for f in self.faults)

    def key(self) -> tuple[object, ...]:
        """A hashable identity: equal for schedules that inject the same thing.

        The order of the faults does not matter (the plan combines them by rule).
        """
        # Faults are frozen and hashable (``connections`` is a frozenset or a range).
        return (frozenset(self.faults), len(self.faults), self.role, self.host, self.port)

    def with_faults(self, faults: Sequence[Fault]) -> Schedule:
        """Return the same selection with other faults."""
        return Schedule(tuple(faults), self.role, self.host, self.port)

    # -- JSON --

    def to_json(self) -> dict[str, object]:
        """Return ``{"faults": [fault_to_dict...], "match": {...}}``."""
        return {"faults": [fault_to_dict(f) for f in self.faults], "match": self.match_fields}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Schedule:
        """Build a schedule from :meth:`to_json`'s form; raises ValueError when malformed."""
        raw = data.get("faults", [])
        match = data.get("match") or {}
        if not isinstance(raw, list) or not isinstance(match, Mapping):
            raise ValueError("schedule: 'faults' must be a list and 'match' an object")
        unknown = set(match) - {"role", "host", "port"}
        if unknown:
            raise ValueError(f"schedule: unknown match field(s) {', '.join(sorted(unknown))}")
        faults = tuple(fault_from_dict(cast(Mapping[str, object], item)) for item in raw)
        return cls(
            faults,
            cast("str | None", match.get("role")),
            cast("str | None", match.get("host")),
            cast("int | None", match.get("port")),
        )

    # -- reproductions --

    def _match_source(self) -> str | None:
        fields_ = self.match_fields
        if not fields_:
            return None
        return "Match(" + ", ".join(f"{k}={_literal(v)}" for k, v in fields_.items()) + ")"

    def _imports(self) -> str:
        names = sorted({type(f).__name__ for f in self.faults})
        return ", ".join(names)

    def pytest_source(self, *, seed: int) -> str:
        """The marker that replays this schedule on a test (run with ``--sockwork-seed``)."""
        args = [fault_source(f) for f in self.faults]
        match = self._match_source()
        if match is not None:
            args.append(f"match={match}")
        args.append(f"seed={seed}")
        return f"@pytest.mark.netfaults({', '.join(args)})"

    def python_source(self, *, seed: int, call: str = "test()") -> str:
        """``sockwork.faults.inject(...)`` code that replays this schedule around ``call``."""
        names = self._imports()
        match = self._match_source()
        imports = names + (", Match" if match is not None else "") + ", inject"
        args = [fault_source(f) for f in self.faults]
        if match is not None:
            args.append(f"match={match}")
        args.append(f"seed={seed}")
        return (
            f"from sockwork.faults import {imports}\n\nwith inject({', '.join(args)}):\n    {call}"
        )

    def cli_source(self, *, seed: int, command: Sequence[str] | None = None) -> str:
        """A ``sockwork run`` command line that replays this schedule on ``command``."""
        argv = ["sockwork", "run"]
        for f in self.faults:
            argv += ["--fault", json.dumps(fault_to_dict(f), separators=(",", ":"))]
        for name, value in self.match_fields.items():
            argv += [f"--match-{name}", str(value)]
        argv += ["--seed", str(seed), "--"]
        argv += list(command) if command else ["COMMAND"]
        return shlex.join(argv)

    def __str__(self) -> str:
        text = ", ".join(fault_source(f) for f in self.faults) or "(no faults)"
        match = self._match_source()
        return text if match is None else f"{text} on {match}"
