"""The APIs of the tools sockwork replaces (Stockings, poorconn), running on sockwork's engine."""

__all__: list[str] = []
