"""Start faults in a process from its environment (used by ``sockwork run``).

``sockwork run`` puts ``sockwork/faults/_site`` first on ``PYTHONPATH``; its
``sitecustomize`` calls :func:`start_from_environment`, which reads
``SOCKWORK_FAULTS`` (JSON: ``{"faults": [...], "seed": 7, "match": {...},
"report": true}``) and enters an ``inject`` scope for the life of the process.
Then it imports the ``sitecustomize`` the interpreter would have used, if any.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from collections.abc import Mapping

from sockwork.faults.inject import Injection, Match, inject
from sockwork.faults.vocabulary import fault_from_dict

__all__ = ["ENVIRONMENT_VARIABLE", "start_from_environment", "start_from_spec"]

ENVIRONMENT_VARIABLE = "SOCKWORK_FAULTS"

_scope: Injection | None = None


def start_from_spec(spec: Mapping[str, object]) -> Injection:
    """Enter an ``inject`` scope described by ``spec`` for the rest of the process."""
    global _scope
    raw_faults = spec.get("faults", [])
    if not isinstance(raw_faults, list):
        raise ValueError(f"{ENVIRONMENT_VARIABLE}: 'faults' must be a list")
    faults = [fault_from_dict(item) for item in raw_faults]
    seed = spec.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise ValueError(f"{ENVIRONMENT_VARIABLE}: 'seed' must be an int")
    raw_match = spec.get("match") or {}
    if not isinstance(raw_match, dict):
        raise ValueError(f"{ENVIRONMENT_VARIABLE}: 'match' must be an object")
    match = Match(**raw_match) if raw_match else None
    scope = inject(*faults, match=match, seed=seed)
    scope.__enter__()
    _scope = scope
    report = bool(spec.get("report"))

    def stop() -> None:
        scope.remove()
        if report:
            sys.stderr.write(f"{scope.report}\n")
            sys.stderr.flush()

    atexit.register(stop)
    return scope


def start_from_environment() -> Injection | None:
    """Start the faults described by ``$SOCKWORK_FAULTS``; None when it is unset."""
    text = os.environ.get(ENVIRONMENT_VARIABLE)
    if not text:
        return None
    spec = json.loads(text)
    if not isinstance(spec, dict):
        raise ValueError(f"{ENVIRONMENT_VARIABLE} must hold a JSON object")
    return start_from_spec(spec)
