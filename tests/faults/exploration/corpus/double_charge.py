"""A payment client whose retry is not idempotent: a lost reply charges twice.

Protocol: ``CHARGE <key> <cents>\\n`` answered ``OK\\n``; the server charges once
per key (``-``: no key, charge every time). Both clients retry up to three times
on a network error. The buggy one sends no key, so when the reply is lost after
the server charged (``CloseAfter`` or ``Latency`` on the reply), the retry
charges again. The correct one sends the same key on every attempt.

Contract: paid (charged exactly once), or ConnectionError/TimeoutError having
charged at most once, within 3 s.
"""

from __future__ import annotations

import socket
import sys
import threading
import uuid

from sockwork.testing.contract import contract

try:
    from . import _kit
except ImportError:  # run as a script
    import _kit  # type: ignore[no-redef]

BUG = "retry that is not idempotent (double charge)"
ATTEMPTS = 3


class Ledger:
    """The payment server's book: charges by idempotency key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self.total = 0

    def handle(self, conn: socket.socket) -> None:
        """Serve one ``CHARGE`` request."""
        verb, key, cents = _kit.recv_line(conn, bytearray()).decode().split()
        if verb != "CHARGE":
            conn.sendall(b"ERR\n")
            return
        with self._lock:
            if key == "-" or key not in self._seen:
                self._seen.add(key)
                self.total += int(cents)
        conn.sendall(b"OK\n")


def _charge(address: _kit.Address, key: str, cents: int) -> None:
    with socket.create_connection(address, timeout=0.5) as sock:
        sock.sendall(f"CHARGE {key} {cents}\n".encode())
        if _kit.recv_line(sock, bytearray()) != b"OK":
            raise RuntimeError("payment refused")


def _pay(address: _kit.Address, cents: int, key: str) -> None:
    for attempt in range(ATTEMPTS):
        try:
            _charge(address, key, cents)
            return
        except (ConnectionError, TimeoutError):
            if attempt == ATTEMPTS - 1:
                raise


def buggy_pay(address: _kit.Address, cents: int) -> None:
    """Pay, retrying on network errors; every attempt is a new charge."""
    _pay(address, cents, "-")


def correct_pay(address: _kit.Address, cents: int) -> None:
    """Pay, retrying on network errors with one idempotency key."""
    _pay(address, cents, uuid.uuid4().hex)


VARIANTS = {"buggy": buggy_pay, "correct": correct_pay}


def test(variant: str = "correct", server: _kit.Address | None = None) -> None:
    """The ordinary test: one payment of 30 cents charges 30 cents."""
    pay = VARIANTS[variant]
    ledger = Ledger()
    with _kit.Server(ledger.handle, timeout=0.5) as payments:
        with contract(ConnectionError, TimeoutError, within=3.0) as paying:
            pay(payments.address, 30)
        payments.drain()  # every request that reached the server is charged before judging
    allowed = (30,) if paying.error is None else (0, 30)
    assert ledger.total in allowed, f"charged {ledger.total} cents for one payment of 30"


if __name__ == "__main__":
    sys.exit(_kit.main(test))
