"""sockwork.testing.contract: the right answer, or a promised error, within the deadline."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence

import pytest

from sockwork.errors import ContractBroken, SockworkError
from sockwork.faults import CloseAfter, Event, inject
from sockwork.testing import Contract
from sockwork.testing.contract import contract, fired_events


def test_contract_passes_a_right_answer() -> None:
    with contract(within=1.0) as checked:
        assert 1 + 1 == 2
    assert checked.error is None
    assert 0 <= checked.elapsed < 1.0


def test_contract_swallows_a_promised_error_and_keeps_it() -> None:
    with contract(ConnectionError, TimeoutError) as checked:
        raise ConnectionResetError(104, "Connection reset by peer")
    assert isinstance(checked.error, ConnectionResetError)


def test_contract_default_promise_is_connection_error_and_timeout() -> None:
    with contract() as checked:
        raise TimeoutError("timed out")
    assert isinstance(checked.error, TimeoutError)
    with pytest.raises(ContractBroken, match="unexpected error: OSError"):
        with contract():
            raise OSError(107, "Transport endpoint is not connected")


def test_contract_wrong_answer_is_broken_with_the_assertion() -> None:
    with pytest.raises(ContractBroken) as info:
        with contract(ConnectionError):
            assert b"half" == b"half a message", "short reply"
    assert info.value.reason == "wrong answer"
    assert "short reply" in str(info.value)
    assert isinstance(info.value.__cause__, AssertionError)
    assert isinstance(info.value, AssertionError) and isinstance(info.value, SockworkError)


def test_contract_wrong_answer_without_a_message_names_the_line() -> None:
    # Outside pytest's assertion rewriting a bare assert has no message: show its source.
    code = compile("assert reply == 'ok'", "<client>", "exec")
    with pytest.raises(ContractBroken) as info:
        with contract():
            exec(code, {"reply": "o"})  # noqa: S102 - a bare assert from a non-rewritten module
    assert "wrong answer" in str(info.value)


def test_contract_unexpected_error_type_is_broken() -> None:
    with pytest.raises(ContractBroken) as info:
        with contract(ConnectionError, TimeoutError, within=2.0):
            raise ValueError("invalid literal for int() with base 10: b''")
    assert info.value.reason == "unexpected error"
    assert "ValueError: invalid literal" in str(info.value)
    assert "promised: ConnectionError, TimeoutError" in str(info.value)
    assert isinstance(info.value.error, ValueError)
    assert info.value.__cause__ is info.value.error


def test_contract_late_answer_is_broken() -> None:
    with pytest.raises(ContractBroken) as info:
        with contract(within=0.05):
            time.sleep(0.1)  # the slow work under test
    assert info.value.reason == "late"
    assert info.value.elapsed >= 0.1
    assert "deadline 0.05s" in str(info.value)


def test_contract_late_clean_error_is_broken_too() -> None:
    with pytest.raises(ContractBroken, match="late: TimeoutError after"):
        with contract(within=0.05):
            time.sleep(0.1)
            raise TimeoutError


def test_contract_lets_interrupts_through() -> None:
    with pytest.raises(KeyboardInterrupt):
        with contract():
            raise KeyboardInterrupt


def test_contract_nested_judgement_is_not_rewrapped() -> None:
    with pytest.raises(ContractBroken) as info:
        with contract():
            with contract(within=5):
                raise ValueError("inner")
    assert info.value.reason == "unexpected error"
    assert isinstance(info.value.__cause__, ValueError)


def test_contract_accept_decides_with_what_fired() -> None:
    seen: list[tuple[BaseException, Sequence[Event]]] = []

    def never(error: BaseException, fired: Sequence[Event]) -> bool:
        seen.append((error, fired))
        return False

    with pytest.raises(ContractBroken) as info:
        with contract(ConnectionError, accept=never):
            raise ConnectionRefusedError(111, "Connection refused")
    assert info.value.reason == "error not excused"
    assert "no fault fired" in str(info.value)
    assert len(seen) == 1 and seen[0][1] == ()


def test_contract_decorator_checks_each_call() -> None:
    calls: list[int] = []

    @contract(ConnectionError, within=1.0)
    def fetch(n: int) -> int:
        calls.append(n)
        if n == 2:
            raise ConnectionResetError
        if n == 3:
            raise KeyError(n)
        return n * 10

    assert fetch(1) == 10
    assert fetch(2) is None
    with pytest.raises(ContractBroken, match="unexpected error: KeyError"):
        fetch(3)
    assert calls == [1, 2, 3]
    assert fetch.__name__ == "fetch"


def test_contract_checks_one_block_only() -> None:
    checked = contract()
    with checked:
        pass
    with pytest.raises(RuntimeError, match="one block"):
        with checked:
            pass


def test_contract_bad_arguments_fail_at_construction() -> None:
    with pytest.raises(TypeError, match="exception classes"):
        contract("ConnectionError")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="within"):
        contract(within=0)
    with pytest.raises(ValueError, match="within"):
        Contract(within=float("nan"))


def test_fired_events_ignores_a_scope_that_ended_before_the_block() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        with inject(CloseAfter(0, direction="recv"), seed=1) as scope:
            with socket.create_connection(server.getsockname(), timeout=5) as client:
                assert client.recv(10) == b""  # the fault's FIN
    assert [event.what for event in scope.report.fired()] == ["fired", "close"]
    # Read later, outside any scope: that scope is what fired() still reports, but a
    # block that began after it ended did not see it.
    assert fired_events() == tuple(scope.report.fired())
    assert fired_events(since=scope) == ()
