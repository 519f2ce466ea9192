"""The sockwork pytest plugin (entry point ``pytest11``, name ``sockwork``).

Fixtures, each cleaned up after its test:

- ``netfaults``: a :class:`~sockwork.testing.netfaults.NetFaults` that injects
  faults into the sockets of the test (``netfaults.inject(Latency(0.1))``).
- ``fault_proxy``: a factory, ``fault_proxy(upstream)``, that starts a
  :class:`sockwork.proxy.FaultProxy` to ``upstream``; closed after the test.
- ``telnet_client``: a factory, ``telnet_client(address, **options)``, of
  :class:`~sockwork.testing.TelnetClient` objects closed after the test.
- ``poorconn_http_server``: poorconn's fixture (a static-file HTTP server slowed
  down by ``delay_before_sending_upon_acceptance``, on ``localhost:8080`` with
  ``t=1``, ``length=1024`` as in poorconn), configured by the marker
  ``poorconn_http_server_config(address=, port=, t=, length=)``; it is the one
  of :mod:`sockwork.compat.poorconn.pytest_plugin`.

When a test that used ``netfaults`` or ``fault_proxy`` fails, what the faults did
and the seed are printed in a "sockwork" section of its report.

Marker ``@pytest.mark.netfaults(*faults, match=None, seed=None)`` injects faults for the
whole test. Option ``--sockwork-seed=N`` fixes the seed of every random choice a
fault makes, to replay a failure; without it each run draws a seed and prints it
in the header.

Exploration (:func:`sockwork.faults.explore`): a test marked
``@pytest.mark.netfaults_explore(budget=, time=, faults=)``, and with
``--sockwork-explore[=BUDGET]`` every test, is run under fault schedules placed
on what it does on the network; a schedule that breaks it fails the test with
the shrunk reproduction and the trace around the fault.
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
# - Exploration calls the test function many times with the fixture values of one
#   set-up (pytest_pyfunc_call): per-run state belongs in the test body. The run's
#   seed seeds the exploration, so --sockwork-seed replays its schedule sequence.

from __future__ import annotations

import importlib.machinery
import inspect
import random
import sys
import types
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from sockwork.address import parse_int
from sockwork.cli import argument_type
from sockwork.seed import seed_argument

if TYPE_CHECKING:
    # Only in annotations of the telnet_client fixture.
    import socket
    from collections.abc import Collection

    from sockwork.compat.poorconn.server import Server
    from sockwork.proxy import FaultProxy
    from sockwork.testing.netfaults import NetFaults
    from sockwork.testing.telnet import TelnetClient

__all__ = [
    "POORCONN_MARKER",
    "PoorconnDefaults",
    "PoorconnFixtures",
    "ProxyFactory",
    "TelnetFactory",
    "add_poorconn_marker",
    "fault_proxy",
    "netfaults",
    "poorconn_server",
    "pytest_addoption",
    "pytest_configure",
    "pytest_pyfunc_call",
    "pytest_report_header",
    "pytest_runtest_makereport",
    "seed_of",
    "telnet_client",
]

_SEED = pytest.StashKey[int]()
DEFAULT_EXPLORE_BUDGET = 200
DEFAULT_EXPLORE_TIME = 60.0
_DESCRIBE = pytest.StashKey[list[Callable[[], str]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--sockwork-seed``."""
    group = parser.getgroup("sockwork", "sockwork network faults")
    group.addoption(
        "--sockwork-seed",
        type=seed_argument,
        default=None,
        metavar="SEED",
        help="seed of every random choice injected faults make; a failing test prints "
        "the seed it ran with (default: a new seed per run, shown in the header)",
    )
    group.addoption(
        "--sockwork-explore",
        type=argument_type(partial(parse_int, what="--sockwork-explore", low=1)),
        nargs="?",
        const=DEFAULT_EXPLORE_BUDGET,
        default=None,
        metavar="BUDGET",
        help="explore every test under network fault schedules (at most BUDGET schedules "
        f"each, default {DEFAULT_EXPLORE_BUDGET}); tests marked netfaults_explore are "
        "explored without it",
    )


_NETFAULTS_MARKER = (
    "netfaults(*faults, match=None, seed=None): inject these sockwork.faults faults into the "
    "sockets of the whole test (see the netfaults fixture)"
)
_EXPLORE_MARKER = (
    "netfaults_explore(budget=200, time=60, faults=None, per_run_timeout=None, match=None): "
    "run the test under network fault schedules found by sockwork.faults.explore; a "
    "schedule that breaks it fails the test with the shrunk reproduction"
)
POORCONN_MARKER = (
    "poorconn_http_server_config(address, port, t, length): configure the fixture "
    "poorconn_http_server (keyword arguments; defaults as in poorconn: "
    "address='localhost', port=8080, t=1, length=1024; port=0 picks a free port)"
)


def add_poorconn_marker(config: pytest.Config) -> None:
    """Register the ``poorconn_http_server_config`` marker unless a plugin already did."""
    if POORCONN_MARKER not in config.getini("markers"):
        config.addinivalue_line("markers", POORCONN_MARKER)


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers, choose the run's seed, install the poorconn fixture."""
    config.addinivalue_line("markers", _NETFAULTS_MARKER)
    config.addinivalue_line("markers", _EXPLORE_MARKER)
    add_poorconn_marker(config)
    seed = config.getoption("sockwork_seed")
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    config.stash[_SEED] = seed
    config.pluginmanager.register(PoorconnFixtures(), "sockwork-poorconn")
    _let_runpy_run_sockwork_modules()


def _let_runpy_run_sockwork_modules() -> None:
    """Give pytest's assertion-rewriting import hook the ``get_code`` that runpy needs.

    As an installed pytest plugin, sockwork has all its modules claimed by that
    hook, which lacks ``get_code`` (pytest-dev/pytest#9007): ``runpy.run_module``
    (what ``python -m`` runs) then fails with AttributeError inside a test, e.g.
    for ``sockwork.compat.poorconn.__main__``. Modules run that way get their
    plain (not rewritten) code; imports are not affected.
    """
    for finder in sys.meta_path:
        if type(finder).__name__ == "AssertionRewritingHook" and not hasattr(finder, "get_code"):
            finder.get_code = _plain_code  # type: ignore[attr-defined]


def _plain_code(fullname: str) -> types.CodeType | None:
    """Return the code object of the sockwork module ``fullname``, read from its source."""
    if not fullname.startswith("sockwork."):
        raise AttributeError(f"get_code: {fullname!r} is not a sockwork module")
    parent = sys.modules.get(fullname.rpartition(".")[0])
    spec = importlib.machinery.PathFinder.find_spec(fullname, getattr(parent, "__path__", None))
    if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
        raise ImportError(f"no source file for {fullname!r}", name=fullname)
    return spec.loader.get_code(fullname)


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
    explored = item.stash.get(_EXPLORED, None)
    if explored is not None and call.when == "call":
        report.sections.append(("sockwork explore", explored))
    describers = item.stash.get(_DESCRIBE, [])
    if describers and report.failed and call.when == "call":
        text = "\n".join(describe() for describe in describers)
        report.sections.append(("sockwork", text))
    return report


_EXPLORE_OPTIONS = frozenset({"budget", "time", "faults", "per_run_timeout", "match"})


def _explore_options(item: pytest.Item) -> dict[str, Any] | None:
    """The explore() options for ``item``, or None when it is not explored.

    Raises:
        ValueError: the marker has positional or unknown arguments.
    """
    marker = item.get_closest_marker("netfaults_explore")
    budget = item.config.getoption("sockwork_explore")
    if marker is None and budget is None:
        return None
    options: dict[str, Any] = {
        "budget": budget or DEFAULT_EXPLORE_BUDGET,
        "time": DEFAULT_EXPLORE_TIME,
    }
    if marker is not None:
        accepted = ", ".join(sorted(_EXPLORE_OPTIONS))
        if marker.args:
            raise ValueError(f"it takes keyword arguments only ({accepted}), got {marker.args!r}")
        unknown = ", ".join(sorted(set(marker.kwargs) - _EXPLORE_OPTIONS))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; it takes {accepted}")
        options.update(marker.kwargs)
    return options


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Explore a test marked ``netfaults_explore`` (or every test with ``--sockwork-explore``).

    The test passes when no schedule within the budget breaks it (or when it does
    no network I/O, unless it is marked); a found schedule fails it with the
    reproduction. Returns None (pytest calls the test as usual) when not exploring.
    """
    try:
        options = _explore_options(pyfuncitem)
    except ValueError as error:
        pytest.fail(f"netfaults_explore: {error}", pytrace=False)
    if options is None:
        return None
    function = pyfuncitem.obj
    if inspect.iscoroutinefunction(function):
        pytest.fail(
            "netfaults_explore needs a plain test function; "
            "run the coroutine with asyncio.run() inside it",
            pytrace=False,
        )
    from sockwork.faults.exploration import BaselineFailed, NoNetworkActivity, explore

    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    marked = pyfuncitem.get_closest_marker("netfaults_explore") is not None

    def test() -> None:
        function(**arguments)

    test.__name__ = test.__qualname__ = function.__name__  # named so in the reproduction
    try:
        result = explore(test, seed=seed_of(pyfuncitem.config), **options)
    except BaselineFailed as error:
        details = error.outcome.details
        pytest.fail(f"{error}\n\n{details}" if details else str(error), pytrace=False)
    except NoNetworkActivity as error:
        if marked:
            pytest.fail(f"netfaults_explore: {error}", pytrace=False)
        return True  # it ran once and passed; nothing network to explore
    except (TypeError, ValueError) as error:
        pytest.fail(f"netfaults_explore: {error}", pytrace=False)
    if result.found:
        pytest.fail(f"sockwork explore {result}", pytrace=False)
    pyfuncitem.stash[_EXPLORED] = result.summary()
    return True


_EXPLORED = pytest.StashKey[str]()


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


class TelnetFactory(Protocol):
    """The ``telnet_client`` fixture: connects a TelnetClient, closed after the test."""

    def __call__(
        self,
        target: tuple[str, int] | socket.socket,
        *,
        timeout: float = ...,
        negotiate: bool = ...,
        accept: Collection[int] = ...,
        encoding: str = ...,
        max_buffer: int = ...,
    ) -> TelnetClient:
        """Connect to ``target`` with the options of :class:`~sockwork.testing.TelnetClient`."""
        ...


@pytest.fixture
def telnet_client() -> Iterator[TelnetFactory]:
    """A factory of scripted telnet clients (:class:`~sockwork.testing.TelnetClient`).

    ``client = telnet_client(server.address)`` connects one; every client made is
    closed after the test, also when it fails.
    """
    from sockwork.testing.telnet import TelnetClient

    clients: list[TelnetClient] = []

    def make(target: tuple[str, int] | socket.socket, **options: Any) -> TelnetClient:
        client = TelnetClient(target, **options)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close()


@pytest.fixture(autouse=True)
def _sockwork_netfaults_marker(request: pytest.FixtureRequest) -> None:
    """Start the ``netfaults`` fixture for a test carrying the marker."""
    if request.node.get_closest_marker("netfaults") is not None:
        request.getfixturevalue("netfaults")


class PoorconnDefaults:
    """Defaults of ``poorconn_http_server``: poorconn's values (``_PoorConnHTTPServerDefault``)."""

    ADDRESS: str = "localhost"
    PORT: int = 8080
    T: float = 1
    LENGTH: int = 1024


@contextmanager
def poorconn_server(request: pytest.FixtureRequest, directory: Path) -> Iterator[Server]:
    """Serve ``directory`` as poorconn's fixture does, configured by the test's marker.

    Only keyword arguments of ``poorconn_http_server_config`` are read, as in
    poorconn; missing ones take :class:`PoorconnDefaults`. The server handles one
    request at a time and logs an access line per request to stderr.
    """
    from sockwork.compat.poorconn.server import serve, simulation_of
    from sockwork.compat.poorconn.simulation import delay_before_sending_upon_acceptance

    marker = request.node.get_closest_marker("poorconn_http_server_config")
    options = dict(marker.kwargs) if marker is not None else {}
    t = options.get("t", PoorconnDefaults.T)
    length = options.get("length", PoorconnDefaults.LENGTH)
    with serve(
        directory,
        host=options.get("address", PoorconnDefaults.ADDRESS),
        port=options.get("port", PoorconnDefaults.PORT),
        simulation=simulation_of(delay_before_sending_upon_acceptance, t, length),
        threaded=False,
        log_requests=True,
    ) as server:
        yield server


class PoorconnFixtures:
    """Holder of the poorconn-compatible fixture, registered after poorconn's own plugin."""

    @pytest.fixture
    def poorconn_http_server(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> Iterator[Server]:
        """An HTTP server on ``tmp_path``, slowed down as poorconn's fixture is.

        Each accepted connection waits ``t`` seconds before each ``length``-byte chunk
        it sends (``delay_before_sending_upon_acceptance``). The marker
        ``poorconn_http_server_config(address=, port=, t=, length=)`` overrides
        poorconn's defaults ``address="localhost"``, ``port=8080``, ``t=1`` and
        ``length=1024`` (``port=0``: a free port). Yields a frozen
        ``Server(server, url)``; the server stops after the test.
        """
        with poorconn_server(request, tmp_path) as server:
            yield server
