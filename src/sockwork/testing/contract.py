"""Network contracts: the right answer, or a clean error of promised types, in time.

Code that talks over a network cannot always answer: a reset or a dead server
leaves it nothing to say. What correct code keeps under *any* fault is a
contract: it returns the right answer, or it raises one of the errors it
promises (``ConnectionError``, ``TimeoutError``...), within its deadline. A wrong
answer, any other exception, or a late finish is a bug::

    from sockwork.testing.contract import contract

    def test_fetch():
        with contract(ConnectionError, TimeoutError, within=2.0):
            assert client.fetch("k") == b"value"     # a failed assert: wrong answer

That is the oracle ``sockwork.faults.explore`` needs: the test passes with no
faults, and under every schedule it either passes or breaks the contract.

Some contracts depend on what the network did (no answer is fine when the reply
was cut, a bug when only the request side was half-closed). ``accept`` is asked,
for a promised error, whether what fired excuses it; it gets the error and the
events of :func:`sockwork.faults.fired` (the faults of the current ``inject``
scope that acted, on which connection)::

    def reply_cut(error, fired):
        return any(not isinstance(event.fault, HalfClose) for event in fired)

    with contract(ConnectionError, accept=reply_cut, within=2.0):
        assert client.ask("q") == b"a"
"""

# Rules:
# - A passing block and a promised (and accepted) error are the only passes. The
#   error is swallowed and kept in ``Contract.error`` so the test can look at it.
# - Everything else raises ContractBroken (an AssertionError) chained to the cause,
#   with a one-line reason: a test runner or the explorer reports it as a failure.
# - BaseExceptions that are not Exceptions (KeyboardInterrupt, SystemExit,
#   GeneratorExit) pass through untouched: they are not the code's answer.
# - A block that never returns cannot be interrupted from its own thread: the
#   explorer's per-run deadline or pytest-timeout reports it, with the stacks.

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from sockwork.errors import ContractBroken
from sockwork.faults.inject import _fired_scope

if TYPE_CHECKING:
    from sockwork.faults.report import Event

__all__ = ["Accept", "Contract", "ContractBroken", "contract", "fired_events"]

P = ParamSpec("P")
R = TypeVar("R")

Accept = Callable[[BaseException, Sequence["Event"]], bool]
"""``accept(error, fired) -> bool``: does what fired excuse this promised error?"""

DEFAULT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def fired_events(*, since: object = None) -> tuple[Event, ...]:
    """Return :func:`sockwork.faults.fired`, empty when no scope ran since ``since``.

    ``since`` is the scope :func:`sockwork.faults.fired` read when a block began, if
    it had already ended then: a scope left over from earlier code (another test) is
    not what happened in this block.
    """
    scope = _fired_scope()
    if scope is None or (scope is since and not scope.active):
        return ()
    return tuple(scope.report.fired())


def _failed_line(error: BaseException) -> str:
    """The source line of a bare ``assert`` (outside pytest, which rewrites the message)."""
    frames = traceback.extract_tb(error.__traceback__)
    line = frames[-1].line if frames else None
    return line or "assertion failed"


def _names(errors: Sequence[type[BaseException]]) -> str:
    return ", ".join(error.__name__ for error in errors)


class Contract:
    """The right answer or a promised error within ``within`` seconds; else ContractBroken.

    Use it as a context manager (``with contract(...) as c:``) or as a decorator
    (``@contract(...)``: each call checks the contract afresh). After the block,
    ``error`` is the promised error that ended it (None when it finished),
    ``elapsed`` its duration and ``fired`` what the faults did meanwhile.
    """

    def __init__(
        self,
        *errors: type[BaseException],
        within: float | None = None,
        accept: Accept | None = None,
    ) -> None:
        for error in errors:
            if not (isinstance(error, type) and issubclass(error, BaseException)):
                raise TypeError(f"errors must be exception classes, got {error!r}")
        if within is not None and not within > 0:
            raise ValueError(f"within must be a positive number of seconds, got {within!r}")
        self.errors: tuple[type[BaseException], ...] = errors or DEFAULT_ERRORS
        self.within = within
        self.accept = accept
        self.error: BaseException | None = None
        self.elapsed = 0.0
        self.fired: tuple[Event, ...] = ()
        self._start: float | None = None
        self._since: object = None  # a scope that had ended before the block

    def __enter__(self) -> Contract:
        if self._start is not None:
            raise RuntimeError("a Contract checks one block; make a new one for the next")
        self._start = time.monotonic()
        scope = _fired_scope()
        self._since = scope if scope is not None and not scope.active else None
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._start is not None
        self.elapsed = time.monotonic() - self._start
        self.fired = fired_events(since=self._since)
        if error is not None and not isinstance(error, Exception):
            return False  # KeyboardInterrupt, SystemExit: not an answer
        if isinstance(error, ContractBroken):
            return False  # a nested contract already judged it
        late = self.within is not None and self.elapsed > self.within
        if error is None:
            if late:
                raise self._broken("late", f"finished after {self.elapsed:.3f}s", None)
            return False
        if isinstance(error, AssertionError):
            raise self._broken("wrong answer", str(error) or _failed_line(error), error)
        if not isinstance(error, self.errors):
            text = f"{type(error).__name__}: {error} (promised: {_names(self.errors)})"
            raise self._broken("unexpected error", text, error)
        if self.accept is not None and not self.accept(error, self.fired):
            what = "; ".join(str(event) for event in self.fired) or "no fault fired"
            text = f"{type(error).__name__}: {error}, yet what fired does not excuse it ({what})"
            raise self._broken("error not excused", text, error)
        if late:
            text = f"{type(error).__name__} after {self.elapsed:.3f}s"
            raise self._broken("late", text, error)
        self.error = error
        return True

    def _broken(self, reason: str, text: str, error: BaseException | None) -> ContractBroken:
        deadline = f", deadline {self.within}s" if self.within is not None else ""
        broken = ContractBroken(
            f"contract broken: {reason}: {text}{deadline}",
            reason=reason,
            elapsed=self.elapsed,
            error=error,
        )
        broken.__cause__ = error
        return broken

    def __call__(self, function: Callable[P, R]) -> Callable[P, R | None]:
        """Decorate ``function``: each call runs under a fresh copy of this contract.

        The call returns the function's value, or None when a promised error ended it.
        """

        @functools.wraps(function)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R | None:
            with Contract(*self.errors, within=self.within, accept=self.accept):
                return function(*args, **kwargs)
            return None

        return checked


def contract(
    *errors: type[BaseException],
    within: float | None = None,
    accept: Accept | None = None,
) -> Contract:
    """Return a :class:`Contract`: the right answer, or one of ``errors``, in ``within`` s.

    Args:
        errors: the exception classes the code promises on a bad network
            (default ``ConnectionError, TimeoutError``).
        within: the deadline in seconds (None: no deadline).
        accept: ``accept(error, fired) -> bool``, asked for each promised error with
            the events of :func:`sockwork.faults.fired`; False makes it a bug.

    Raises:
        TypeError: an ``errors`` item is not an exception class.
        ValueError: ``within`` is not positive.
    """
    return Contract(*errors, within=within, accept=accept)
