"""``poorconn`` mapped to ``sockwork.compat.poorconn``, for running poorconn's own test suite.

Put this directory first on ``PYTHONPATH`` (tests/peers/run_poorconn_suite.py
does): ``import poorconn`` then gives ``sockwork.compat.poorconn`` itself, and
``poorconn.X`` gives ``sockwork.compat.poorconn.X`` (the same module object, not
a copy), including ``python -m poorconn`` and the pytest11 entry point of an
installed poorconn, which names ``poorconn.pytest_plugin``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence

import sockwork.compat.poorconn

_ALIAS = "poorconn"
_TARGET = "sockwork.compat.poorconn"


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Finds ``poorconn.X`` as ``sockwork.compat.poorconn.X``."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    @staticmethod
    def _target(fullname: str) -> str:
        return _TARGET + fullname[len(_ALIAS) :]

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_ALIAS + "."):
            return None
        real = importlib.util.find_spec(self._target(fullname))
        if real is None:
            return None
        return importlib.machinery.ModuleSpec(
            fullname, self, is_package=real.submodule_search_locations is not None
        )

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = importlib.import_module(self._target(spec.name))
        self._specs[spec.name] = module.__spec__  # the import system overwrites it
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # Already executed under its own name: only undo the import system's
        # overwriting of __spec__.
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)  # type: ignore[union-attr]

    def get_code(self, fullname: str) -> types.CodeType | None:
        # runpy (python -m poorconn) asks for the code of poorconn.__main__.
        real = importlib.util.find_spec(self._target(fullname))
        if real is None or not isinstance(real.loader, importlib.abc.InspectLoader):
            return None
        return real.loader.get_code(real.name)

    def get_source(self, fullname: str) -> str | None:
        real = importlib.util.find_spec(self._target(fullname))
        if real is None or not isinstance(real.loader, importlib.abc.InspectLoader):
            return None
        return real.loader.get_source(real.name)

    def is_package(self, fullname: str) -> bool:
        real = importlib.util.find_spec(self._target(fullname))
        return real is not None and real.submodule_search_locations is not None


sys.meta_path.insert(0, _AliasFinder())
sys.modules[__name__] = sockwork.compat.poorconn
