"""Poor network conditions for the rehearsal: ``"latency=200ms,bandwidth=2KB/s"`` to faults.

``storify serve --poor-network SPEC`` puts a :class:`sockwork.proxy.FaultProxy` in
front of the telnet port with these faults, so the manager can feel what a
customer on a bad link feels.

Keys (each at most once; units as in ``sockwork.faults.units``):

- ``latency=200ms``: what the customer reads arrives that much later (downstream).
- ``jitter=50ms``: latency varies by up to that much either way (needs ``latency``).
- ``bandwidth=2KB/s``: each direction of each connection passes at most that rate.
- ``reset=5%``: that share of connections is reset at its first message in each
  direction (``sockwork.faults.ResetPeer``): a request lost on the way, or a reply
  lost after the store committed it. ``0.05`` works too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sockwork.faults import Bandwidth, Fault, Latency, ResetPeer
from sockwork.faults.units import format_duration, parse_duration, parse_rate

__all__ = ["DEFAULT_CONDITIONS", "NetworkConditions"]

DEFAULT_CONDITIONS = "latency=200ms,bandwidth=2KB/s"

# ASCII only: float() would also read "٣", "inf" and "nan".
_SHARE = re.compile(r"(?:[0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})%?", re.ASCII)


@dataclass(frozen=True)
class NetworkConditions:
    """A poor link: latency (plus jitter) downstream, a bandwidth cap both ways, resets."""

    latency: float = 0.0
    jitter: float = 0.0
    bandwidth: float | None = None
    reset: float = 0.0

    @classmethod
    def parse(cls, text: str) -> NetworkConditions:
        """Return the conditions written as ``key=value`` pairs separated by commas.

        Raises:
            ValueError: an unknown or repeated key, a bad value, or jitter without latency.
        """
        values: dict[str, str] = {}
        for part in text.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in ("latency", "jitter", "bandwidth", "reset"):
                raise ValueError(
                    f"poor network {text!r}: {part.strip()!r} is not latency=..., jitter=... "
                    "bandwidth=... or reset=... (e.g. latency=200ms,bandwidth=2KB/s)"
                )
            if key in values:
                raise ValueError(f"poor network {text!r}: {key} given twice")
            values[key] = value.strip()
        if not values:
            raise ValueError(f"poor network {text!r}: give latency=, jitter= or bandwidth=")
        latency = parse_duration(values["latency"]) if "latency" in values else 0.0
        jitter = parse_duration(values["jitter"]) if "jitter" in values else 0.0
        bandwidth = parse_rate(values["bandwidth"]) if "bandwidth" in values else None
        reset = _parse_share(values["reset"], text) if "reset" in values else 0.0
        if jitter and not latency:
            raise ValueError(f"poor network {text!r}: jitter needs a latency")
        if bandwidth is not None and bandwidth <= 0:
            raise ValueError(f"poor network {text!r}: bandwidth must be more than 0")
        return cls(latency=latency, jitter=jitter, bandwidth=bandwidth, reset=reset)

    def faults(self) -> list[tuple[Fault, str]]:
        """Return ``(fault, proxy direction)`` pairs to install on a FaultProxy."""
        faults: list[tuple[Fault, str]] = []
        if self.latency:
            faults.append((Latency(self.latency, jitter=self.jitter), "downstream"))
        if self.bandwidth is not None:
            faults.append((Bandwidth(self.bandwidth), "both"))
        if self.reset:
            faults.append((ResetPeer(probability=self.reset), "upstream"))
            faults.append((ResetPeer(probability=self.reset), "downstream"))
        return faults

    def describe(self) -> str:
        """Return a short description: ``latency 200ms, bandwidth 2000 B/s``."""
        parts = []
        if self.latency:
            jitter = f" +/- {format_duration(self.jitter)}" if self.jitter else ""
            parts.append(f"latency {format_duration(self.latency)}{jitter}")
        if self.bandwidth is not None:
            parts.append(f"bandwidth {self.bandwidth:g} B/s")
        if self.reset:
            parts.append(f"{self.reset:.0%} of connections reset")
        return ", ".join(parts) or "no faults"


def _parse_share(value: str, text: str) -> float:
    """Return ``5%`` or ``0.05`` as a fraction in 0..1."""
    if _SHARE.fullmatch(value) is None:
        raise ValueError(f"poor network {text!r}: reset={value!r} is not like 5% or 0.05")
    share = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"poor network {text!r}: reset must be 0% to 100%")
    return share
