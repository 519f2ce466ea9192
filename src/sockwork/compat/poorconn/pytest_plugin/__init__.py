"""poorconn's pytest plugin (``poorconn.pytest_plugin``): the ``poorconn_http_server`` fixture.

sockwork's own plugin (entry point ``sockwork``) already provides the fixture and
the marker; this module exists so that ``pytest_plugins = ["...pytest_plugin"]``
lines and ``-p`` options naming poorconn's plugin keep working after the import
switch. Loading both is harmless: they register one marker and the same fixture.
"""

from __future__ import annotations

from sockwork.compat.poorconn.pytest_plugin._impl import (
    Server,
    poorconn_http_server,
    pytest_configure,
)

__all__ = ["Server", "poorconn_http_server", "pytest_configure"]
