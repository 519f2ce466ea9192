"""Session limits shared by every console transport (telnet, SSH), without I/O.

:class:`SessionPolicy` holds the numbers (how many sessions, how long a silent or
non-reading client may keep one, how far output may fall behind, how fast passwords
may be guessed); :class:`Admission` applies the admission and password rules to the
sessions of one server. Both are fed addresses and times and never touch a socket,
a clock or a thread: the server that uses them locks and measures.
"""

# Rules:
# - A limit of None means "no limit"; every default is finite (safe by default).
# - max_per_address "auto" is a tenth of max_clients (at least 1): one address cannot
#   take every seat, a handful of users behind one NAT still get in. With no
#   max_clients there is no per-address limit either, unless one is given.
# - Password failures are counted per address, across connections (reconnecting does
#   not reset them): after the n-th failure in a row that address waits
#   login_delay * 2**(n-1) seconds, at most max_login_delay, before any verdict on its
#   next attempt. A success clears the count; so do _FORGET_AFTER seconds without a
#   failure. At most _MAX_REMEMBERED addresses are remembered (the oldest go first),
#   so a scan from many addresses cannot grow the table without bound.

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = ["Admission", "SessionPolicy"]

_FORGET_AFTER: Final = 900.0
_MAX_REMEMBERED: Final = 4096


def _check_timeout(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be None or > 0 seconds, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class SessionPolicy:
    """The limits a console server applies to its sessions, whatever the transport.

    Attributes:
        max_clients: sessions at once; None for no limit.
        max_per_address: sessions at once from one client address; ``"auto"`` is a
            tenth of ``max_clients`` (at least 1); None for no limit.
        first_line_timeout: seconds a new session may take to send its first line
            (a password counts); None for no limit.
        idle_timeout: seconds a session may wait for its user; None for no limit.
        write_timeout: seconds a session's output may wait without the client taking
            a byte before the session is disconnected.
        max_output: bytes of output a session may have waiting for its client; the
            program's own writes wait for room (up to ``write_timeout``), messages from
            other threads (``send``, ``broadcast``) never wait and may use as much
            again; beyond that the session is disconnected.
        login_delay: seconds an address waits after its first wrong password; doubled
            at each further failure in a row.
        max_login_delay: the longest such wait.
    """

    max_clients: int | None = 100
    max_per_address: int | None | Literal["auto"] = "auto"
    first_line_timeout: float | None = 60.0
    idle_timeout: float | None = 900.0
    write_timeout: float = 30.0
    max_output: int = 65536
    login_delay: float = 1.0
    max_login_delay: float = 30.0
    address_limit: int | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.max_clients is not None and self.max_clients < 1:
            raise ValueError(f"max_clients must be None or >= 1, got {self.max_clients!r}")
        per_address = self.max_per_address
        if per_address == "auto":
            limit = None if self.max_clients is None else max(1, self.max_clients // 10)
        elif per_address is None or (isinstance(per_address, int) and per_address >= 1):
            limit = per_address
        else:
            raise ValueError(f"max_per_address must be None, 'auto' or >= 1, got {per_address!r}")
        # The resolved limit, so that users of the policy never see "auto".
        object.__setattr__(self, "address_limit", limit)
        _check_timeout("first_line_timeout", self.first_line_timeout)
        _check_timeout("idle_timeout", self.idle_timeout)
        if not self.write_timeout > 0:
            raise ValueError(f"write_timeout must be > 0 seconds, got {self.write_timeout!r}")
        if self.max_output < 1024:
            raise ValueError(f"max_output must be >= 1024 bytes, got {self.max_output!r}")
        if not self.login_delay >= 0:
            raise ValueError(f"login_delay must be >= 0 seconds, got {self.login_delay!r}")
        if not self.max_login_delay >= self.login_delay:
            raise ValueError(
                f"max_login_delay must be >= login_delay ({self.login_delay!r}), "
                f"got {self.max_login_delay!r}"
            )


@dataclass
class _Failures:
    count: int
    not_before: float
    last: float


class Admission:
    """Who may start a session, and how long a password attempt must wait (not thread-safe).

    The server calls it under its own lock: :meth:`refusal` then :meth:`enter` when a
    client connects, :meth:`leave` when its session ends, and the ``login_*`` methods
    around each password attempt.
    """

    def __init__(self, policy: SessionPolicy) -> None:
        self.policy = policy
        self._total = 0
        self._by_address: dict[str, int] = {}
        self._failures: dict[str, _Failures] = {}

    @property
    def sessions(self) -> int:
        """Sessions admitted and not yet left."""
        return self._total

    def sessions_from(self, address: str) -> int:
        """Sessions admitted from ``address`` and not yet left."""
        return self._by_address.get(address, 0)

    def refusal(self, address: str) -> str | None:
        """Return why a new session from ``address`` is refused (a line for the client), or None."""
        limit = self.policy.max_clients
        if limit is not None and self._total >= limit:
            return f"*** server busy ({limit} sessions); try again later"
        per_address = self.policy.address_limit
        if per_address is not None and self._by_address.get(address, 0) >= per_address:
            return f"*** too many sessions from {address} ({per_address}); try again later"
        return None

    def enter(self, address: str) -> None:
        """Count a session from ``address`` as started."""
        self._total += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1

    def leave(self, address: str) -> None:
        """Count a session from ``address`` as ended."""
        left = self._by_address.get(address, 0) - 1
        if left < 0:
            raise RuntimeError(f"no session from {address} to leave")
        self._total -= 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]

    def login_wait(self, address: str, now: float) -> float:
        """Return the seconds ``address`` must wait before its next password is checked."""
        failures = self._recent(address, now)
        return 0.0 if failures is None else max(0.0, failures.not_before - now)

    def login_failed(self, address: str, now: float) -> float:
        """Record a wrong password from ``address``; return the seconds to wait before answering."""
        failures = self._recent(address, now)
        count = 1 if failures is None else failures.count + 1
        policy = self.policy
        # min() before the power would overflow: 2**count grows without bound.
        delay = policy.login_delay * float(2 ** min(count - 1, 64))
        delay = min(delay, policy.max_login_delay)
        self._failures.pop(address, None)  # re-inserted last: the dict stays oldest first
        self._failures[address] = _Failures(count, now + delay, now)
        while len(self._failures) > _MAX_REMEMBERED:
            del self._failures[next(iter(self._failures))]
        return delay

    def login_succeeded(self, address: str) -> None:
        """Forget the failures of ``address``: its user knows the password."""
        self._failures.pop(address, None)

    def _recent(self, address: str, now: float) -> _Failures | None:
        failures = self._failures.get(address)
        if failures is not None and now - failures.last > _FORGET_AFTER:
            del self._failures[address]
            return None
        return failures
