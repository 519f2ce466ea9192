"""Scope: one scope's plan, lock, seed and sockets, as the executor modules see them."""

from __future__ import annotations

import socket

from sockwork.faults import Latency, Refuse, apply
from sockwork.faults.budget import now
from sockwork.faults.plan import Proceed, Refused
from sockwork.faults.scope import Scope


def test_scope_opens_and_forgets_connections() -> None:
    scope = Scope([Latency(0.1)], seed=3)
    assert scope.seed == 3
    conns = [scope.open("client a"), scope.open("client b")]
    assert scope.plan.connections_open == 2
    scope.forget(conns)
    assert scope.plan.connections_open == 0


def test_scope_decides_under_its_lock() -> None:
    scope = Scope([Refuse(connections=1)], seed=1)
    seen: list[bool] = []

    def connect(plan: object, at: float) -> tuple[object, ...]:
        seen.append(scope.lock.locked())
        return scope.plan.connect(now=at, label="client")

    assert scope.decide(connect, now())[-1] == Refused()
    assert scope.decide(connect, now())[-1] == Proceed()
    assert seen == [True, True]


def test_handle_wraps_one_scope_that_knows_its_sockets() -> None:
    a, b = socket.socketpair()
    with a, b, apply(a, Latency(0.01), seed=9) as handle:
        scope = handle._scope
        assert scope.seed == handle.seed == 9
        assert set(scope.sockets) == {a}
        assert scope.plan.connections_open == 1
    assert scope.plan.connections_open == 0  # removed: the plan forgot the connection
