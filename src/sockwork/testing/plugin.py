"""The sockwork pytest plugin (entry point ``pytest11``, name ``sockwork``)."""

from __future__ import annotations

__all__: list[str] = []
