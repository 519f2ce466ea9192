from __future__ import annotations

import pytest

from sockwork.console.policy import Admission, SessionPolicy


def test_policy_defaults_are_finite() -> None:
    policy = SessionPolicy()
    assert policy.max_clients == 100
    assert policy.address_limit == 10  # "auto": a tenth of max_clients
    assert policy.first_line_timeout == 60.0
    assert policy.idle_timeout == 900.0
    assert policy.write_timeout == 30.0
    assert policy.max_output == 65536
    assert (policy.login_delay, policy.max_login_delay) == (1.0, 30.0)


@pytest.mark.parametrize(
    ("max_clients", "per_address", "limit"),
    [(100, "auto", 10), (5, "auto", 1), (None, "auto", None), (5, 3, 3), (100, None, None)],
)
def test_policy_address_limit(
    max_clients: int | None, per_address: int | None | str, limit: int | None
) -> None:
    policy = SessionPolicy(max_clients=max_clients, max_per_address=per_address)  # type: ignore[arg-type]
    assert policy.address_limit == limit


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_clients", 0),
        ("max_per_address", 0),
        ("max_per_address", "some"),
        ("first_line_timeout", 0),
        ("idle_timeout", -1.0),
        ("write_timeout", 0),
        ("max_output", 100),
        ("login_delay", -0.5),
        ("max_login_delay", 0.5),  # below login_delay (1.0)
    ],
)
def test_policy_rejects_bad_values_naming_the_option(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        SessionPolicy(**{option: value})  # type: ignore[arg-type]


def test_admission_refuses_when_full_then_per_address() -> None:
    admission = Admission(SessionPolicy(max_clients=3, max_per_address=2))
    assert admission.refusal("10.0.0.1") is None
    admission.enter("10.0.0.1")
    admission.enter("10.0.0.1")
    assert admission.refusal("10.0.0.1") == (
        "*** too many sessions from 10.0.0.1 (2); try again later"
    )
    assert admission.refusal("10.0.0.2") is None
    admission.enter("10.0.0.2")
    assert admission.refusal("10.0.0.3") == "*** server busy (3 sessions); try again later"
    admission.leave("10.0.0.1")
    assert (admission.sessions, admission.sessions_from("10.0.0.1")) == (2, 1)
    assert admission.refusal("10.0.0.1") is None
    admission.leave("10.0.0.1")
    admission.leave("10.0.0.2")
    assert admission.sessions == 0
    with pytest.raises(RuntimeError, match="10.0.0.2"):
        admission.leave("10.0.0.2")


def test_admission_login_delay_doubles_per_address_up_to_the_cap() -> None:
    admission = Admission(SessionPolicy(login_delay=1.0, max_login_delay=5.0))
    assert admission.login_wait("a", 0.0) == 0.0
    assert [admission.login_failed("a", float(t)) for t in range(5)] == [1, 2, 4, 5, 5]
    # The last failure at t=4 waits 5 s: the next attempt, from any connection, waits too.
    assert admission.login_wait("a", 6.0) == 3.0
    assert admission.login_wait("b", 6.0) == 0.0  # another address is not concerned
    admission.login_succeeded("a")
    assert admission.login_wait("a", 6.0) == 0.0
    assert admission.login_failed("a", 7.0) == 1.0


def test_admission_forgets_old_failures_and_stays_bounded() -> None:
    admission = Admission(SessionPolicy(login_delay=1.0, max_login_delay=30.0))
    for t in range(3):
        admission.login_failed("a", float(t))
    assert admission.login_failed("a", 2.0 + 901.0) == 1.0  # 15 min quiet: a fresh start
    for n in range(5000):
        admission.login_failed(f"10.0.{n // 256}.{n % 256}", 1000.0)
    assert len(admission._failures) == 4096
    assert admission.login_wait("a", 1000.0) == 0.0  # the oldest were dropped
    assert admission.login_failed("x", 1000.0) == 1.0
    assert admission.login_failed("x", 1000.0) == 2.0  # a huge count cannot overflow
    for _ in range(2000):
        admission.login_failed("x", 1000.0)
    assert admission.login_failed("x", 1000.0) == 30.0
