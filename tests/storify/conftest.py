"""Fixtures of the storify tests: the databases a store can live in.

``database`` is parametrised over both back ends, so every test using it runs once on
a SQLite file and once on a real PostgreSQL server (started once per session by
``postgres``, a fresh database per test). PostgreSQL tests carry the ``postgres``
marker: ``-m "not postgres"`` runs the SQLite suite alone. Without PostgreSQL's
programs they skip locally and fail in CI (``make test`` installs them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storify.testing import PostgresNotAvailable, TemporaryPostgres
from tests.conftest import IN_CI

BACK_ENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def postgres() -> Iterator[TemporaryPostgres]:
    """A PostgreSQL server for the whole session (fsync off: the tests never crash it)."""
    server = start_postgres(TemporaryPostgres(settings={"fsync": "off", "full_page_writes": "off"}))
    try:
        yield server
    finally:
        server.close()


def start_postgres(server: TemporaryPostgres) -> TemporaryPostgres:
    """Start ``server``; without PostgreSQL skip locally, fail in CI (make test installs it)."""
    try:
        server.start()
    except PostgresNotAvailable as error:
        message = f"PostgreSQL cannot be started: {error}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return server


@pytest.fixture
def postgres_url(postgres: TemporaryPostgres) -> str:
    """The URL of an empty PostgreSQL database (storify's tables dropped before the test).

    One database for every test: dropping four tables takes milliseconds where creating
    a database takes up to seconds on a busy disk.
    """
    if not postgres.execute(f"SELECT 1 FROM pg_database WHERE datname = '{_SHARED}'"):
        postgres.create_database(_SHARED)
    postgres.execute("SET lock_timeout = '10s'; " + _DROP, _SHARED)
    return postgres.url(_SHARED)


_SHARED = "storify_tests"
_DROP = "DROP TABLE IF EXISTS order_lines, orders, products, storify_schema"


@pytest.fixture(params=BACK_ENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a new, empty store lives: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    url: str = request.getfixturevalue("postgres_url")
    return url
