"""The public surface of sockwork.frames is what docs/frames.md documents."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

import sockwork.frames

DOC = (Path(__file__).resolve().parents[2] / "docs" / "frames.md").read_text(encoding="utf-8")
MODULES = ["codec", "payload", "blocking", "aio", "endpoint"]


@pytest.mark.parametrize("name", sockwork.frames.__all__)
def test_frames_export_is_documented_and_real(name: str) -> None:
    assert hasattr(sockwork.frames, name)
    assert f"`{name}`" in DOC, f"{name} is exported but docs/frames.md does not name it"


@pytest.mark.parametrize("module", MODULES)
def test_frames_modules_export_every_public_name(module: str) -> None:
    mod = importlib.import_module(f"sockwork.frames.{module}")
    for name in mod.__all__:
        obj = getattr(mod, name)
        assert name in sockwork.frames.__all__, f"{module}.{name} not re-exported"
        if callable(obj) and not isinstance(obj, type(sockwork.frames.BYTES)):
            doc = inspect.getdoc(obj)
            assert doc and doc.splitlines()[0].endswith("."), f"{module}.{name} docstring"
