"""The public surface of sockwork.proxy is what docs/proxy.md describes."""

from __future__ import annotations

from pathlib import Path

import sockwork.proxy as proxy
from sockwork.proxy.toxic import EXTRA_TOXIC_TYPES, TOXIC_TYPES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "proxy.md").read_text(encoding="utf-8")


def test_exports_are_importable_and_documented() -> None:
    for name in proxy.__all__:
        assert hasattr(proxy, name), name
        assert f"`{name}" in DOC, f"{name} is exported but not in docs/proxy.md"


def test_every_toxic_type_is_documented() -> None:
    for kind in [*TOXIC_TYPES, *EXTRA_TOXIC_TYPES]:
        assert f"| `{kind}`" in DOC, f"toxic {kind!r} is missing from docs/proxy.md"
