"""Complete messages over a TCP byte stream: a sans-IO codec and its front ends."""

__all__: list[str] = []
