"""storify: a store run from a local console, shopped over telnet and a framed-message API."""

__all__: list[str] = []
