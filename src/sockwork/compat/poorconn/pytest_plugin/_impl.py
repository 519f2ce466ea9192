"""The ``poorconn_http_server`` fixture, with poorconn 0.2.1's defaults and marker.

The fixture serves ``tmp_path`` over HTTP on ``localhost:8080`` (poorconn's
defaults, in :class:`_PoorConnHTTPServerDefault`), one request at a time, with
``delay_before_sending_upon_acceptance(t=1, length=1024)`` applied to the
listening socket. The marker ``poorconn_http_server_config(address=, port=, t=,
length=)`` overrides them; as in poorconn, only keyword arguments are read.
``port=0`` picks a free port (read it from ``server.server.server_port``): use it
wherever tests may run concurrently.
"""

# Rules:
# - sockwork's plugin and this module share the marker (add_poorconn_marker) and
#   server_for(); the two fixture functions only differ in where pytest finds them.

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sockwork.compat.poorconn.server import Server, serve, simulation_of
from sockwork.compat.poorconn.simulation import delay_before_sending_upon_acceptance
from sockwork.testing.plugin import add_poorconn_marker

__all__ = [
    "Server",
    "poorconn_http_server",
    "pytest_configure",
    "server_for",
]



class _PoorConnHTTPServerDefault:
    """Defaults of :func:`poorconn_http_server` (poorconn's names and values)."""

    ADDRESS: str = "localhost"
    PORT: int = 8080
    T: float = 1
    LENGTH: int = 1024


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``poorconn_http_server_config`` marker (once, whichever plugin comes first)."""
    add_poorconn_marker(config)


@contextmanager
def server_for(request: pytest.FixtureRequest, directory: Path) -> Iterator[Server]:
    """Serve ``directory`` as configured by the test's ``poorconn_http_server_config`` marker."""
    marker = request.node.get_closest_marker("poorconn_http_server_config")
    options = dict(marker.kwargs) if marker is not None else {}
    address = options.get("address", _PoorConnHTTPServerDefault.ADDRESS)
    port = options.get("port", _PoorConnHTTPServerDefault.PORT)
    t = options.get("t", _PoorConnHTTPServerDefault.T)
    length = options.get("length", _PoorConnHTTPServerDefault.LENGTH)
    with serve(
        directory,
        host=address,
        port=port,
        simulation=simulation_of(delay_before_sending_upon_acceptance, t, length),
        threaded=False,
        log_requests=True,
    ) as server:
        yield server


@pytest.fixture
def poorconn_http_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """An HTTP server on ``tmp_path``, slowed down by ``delay_before_sending_upon_acceptance``.

    Listens on ``localhost:8080`` unless the marker
    ``@pytest.mark.poorconn_http_server_config(address=..., port=..., t=..., length=...)``
    says otherwise; each connection waits ``t`` (1 s) before each ``length``-byte
    (1024) chunk it sends. Yields a frozen ``Server(server, url)``; the server
    stops after the test.
    """
    with server_for(request, tmp_path) as server:
        yield server
