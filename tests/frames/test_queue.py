"""Tests of the sans-IO queues and accounting in sockwork.frames._queue."""

from __future__ import annotations

import pytest

from sockwork.frames._queue import MemoryBudget, ReceiveQueue, SendQueue, frame_buffers
from sockwork.frames.codec import FrameEncoder

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


# -- SendQueue ---------------------------------------------------------------------------


def test_send_queue_joins_small_items_and_counts_messages() -> None:
    queue = SendQueue(1000)
    assert not queue
    big = b"B" * 20_000
    buffers, ends = FrameEncoder().send_batch([b"1", b"2", big, b"3"])
    assert queue.append(buffers, ends) is True  # it was empty
    assert queue.size == ends[-1] == 4 * 4 + 20_003
    assert queue.messages == 4
    gathered, total = queue.gather()
    assert gathered == [b"\0\0\0\x011\0\0\0\x012\0\0N\x20", big, b"\0\0\0\x013"]
    assert total == queue.size
    queue.consume(7)  # the first frame and most of the second
    assert queue.messages == 3
    gathered, _ = queue.gather()
    assert bytes(gathered[0]) == b"\0\x012\0\0N\x20"
    assert queue.push((b"x",), 1) is False
    queue.consume(queue.size)
    assert not queue
    assert queue.messages == 0


def test_send_queue_room_takes_anything_when_empty() -> None:
    queue = SendQueue(10)
    assert queue.room(1_000)
    queue.push((b"12345678",), 8)
    assert queue.room(2)
    assert not queue.room(3)
    queue.consume(8)
    assert queue.room(1_000)


def test_send_queue_clear_keeps_counting_unsent_messages() -> None:
    queue = SendQueue(100)
    queue.push((b"a",), 1)
    queue.push((b"b",), 1)
    queue.clear()
    assert not queue
    assert queue.size == 0
    assert queue.messages == 2


def test_frame_buffers_joins_small_and_copies_mutable_large() -> None:
    assert frame_buffers(b"H", b"p") == (b"Hp",)
    assert frame_buffers(b"H", bytearray(b"p")) == (b"Hp",)
    large = bytearray(20_000)
    header, payload = frame_buffers(b"H", large)
    large[0] = 1  # changed after the call: the queued copy must not see it
    assert payload == bytes(20_000)
    assert type(payload) is bytes


# -- ReceiveQueue ------------------------------------------------------------------------


def test_receive_queue_pauses_at_high_and_resumes_at_low() -> None:
    calls: list[str] = []
    queue: ReceiveQueue[bytes] = ReceiveQueue(
        10, 4, pause=lambda: calls.append("pause"), resume=lambda: calls.append("resume")
    )
    queue.put([b"aaa", b"bbb"], 6)
    assert calls == []
    queue.put([b"cccc"], 4)
    assert calls == ["pause"] and queue.paused
    queue.put([b"d"], 1)  # already paused: no second call
    assert queue.get() == b"aaa"  # 8 left: still above low
    assert calls == ["pause"]
    assert queue.get() == b"bbb"  # 5 left
    assert queue.get() == b"cccc"  # 1 left: resume
    assert calls == ["pause", "resume"] and not queue.paused
    assert len(queue) == 1
    queue.clear()
    assert not queue and queue.size == 0
    with pytest.raises(IndexError):
        queue.get()


def test_receive_queue_rejects_bad_marks() -> None:
    with pytest.raises(ValueError, match="low"):
        ReceiveQueue(4, 4, pause=lambda: None, resume=lambda: None)
