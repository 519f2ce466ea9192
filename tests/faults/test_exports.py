"""The public surface of sockwork.faults is what docs/faults.md describes."""

from __future__ import annotations

from pathlib import Path

import sockwork.faults as faults

DOC = (Path(__file__).resolve().parents[2] / "docs" / "faults.md").read_text(encoding="utf-8")


def test_exports_are_importable_and_documented() -> None:
    for name in faults.__all__:
        assert hasattr(faults, name), name
        assert f"`{name}" in DOC, f"{name} is exported but not in docs/faults.md"


def test_exports_every_fault_type() -> None:
    from sockwork.faults.vocabulary import FAULT_TYPES

    assert set(FAULT_TYPES) <= set(faults.__all__)
