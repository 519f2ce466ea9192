"""The poorconn version whose API and behaviour this package reproduces."""

from __future__ import annotations

__all__ = ["version"]

version = "0.2.1"
"""poorconn's ``poorconn._version.version`` (its ``__version__``)."""
