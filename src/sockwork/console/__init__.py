"""Console programs (``cmd.Cmd``, ``print``/``input`` code) served to telnet users."""

__all__: list[str] = []
