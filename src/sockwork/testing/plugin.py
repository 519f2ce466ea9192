"""The sockwork pytest plugin (entry point ``pytest11``, name ``sockwork``).

Fixtures, each cleaned up after its test:

- ``netfaults``: a :class:`~sockwork.testing.netfaults.NetFaults` that injects
  faults into the sockets of the test (``netfaults.inject(Latency(0.1))``).
- ``fault_proxy``: a factory, ``fault_proxy(upstream)``, that starts a
  :class:`sockwork.proxy.FaultProxy` to ``upstream``; closed after the test.
- ``poorconn_http_server``: poorconn's fixture (a static-file HTTP server slowed
  down by ``delay_before_sending_upon_acceptance``), configured by the marker
  ``poorconn_http_server_config(address, port, t, length)``.

When a test that used ``netfaults`` or ``fault_proxy`` fails, what the faults did
and the seed are printed in a "sockwork" section of its report.

Marker ``@pytest.mark.netfaults(*faults, match=None)`` injects faults for the
whole test. Option ``--sockwork-seed=N`` fixes the seed of every random choice a
fault makes, to replay a failure; without it each run draws a seed and prints it
in the header.
"""

# Rules:
# - The plugin is a thin layer: what a fixture does is done by a class that works
#   without pytest (NetFaults, FaultProxy, sockwork.compat.poorconn.server).
# - A fixture that injects faults registers a "describe" callable on the test item;
#   when the test fails, their text goes into a "sockwork" report section.
# - poorconn's own plugin (auto-loaded when poorconn is installed) defines the same
#   fixture name. Ours lives on an object registered in pytest_configure, after
#   every entry-point plugin, so it is the last definition and wins whatever order
#   the entry points loaded in. ``-p no:poorconn`` avoids the duplicate altogether.
# - The plugin loads in every pytest run where sockwork is installed, so it imports
#   the fault engine, the proxy and the HTTP server only when a fixture is used.

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

from sockwork.address import parse_int
from sockwork.cli import argument_type

if TYPE_CHECKING:
    from sockwork.compat.poorconn.server import Server
    from sockwork.proxy import FaultProxy
    from sockwork.testing.netfaults import NetFaults

__all__ = [
    "PoorconnFixtures",
    "ProxyFactory",
    "fault_proxy",
    "netfaults",
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
        type=argument_type(partial(parse_int, what="seed")),
        default=None,
        metavar="SEED",
        help="seed of every random choice injected faults make; a failing test prints "
        "the seed it ran with (default: a new seed per run, shown in the header)",
    )


_NETFAULTS_MARKER = (
    "netfaults(*faults, match=None): inject these sockwork.faults faults into the "
    "sockets of the whole test (see the netfaults fixture)"
)
_POORCONN_MARKER = (
    "poorconn_http_server_config(address, port, t, length): configure the fixture "
    "poorconn_http_server (defaults: address='localhost', port=0, t=1, length=1024)"
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers, choose the run's seed, install the poorconn fixture."""
    config.addinivalue_line("markers", _NETFAULTS_MARKER)
    config.addinivalue_line("markers", _POORCONN_MARKER)
    seed = config.getoption("sockwork_seed")
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    config.stash[_SEED] = seed
    config.pluginmanager.register(PoorconnFixtures(), "sockwork-poorconn")


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
    from sockwork.proxy import FaultProxy

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


@pytest.fixture
def netfaults(request: pytest.FixtureRequest) -> Iterator[NetFaults]:
    """Inject faults into the sockets of this test; undone after it, reported if it fails.

    ``netfaults.inject(*faults, match=...)`` starts a scope (seeded from the run's
    seed) and returns its handle; faults of ``@pytest.mark.netfaults(...)`` markers
    are active from the start of the test.
    """
    from sockwork.testing.netfaults import NetFaults

    with NetFaults(seed=seed_of(request.config)) as faults:
        _on_failure(request.node, faults.describe)
        for marker in reversed(list(request.node.iter_markers("netfaults"))):
            faults.inject(*marker.args, **marker.kwargs)
        yield faults


@pytest.fixture(autouse=True)
def _sockwork_netfaults_marker(request: pytest.FixtureRequest) -> None:
    """Start the ``netfaults`` fixture for a test carrying the marker."""
    if request.node.get_closest_marker("netfaults") is not None:
        request.getfixturevalue("netfaults")


class PoorconnFixtures:
    """Holder of the poorconn-compatible fixture, registered after poorconn's own plugin."""

    @pytest.fixture
    def poorconn_http_server(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> Iterator[Server]:
        """A static-file HTTP server on ``tmp_path``, slowed down as poorconn's fixture is.

        Each accepted connection waits ``t`` seconds before each ``length``-byte chunk
        it sends (``delay_before_sending_upon_acceptance``). The marker
        ``poorconn_http_server_config(address, port, t, length)`` (keyword or
        positional) overrides the defaults ``address="localhost"``, ``port=0`` (a
        free port; poorconn's 8080 clashes between concurrent runs), ``t=1`` and
        ``length=1024``. Yields a frozen ``Server(server, url)``; the server and its
        threads are stopped after the test.
        """
        from sockwork.compat.poorconn.server import serve
        from sockwork.compat.poorconn.simulation import (
            delay_before_sending_upon_acceptance,
            patched,
        )

        config = _ServerConfig.from_marker(
            request.node.get_closest_marker("poorconn_http_server_config")
        )

        def simulate(s: socket.socket) -> socket.socket:
            return patched(
                s, lambda s: delay_before_sending_upon_acceptance(s, config.t, config.length)
            )

        with serve(tmp_path, host=config.address, port=config.port, simulation=simulate) as server:
            yield server


@dataclass(frozen=True)
class _ServerConfig:
    """The arguments of the ``poorconn_http_server_config`` marker, in its order."""

    address: str = "localhost"
    port: int = 0
    t: float = 1.0
    length: int = 1024

    @classmethod
    def from_marker(cls, marker: pytest.Mark | None) -> _ServerConfig:
        """Read the marker (None: the defaults); a bad argument is an error naming it."""
        if marker is None:
            return cls()
        try:
            config = cls(*marker.args, **marker.kwargs)
        except TypeError as exc:
            raise TypeError(
                f"poorconn_http_server_config: {exc}; it takes address, port, t, length"
            ) from None
        if not isinstance(config.address, str):
            raise TypeError(
                f"poorconn_http_server_config: address must be a str, got {config.address!r}"
            )
        port = config.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(
                "poorconn_http_server_config: port must be an int in 0..65535 "
                f"(0 picks a free port), got {port!r}"
            )
        return config
