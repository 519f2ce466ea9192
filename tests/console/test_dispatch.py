from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sockwork.console.dispatch import InputDispatcher

READ = selectors.EVENT_READ


@pytest.fixture
def dispatcher() -> Iterator[InputDispatcher]:
    dispatch = InputDispatcher(limit=2)
    dispatch.start()
    yield dispatch
    dispatch.stop(5.0)


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair() for _ in range(8)]
    yield made
    for a, b in made:
        a.close()
        b.close()


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_dispatcher_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="limit must be >= 1 thread, got 0"):
        InputDispatcher(limit=0)


def test_dispatcher_wakes_a_thread_when_its_socket_is_readable(
    dispatcher: InputDispatcher, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    ours, theirs = pairs[0]
    result: list[bool] = []
    waiter = threading.Thread(
        target=lambda: result.append(dispatcher.wait(ours.fileno(), READ, 10))
    )
    waiter.start()
    wait_until(lambda: dispatcher.waiting == 1)
    assert result == []  # nothing to read: it sleeps
    theirs.send(b"x")
    waiter.join(10)
    assert result == [True]
    assert dispatcher.waiting == 0  # one-shot: the socket is no longer watched


def test_dispatcher_wait_times_out_and_takes_its_socket_back(
    dispatcher: InputDispatcher, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    ours, theirs = pairs[0]
    assert dispatcher.wait(ours.fileno(), READ, 0.05) is False
    assert dispatcher.waiting == 0
    # The same descriptor can be waited for again, and is woken normally.
    theirs.send(b"x")
    assert dispatcher.wait(ours.fileno(), READ, 10) is True


def test_dispatcher_waits_for_writability(
    dispatcher: InputDispatcher, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    ours, _ = pairs[0]
    assert dispatcher.wait(ours.fileno(), selectors.EVENT_WRITE, 10) is True


def test_dispatcher_end_of_stream_wakes_the_thread(
    dispatcher: InputDispatcher, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    ours, theirs = pairs[0]
    result: list[bool] = []
    waiter = threading.Thread(
        target=lambda: result.append(dispatcher.wait(ours.fileno(), READ, None))
    )
    waiter.start()
    wait_until(lambda: dispatcher.waiting == 1)
    ours.shutdown(socket.SHUT_RD)  # what close() does to a session's socket
    waiter.join(10)
    assert result == [True]
    assert ours.recv(1) == b""


def test_dispatcher_keeps_at_most_limit_woken_threads_not_yet_running(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    dispatch = InputDispatcher(limit=2)
    dispatch.start()
    # Threads woken by the dispatcher are held back from running (as if they waited
    # for the GIL) by a gate: the dispatcher must not wake more than `limit` of them.
    gate = threading.Event()
    woken: list[int] = []
    tokens = dispatch._tokens

    class HeldTokens:
        """The dispatcher's places: a released thread gives its place back only at the gate."""

        def get(self) -> None:
            tokens.get()

        def put(self, item: None) -> None:
            woken.append(1)
            gate.wait(10)
            tokens.put(item)

    dispatch._tokens = HeldTokens()  # type: ignore[assignment]
    threads = [
        threading.Thread(target=dispatch.wait, args=(ours.fileno(), READ, 30)) for ours, _ in pairs
    ]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: dispatch.waiting == len(pairs))
        for _, theirs in pairs:
            theirs.send(b"x")  # every socket readable at once
        wait_until(lambda: len(woken) == 2)
        time.sleep(0.2)  # give it room to wake more if it would (it must not)
        assert len(woken) == 2
        # The others still wait (the next one may be taken out, waiting for a place).
        assert len(pairs) - 3 <= dispatch.waiting <= len(pairs) - 2
        gate.set()
        for thread in threads:
            thread.join(10)
        assert len(woken) == len(pairs)
        assert dispatch.waiting == 0
    finally:
        gate.set()
        dispatch.stop(5.0)


def test_dispatcher_stop_releases_waiting_threads_and_later_waits_wait_alone(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    dispatch = InputDispatcher()
    dispatch.start()
    ours, theirs = pairs[0]
    result: list[bool] = []
    waiter = threading.Thread(
        target=lambda: result.append(dispatch.wait(ours.fileno(), READ, None))
    )
    waiter.start()
    wait_until(lambda: dispatch.waiting == 1)
    dispatch.stop(5.0)
    waiter.join(10)
    assert result == [True]
    assert not any(t.name == "sockwork-console-input" for t in threading.enumerate())
    # After stop, a wait still waits (by itself): a timeout, then readiness.
    assert dispatch.wait(ours.fileno(), READ, 0.05) is False
    theirs.send(b"x")
    assert dispatch.wait(ours.fileno(), READ, 10) is True


def test_dispatcher_before_start_waits_alone(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    dispatch = InputDispatcher()
    ours, theirs = pairs[0]
    assert dispatch.wait(ours.fileno(), READ, 0.05) is False
    theirs.send(b"x")
    assert dispatch.wait(ours.fileno(), READ, 10) is True


def test_dispatcher_start_twice_is_refused(dispatcher: InputDispatcher) -> None:
    with pytest.raises(RuntimeError, match="already started or stopped"):
        dispatcher.start()


def test_dispatcher_many_threads_all_woken_at_once_all_run() -> None:
    many = [socket.socketpair() for _ in range(200)]
    dispatch = InputDispatcher(limit=4)
    dispatch.start()
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda s=ours: results.append(dispatch.wait(s.fileno(), READ, 30)))
        for ours, _ in many
    ]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: dispatch.waiting == len(many))
        for _, theirs in many:
            theirs.close()  # every client gone together
        for thread in threads:
            thread.join(30)
        assert results == [True] * len(many)
        assert dispatch.waiting == 0
    finally:
        dispatch.stop(5.0)
        for ours, theirs in many:
            ours.close()
            theirs.close()
