"""poorconn 0.2.1's API, command line and pytest fixture, on sockwork's fault engine."""

from __future__ import annotations

from sockwork.compat.poorconn.server import Server

__all__ = ["Server"]
