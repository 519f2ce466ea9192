from __future__ import annotations

from pathlib import Path

import pytest

from storify.testing import PostgresNotAvailable, TemporaryPostgres, find_postgres_bin


def test_temporary_postgres_without_the_server_programs(tmp_path: Path) -> None:
    server = TemporaryPostgres(bindir=str(tmp_path))
    with pytest.raises(PostgresNotAvailable, match="apt-get install postgresql"):
        server.start()
    server.close()  # nothing to close, nothing left behind


def test_temporary_postgres_stop_is_a_deprecated_alias_of_close(tmp_path: Path) -> None:
    server = TemporaryPostgres(bindir=str(tmp_path))
    with pytest.warns(DeprecationWarning, match=r"TemporaryPostgres\.stop\(\) is deprecated"):
        server.stop()
    assert server.directory is None


@pytest.mark.postgres
def test_temporary_postgres_serves_and_cleans_up(postgres: TemporaryPostgres) -> None:
    assert find_postgres_bin() == postgres.bindir
    assert postgres.url("shop") == f"postgresql://postgres@127.0.0.1:{postgres.port}/shop"
    assert postgres.url("shop", user="clerk", password="pw").startswith("postgresql://clerk:pw@")
    url = postgres.create_database("kit_check")
    assert url.endswith("/kit_check")
    assert postgres.execute("SELECT current_database()", "kit_check") == [("kit_check",)]
    postgres.drop_database("kit_check")
    assert postgres.execute("SELECT count(*) FROM pg_database WHERE datname = 'kit_check'") == [
        (0,)
    ]


@pytest.mark.postgres
@pytest.mark.slow
def test_temporary_postgres_stop_removes_its_directory(postgres: TemporaryPostgres) -> None:
    # A second server beside the session's (which is only asked for so that a machine
    # without PostgreSQL skips here, or fails in CI, like every other PostgreSQL test).
    with TemporaryPostgres(settings={"fsync": "off"}) as server:
        directory = server.directory
        assert directory is not None and Path(server.data, "PG_VERSION").exists()
        assert "ready to accept connections" in server.log()
    assert not Path(directory).exists()
    assert server.directory is None
