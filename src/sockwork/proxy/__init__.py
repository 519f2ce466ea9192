"""A TCP proxy that applies sockwork faults, with a Toxiproxy-compatible control API."""

__all__: list[str] = []
