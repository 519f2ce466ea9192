"""Poor network conditions on demand: the fault vocabulary and in-process socket patching."""

__all__: list[str] = []
