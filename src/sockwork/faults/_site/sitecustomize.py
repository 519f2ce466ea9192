"""Loaded at interpreter start-up by ``sockwork run``: start the faults, then chain."""

from __future__ import annotations

import importlib
import os
import sys

__all__: list[str] = []


def _chain() -> None:
    # Import the sitecustomize this interpreter would have loaded without us.
    here = os.path.dirname(os.path.abspath(__file__))
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    this = sys.modules.pop("sitecustomize", None)
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if this is not None:
            sys.modules["sitecustomize"] = this


def _start() -> None:
    try:
        from sockwork.faults.startup import start_from_environment
    except ImportError as exc:  # a different interpreter without sockwork
        sys.stderr.write(f"sockwork run: cannot import sockwork in {sys.executable}: {exc}\n")
        return
    start_from_environment()


_start()
_chain()
