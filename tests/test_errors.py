from __future__ import annotations

import pytest

import sockwork
from sockwork import errors


def test_errors_every_exported_error_derives_from_sockwork_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.SockworkError)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (errors.ConnectionClosed, ConnectionError),
        (errors.IncompleteMessage, ConnectionError),
        (errors.MessageTooLarge, ValueError),
        (errors.ProtocolError, ValueError),
        (errors.Busy, ConnectionError),
        (errors.TimedOut, TimeoutError),
        (errors.ContractBroken, AssertionError),
    ],
)
def test_errors_mix_in_the_matching_builtin(error: type[Exception], builtin: type) -> None:
    assert issubclass(error, builtin)


def test_errors_message_too_large_carries_sizes() -> None:
    exc = errors.MessageTooLarge(20, 10)
    assert (exc.size, exc.limit) == (20, 10)
    assert "max_size=10" in str(exc)


def test_errors_incomplete_message_says_how_far_it_got() -> None:
    exc = errors.IncompleteMessage(3, 10, address=("127.0.0.1", 1))
    assert (exc.received, exc.expected, exc.address, exc.by_peer) == (3, 10, ("127.0.0.1", 1), True)
    assert "3 of 10" in str(exc)
    assert "header" in str(errors.IncompleteMessage(1, None))


def test_errors_package_reexports_the_hierarchy() -> None:
    assert set(errors.__all__) <= set(sockwork.__all__)
