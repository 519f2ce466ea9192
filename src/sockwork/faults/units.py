"""Parse and format durations, sizes, rates and ranges written with units.

Command lines and configuration files say ``200ms``, ``10KB``, ``1MiB/s`` or
``1..64``; these functions turn such text into seconds, bytes and bytes per second.

# Rules:
- A bare number is in the base unit: seconds, bytes, bytes per second.
- Durations: ``us`` (or ``µs``), ``ms``, ``s``, ``m``/``min``, ``h``.
- Sizes: ``B``; decimal ``KB``/``kB``/``K``, ``MB``/``M``, ``GB``/``G`` (powers of 1000,
  as Toxiproxy's KB/s); binary ``KiB``, ``MiB``, ``GiB`` (powers of 1024).
  Unit letters are case-insensitive except ``m`` (minutes) vs ``M`` (mega) where it
  matters: sizes never mean minutes, so ``10m`` as a size is 10 MB.
- Rates are a size per second: ``1MiB/s``, ``100KB/s``, ``500kbit/s`` (bits: /8),
  or a bare size (``1MiB``) read as per second.
- Ranges are ``LOW..HIGH`` (inclusive), or one value meaning ``VALUE..VALUE``.
- Errors are ``ValueError`` naming the text and what is accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TypeVar

__all__ = [
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_int_range",
    "parse_range",
    "parse_rate",
    "parse_size",
]

T = TypeVar("T", int, float)

_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµ/]*)\s*$")

_DURATIONS = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}

_SIZES = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def _split(text: str, what: str, accepted: str) -> tuple[float, str]:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be given as text, got {type(text).__name__}")
    m = _NUMBER.match(text)
    if m is None:
        raise ValueError(f"invalid {what} {text!r}: expected a number with {accepted}")
    value = float(m.group(1))
    if not math.isfinite(value):
        raise ValueError(f"invalid {what} {text!r}: must be finite")
    return value, m.group(2)


def parse_duration(text: str) -> float:
    """Return the seconds in ``text`` (``"200ms"``, ``"1.5s"``, ``"2m"``, ``"0.2"``)."""
    accepted = "an optional unit us, ms, s, m, min or h"
    value, unit = _split(text, "duration", accepted)
    factor = _DURATIONS.get(unit) if unit in ("m", "M") else _DURATIONS.get(unit.lower())
    if unit == "M":
        factor = None
    if factor is None:
        raise ValueError(f"invalid duration {text!r}: expected a number with {accepted}")
    return value * factor


def parse_size(text: str) -> int:
    """Return the bytes in ``text`` (``"10KB"`` = 10000, ``"1MiB"`` = 1048576, ``"64"``)."""
    accepted = "an optional unit B, KB, MB, GB, KiB, MiB or GiB"
    value, unit = _split(text, "size", accepted)
    factor = _SIZES.get(unit.lower())
    if factor is None:
        raise ValueError(f"invalid size {text!r}: expected a number with {accepted}")
    result = value * factor
    if result != int(result):
        raise ValueError(f"invalid size {text!r}: not a whole number of bytes")
    return int(result)


def parse_rate(text: str) -> float:
    """Return the bytes per second in ``text`` (``"1MiB/s"``, ``"100KB/s"``, ``"8Mbit/s"``)."""
    accepted = "a size per second such as 1MiB/s, 100KB/s or 8Mbit/s"
    if not isinstance(text, str):
        raise TypeError(f"rate must be given as text, got {type(text).__name__}")
    body = text.strip()
    if body.endswith("/s"):
        body = body[:-2]
    bits = False
    lowered = body.lower()
    if lowered.endswith("bit"):
        bits = True
        body = body[:-3]
    elif lowered.endswith("bps"):
        bits = True
        body = body[:-3]
    try:
        value, unit = _split(body, "rate", accepted)
    except ValueError:
        raise ValueError(f"invalid rate {text!r}: expected {accepted}") from None
    factor = _SIZES.get(unit.lower())
    if factor is None:
        raise ValueError(f"invalid rate {text!r}: expected {accepted}")
    rate = value * factor / (8 if bits else 1)
    if rate <= 0:
        raise ValueError(f"invalid rate {text!r}: must be > 0")
    return rate


def parse_range(text: str, parse: Callable[[str], T]) -> tuple[T, T]:
    """Return ``(low, high)`` from ``"LOW..HIGH"`` (or one value) using ``parse`` for each end."""
    if not isinstance(text, str):
        raise TypeError(f"range must be given as text, got {type(text).__name__}")
    if ".." in text:
        low_text, _, high_text = text.partition("..")
        low, high = parse(low_text), parse(high_text)
    else:
        low = high = parse(text)
    if low > high:
        raise ValueError(f"invalid range {text!r}: the low end is above the high end")
    return low, high


def parse_int_range(text: str) -> tuple[int, int]:
    """Return ``(low, high)`` sizes from ``"1..64"``, ``"1KB..4KB"`` or ``"64"``."""
    return parse_range(text, parse_size)


def format_duration(seconds: float) -> str:
    """Return a short human form of ``seconds`` (``0.2`` -> ``"200ms"``)."""
    if seconds >= 1 or seconds == 0:
        return f"{seconds:g}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:g}ms"
    return f"{seconds * 1e6:g}us"


def format_size(n: float) -> str:
    """Return a short human form of ``n`` bytes using binary units (``1048576`` -> ``"1MiB"``)."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            return f"{n / factor:g}{unit}"
    return f"{n:g}B"
