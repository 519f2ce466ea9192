"""``python -m sockwork.compat.poorconn``: poorconn's command line on sockwork."""

from __future__ import annotations

from sockwork.compat.poorconn._cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
