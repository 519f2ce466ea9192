from __future__ import annotations

import re
from pathlib import Path

import storify

DOC = Path(__file__).resolve().parents[2] / "docs" / "storify.md"


def test_package_exports_what_the_docs_list() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Za-z_]+)`", section)) - {"storify"}
    assert documented == set(storify.__all__)
    for name in storify.__all__:
        assert getattr(storify, name).__doc__, name
