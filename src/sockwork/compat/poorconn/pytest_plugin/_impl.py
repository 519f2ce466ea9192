"""The ``poorconn_http_server`` fixture, with poorconn 0.2.1's defaults and marker.

The fixture serves ``tmp_path`` over HTTP on ``localhost:8080`` (poorconn's
defaults, in :class:`_PoorConnHTTPServerDefault`), one request at a time, with
``delay_before_sending_upon_acceptance(t=1, length=1024)`` applied to the
listening socket. The marker ``poorconn_http_server_config(address=, port=, t=,
length=)`` overrides them; as in poorconn, only keyword arguments are read.
``port=0`` picks a free port (read it from ``server.server.server_port``): use it
wherever tests may run concurrently.

The work is done by :func:`sockwork.testing.plugin.poorconn_server`, which
sockwork's own plugin uses for the same fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sockwork.compat.poorconn.server import Server
from sockwork.testing.plugin import PoorconnDefaults, add_poorconn_marker, poorconn_server

__all__ = ["Server", "poorconn_http_server", "pytest_configure"]

_PoorConnHTTPServerDefault = PoorconnDefaults
"""poorconn's name for the defaults (``ADDRESS``, ``PORT``, ``T``, ``LENGTH``)."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``poorconn_http_server_config`` marker (once, whichever plugin comes first)."""
    add_poorconn_marker(config)


@pytest.fixture
def poorconn_http_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """An HTTP server on ``tmp_path``, slowed down by ``delay_before_sending_upon_acceptance``.

    Listens on ``localhost:8080`` unless the marker
    ``@pytest.mark.poorconn_http_server_config(address=..., port=..., t=..., length=...)``
    says otherwise; each connection waits ``t`` (1 s) before each ``length``-byte
    (1024) chunk it sends. Yields a frozen ``Server(server, url)``; the server
    stops after the test.
    """
    with poorconn_server(request, tmp_path) as server:
        yield server
