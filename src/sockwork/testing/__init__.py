"""Test utilities that work with or without pytest; the pytest plugin builds on them."""

__all__: list[str] = []
