from __future__ import annotations

import io
import socket
import threading
from collections.abc import Callable

import pytest

from sockwork.faults import ExploreResult, Slice, explore
from sockwork.faults.exploration import (
    BaselineFailed,
    FunctionSubject,
    NoNetworkActivity,
    Outcome,
    Schedule,
    Subject,
    Trace,
)
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


class _Logged:
    """A Subject that logs the schedules it runs (and delegates to a FunctionSubject)."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.inner = FunctionSubject(fn)
        self.log: list[Schedule] = []
        self.command = None
        self.name = "check()"

    def record(self, *, timeout: float) -> tuple[Outcome, Trace]:
        return self.inner.record(timeout=timeout)

    def run(self, schedule: Schedule, *, seed: int, timeout: float) -> Outcome:
        self.log.append(schedule)
        return self.inner.run(schedule, seed=seed, timeout=timeout)


def test_explore_same_seed_runs_the_same_schedules_in_the_same_order() -> None:
    first, second = _Logged(naive_client_test), _Logged(naive_client_test)
    a = explore(first, seed=9, faults={"CloseAfter", "Slice"})
    b = explore(second, seed=9, faults={"CloseAfter", "Slice"})
    assert isinstance(first, Subject)
    assert first.log == second.log and len(first.log) >= 2
    assert a.reproduction == b.reproduction
    assert a.reproduction is not None and "check()" in a.reproduction.python


def test_explore_stops_a_busy_loop_that_never_notices_the_end_of_stream() -> None:
    def spin_on_eof() -> None:
        with echo_server() as address, socket.create_connection(address, timeout=2) as sock:
            sock.sendall(b"\0\0\0\x03END")
            data = b""
            ended = False
            while not data.endswith(b"END"):
                try:
                    chunk = sock.recv(1)
                except OSError:
                    continue  # bug: an error is not noticed...
                ended = ended or not chunk
                if not ended:
                    data += chunk  # ...nor the end of the stream: it spins from then on
            assert data == b"\0\0\0\x03END"

    before = threading.active_count()
    result = explore(spin_on_eof, seed=0, faults={"CloseAfter"}, per_run_timeout=0.5)
    assert result.found and result.failure is not None
    assert result.failure.kind == "hang"
    assert "spin_on_eof" in result.failure.details
    assert "stopped with RunAbandoned" in result.failure.details
    assert threading.active_count() <= before


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_explore_draws_a_progress_line_on_a_terminal_only() -> None:
    terminal, pipe = _Terminal(), io.StringIO()
    explore(careful_client_test, budget=5, faults={"Slice"}, progress=terminal)
    explore(careful_client_test, budget=5, faults={"Slice"}, progress=pipe)
    assert "\rsockwork explore: 5 schedule(s), 0 failure(s)" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n")
    assert pipe.getvalue() == ""
    calls: list[tuple[int, int, float]] = []
    explore(careful_client_test, budget=3, faults={"Slice"}, progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [1, 2, 3] and all(c[1] == 0 for c in calls)


def test_a_run_that_keeps_moving_bytes_past_its_deadline_is_slow_not_hung() -> None:
    def long_reply() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:

            def serve() -> None:
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(b"x" * 250)

            server = threading.Thread(target=serve)
            server.start()
            with socket.create_connection(listener.getsockname(), timeout=5) as sock:
                data = b""
                while len(data) < 250:
                    data += sock.recv(4096)
            server.join(5)

    subject = FunctionSubject(long_reply)
    # 1-byte reads 10 ms apart: 2.5 s or more of steady progress against a 1 s deadline
    slow = Schedule((Slice(1, delay=0.01, direction="recv"),), role="client")
    outcome = subject.run(slow, seed=0, timeout=1.0)
    assert outcome.passed, outcome
    assert outcome.duration > 1.0


class _Racy(_Logged):
    """A Subject on which a schedule of ``racy`` faults fails on its first two runs only:
    a failure that depends on thread timing, confirmed once and then gone."""

    def __init__(self, fn: Callable[[], object], racy: type) -> None:
        super().__init__(fn)
        self.racy = racy

    def run(self, schedule: Schedule, *, seed: int, timeout: float) -> Outcome:
        outcome = super().run(schedule, seed=seed, timeout=timeout)
        if all(isinstance(f, self.racy) for f in schedule.faults):
            if self.log.count(schedule) > 2:
                return Outcome.ok(outcome.duration)
        return outcome


def test_explore_looks_on_when_a_find_does_not_replay() -> None:
    subject = _Racy(naive_client_test, Slice)
    result = explore(subject, seed=0, faults={"Slice", "CloseAfter"})
    assert result.found and result.replayed
    assert result.schedule is not None and type(result.schedule.faults[0]).__name__ == "CloseAfter"
    assert result.flaky >= 1
    first_slice = next(s for s in subject.log if s.kinds == ("Slice",))
    assert subject.log.count(first_slice) == 3  # found, confirmed, then passed its replay


def test_explore_reports_a_find_that_does_not_replay_when_nothing_else_fails() -> None:
    subject = _Racy(naive_client_test, Slice)
    result = explore(subject, seed=0, budget=8, faults={"Slice"})
    assert result.found and not result.replayed
    assert result.schedule is not None and result.schedule == result.found_schedule
    assert result.schedule.kinds == ("Slice",)
    assert "did not fail again on replay" in str(result)


def test_explore_runs_one_schedule_however_short_the_time() -> None:
    # The time bounds the looking, not the recording: a slow baseline on a loaded
    # machine once left a correct twin's exploration no schedule at all.
    result = explore(careful_client_test, time=1e-9, faults={"Slice"})
    assert not result.found
    assert result.schedules_run == 1
