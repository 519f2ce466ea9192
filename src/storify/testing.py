"""A throwaway PostgreSQL server for tests and benchmarks: initdb and pg_ctl in a temp dir.

# Rules:
# - Nothing is mocked: the server is the real ``postgres`` of the machine (Debian's
#   ``postgresql`` package keeps it in /usr/lib/postgresql/<version>/bin, off PATH).
# - initdb refuses to run as root: as root, the cluster belongs to the unprivileged
#   ``postgres`` user (made by the Debian package) and every server program runs as it.
# - Loopback only, on a port found free just before the start (PostgreSQL cannot be
#   given port 0); a start that loses that port to someone else is retried on another.
# - The superuser ``postgres`` connects without a password; every other role needs
#   its password (scram-sha-256), so bad credentials can be tried for real.
# - ``close()`` removes everything; ``pause()``/``resume()`` stop and restart the same
#   server on the same port, to rehearse a database outage.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sockwork.deprecation import warn_stop_alias

if TYPE_CHECKING:
    from typing import Self

__all__ = ["PostgresNotAvailable", "TemporaryPostgres", "find_postgres_bin"]

_HBA = """\
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""
_START_ATTEMPTS = 5


class PostgresNotAvailable(RuntimeError):
    """PostgreSQL's server programs are missing or the server would not start."""


def find_postgres_bin() -> str | None:
    """Return the directory of PostgreSQL's server programs (newest version), or None."""

    def version(path: str) -> tuple[int, ...]:
        found = re.search(r"/postgresql/([\d.]+)/", path)
        return tuple(int(part) for part in found.group(1).split(".")) if found else (0,)

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if candidates:
        return os.path.dirname(candidates[-1])
    initdb = shutil.which("initdb")
    return None if initdb is None else os.path.dirname(os.path.realpath(initdb))


class TemporaryPostgres:
    """A PostgreSQL server of its own, in a temporary directory, on 127.0.0.1.

    Use as a context manager, or call :meth:`start` and :meth:`close`.

    Args:
        settings: server settings (``{"fsync": "off"}``), passed as ``-c key=value``.
        bindir: where initdb, pg_ctl and postgres are (found when None).
        timeout: seconds to wait for the server to start or stop.
    """

    def __init__(
        self,
        *,
        settings: Mapping[str, str] | None = None,
        bindir: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.settings = dict(settings or {})
        self.bindir = bindir
        self.timeout = timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.directory: str | None = None
        self._names = itertools.count(1)
        self._owner: pwd.struct_passwd | None = None
        self._running = False

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Make the cluster and start the server; returns once it accepts connections.

        Raises:
            PostgresNotAvailable: no server programs, or the server did not start
                (the message has the end of its log).
        """
        bindir = self.bindir or find_postgres_bin()
        if bindir is None or not os.path.exists(os.path.join(bindir, "pg_ctl")):
            raise PostgresNotAvailable(
                "PostgreSQL's server programs are not installed (Debian: apt-get install "
                "postgresql; make test does it)"
            )
        self.bindir = bindir
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresNotAvailable(
                    "running as root, and there is no 'postgres' user to own the cluster "
                    "(initdb refuses root)"
                ) from None
        self.directory = tempfile.mkdtemp(prefix="storify-postgres-")
        try:
            if self._owner is not None:
                os.chown(self.directory, self._owner.pw_uid, self._owner.pw_gid)
            self._run(
                "initdb", "-D", self.data, "-U", "postgres", "-E", "UTF8", "--locale=C",
                "--auth=trust", "--no-sync",
            )  # fmt: skip
            with open(os.path.join(self.data, "pg_hba.conf"), "w", encoding="ascii") as hba:
                hba.write(_HBA)
            for _ in range(_START_ATTEMPTS):
                self.port = _free_port(self.host)
                try:
                    self.resume()
                    break
                except PostgresNotAvailable:
                    if "in use" not in self.log():
                        raise
            else:
                raise PostgresNotAvailable(f"no free port after {_START_ATTEMPTS} tries")
        except BaseException:
            self.close()
            raise
        return self

    def resume(self) -> None:
        """Start the (paused) server on its port; returns once it accepts connections."""
        assert self.directory is not None
        options = [
            f"-p {self.port}",
            f"-c listen_addresses={self.host}",
            f"-c unix_socket_directories={self.directory}",
        ] + [f"-c {key}={value}" for key, value in self.settings.items()]
        try:
            self._run(
                "pg_ctl", "-D", self.data, "-l", self.log_path, "-w", "-t",
                str(int(self.timeout)), "-o", " ".join(options), "start",
            )  # fmt: skip
        except PostgresNotAvailable as error:
            raise PostgresNotAvailable(f"{error}\n{self.log()[-2000:]}") from None
        self._running = True

    def pause(self) -> None:
        """Stop the server (fast shutdown: open connections are cut), keeping its data."""
        if self._running:
            self._running = False
            self._run("pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop")

    def close(self) -> None:
        """Stop the server and delete its directory. Idempotent."""
        try:
            if self._running:
                self._running = False
                self._run("pg_ctl", "-D", self.data, "-w", "-m", "immediate", "stop")
        finally:
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    def stop(self) -> None:
        """Deprecated alias of :meth:`close` (servers ``start()`` and ``close()``)."""
        warn_stop_alias(self)
        self.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- where things are -------------------------------------------------------------------

    @property
    def data(self) -> str:
        """The cluster's data directory."""
        assert self.directory is not None, "not started"
        return os.path.join(self.directory, "data")

    @property
    def log_path(self) -> str:
        """The server's log file."""
        assert self.directory is not None, "not started"
        return os.path.join(self.directory, "server.log")

    def log(self) -> str:
        """Return the server's log so far ('' if none)."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except OSError:
            return ""

    def url(self, dbname: str = "postgres", *, user: str = "postgres", password: str = "") -> str:
        """Return ``postgresql://user[:password]@127.0.0.1:port/dbname``."""
        secret = f":{password}" if password else ""
        return f"postgresql://{user}{secret}@{self.host}:{self.port}/{dbname}"

    # -- databases and roles ----------------------------------------------------------------

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit); returns its rows, if any."""
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as connection:
            cursor = connection.execute(sql.encode())
            return cursor.fetchall() if cursor.description is not None else []

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh name when None); returns its URL."""
        name = name or f"store{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, cutting its connections."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- running the server's programs ------------------------------------------------------

    def _run(self, program: str, *args: str) -> None:
        assert self.bindir is not None
        owner = self._owner
        try:
            subprocess.run(
                [os.path.join(self.bindir, program), *args],
                check=True,
                capture_output=True,
                text=True,
                timeout=self.timeout + 10,
                cwd=self.directory,
                user=None if owner is None else owner.pw_uid,
                group=None if owner is None else owner.pw_gid,
                extra_groups=None if owner is None else [],
            )
        except subprocess.CalledProcessError as error:
            output = (error.stderr or error.stdout or "").strip()
            raise PostgresNotAvailable(f"{program} failed: {output}") from None
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PostgresNotAvailable(f"{program} failed: {error}") from None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
