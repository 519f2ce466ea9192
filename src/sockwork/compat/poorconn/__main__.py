"""``python -m sockwork.compat.poorconn``: poorconn's command line on sockwork's engine."""

from __future__ import annotations

from sockwork.compat.poorconn.command import main

__all__: list[str] = []

raise SystemExit(main())
