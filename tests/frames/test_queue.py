"""Tests of the sans-IO accounting in sockwork.frames._queue."""

from __future__ import annotations

import pytest

from sockwork.frames._queue import MemoryBudget

BASE = 100


def test_budget_charges_only_beyond_the_base() -> None:
    budget = MemoryBudget(1000, base=BASE)
    assert budget.charge(0, waiting=False, commitment=BASE, allocated=BASE) == (0, True)
    assert budget.charge(0, waiting=False, commitment=BASE + 300, allocated=BASE) == (300, True)
    assert budget.used == 300
    assert budget.charge(300, waiting=False, commitment=BASE, allocated=BASE) == (0, True)
    assert budget.used == 0


def test_budget_reservation_that_does_not_fit_waits_and_charges_only_what_exists() -> None:
    budget = MemoryBudget(1000, base=BASE)
    held_a, fits = budget.charge(0, waiting=False, commitment=BASE + 800, allocated=BASE)
    assert (held_a, fits) == (800, True)
    held_b, fits = budget.charge(0, waiting=False, commitment=BASE + 500, allocated=BASE + 50)
    assert (held_b, fits) == (50, False)  # the 50 bytes allocated exist: charged anyway
    assert budget.used == 850
    state = {"held": held_b}

    def retry() -> bool:
        state["held"], ok = budget.charge(
            state["held"], waiting=False, commitment=BASE + 500, allocated=BASE + 50
        )
        return ok

    budget.wait(retry)
    assert budget.waiting == 1
    budget.charge(held_a, waiting=False, commitment=BASE, allocated=BASE)  # A's message taken
    assert budget.waiting == 0
    assert state["held"] == 500
    assert budget.used == 500


def test_budget_wakes_waiters_in_order_and_the_first_that_does_not_fit_stops_it() -> None:
    budget = MemoryBudget(1000, base=0)
    budget.charge(0, waiting=False, commitment=1000, allocated=0)
    woken: list[str] = []

    def waiter(name: str, size: int) -> None:
        def retry() -> bool:
            _, ok = budget.charge(0, waiting=False, commitment=size, allocated=0)
            if ok:
                woken.append(name)
            return ok

        budget.wait(retry)

    waiter("big", 900)
    waiter("small", 10)
    budget.release(500)  # 500 free: "big" does not fit, and "small" must not pass it
    assert woken == []
    assert budget.waiting == 2
    budget.release(500)
    assert woken == ["big", "small"]
    assert budget.used == 910


def test_budget_forget_drops_a_waiter() -> None:
    budget = MemoryBudget(10, base=0)
    budget.charge(0, waiting=False, commitment=10, allocated=0)

    def retry() -> bool:
        raise AssertionError("a forgotten waiter must not be called")

    budget.wait(retry)
    budget.forget(retry)
    budget.forget(retry)  # twice is harmless
    budget.release(10)
    assert budget.waiting == 0


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_budget_rejects_a_bad_limit(limit: object) -> None:
    with pytest.raises(ValueError, match="max_buffered"):
        MemoryBudget(limit, base=0)  # type: ignore[arg-type]
