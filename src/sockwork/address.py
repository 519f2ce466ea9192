"""Addresses and numbers as users type them: ``host:port``, ports, counts, seconds.

Every command line, config file and API of sockwork reads these through this module,
so ``٣`` is never read as 3, ``inf`` is never a timeout, and ``[::1]:80`` means the
same thing everywhere. ``bind_listener`` is the one way sockwork opens a listening
socket itself (the proxy, the console server).
"""

# Rules:
# - Numbers are ASCII: int() and float() also read "٣" (3), "６５４３２" or "1_000",
#   and float() reads "inf" and "nan"; none of them is what a user means. The parsers
#   match the text first, then convert; floats must be finite.
# - Errors are ValueError naming ``what`` was being read and the accepted range, so a
#   command line can turn them into a one-line usage error (``argparse.ArgumentTypeError``).
# - ``host:port`` splits at the last colon; a bracketed host (``[::1]``) loses its
#   brackets. format_address() writes IPv6 hosts bracketed, so the two round-trip.
# - A listener prefers IPv4 when a name has both families ("localhost" may resolve
#   to ::1 first; clients mostly dial 127.0.0.1), reuses the address (SO_REUSEADDR:
#   a restarted server need not wait out TIME_WAIT) and is non-blocking.

from __future__ import annotations

import math
import re
import socket
from collections.abc import Sequence

__all__ = [
    "bind_listener",
    "format_address",
    "parse_address",
    "parse_float",
    "parse_int",
    "parse_port",
]

#: getaddrinfo's answer: (family, type, proto, canonname, sockaddr).
_AddrInfo = tuple[int, int, int, str, tuple[object, ...]]

_DIGITS = re.compile(r"[0-9]{1,5}", re.ASCII)
_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_BACKLOG = 128


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" in {low}..{high}"
    if low is not None:
        return f" of at least {low}"
    if high is not None:
        return f" of at most {high}"
    return ""


def parse_int(
    text: str, what: str = "number", *, low: int | None = None, high: int | None = None
) -> int:
    """Return the whole number ``text`` writes in ASCII digits (``"10"``, ``"-3"``).

    Args:
        text: the text; surrounding whitespace is ignored.
        what: what is being read, for the error message (``"--seed"``, ``"port"``).
        low, high: the accepted range, inclusive (None: unbounded).

    Raises:
        ValueError: not an ASCII whole number (``"٣"``, ``"1_000"``, ``"1.5"``), or out of range.
    """
    body = text.strip()
    if _INT.fullmatch(body) is None:
        raise ValueError(f"{what} must be a whole number{_range(low, high)}, not {text!r}")
    try:
        value = int(body)
    except ValueError:  # more digits than int() converts (sys.int_info.str_digits_check_threshold)
        raise ValueError(f"{what} has too many digits: {len(body)}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{what} must be a whole number{_range(low, high)}, not {value}")
    return value


def parse_float(
    text: str, what: str = "number", *, low: float | None = None, high: float | None = None
) -> float:
    """Return the finite number ``text`` writes in ASCII (``"1.5"``, ``".5"``, ``"2e3"``).

    Args:
        text: the text; surrounding whitespace is ignored.
        what: what is being read, for the error message.
        low, high: the accepted range, inclusive (None: unbounded).

    Raises:
        ValueError: not an ASCII number (``"١"``, ``"inf"``, ``"nan"``, ``"1e999"``), or
            out of range.
    """
    body = text.strip()
    value = float(body) if _FLOAT.fullmatch(body) else math.nan
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number{_range(low, high)}, not {text!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{what} must be a number{_range(low, high)}, not {text.strip()}")
    return value


def parse_port(text: str, what: str = "port", *, zero: bool = True) -> int:
    """Return the TCP port ``text`` writes in ASCII digits (no sign, no spaces).

    Args:
        zero: accept 0 ("pick a free port", for a listener); False for a port to connect to.

    Raises:
        ValueError: not a port in 0..65535 (1..65535 when ``zero`` is False).
    """
    low = 0 if zero else 1
    if _DIGITS.fullmatch(text) is None:  # no sign, no spaces: a port is digits
        raise ValueError(f"{what} must be a whole number in {low}..65535, not {text!r}")
    return parse_int(text, what, low=low, high=65535)


def parse_address(
    text: str, what: str = "address", *, default_host: str | None = None, zero: bool = True
) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too) into ``(host, port)``.

    Args:
        text: the text, e.g. ``"127.0.0.1:8080"``, ``"[::1]:0"``, ``"localhost:80"``.
        what: what is being read, for the error message (``"--listen"``).
        default_host: the host when ``text`` has none (``":8080"``); None: a host is required.
        zero: accept port 0 (a listener's "pick a free port").

    Raises:
        ValueError: no colon, no host (and no default), or not a port in range.
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or (not host and default_host is None):
        raise ValueError(f"{what} must be HOST:PORT (e.g. 127.0.0.1:8080), not {text!r}")
    return (host or str(default_host), parse_port(port, f"{what} port", zero=zero))


def format_address(address: object) -> str:
    """Return ``host:port`` for a socket address (``[::1]:80`` for IPv6).

    Anything that is not a ``(host, port, ...)`` tuple (an AF_UNIX path, None) is
    returned as ``str(address)``.
    """
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def bind_listener(
    host: str, port: int, *, backlog: int = _BACKLOG, infos: Sequence[_AddrInfo] | None = None
) -> socket.socket:
    """Return a non-blocking socket listening on ``host:port`` (IPv4 first, SO_REUSEADDR).

    Args:
        host: a name or a numeric address; ``""`` means every interface.
        port: the port; 0 picks a free one (see ``sock.getsockname()``).
        backlog: the kernel's accept queue length.
        infos: ``getaddrinfo``'s answer for ``host`` when the caller looked it up already
            (an asyncio loop does it without blocking); None looks it up here.

    Raises:
        socket.gaierror: ``host`` does not resolve.
        OSError: the address cannot be bound (``EADDRINUSE``, not a local address...).
    """
    if infos is None:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    if not infos:
        raise socket.gaierror(socket.EAI_NONAME, f"{host!r} has no address")
    family, kind, proto, _, sockaddr = min(infos, key=lambda info: info[0] != socket.AF_INET)
    sock = socket.socket(family, kind or socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
