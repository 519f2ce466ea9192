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
    server = TemporaryPostgres(settings={"fsync": "off", "full_page_writes": "off"})
    try:
        server.start()
    except PostgresNotAvailable as error:
        message = f"PostgreSQL cannot be started: {error}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: TemporaryPostgres) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    url = postgres.create_database()
    try:
        yield url
    finally:
        postgres.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=BACK_ENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a new, empty store lives: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    url: str = request.getfixturevalue("postgres_url")
    return url
