"""The sockwork pytest plugin (entry point ``pytest11``, name ``sockwork``).

Fixtures, each cleaned up after its test:

- ``fault_proxy``: a factory, ``fault_proxy(upstream, **options)``, that starts a
  :class:`sockwork.proxy.FaultProxy` to ``upstream`` seeded with the run's seed;
  every proxy is closed after the test, and a failed test prints their reports.

Option ``--sockwork-seed=N`` fixes the seed of every random choice a fault makes,
to replay a failure; without it each run draws a seed and prints it in the header.
"""

# Rules:
# - The plugin is a thin layer: what a fixture does is done by a class that works
#   without pytest (sockwork.proxy.FaultProxy...).
# - A fixture that injects faults registers a "describe" callable on the test item;
#   when the test fails, their text goes into a "sockwork" report section.

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Iterator
from typing import Protocol

import pytest

from sockwork.proxy import FaultProxy

__all__ = [
    "ProxyFactory",
    "fault_proxy",
    "pytest_addoption",
    "pytest_configure",
    "pytest_report_header",
    "pytest_runtest_makereport",
    "seed_of",
]

_SEED = pytest.StashKey[int]()
_DESCRIBE = pytest.StashKey[list[Callable[[], str]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--sockwork-seed``."""
    group = parser.getgroup("sockwork", "sockwork network faults")
    group.addoption(
        "--sockwork-seed",
        type=int,
        default=None,
        metavar="SEED",
        help="seed of every random choice injected faults make; a failing test prints "
        "the seed it ran with (default: a new seed per run, shown in the header)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Choose the run's seed."""
    seed = config.getoption("sockwork_seed")
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    config.stash[_SEED] = seed


def seed_of(config: pytest.Config) -> int:
    """Return the seed of this run (``--sockwork-seed``, or the one drawn at start-up)."""
    return config.stash[_SEED]


def pytest_report_header(config: pytest.Config) -> str:
    """Show the seed, so a run can be replayed with ``--sockwork-seed``."""
    return f"sockwork: --sockwork-seed={seed_of(config)}"


def _on_failure(item: pytest.Item, describe: Callable[[], str]) -> None:
    """Have ``describe()`` printed if ``item`` fails."""
    item.stash.setdefault(_DESCRIBE, []).append(describe)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Print what the faults did, and the seed, under a failed test that injected faults."""
    report: pytest.TestReport = yield
    describers = item.stash.get(_DESCRIBE, [])
    if describers and report.failed and call.when == "call":
        text = "\n".join(describe() for describe in describers)
        report.sections.append(("sockwork", text))
    return report


class ProxyFactory(Protocol):
    """The ``fault_proxy`` fixture: starts a FaultProxy to ``upstream``."""

    def __call__(
        self, upstream: tuple[str, int], *, listen: tuple[str, int] = ("127.0.0.1", 0)
    ) -> FaultProxy:
        """Start a proxy to ``upstream``; it is closed after the test."""
        ...


@pytest.fixture
def fault_proxy(request: pytest.FixtureRequest) -> Iterator[ProxyFactory]:
    """A factory of running FaultProxy objects, seeded with the run's seed, closed after the test.

    ``proxy = fault_proxy(("127.0.0.1", port))`` returns a started proxy; connect to
    ``proxy.address`` and install faults with ``proxy.add(fault, direction=...)``.
    When the test fails, every proxy's report (with its seed) is printed.
    """
    seed = seed_of(request.config)
    proxies: list[FaultProxy] = []

    def make(
        upstream: tuple[str, int], *, listen: tuple[str, int] = ("127.0.0.1", 0)
    ) -> FaultProxy:
        proxy = FaultProxy(upstream=upstream, listen=listen, seed=seed + len(proxies))
        proxy.start()
        proxies.append(proxy)
        return proxy

    def describe() -> str:
        lines = [f"seed {seed}: replay with --sockwork-seed={seed}"]
        for proxy in proxies:
            lines.append(f"fault_proxy {proxy.address} -> {proxy.upstream}:")
            lines.append(str(proxy.report))
        return "\n".join(lines)

    _on_failure(request.node, describe)
    try:
        yield make
    finally:
        for proxy in reversed(proxies):
            proxy.close()
