"""Start faults in a process from its environment (used by ``sockwork run`` and ``explore``).

``sockwork run`` puts ``sockwork/faults/_site`` first on ``PYTHONPATH``; its
``sitecustomize`` calls :func:`start_from_environment`, which reads
``SOCKWORK_FAULTS`` (JSON: ``{"faults": [...], "seed": 7, "match": {...},
"report": true, "record": true, "output": "/tmp/dir"}``) and enters an ``inject``
scope for the life of the process. Then it imports the ``sitecustomize`` the
interpreter would have used, if any. :func:`child_environment` builds that
environment for a child.

# Rules:
- Every Python process that inherits the variable runs the hook (a program's Python
  children too), each with its own scope, plan and connection numbering.
- ``record``: a :class:`~sockwork.faults.exploration.recorder.Recorder` records the
  process's network activity (entered before the faults, as ``explore`` does
  in-process). ``output``: a directory where, at exit, the process writes
  ``<pid>.json`` (:data:`OUTPUT_FORMAT`): the trace, the fault events (what
  :func:`sockwork.faults.fired` returns) and the uncaught exception that ended it,
  if any; written whole then renamed, so a reader never sees half a file. On
  SIGUSR1 it writes the stacks of all its threads to ``<pid>.stacks``
  (``faulthandler``): a parent that finds it hung asks for them before killing it.
- A process that ends without running ``atexit`` handlers (``os._exit``, a signal)
  writes no ``<pid>.json``.
- The hook imports as little as it can: the recorder only when recording.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

from sockwork.faults.budget import now
from sockwork.faults.inject import Injection, Match, inject
from sockwork.faults.vocabulary import fault_from_dict

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "OUTPUT_FORMAT",
    "child_environment",
    "server_environment",
    "start_from_environment",
    "start_from_spec",
]

ENVIRONMENT_VARIABLE = "SOCKWORK_FAULTS"

#: Version of the ``<pid>.json`` files a process writes to ``output``::
#:
#:     {"format": 1, "pid": int, "started": float (time.time()), "argv": [...],
#:      "trace": Trace.to_json() | null, "events": [Event.to_json()...],
#:      "dropped": int,
#:      "error": {"type": str, "assertion": "yes" | "", "message": str, "traceback": str} | null}
OUTPUT_FORMAT = 1

_scope: Injection | None = None
_error: dict[str, str] | None = None
_keep: list[IO[str]] = []  # the faulthandler's file must stay open


def child_environment(
    spec: Mapping[str, object], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment that starts ``spec``'s faults in a Python child at start-up.

    ``base`` defaults to ``os.environ``. ``PYTHONPATH`` gets the start-up hook and
    the directory holding this ``sockwork`` first, so the child imports the same one.
    """
    env = dict(os.environ if base is None else base)
    here = Path(__file__).resolve().parent
    paths = [str(here / "_site"), str(here.parents[1])]  # _site, and the dir of sockwork/
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env[ENVIRONMENT_VARIABLE] = json.dumps(dict(spec))
    return env


def server_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Python that imports this ``sockwork`` and runs no hook."""
    env = dict(os.environ if base is None else base)
    env.pop(ENVIRONMENT_VARIABLE, None)
    root = str(Path(__file__).resolve().parents[2])  # the directory holding sockwork/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _on_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    global _error
    if not issubclass(kind, (SystemExit, KeyboardInterrupt)):
        text = str(value)
        name = kind.__qualname__
        if kind.__module__ != "builtins":
            name = f"{kind.__module__}.{name}"
        _error = {
            "type": name,
            "assertion": "yes" if issubclass(kind, AssertionError) else "",
            "message": text.splitlines()[0] if text else "",
            "traceback": "".join(traceback.format_exception(kind, value, tb)),
        }
    _previous_hook(kind, value, tb)


_previous_hook = sys.excepthook


def _watch(output: Path) -> None:
    """Record an uncaught exception, and dump the stacks on SIGUSR1 (see ``# Rules:``)."""
    global _previous_hook
    _previous_hook = sys.excepthook
    sys.excepthook = _on_uncaught
    try:
        import faulthandler
        import signal

        if hasattr(signal, "SIGUSR1"):
            stacks = open(output / f"{os.getpid()}.stacks", "w")  # noqa: SIM115 - kept open
            _keep.append(stacks)
            faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    except (OSError, RuntimeError, ValueError):
        pass  # no stacks on demand; everything else works


def _write(output: Path, data: Mapping[str, object]) -> None:
    final = output / f"{os.getpid()}.json"
    partial = output / f"{os.getpid()}.json.partial"
    try:
        partial.write_text(json.dumps(data), encoding="utf-8")
        os.replace(partial, final)
    except OSError as exc:
        sys.stderr.write(f"sockwork: cannot write {final}: {exc}\n")


def start_from_spec(spec: Mapping[str, object]) -> Injection:
    """Enter an ``inject`` scope described by ``spec`` for the rest of the process."""
    global _scope
    started = time.time()
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
    raw_output = spec.get("output")
    if raw_output is not None and not isinstance(raw_output, str):
        raise ValueError(f"{ENVIRONMENT_VARIABLE}: 'output' must be a directory path")
    output = Path(raw_output) if raw_output else None
    recorder = None
    if spec.get("record"):
        from sockwork.faults.exploration.recorder import Recorder

        recorder = Recorder(match=match)
        recorder.__enter__()
        # The trace's time 0 on a clock other processes share (merging their traces).
        started = time.time() - (now() - recorder._start)
    scope = inject(*faults, match=match, seed=seed)
    scope.__enter__()
    _scope = scope
    report = bool(spec.get("report"))
    if output is not None:
        _watch(output)

    def stop() -> None:
        scope.remove()
        if recorder is not None:
            recorder.__exit__(None, None, None)
        if report:
            sys.stderr.write(f"{scope.report}\n")
            sys.stderr.flush()
        if output is not None:
            result = scope.report
            _write(
                output,
                {
                    "format": OUTPUT_FORMAT,
                    "pid": os.getpid(),
                    "started": started,
                    "argv": list(sys.argv),
                    "trace": None if recorder is None else recorder.trace.to_json(),
                    "events": [event.to_json() for event in result.events],
                    "dropped": result.dropped,
                    "error": _error,
                },
            )

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
