"""A fork server for :class:`~sockwork.faults.exploration.process.ProcessSubject`.

Starting Python and importing the fault engine costs most of a run (see
docs/benchmarks.md); a run of ``python script.py`` or ``python -m module`` can instead
be a process forked from a Python that has done both once: a fresh process per run
all the same (its own pid, memory, sockets and process group), without paying the
start-up again.

# Rules:
- The server (:func:`serve`) is single-threaded, imports the engine and the
  recorder, never starts a fault scope itself, and forks one child per request.
  Requests and answers are JSON lines on its stdin and stdout: a request
  ``{"argv", "cwd", "env", "log"}``; answers ``{"pid": N}`` once forked, then
  ``{"pid": N, "status": S}`` once reaped (``S`` as ``Popen.returncode``: negative
  for a signal).
- The child becomes what ``python ARGV...`` would have been as closely as the
  interpreter allows: a new session (its own process group), stdin from
  /dev/null, stdout and stderr to the log, the request's cwd and environment
  (``SOCKWORK_FAULTS`` included, so its own Python children run the start-up hook),
  ``sys.argv`` and ``sys.path[0]`` as the command line would set them, a fresh
  seed for ``random``; then the start-up hook's scope, then the program through
  ``runpy`` as ``__main__``. It ends as Python's own exit does, step by step:
  an uncaught exception goes to ``sys.excepthook`` (status 1), ``SystemExit`` gives
  its status, then non-daemon threads are joined, ``atexit`` handlers run (the hook
  writes its report) and every open Python file is flushed; only the tear-down of
  the modules is skipped (``os._exit``): in a child of a warm interpreter it cost
  more than the rest of a run (measured: ~150 ms of ~250 ms).
- What differs from an exec: the interpreter was started (flags, hash seed, the
  modules imported by then) for the server; :func:`forkable` only accepts commands
  that run this very interpreter with no option other than ``-m``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["forkable", "serve"]


def forkable(argv: Sequence[str], which: str | None) -> bool:
    """True when ``argv`` (``which``: its resolved ``argv[0]``) runs this interpreter on
    a script or a module with no other option, so a forked child can stand in for it."""
    if which is None or len(argv) < 2 or not hasattr(os, "fork"):
        return False
    try:
        same = os.path.samefile(which, sys.executable)
    except OSError:
        return False
    if not same:
        return False
    if argv[1] == "-m":
        return len(argv) >= 3 and not argv[2].startswith("-")
    return not argv[1].startswith("-")


def _child(request: dict[str, object]) -> NoReturn:
    """Become the program (see ``# Rules:``); never returns: the interpreter exits."""
    import random
    import runpy

    os.setsid()
    log = os.open(str(request["log"]), os.O_WRONLY | os.O_APPEND)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    cwd = request.get("cwd")
    if isinstance(cwd, str):
        os.chdir(cwd)
    env = request["env"]
    assert isinstance(env, dict)
    os.environ.clear()
    os.environ.update(env)
    random.seed()
    argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]

    from sockwork.faults.startup import start_from_environment

    status = 0
    try:
        start_from_environment()
        if argv[1] == "-m":
            sys.argv = [argv[2], *argv[3:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv[1:])
            sys.path[0] = os.path.dirname(os.path.abspath(argv[1]))
            runpy.run_path(argv[1], run_name="__main__")
    except SystemExit as exc:
        status = _status(exc.code)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    _exit(status)


def _status(code: object) -> int:
    """The exit status ``SystemExit(code)`` gives, printing a message as Python does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


def _exit(status: int) -> NoReturn:
    """Python's exit without the module tear-down (see ``# Rules:``)."""
    import atexit
    import gc
    import io
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads
    except BaseException:  # noqa: BLE001 - exiting anyway, as Python does
        pass
    atexit._run_exitfuncs()
    # The files made since the fork (the frozen ones are not listed), and the standard ones.
    files = [*gc.get_objects(), sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__]
    for obj in files:
        if isinstance(obj, io.IOBase) and not obj.closed:
            try:
                obj.flush()
            except (OSError, ValueError):
                pass
    os._exit(status)


def serve() -> None:
    """Serve fork requests on stdin until it closes (see ``# Rules:``)."""
    import faulthandler  # noqa: F401 - imported once, for every child
    import gc
    import random  # noqa: F401
    import runpy  # noqa: F401
    import signal  # noqa: F401

    import sockwork.faults.exploration.recorder  # noqa: F401
    import sockwork.faults.startup  # noqa: F401

    gc.freeze()  # children neither scan nor copy what is already here
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            answers.close()
            _child(request)  # never returns: the child exits
        answers.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"pid": pid, "status": os.waitstatus_to_exitcode(status)}) + "\n")
