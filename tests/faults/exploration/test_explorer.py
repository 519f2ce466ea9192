from __future__ import annotations

import socket
import threading

import pytest

from sockwork.faults import ExploreResult, Slice, explore
from sockwork.faults.exploration import BaselineFailed, NoNetworkActivity
from tests.faults.exploration.programs import careful_client_test, echo_server, naive_client_test


def test_explore_finds_the_one_recv_per_message_bug_and_shrinks_it() -> None:
    result = explore(naive_client_test, seed=1)
    assert isinstance(result, ExploreResult)
    assert result.found and result.replayed
    assert result.failure is not None and result.failure.kind in ("exception", "assertion")
    schedule = result.schedule
    assert schedule is not None and len(schedule.faults) == 1
    (fault,) = schedule.faults
    assert isinstance(fault, Slice) and fault.direction == "recv"
    assert "@pytest.mark.netfaults(Slice(" in result.reproduction.pytest  # type: ignore[union-attr]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_explore_does_not_flag_the_correct_twin(seed: int) -> None:
    # The faults that need no waiting (the waiting ones: test_explore_twin_under_waits).
    cheap = {"Slice", "CloseAfter", "Refuse", "CloseOnAccept"}
    result = explore(careful_client_test, seed=seed, budget=150, time=30, faults=cheap)
    assert not result.found, str(result)
    assert result.schedules_run > 20
    assert "Slice" in result.fault_kinds_tried and "CloseAfter" in result.fault_kinds_tried


def test_explore_same_seed_same_schedules_and_reproduction() -> None:
    first = explore(naive_client_test, seed=4)
    second = explore(naive_client_test, seed=4)
    assert first.reproduction == second.reproduction
    assert first.schedules_run == second.schedules_run


def test_explore_stops_on_a_test_that_fails_without_faults() -> None:
    def broken() -> None:
        with echo_server():
            raise AssertionError("wrong before any fault")

    with pytest.raises(BaselineFailed, match="already fails without faults") as info:
        explore(broken)
    assert info.value.outcome.kind == "assertion"


def test_explore_stops_on_a_test_without_network_io() -> None:
    with pytest.raises(NoNetworkActivity, match="no network I/O"):
        explore(lambda: None)


@pytest.mark.parametrize("budget", [0, -1])
def test_explore_rejects_a_budget_below_one(budget: int) -> None:
    with pytest.raises(ValueError, match="budget must be an int >= 1"):
        explore(naive_client_test, budget=budget)


def test_explore_rejects_unknown_fault_kinds() -> None:
    with pytest.raises(ValueError, match="unknown or unexplorable fault kind"):
        explore(naive_client_test, faults={"Teleport"})


def test_explore_reports_a_hang_with_stacks_and_unblocks_the_thread() -> None:
    def no_read_timeout() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        peer: list[socket.socket] = []

        def serve() -> None:
            conn, _ = listener.accept()
            peer.append(conn)
            conn.sendall(conn.recv(100))

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        try:
            with socket.create_connection(listener.getsockname()) as sock:
                sock.sendall(b"ping")
                data = b""
                while len(data) < 4:
                    chunk = sock.recv(4)
                    if not chunk:
                        return
                    data += chunk
        finally:
            server.join(5)
            listener.close()
            for conn in peer:
                conn.close()

    before = threading.active_count()
    result = explore(no_read_timeout, seed=0, faults={"Stall"}, per_run_timeout=0.5)
    assert result.found and result.failure is not None
    assert result.failure.kind == "hang"
    assert "no_read_timeout" in result.failure.details  # the stuck frame is shown
    assert "Stall(" in str(result.schedule)
    assert threading.active_count() <= before + 1


def test_explore_result_shows_what_fired_and_the_trace_around_it() -> None:
    result = explore(naive_client_test, seed=0)
    assert result.replay_exact
    assert result.failure is not None
    assert result.failure.fired == ('fired Slice(1, direction="recv") on stream #1 recv at byte 0',)
    text = str(result)
    assert "what fired, and the trace around it:" in text
    assert "recv #" in result.excerpt() and "bytes 0..1" in result.excerpt()


def test_explore_keeps_exceptions_of_the_tests_threads_out_of_the_excepthook() -> None:
    seen: list[object] = []
    previous = threading.excepthook
    threading.excepthook = seen.append
    try:

        def crashing_server_thread() -> None:
            listener = socket.create_server(("127.0.0.1", 0))

            def serve() -> None:
                conn, _ = listener.accept()
                with conn:
                    if conn.recv(1) != b"x":  # under faults this may see EOF
                        raise RuntimeError("server thread died")
                    conn.sendall(b"y")

            server = threading.Thread(target=serve)
            server.start()
            try:
                with socket.create_connection(listener.getsockname(), timeout=2) as sock:
                    sock.sendall(b"x")
                    sock.recv(1)
            except OSError:
                pass  # a clean network error
            finally:
                server.join(5)
                listener.close()

        result = explore(crashing_server_thread, budget=30, faults={"CloseAfter"})
    finally:
        threading.excepthook = previous
    assert not result.found
    assert seen == []
