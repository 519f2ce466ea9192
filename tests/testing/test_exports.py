"""The public surface of sockwork.testing is what docs/testing.md documents."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import sockwork.testing

DOC = (Path(__file__).resolve().parents[2] / "docs" / "testing.md").read_text(encoding="utf-8")
MODULES = ["conformance", "contract", "pair", "telnet"]


@pytest.mark.parametrize("name", sockwork.testing.__all__)
def test_testing_export_is_documented_and_real(name: str) -> None:
    obj = getattr(sockwork.testing, name)
    assert f"`{name}" in DOC, f"{name} is exported but docs/testing.md does not name it"
    doc = inspect.getdoc(obj)
    assert doc and doc.splitlines()[0].endswith("."), f"{name} needs a one-sentence docstring"


@pytest.mark.parametrize("module", MODULES)
def test_testing_modules_export_what_the_package_or_the_docs_name(module: str) -> None:
    mod = importlib.import_module(f"sockwork.testing.{module}")
    for name in mod.__all__:
        assert hasattr(mod, name)
        assert name in sockwork.testing.__all__ or f"`{name}`" in DOC, (
            f"sockwork.testing.{module}.{name} is neither re-exported nor documented"
        )
        if name in sockwork.testing.__all__:
            assert getattr(sockwork.testing, name) is getattr(mod, name)


def test_testing_dir_lists_every_export() -> None:
    assert set(sockwork.testing.__all__) <= set(dir(sockwork.testing))


def test_testing_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = sockwork.testing.no_such_thing


def test_loading_the_plugin_does_not_import_the_front_ends() -> None:
    # The plugin loads in every pytest run: the kit is imported on first use only.
    code = (
        "import sys, sockwork.testing.plugin; "
        "print(sorted(m for m in sys.modules if m.startswith(('sockwork.frames', 'asyncio'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
